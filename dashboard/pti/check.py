"""Check a site's PTI connection: can we reach PTI, do the credentials work, do our unit names exist there.

Backs `flask pti check SITE`; answers in plain lines an admin can act on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from dashboard.pti.client import PtiClient, is_valid_unit_name
from dashboard.pti.errors import PtiError, PtiPermanentError, PtiRetryableError

MAX_NAMES_LISTED = 10  # longer lists are cut in the plain-language lines (the fields keep them all)


@dataclass
class SiteCheck:
    reachable: bool = False
    credentials_valid: bool | None = None  # None: PTI did not answer, so we could not tell
    pti_unit_count: int | None = None
    matched: list[str] = field(default_factory=list)  # our unit names PTI has
    missing: int = 0  # our units with no PTI Unit Name (not synced)
    invalid: list[str] = field(default_factory=list)  # names PTI would reject (> 10 characters or spaces)
    unknown: list[str] = field(default_factory=list)  # valid names PTI has no unit for
    error: PtiError | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.reachable and self.credentials_valid and self.error is None
                    and not self.invalid and not self.unknown)


def check_site(client: PtiClient, our_unit_names: Iterable[str | None]) -> SiteCheck:
    """Log in, list PTI's units and compare them with our units' PTI Unit Names (None or "" = not set)."""
    check = SiteCheck()
    names = list(our_unit_names)
    try:
        client.login()
        check.reachable = check.credentials_valid = True
        pti_units = {unit.name for unit in client.list_units()}
    except PtiRetryableError as exc:
        check.error = exc
        check.reachable = exc.reason != "pti_unreachable"
        check.lines.append(f"PTI did not answer properly: {exc.message} {exc.fix}")
        return check
    except PtiPermanentError as exc:
        check.error = exc
        check.reachable = True
        check.credentials_valid = False if exc.reason == "invalid_credentials" else check.credentials_valid
        check.lines.append(f"PTI answered but refused: {exc.message} {exc.fix}")
        return check

    check.pti_unit_count = len(pti_units)
    for name in names:
        if not name:
            check.missing += 1
        elif not is_valid_unit_name(name):
            check.invalid.append(name)
        elif name in pti_units:
            check.matched.append(name)
        else:
            check.unknown.append(name)

    check.lines.append(f"PTI is reachable and accepted the site's credentials; it has {len(pti_units)} units.")
    check.lines.append(f"{len(check.matched)} of our {len(names)} units match a PTI unit.")
    if check.missing:
        check.lines.append(f"{check.missing} of our units have no PTI Unit Name, so they are not synced.")
    if check.invalid:
        check.lines.append(f"{len(check.invalid)} PTI Unit Names break PTI's rule (at most 10 characters, no "
                           f"spaces): {_listing(check.invalid)}. Fix them in Storeganise.")
    if check.unknown:
        check.lines.append(f"{len(check.unknown)} PTI Unit Names do not exist in PTI: {_listing(check.unknown)}. "
                           "Make them match the unit names in the PTI dashboard.")
    if check.ok:
        check.lines.append("Everything needed to sync this site is in place.")
    return check


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES_LISTED])
    more = len(names) - MAX_NAMES_LISTED
    return f"{shown} and {more} more" if more > 0 else shown

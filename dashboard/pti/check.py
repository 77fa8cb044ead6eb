"""Check a site's PTI connection: can we reach PTI, do the credentials work, do our unit names exist there, which
access levels and time zones PTI has, and whether the site's defaults are among them.

Backs `flask pti check SITE`; answers in plain lines an admin can act on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from dashboard.pti.client import PtiClient, is_valid_unit_name
from dashboard.pti.errors import PtiError, PtiPermanentError, PtiRetryableError
from dashboard.sync.model import AccessLevel, TimeZone

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
    access_levels: list[AccessLevel] | None = None  # None: not read (PTI failed, or the check stopped earlier)
    time_zones: list[TimeZone] | None = None
    default_access_level_ok: bool | None = None  # the site's default is one PTI lists; None: lists not read
    default_zone_ok: bool | None = None
    error: PtiError | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.reachable and self.credentials_valid and self.error is None
                    and not self.invalid and not self.unknown
                    and self.default_access_level_ok and self.default_zone_ok)


def check_site(client: PtiClient, our_unit_names: Iterable[str | None], *, default_access_level: int | None = None,
               default_zone: int | None = None) -> SiteCheck:
    """Log in, list PTI's units and compare them with our units' PTI Unit Names (None or "" = not set); list PTI's
    access levels and time zones and look for the site's default access level and zone (None = not set) in them."""
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
    check.access_levels = _read_list(check, client.list_access_levels, "access levels")
    if check.access_levels is not None:
        check.default_access_level_ok = _default_listed(check, check.access_levels, default_access_level,
                                                        "access level", "PTI Access Level")
    check.time_zones = _read_list(check, client.list_time_zones, "time zones")
    if check.time_zones is not None:
        check.default_zone_ok = _default_listed(check, check.time_zones, default_zone, "time zone", "PTI zone")
    if check.ok:
        check.lines.append("Everything needed to sync this site is in place.")
    return check


def _read_list(check: SiteCheck, read, nouns: str) -> list | None:
    """PTI's access levels or time zones, with a line naming them; None (and a line saying why) when PTI fails."""
    try:
        items = read()
    except PtiError as exc:
        check.error = check.error or exc
        detail = f" {exc.detail}" if exc.detail else ""
        check.lines.append(f"Could not read PTI's {nouns}: {exc.message}{detail} {exc.fix}")
        return None
    if items:
        check.lines.append(f"PTI has {len(items)} {nouns}: {_choices(items)}.")
    else:
        check.lines.append(f"PTI has no {nouns} for this site: nobody can get in until they are set up in the PTI "
                           "dashboard.")
    return items


def _default_listed(check: SiteCheck, items: list, default: int | None, noun: str, label: str) -> bool:
    """Whether the site's default (its Storeganise `label` field) is one of PTI's; a line with the fix when not."""
    fix = (f"Set the site's {label} in Storeganise to one of PTI's: {_choices(items)}." if items else
           f"Create the {noun}s in the PTI dashboard, then set the site's {label} in Storeganise to one of them.")
    if default is None:
        check.lines.append(f"The site has no {label}, so customers without their own cannot be synced. {fix}")
        return False
    named = {item.id: item.name for item in items}
    if default not in named:
        check.lines.append(f"The site's {label} is {default}, but PTI has no {noun} {default}. {fix}")
        return False
    check.lines.append(f"The site's {label} {default} is PTI's \"{named[default]}\".")
    return True


def _choices(items: list) -> str:
    return _listing([f"{item.id} \"{item.name}\"" for item in items])


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES_LISTED])
    more = len(names) - MAX_NAMES_LISTED
    return f"{shown} and {more} more" if more > 0 else shown

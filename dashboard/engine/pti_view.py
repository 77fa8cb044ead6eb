"""PTI beside us: what PTI holds for one customer at one site, read live now, next to what PTI Sync wants there.

Staff press "Check PTI now" on a rental or customer page. The check reads PTI the way a push does (the same look-up,
`reconcile.observe`, through the site guard, so it never exceeds the site's concurrency or ignores a Retry-After)
and plans against it without applying anything: the plan's operations are exactly what the next push would change.
Nothing is written, to PTI or to the database. An access code is only ever shown masked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime

from ..clients import connection_problem, pti_client, pti_connection
from ..extensions import db
from ..models import PtiAccount, utcnow
from ..pti import PtiError
from ..sync import ActualAccess, DesiredAccess, Outcome, PtiUnit, PtiUser, mask, plan
from .pti_reads import LiveReads
from .reconcile import Caller, Retry, describe, observe, site_guard, snapshot

log = logging.getLogger(__name__)

NOT_IN_PTI = "not in PTI"
CODE_TO_CHOOSE = -1  # stands for the code a push would choose; never sent, never shown


@dataclass(frozen=True)
class Row:
    """One thing both sides hold: what PTI Sync wants, what PTI has, and whether they differ (judged on the values,
    not on the words: two codes that end alike differ all the same)."""

    label: str
    wanted: str
    found: str
    differs: bool


@dataclass(frozen=True)
class Check:
    """The outcome of one live check of an account. `reason` (a catalogue code) says why PTI could not be read or
    why a push would stop (a conflict staff settle); otherwise `rows` compare both sides and `next_push` lists what
    the next push would change (empty: PTI already holds what PTI Sync wants)."""

    account_id: int
    site: str
    checked_at: datetime
    rows: tuple[Row, ...] = ()
    next_push: tuple[str, ...] = ()
    reason: str | None = None
    others: tuple[str, ...] = field(default_factory=tuple)  # PTI users a conflict names, by id

    @property
    def differences(self) -> int:
        return sum(row.differs for row in self.rows)


def check(account: PtiAccount) -> Check:
    """Read PTI for the account now and compare; never raises for PTI trouble (its reason is the answer)."""
    site = account.site
    started = dict(account_id=account.id, site=site.title, checked_at=utcnow())
    try:
        rentals, desired = snapshot(account)
        connection = pti_connection(site)
        if connection is None:
            return Check(**started, reason=connection_problem(site))
        client = pti_client(site, connection)
        identity, actual = observe(LiveReads(Caller(client, site_guard(site)), client), desired, account)
    except Retry as exc:
        return Check(**started, reason=exc.reason)
    except PtiError as exc:
        return Check(**started, reason=exc.reason)
    except Exception:  # noqa: BLE001 - a bug must not take the page down: logged, and said as unexpected
        log.exception("checking PTI for account %s failed unexpectedly", started["account_id"])
        return Check(**started, reason="unexpected_error")
    finally:
        db.session.rollback()  # a check writes nothing, and holds no transaction open while the page renders
    if identity.outcome not in (Outcome.FOUND, Outcome.CREATE):
        return Check(**started, reason=identity.reason, rows=compare(desired, actual, _names(site)),
                     others=tuple(u.id for u in identity.others))
    return Check(**started, rows=compare(desired, actual, _names(site)), next_push=next_push(desired, actual))


def next_push(desired: DesiredAccess, actual: ActualAccess) -> tuple[str, ...]:
    """What the next push would change, in the journal's words. A customer without a code yet gets one first (the
    push chooses and stores it before any PTI call); the plan is then made as if it had one."""
    if not desired.needs_access_code:
        return tuple(describe(op) for op in plan(desired, actual).ops)
    with_code = replace(desired, user=replace(desired.user, access_code=CODE_TO_CHOOSE))
    return ("choose an access code", *(describe(op) for op in plan(with_code, actual).ops))


def compare(desired: DesiredAccess, actual: ActualAccess,
            names: tuple[dict[int, str], dict[int, str]] = ({}, {})) -> tuple[Row, ...]:
    """Both sides, field by field and unit by unit, in words staff read at the keypad; levels and zones with the
    names PTI gives them (`names`: the site's lists, as PTI last answered them), when known."""
    want, user = desired.user, actual.user
    rows = [Row("PTI user", f"a user for {want.email}" if want else "no user", _who(user) if user else "no user",
                differs=(want is None) != (user is None))]
    if want is not None:
        have = user or PtiUser("", None, None, None, None)
        rows += [
            Row("Access code", _code(want.access_code) if want.access_code else "chosen at the next push",
                _code(have.access_code), differs=want.access_code is not None and want.access_code != have.access_code),
            _setting("Access level", want.access_level, have.access_level, names[0]),
            _setting("Time zone", want.time_zone, have.time_zone, names[1]),
        ]
    wanted_units = {unit.name: unit for unit in desired.units}
    for name in sorted(set(wanted_units) | set(actual.units)):
        unit, held = wanted_units.get(name), actual.units.get(name)
        ours = held is not None and user is not None and held.user_id == user.id
        if unit is None:
            rows.append(Row(f"Unit {name}", "not rented to this user", _unit(held, ours), differs=ours))
            continue
        wanted = "rented to this user, " + ("locked" if unit.locked else "unlocked")
        rows.append(Row(f"Unit {name}", wanted, _unit(held, ours), differs=not ours or held.locked != unit.locked))
    return tuple(rows)


def _setting(label: str, wanted: int | None, found: int | None, names: dict[int, str]) -> Row:
    """A level or zone; one Storeganise does not set (None) keeps PTI's, so it never differs."""
    if wanted is None:
        return Row(label, "as PTI has it (not set in Storeganise)", _number(found, names), differs=False)
    return Row(label, _number(wanted, names), _number(found, names), differs=wanted != found)


def _names(site) -> tuple[dict[int, str], dict[int, str]]:
    return tuple({item["id"]: item["name"] for item in listed or ()}
                 for listed in (site.pti_access_levels, site.pti_time_zones))


def _who(user: PtiUser) -> str:
    name = " ".join(part for part in (user.first_name, user.last_name) if part)
    return f"user {user.id}" + (f" ({name})" if name else "")


def _code(code: int | None) -> str:
    return mask(code) if code else "none"


def _number(value: int | None, names: dict[int, str]) -> str:
    if value is None:
        return "not set"
    return f"{value} ({names[value]})" if value in names else str(value)


def _unit(unit: PtiUnit | None, ours: bool) -> str:
    if unit is None:
        return NOT_IN_PTI
    if unit.user_id is None:
        return "vacant"
    if not ours:
        return "rented to another user"
    return "rented to this user, " + ("locked" if unit.locked else "unlocked")

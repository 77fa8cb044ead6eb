"""What PTI should hold for one customer at one site, derived from the mirror of Storeganise (the source of truth).

Adapters build the snapshots from the database; `derive_desired` turns them into `DesiredAccess`, which
`plan.plan` compares with what PTI actually holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from dashboard.sync.codes import DEFAULT_CODE_LENGTH
from dashboard.sync.model import Issue

ACTIVE_STATES = frozenset({"reserved", "occupied"})
MAX_UNIT_NAME_LENGTH = 10


# --- snapshots of the mirror (inputs) -----------------------------------------------------------------------


@dataclass(frozen=True)
class SiteSettings:
    site_id: str
    default_access_level: int | None
    default_zone: int | None
    code_length: int = DEFAULT_CODE_LENGTH


@dataclass(frozen=True)
class CustomerSnapshot:
    customer_id: str
    email: str
    first_name: str
    last_name: str
    access_code: int | None  # chosen and stored before any PTI call; None only before the first move-in
    pti_user_id: str | None
    access_level_override: int | None = None
    zone_override: int | None = None


@dataclass(frozen=True)
class RentalSnapshot:
    rental_id: str
    unit_name: str | None  # the unit's PTI Unit Name
    state: str  # submitted, cancelled, abandoned, reserved, occupied, ended
    overlocked: bool = False
    unit_switched_off: bool = False  # staff set the unit's PTI Unit Name to NONE: never synced, on purpose


# --- desired state (output) ---------------------------------------------------------------------------------


class RentalStatus(StrEnum):
    SYNCABLE = "syncable"
    INACTIVE = "inactive"  # not reserved or occupied: grants no access
    UNIT_UNMAPPED = "unit_unmapped"  # the unit has no PTI Unit Name: not synced
    UNIT_SWITCHED_OFF = "unit_switched_off"  # the unit's PTI Unit Name is NONE: not synced, and not a problem
    INVALID_UNIT_NAME = "invalid_unit_name"  # the PTI Unit Name breaks PTI's naming rule: not synced


@dataclass(frozen=True)
class RentalSync:
    rental_id: str
    unit_name: str | None
    status: RentalStatus


@dataclass(frozen=True)
class DesiredUser:
    """The customer's PTI user. A None code, level or zone means "unknown": PTI's value is kept, no user created."""

    marker: str  # our customer id
    email: str
    first_name: str
    last_name: str
    access_code: int | None
    access_level: int | None
    time_zone: int | None


@dataclass(frozen=True)
class DesiredUnit:
    name: str
    locked: bool
    rental_ids: tuple[str, ...]


@dataclass(frozen=True)
class DesiredAccess:
    """One customer's desired PTI state at one site. `user` is None when the customer should have no access."""

    site_id: str
    customer_id: str
    user: DesiredUser | None
    units: tuple[DesiredUnit, ...]  # sorted by name; empty when `user` is None
    rentals: tuple[RentalSync, ...]
    issues: tuple[Issue, ...]

    @property
    def unit_names(self) -> tuple[str, ...]:
        return tuple(unit.name for unit in self.units)

    @property
    def needs_access_code(self) -> bool:
        """The customer should have a PTI user but no code is stored yet: choose and store one first."""
        return self.user is not None and self.user.access_code is None


def is_valid_unit_name(name: str | None) -> bool:
    """PTI's rule for unit names: 1 to 10 characters, no spaces (the one place the rule is written)."""
    return isinstance(name, str) and 0 < len(name) <= MAX_UNIT_NAME_LENGTH and not any(c.isspace() for c in name)


def rental_status(rental: RentalSnapshot) -> RentalStatus:
    if rental.state not in ACTIVE_STATES:
        return RentalStatus.INACTIVE
    if rental.unit_switched_off:
        return RentalStatus.UNIT_SWITCHED_OFF
    if not (rental.unit_name or "").strip():
        return RentalStatus.UNIT_UNMAPPED
    if not is_valid_unit_name(rental.unit_name):
        return RentalStatus.INVALID_UNIT_NAME
    return RentalStatus.SYNCABLE


def derive_desired(site: SiteSettings, customer: CustomerSnapshot,
                   rentals: Iterable[RentalSnapshot]) -> DesiredAccess:
    """The PTI state that matches Storeganise for `customer` at `site`, given all their rentals there."""
    rentals = list(rentals)
    statuses = [RentalSync(r.rental_id, r.unit_name, rental_status(r)) for r in rentals]
    issues = [Issue(s.status.value, s.rental_id, s.unit_name) for s in statuses
              if s.status in (RentalStatus.UNIT_UNMAPPED, RentalStatus.INVALID_UNIT_NAME)]

    # Two active rentals of one unit (a Storeganise data slip) make one PTI unit, locked if either is overlocked.
    locked: dict[str, bool] = {}
    rental_ids: dict[str, list[str]] = {}
    for rental, sync in zip(rentals, statuses):
        if sync.status is RentalStatus.SYNCABLE:
            locked[rental.unit_name] = locked.get(rental.unit_name, False) or rental.overlocked
            rental_ids.setdefault(rental.unit_name, []).append(rental.rental_id)
    units = tuple(DesiredUnit(name, locked[name], tuple(rental_ids[name])) for name in sorted(locked))
    if not units:
        return DesiredAccess(site.site_id, customer.customer_id, None, (), tuple(statuses), tuple(issues))

    level = _first_set(customer.access_level_override, site.default_access_level)
    zone = _first_set(customer.zone_override, site.default_zone)
    if level is None:
        issues.append(Issue("no_access_level"))
    if zone is None:
        issues.append(Issue("no_zone"))
    user = DesiredUser(marker=customer.customer_id, email=customer.email, first_name=customer.first_name,
                       last_name=customer.last_name, access_code=customer.access_code, access_level=level,
                       time_zone=zone)
    return DesiredAccess(site.site_id, customer.customer_id, user, units, tuple(statuses), tuple(issues))


def _first_set(override: int | None, default: int | None) -> int | None:
    return override if override is not None else default

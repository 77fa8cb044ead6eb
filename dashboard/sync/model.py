"""The vocabulary of the sync core: what Storeganise wants, what PTI has, and the operations between them.

Plain frozen dataclasses, shared by the pure core (which computes) and the adapters (which fetch and apply).
Nothing here imports Flask, Redis or httpx.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

# --- what PTI holds (actual state) -------------------------------------------------------------------------


@dataclass(frozen=True)
class PtiUser:
    """A PTI user: anyone who uses a keypad. `marker` is our customer id when this product created it."""

    id: str
    email: str | None
    access_code: int | None
    access_level: int | None
    time_zone: int | None
    first_name: str = ""
    last_name: str = ""
    marker: str | None = None
    units: tuple[str, ...] = ()


class UnitStatus(StrEnum):
    VACANT = "vacant"
    RENTED = "rented"


@dataclass(frozen=True)
class PtiUnit:
    """A unit as PTI sees it. Units are pre-created in PTI; integrations never create them."""

    name: str
    status: UnitStatus
    locked: bool
    user_id: str | None = None


@dataclass(frozen=True)
class Numbered:
    """One of PTI's numbered profiles, as its list names it."""

    id: int
    name: str


class AccessLevel(Numbered):
    """A PTI access level: an access area × a time schedule. A user with none cannot get in."""


class TimeZone(Numbered):
    """A PTI time zone: a numbered access-hours profile ("24 hours", "business hours"), not a clock zone."""


@dataclass(frozen=True)
class ActualAccess:
    """What PTI holds for one customer: the PTI user chosen for them (see identity.py) and every unit that matters.

    `units` holds the desired units and the units PTI has rented to `user`; a desired unit missing from it does
    not exist in PTI. `holder_markers` gives the marker of every *other* user holding one of those units (user id
    → marker or None); a holder missing from it counts as a user this product did not create.
    """

    user: PtiUser | None
    units: Mapping[str, PtiUnit] = field(default_factory=dict)
    holder_markers: Mapping[str, str | None] = field(default_factory=dict)


# --- findings the core reports next to its operations -------------------------------------------------------


@dataclass(frozen=True)
class Issue:
    """A problem the core found, by its `errors.CATALOGUE` reason, tied to a rental and/or unit when it has one."""

    reason: str
    rental_id: str | None = None
    unit_name: str | None = None


# --- operations the core asks the adapters to apply, in order ---------------------------------------------

# Stands for "the user the CreateUser earlier in this plan made": its PTI id is only known once PTI answers.
NEW_USER = "@new"


@dataclass(frozen=True)
class CreateUser:
    email: str
    first_name: str
    last_name: str
    access_code: int
    access_level: int
    time_zone: int
    marker: str


@dataclass(frozen=True)
class UpdateUser:
    user_id: str
    changes: tuple[tuple[str, object], ...] = field(default_factory=tuple)  # (("access_code", 123456), ...)


@dataclass(frozen=True)
class RemoveUser:
    user_id: str


@dataclass(frozen=True)
class RentUnit:
    unit_name: str
    user_id: str


@dataclass(frozen=True)
class OnUnit:
    """An operation on one unit, named as PTI names it."""

    unit_name: str


class VacateUnit(OnUnit):
    """Free the unit of its user (a move-out, or a unit given up)."""


class LockUnit(OnUnit):
    """Overlock the unit: its user's code no longer opens it."""


class UnlockUnit(OnUnit):
    """Lift the overlock."""


Operation = CreateUser | UpdateUser | RemoveUser | RentUnit | VacateUnit | LockUnit | UnlockUnit

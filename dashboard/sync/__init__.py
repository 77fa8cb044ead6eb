"""The pure sync core: derive what PTI should hold from the mirror of Storeganise, and plan the PTI operations.

Plain Python: nothing here imports Flask, Redis, SQLAlchemy or httpx. Adapters fetch, call `plan`, and apply.
"""

from dashboard.sync.codes import NoFreeCode, generate_code, is_trivial, mask
from dashboard.sync.desired import (
    CustomerSnapshot,
    DesiredAccess,
    DesiredUnit,
    DesiredUser,
    RentalSnapshot,
    RentalStatus,
    RentalSync,
    SiteSettings,
    derive_desired,
    is_valid_unit_name,
)
from dashboard.sync.identity import Decision, Identity, Outcome, resolve
from dashboard.sync.model import (
    NEW_USER,
    AccessLevel,
    ActualAccess,
    CreateUser,
    Issue,
    LockUnit,
    Operation,
    PtiUnit,
    PtiUser,
    RemoveUser,
    RentUnit,
    TimeZone,
    UnitStatus,
    UnlockUnit,
    UpdateUser,
    VacateUnit,
)
from dashboard.sync.plan import Plan, plan

__all__ = [
    "NEW_USER", "AccessLevel", "ActualAccess", "CreateUser", "CustomerSnapshot", "DesiredAccess", "DesiredUnit",
    "DesiredUser", "Decision", "Identity", "Issue", "LockUnit", "NoFreeCode", "Operation", "Outcome", "Plan", "PtiUnit",
    "PtiUser", "RemoveUser", "RentUnit", "RentalSnapshot", "RentalStatus", "RentalSync", "SiteSettings",
    "TimeZone", "UnitStatus", "UnlockUnit", "UpdateUser", "VacateUnit", "derive_desired", "generate_code",
    "is_trivial", "is_valid_unit_name", "mask", "plan", "resolve",
]

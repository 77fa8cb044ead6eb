"""A tiny pure model of one PTI site: applies plan operations to an in-memory state, for tests and benchmarks.

Strict on purpose, so a badly ordered plan fails loudly: renting a unit rented to someone else, removing a user
who still rents units, or reusing another user's code is refused with the catalogue reason PTI's error maps to.
Vacating a vacant unit succeeds (PTI's -22). A unit's lock is independent of who rents it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from dashboard.sync.desired import DesiredAccess
from dashboard.sync.model import (
    NEW_USER,
    ActualAccess,
    CreateUser,
    LockUnit,
    Operation,
    PtiUnit,
    PtiUser,
    RemoveUser,
    RentUnit,
    UnitStatus,
    UnlockUnit,
    UpdateUser,
    VacateUnit,
)


class Rejected(Exception):
    """PTI refused an operation; `reason` is an `errors.CATALOGUE` key."""

    def __init__(self, reason: str, op: Operation):
        super().__init__(f"{reason}: {type(op).__name__}")
        self.reason = reason
        self.op = op


@dataclass(frozen=True)
class PtiState:
    users: dict[str, PtiUser] = field(default_factory=dict)
    units: dict[str, PtiUnit] = field(default_factory=dict)
    next_id: int = 1

    def user_by_code(self, code: int | None) -> PtiUser | None:
        return next((u for u in self.users.values() if code is not None and u.access_code == code), None)

    def user_by_email(self, email: str) -> PtiUser | None:
        return next((u for u in self.users.values() if u.email == email), None)

    def actual_for(self, user_id: str | None, desired: DesiredAccess) -> ActualAccess:
        """What an adapter would read from this PTI for the customer whose user is `user_id`."""
        user = self.users.get(user_id) if user_id is not None else None
        names = set(desired.unit_names) | {n for n, u in self.units.items() if user and u.user_id == user.id}
        units = {n: self.units[n] for n in names if n in self.units}
        holders = {u.user_id: self.users[u.user_id].marker for u in units.values()
                   if u.user_id is not None and u.user_id in self.users and (user is None or u.user_id != user.id)}
        return ActualAccess(user, units, holders)


def apply(state: PtiState, ops: tuple[Operation, ...] | list[Operation]) -> tuple[PtiState, str | None]:
    """The state after `ops`, in order, and the id of the user a CreateUser in them made (NEW_USER's id)."""
    users, units, next_id = dict(state.users), dict(state.units), state.next_id
    new_id: str | None = None

    def user_id(op: Operation, ref: str) -> str:
        uid = new_id if ref == NEW_USER else ref
        if uid is None or uid not in users:
            raise Rejected("user_not_found", op)
        return uid

    def unit(op: Operation, name: str) -> PtiUnit:
        if name not in units:
            raise Rejected("unit_not_found", op)
        return units[name]

    def check_code(op: Operation, code: object, owner: str | None) -> None:
        if any(u.access_code == code and u.id != owner for u in users.values()):
            raise Rejected("duplicate_access_code", op)

    def set_holder(name: str, holder: str | None) -> None:
        old = units[name].user_id
        if old in users:
            users[old] = replace(users[old], units=tuple(n for n in users[old].units if n != name))
        if holder is not None:
            users[holder] = replace(users[holder], units=(*users[holder].units, name))
        status = UnitStatus.VACANT if holder is None else UnitStatus.RENTED
        units[name] = replace(units[name], status=status, user_id=holder)

    for op in ops:
        match op:
            case CreateUser():
                check_code(op, op.access_code, None)
                new_id, next_id = f"pti-{next_id}", next_id + 1
                users[new_id] = PtiUser(new_id, op.email, op.access_code, op.access_level, op.time_zone,
                                        op.first_name, op.last_name, op.marker)
            case UpdateUser():
                uid = user_id(op, op.user_id)
                changes = dict(op.changes)
                if "access_code" in changes:
                    check_code(op, changes["access_code"], uid)
                users[uid] = replace(users[uid], **changes)
            case RemoveUser():
                uid = user_id(op, op.user_id)
                if any(u.user_id == uid for u in units.values()):
                    raise Rejected("pti_rejected", op)
                del users[uid]
            case RentUnit():
                uid = user_id(op, op.user_id)
                if unit(op, op.unit_name).status is UnitStatus.RENTED and units[op.unit_name].user_id != uid:
                    raise Rejected("unit_rented_to_other", op)
                set_holder(op.unit_name, uid)
            case VacateUnit():
                if unit(op, op.unit_name).status is UnitStatus.RENTED:  # -22 on a vacant unit changes nothing
                    set_holder(op.unit_name, None)
                    units[op.unit_name] = replace(units[op.unit_name], locked=False)  # vacating clears the overlock
            case LockUnit() | UnlockUnit():
                units[op.unit_name] = replace(unit(op, op.unit_name), locked=isinstance(op, LockUnit))
    return PtiState(users, units, next_id), new_id

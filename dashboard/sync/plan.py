"""The reconcile step: the ordered PTI operations that turn one customer's actual PTI state into the desired one.

Level-triggered: `plan` looks only at the two states, never at the event that asked for it, so any job may run
twice, late or after a crash. When the states already agree the plan is empty: a converged customer costs
zero PTI writes.

Order, and why:
1. create the user (with code, level, zone and our marker) when PTI has none for the customer;
2. update the user's fields that differ; a user staff chose to adopt (no marker yet) is claimed with it;
3. per desired unit, by name: vacate it from another of our customers' users, rent it, then lock or unlock;
4. vacate the units PTI still has rented to the user that Storeganise no longer grants;
5. remove the user when nothing is desired, and only when it carries our marker.
Access is granted before it is revoked, so a job that dies half-way through a transfer never locks a customer
out; the next run finishes the revocation.
"""

from __future__ import annotations

from dataclasses import dataclass

from dashboard.sync.desired import DesiredAccess, DesiredUnit, DesiredUser
from dashboard.sync.model import (
    NEW_USER,
    ActualAccess,
    CreateUser,
    Issue,
    LockUnit,
    Operation,
    PtiUser,
    RemoveUser,
    RentUnit,
    UnitStatus,
    UnlockUnit,
    UpdateUser,
    VacateUnit,
)

# The user fields a plan keeps in line, in the order they appear in an UpdateUser.
USER_FIELDS = ("email", "first_name", "last_name", "access_code", "access_level", "time_zone")


@dataclass(frozen=True)
class Plan:
    ops: tuple[Operation, ...]
    issues: tuple[Issue, ...]  # the desired state's issues, then those found against PTI

    @property
    def converged(self) -> bool:
        return not self.ops

    def issues_for(self, rental_id: str) -> tuple[Issue, ...]:
        """Issues tied to this rental, plus the customer-wide ones (no rental) that also block it."""
        return tuple(i for i in self.issues if i.rental_id in (rental_id, None))


def plan(desired: DesiredAccess, actual: ActualAccess) -> Plan:
    """The operations that make `actual` equal `desired`, in the order they must be applied."""
    user = actual.user
    if user is not None and user.marker not in (None, desired.customer_id):
        raise ValueError(f"PTI user {user.id} belongs to another customer: identity.resolve never chooses it")
    ops: list[Operation] = []
    issues = list(desired.issues)

    if desired.user is None:
        if user is not None and user.marker == desired.customer_id:
            ops += [VacateUnit(name) for name in sorted(_rented_to(user, actual))]
            ops.append(RemoveUser(user.id))
        return Plan(tuple(ops), tuple(issues))

    # Without a code, level or zone no user can be created: nothing is written, but unit problems still show.
    blocked = False
    if user is None:
        create = _create(desired.user)
        blocked = create is None
        if create is not None:
            ops.append(create)
        elif desired.user.access_code is None:
            issues.append(Issue("no_access_code"))
        user_id = NEW_USER
    else:
        changes = _changes(desired.user, user)
        if changes:
            ops.append(UpdateUser(user.id, changes))
        user_id = user.id

    for unit in desired.units:
        unit_ops, unit_issue = _unit_ops(unit, user_id, actual)
        ops += unit_ops
        issues += [Issue(unit_issue, rental_id, unit.name) for rental_id in unit.rental_ids] if unit_issue else []

    if user is not None:
        stale = _rented_to(user, actual) - set(desired.unit_names)
        ops += [VacateUnit(name) for name in sorted(stale)]
    return Plan(() if blocked else tuple(ops), tuple(issues))


def _create(want: DesiredUser) -> CreateUser | None:
    if want.access_code is None or want.access_level is None or want.time_zone is None:
        return None
    return CreateUser(email=want.email, first_name=want.first_name, last_name=want.last_name,
                      access_code=want.access_code, access_level=want.access_level, time_zone=want.time_zone,
                      marker=want.marker)


def _changes(want: DesiredUser, have: PtiUser) -> tuple[tuple[str, object], ...]:
    """The fields to change; an unknown (None) desired value keeps PTI's. Claims an unmarked user with our marker."""
    changes = [(name, getattr(want, name)) for name in USER_FIELDS
               if getattr(want, name) is not None and getattr(want, name) != getattr(have, name)]
    if have.marker is None:
        changes.append(("marker", want.marker))
    return tuple(changes)


def _unit_ops(unit: DesiredUnit, user_id: str, actual: ActualAccess) -> tuple[list[Operation], str | None]:
    """Operations that give `unit` to the user in the desired lock state, or the reason it cannot be done."""
    have = actual.units.get(unit.name)
    if have is None:
        return [], "unit_not_found"
    ops: list[Operation] = []
    locked = have.locked
    if have.status is not UnitStatus.RENTED or have.user_id != user_id:
        if have.status is UnitStatus.RENTED:
            # Storeganise says the unit is this customer's now: take it from another of our customers, but never
            # from a user we did not create (staff, or a tenant managed by hand in PTI).
            if have.user_id is None or actual.holder_markers.get(have.user_id) is None:
                return [], "unit_rented_to_other"
            ops.append(VacateUnit(unit.name))
            locked = False  # vacating clears the overlock (docs/pti-contract.md)
        ops.append(RentUnit(unit.name, user_id))
    if locked != unit.locked:
        ops.append(LockUnit(unit.name) if unit.locked else UnlockUnit(unit.name))
    return ops, None


def _rented_to(user: PtiUser, actual: ActualAccess) -> set[str]:
    """The units PTI has rented to `user`: the unit records win; the user's own list fills in the rest."""
    by_unit = {name for name, unit in actual.units.items()
               if unit.status is UnitStatus.RENTED and unit.user_id == user.id}
    return by_unit | (set(user.units) - set(actual.units))

"""Level-triggered reconcile converges in one round: after applying a plan, planning again yields nothing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard.sync import (
    CustomerSnapshot,
    PtiUnit,
    PtiUser,
    RemoveUser,
    RentalSnapshot,
    SiteSettings,
    UnitStatus,
    derive_desired,
    plan,
)
from dashboard.sync.simulate import PtiState, apply

CUSTOMER_ID = "cus-ann"
ME = "pti-me"
STRANGER = "pti-stranger"  # a PTI user this product did not create
NEIGHBOUR = "pti-bob"  # another of our customers
PTI_UNITS = ("A1", "A2", "B1", "B2", "C1")
UNIT_NAMES = (*PTI_UNITS, "GONE1", "BAD NAME", None)
STATES = ("submitted", "cancelled", "abandoned", "reserved", "occupied", "ended")
OUR_CODES = (482913, 705318)


@st.composite
def worlds(draw):
    """A PTI site around one customer, and that customer's Storeganise rentals and settings."""
    me = draw(st.none() | st.builds(
        PtiUser, id=st.just(ME), email=st.sampled_from(["ann@example.com", "old@example.com"]),
        access_code=st.sampled_from(OUR_CODES), access_level=st.sampled_from([None, 3, 8]),
        time_zone=st.sampled_from([None, 1, 2]), first_name=st.sampled_from(["Ann", "A."]), last_name=st.just("Lee"),
        marker=st.sampled_from([CUSTOMER_ID, None])))
    holders = [None, STRANGER, NEIGHBOUR] + ([ME] if me else [])
    units = {name: PtiUnit(name, UnitStatus.VACANT, draw(st.booleans())) for name in PTI_UNITS}
    for name in PTI_UNITS:
        holder = draw(st.sampled_from(holders))
        if holder is not None:
            units[name] = PtiUnit(name, UnitStatus.RENTED, units[name].locked, holder)
    users = [PtiUser(STRANGER, "eve@example.com", 900001, 3, 1), PtiUser(NEIGHBOUR, "bob@example.com", 900002, 3,
                                                                        1, marker="cus-bob")] + ([me] if me else [])
    users = {u.id: PtiUser(**(vars(u) | {"units": tuple(n for n, x in units.items() if x.user_id == u.id)}))
             for u in users}

    site = SiteSettings("site-1", draw(st.sampled_from([None, 3])), draw(st.sampled_from([None, 1])))
    customer = CustomerSnapshot(CUSTOMER_ID, "ann@example.com", "Ann", "Lee", draw(st.sampled_from([None, *OUR_CODES])),
                                ME if me else None, draw(st.sampled_from([None, 8])), draw(st.sampled_from([None, 2])))
    rentals = draw(st.lists(st.builds(RentalSnapshot, rental_id=st.uuids().map(str), unit_name=st.sampled_from(
        UNIT_NAMES), state=st.sampled_from(STATES), overlocked=st.booleans()), max_size=5))
    return PtiState(users, units, next_id=100), me.id if me else None, derive_desired(site, customer, rentals)


@settings(max_examples=500)
@given(worlds())
def test_applying_a_plan_converges_in_one_round_and_never_touches_users_we_did_not_create(world):
    before, me, desired = world
    first = plan(desired, before.actual_for(me, desired))
    after, created = apply(before, first.ops)

    me_after = created or (me if me in after.users else None)
    assert plan(desired, after.actual_for(me_after, desired)).ops == ()
    assert after.users[STRANGER] == before.users[STRANGER]
    if me is not None and before.users[me].marker is None:
        assert RemoveUser(me) not in first.ops


@settings(max_examples=500)
@given(worlds())
def test_after_one_round_pti_matches_what_storeganise_says(world):
    """Checked against the desired state directly, not by planning again, so an oversight cannot hide itself."""
    before, me, desired = world
    first = plan(desired, before.actual_for(me, desired))
    after, created = apply(before, first.ops)
    me_after = created or (me if me in after.users else None)
    reasons = {issue.reason for issue in first.issues}

    if desired.user is None:
        assert me_after == (me if me is not None and before.users[me].marker is None else None)
        return
    if me_after is None:
        assert reasons & {"no_access_level", "no_zone", "no_access_code"}
        return
    user, want = after.users[me_after], desired.user
    assert user.marker == CUSTOMER_ID
    for name in ("email", "first_name", "last_name", "access_code", "access_level", "time_zone"):
        assert getattr(want, name) in (None, getattr(user, name))
    blocked = {issue.unit_name for issue in first.issues}
    granted = {unit.name for unit in desired.units if unit.name not in blocked}
    assert {name for name, unit in after.units.items() if unit.user_id == me_after} == granted
    for unit in desired.units:
        if unit.name in granted:
            assert after.units[unit.name].locked is unit.locked

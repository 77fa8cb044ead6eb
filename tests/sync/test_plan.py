"""The reconcile plan, behaviour by behaviour (domain.md "Behaviours"), from Storeganise rentals and PTI state."""

from __future__ import annotations

import pytest

from dashboard.sync import (
    NEW_USER,
    CreateUser,
    Issue,
    LockUnit,
    PtiUser,
    RemoveUser,
    RentUnit,
    SiteSettings,
    UnlockUnit,
    UpdateUser,
    VacateUnit,
    derive_desired,
    plan,
)
from dashboard.sync.errors import CATALOGUE
from tests.sync.factories import (
    CODE,
    CUSTOMER_ID,
    LEVEL,
    SITE,
    USER_ID,
    ZONE,
    actual,
    customer,
    plan_for,
    pti_user,
    rental,
    rented,
    vacant,
)

NEW_CREATE = CreateUser(email="ann@example.com", first_name="Ann", last_name="Lee", access_code=CODE,
                        access_level=LEVEL, time_zone=ZONE, marker=CUSTOMER_ID)


# --- 1. move-in -----------------------------------------------------------------------------------------------


def test_move_in_of_a_new_customer_creates_their_user_and_rents_the_unit_to_it():
    result = plan_for([rental("A101")], actual(None, vacant("A101")), customer(pti_user_id=None))
    assert result.ops == (NEW_CREATE, RentUnit("A101", NEW_USER))
    assert result.issues == ()


def test_move_in_into_a_unit_left_locked_unlocks_it():
    result = plan_for([rental("A101")], actual(None, vacant("A101", locked=True)), customer(pti_user_id=None))
    assert result.ops == (NEW_CREATE, RentUnit("A101", NEW_USER), UnlockUnit("A101"))


def test_move_in_of_a_customer_found_in_pti_by_email_updates_and_claims_that_user():
    found = pti_user(access_code=111999, access_level=None, time_zone=None, first_name="A.", marker=None)
    result = plan_for([rental("A101")], actual(found, vacant("A101")), customer(pti_user_id=None))
    assert result.ops == (
        UpdateUser(USER_ID, (("first_name", "Ann"), ("access_code", CODE), ("access_level", LEVEL),
                             ("time_zone", ZONE), ("marker", CUSTOMER_ID))),
        RentUnit("A101", USER_ID),
    )


def test_reserved_rental_grants_access_like_an_occupied_one():
    result = plan_for([rental("A101", state="reserved")], actual(pti_user(), vacant("A101")))
    assert result.ops == (RentUnit("A101", USER_ID),)


# --- 2. several units, one code --------------------------------------------------------------------------------


def test_customer_with_several_units_gets_one_user_with_one_code_renting_every_unit():
    rentals = [rental("A101"), rental("B7"), rental("C12")]
    world = actual(None, vacant("A101"), vacant("B7"), vacant("C12"))
    result = plan_for(rentals, world, customer(pti_user_id=None))
    assert result.ops == (NEW_CREATE, RentUnit("A101", NEW_USER), RentUnit("B7", NEW_USER),
                          RentUnit("C12", NEW_USER))


def test_second_move_in_rents_the_new_unit_to_the_existing_user_without_touching_the_code():
    world = actual(pti_user("A101"), rented("A101"), vacant("B7"))
    assert plan_for([rental("A101"), rental("B7")], world).ops == (RentUnit("B7", USER_ID),)


# --- 3. move-out -------------------------------------------------------------------------------------------------


def test_move_out_of_one_of_several_units_vacates_only_that_unit():
    world = actual(pti_user("A101", "B7"), rented("A101"), rented("B7"))
    result = plan_for([rental("A101"), rental("B7", state="ended")], world)
    assert result.ops == (VacateUnit("B7"),)


def test_move_out_of_the_last_unit_vacates_it_and_removes_the_user():
    world = actual(pti_user("A101"), rented("A101"))
    assert plan_for([rental("A101", state="ended")], world).ops == (VacateUnit("A101"), RemoveUser(USER_ID))


def test_move_out_of_the_last_mapped_unit_removes_the_user_even_if_an_unmapped_rental_stays_active():
    world = actual(pti_user("A101"), rented("A101"))
    result = plan_for([rental("A101", state="ended"), rental(None, rental_id="r-shed")], world)
    assert result.ops == (VacateUnit("A101"), RemoveUser(USER_ID))
    assert result.issues == (Issue("unit_unmapped", "r-shed", None),)


def test_move_out_vacates_units_known_only_from_the_users_own_list():
    world = actual(pti_user("A101", "Z9"), rented("A101"))
    assert plan_for([rental("A101", state="ended")], world).ops == (
        VacateUnit("A101"), VacateUnit("Z9"), RemoveUser(USER_ID))


def test_users_without_our_marker_are_never_removed():
    world = actual(pti_user("A101", marker=None), rented("A101"))
    assert plan_for([rental("A101", state="ended")], world).ops == ()


def test_customer_with_nothing_at_the_site_and_no_pti_user_plans_nothing():
    assert plan_for([rental("A101", state="cancelled")], actual(None)).ops == ()


# --- 4. transfer -------------------------------------------------------------------------------------------------


def test_transfer_rents_the_new_unit_then_vacates_the_old_one_with_the_same_code():
    world = actual(pti_user("A101"), rented("A101"), vacant("B7"))
    result = plan_for([rental("A101", state="ended"), rental("B7")], world)
    assert result.ops == (RentUnit("B7", USER_ID), VacateUnit("A101"))


def test_transfer_of_an_overlocked_rental_keeps_the_new_unit_locked():
    world = actual(pti_user("A101"), rented("A101", locked=True), vacant("B7"))
    result = plan_for([rental("A101", state="ended"), rental("B7", overlocked=True)], world)
    assert result.ops == (RentUnit("B7", USER_ID), LockUnit("B7"), VacateUnit("A101"))


# --- 5 and 6. overdue, payment, manual suspend ---------------------------------------------------------------------


def test_overdue_locks_only_the_overdue_unit_while_another_is_paid():
    world = actual(pti_user("A101", "B7"), rented("A101"), rented("B7"))
    result = plan_for([rental("A101"), rental("B7", overlocked=True)], world)
    assert result.ops == (LockUnit("B7"),)


def test_payment_unlocks_the_unit_at_once():
    world = actual(pti_user("A101"), rented("A101", locked=True))
    assert plan_for([rental("A101", overlocked=False)], world).ops == (UnlockUnit("A101"),)


@pytest.mark.parametrize(("overlocked", "locked_in_pti", "expected"), [
    (True, False, (LockUnit("A101"),)),  # staff suspend
    (False, True, (UnlockUnit("A101"),)),  # staff unsuspend
    (True, True, ()),  # a later resync keeps the suspension
])
def test_manual_suspend_and_unsuspend_follow_the_recorded_overlocked_flag(overlocked, locked_in_pti, expected):
    world = actual(pti_user("A101"), rented("A101", locked=locked_in_pti))
    assert plan_for([rental("A101", overlocked=overlocked)], world).ops == expected


# --- 7. resync ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rentals", "world"), [
    pytest.param([rental("A101")], actual(pti_user("A101"), rented("A101")), id="one unit"),
    pytest.param([rental("A101"), rental("B7", overlocked=True)],
                 actual(pti_user("A101", "B7"), rented("A101"), rented("B7", locked=True)), id="two units, one locked"),
    pytest.param([rental("A101", state="ended")], actual(None), id="moved out, user gone"),
    pytest.param([rental("A101", state="ended")], actual(None, vacant("A101", locked=True)), id="left locked"),
    pytest.param([rental(None)], actual(None), id="only an unmapped unit"),
])
def test_a_converged_customer_plans_zero_operations(rentals, world):
    assert plan_for(rentals, world).converged


def test_resync_repairs_changes_made_by_hand_in_pti():
    drifted = pti_user("A101", "X1", access_code=999111, time_zone=4)
    world = actual(drifted, rented("A101", locked=True), rented("X1"))
    assert plan_for([rental("A101")], world).ops == (
        UpdateUser(USER_ID, (("access_code", CODE), ("time_zone", ZONE))), UnlockUnit("A101"), VacateUnit("X1"))


# --- 8. regenerate access code --------------------------------------------------------------------------------


def test_regenerated_code_is_one_user_update_and_every_unit_keeps_its_lock_state():
    world = actual(pti_user("A101", "B7", access_code=CODE), rented("A101"), rented("B7", locked=True))
    result = plan_for([rental("A101"), rental("B7", overlocked=True)], world, customer(access_code=705318))
    assert result.ops == (UpdateUser(USER_ID, (("access_code", 705318),)),)


# --- 9. access level and zone overrides -------------------------------------------------------------------------


def test_access_level_and_zone_overrides_are_pushed_to_the_existing_user():
    world = actual(pti_user("A101"), rented("A101"))
    who = customer(access_level_override=8, zone_override=2)
    assert plan_for([rental("A101")], world, who).ops == (
        UpdateUser(USER_ID, (("access_level", 8), ("time_zone", 2))),)


def test_missing_access_level_or_zone_creates_no_user_and_reports_why():
    site = SiteSettings("site-1", default_access_level=None, default_zone=None)
    result = plan_for([rental("A101")], actual(None, vacant("A101")), customer(pti_user_id=None), site)
    assert result.ops == ()
    assert result.issues == (Issue("no_access_level"), Issue("no_zone"))


def test_missing_access_level_keeps_the_users_level_in_pti_and_still_locks_overdue_units():
    site = SiteSettings("site-1", default_access_level=None, default_zone=ZONE)
    world = actual(pti_user("A101"), rented("A101"))
    result = plan_for([rental("A101", overlocked=True)], world, site=site)
    assert result.ops == (LockUnit("A101"),)
    assert result.issues == (Issue("no_access_level"),)


def test_customer_without_a_stored_code_gets_no_user_until_one_is_chosen():
    desired = derive_desired(SITE, customer(access_code=None, pti_user_id=None), [rental("A101")])
    result = plan(desired, actual(None, vacant("A101")))
    assert desired.needs_access_code
    assert (result.ops, result.issues) == ((), (Issue("no_access_code"),))


# --- units PTI cannot take, or that someone else holds -----------------------------------------------------------


def test_unmapped_and_invalidly_named_units_are_not_synced_but_reported_on_their_rental():
    rentals = [rental("A101"), rental(None, rental_id="r-shed"), rental("BAY 12", rental_id="r-bay")]
    result = plan_for(rentals, actual(pti_user("A101"), rented("A101")))
    assert result.ops == ()
    assert result.issues_for("r-shed") == (Issue("unit_unmapped", "r-shed", None),)
    assert result.issues_for("r-bay") == (Issue("invalid_unit_name", "r-bay", "BAY 12"),)
    assert result.issues_for("r-A101") == ()


def test_unit_missing_in_pti_is_reported_as_not_found_and_the_other_units_still_sync():
    result = plan_for([rental("A101"), rental("GONE1")], actual(pti_user(), vacant("A101")))
    assert result.ops == (RentUnit("A101", USER_ID),)
    assert result.issues == (Issue("unit_not_found", "r-GONE1", "GONE1"),)


def test_unit_rented_to_another_of_our_customers_is_vacated_and_rented_to_this_one():
    world = actual(pti_user(), rented("A101", user_id="pti-9", locked=True), holders={"pti-9": "cus-bob"})
    # Vacating clears the overlock (docs/pti-contract.md), so the other customer's lock needs no unlock.
    assert plan_for([rental("A101")], world).ops == (VacateUnit("A101"), RentUnit("A101", USER_ID))


def test_a_taken_over_unit_that_must_stay_locked_is_locked_again_after_the_vacate():
    world = actual(pti_user(), rented("A101", user_id="pti-9", locked=True), holders={"pti-9": "cus-bob"})
    assert plan_for([rental("A101", overlocked=True)], world).ops == (
        VacateUnit("A101"), RentUnit("A101", USER_ID), LockUnit("A101"))


@pytest.mark.parametrize("holders", [{"pti-9": None}, {}], ids=["holder without marker", "holder unknown"])
def test_unit_rented_to_a_user_we_did_not_create_is_left_alone_and_reported(holders):
    world = actual(pti_user(), rented("A101", user_id="pti-9"), vacant("B7"), holders=holders)
    result = plan_for([rental("A101"), rental("B7")], world)
    assert result.ops == (RentUnit("B7", USER_ID),)
    assert result.issues == (Issue("unit_rented_to_other", "r-A101", "A101"),)


def test_plan_refuses_a_pti_user_that_carries_another_customers_marker():
    with pytest.raises(ValueError, match="another customer"):
        plan_for([rental("A101")], actual(pti_user("A101", marker="cus-bob"), rented("A101")))


# --- 11. sync status -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("user", [None, PtiUser("x", None, None, None, None, marker=None)])
def test_every_reason_the_core_reports_has_plain_words_and_a_fix_in_the_catalogue(user):
    site = SiteSettings("site-1", default_access_level=None, default_zone=None)
    rentals = [rental(None), rental("BAD NAME"), rental("GONE1"), rental("A101")]
    desired = derive_desired(site, customer(access_code=None), rentals)
    result = plan(desired, actual(user, rented("A101", user_id="pti-9")))
    reasons = {issue.reason for issue in result.issues}
    assert reasons <= CATALOGUE.keys()
    assert {"unit_unmapped", "invalid_unit_name", "unit_not_found", "unit_rented_to_other", "no_access_level",
            "no_zone"} <= reasons

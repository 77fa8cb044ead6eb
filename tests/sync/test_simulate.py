"""The in-memory PTI model is strict, so a badly ordered plan fails loudly in tests."""

from __future__ import annotations

import pytest

from dashboard.sync import NEW_USER, CreateUser, LockUnit, RemoveUser, RentUnit, UnitStatus, UpdateUser, VacateUnit
from dashboard.sync.simulate import PtiState, Rejected, apply
from tests.sync.factories import USER_ID, pti_user, rented, vacant

CREATE = CreateUser("ann@example.com", "Ann", "Lee", 482913, 3, 1, "cus-ann")


def state(*units, users=()):
    return PtiState({u.id: u for u in users}, {u.name: u for u in units})


def test_a_created_user_is_what_new_user_stands_for_in_later_operations():
    after, new_id = apply(state(vacant("A101")), [CREATE, RentUnit("A101", NEW_USER), LockUnit("A101")])
    assert after.units["A101"] == rented("A101", user_id=new_id, locked=True)
    assert after.users[new_id].units == ("A101",)
    assert after.user_by_code(482913).marker == "cus-ann"


def test_vacating_a_vacant_unit_succeeds_like_ptis_minus_22():
    after, _ = apply(state(vacant("A101", locked=True)), [VacateUnit("A101")])
    assert after.units["A101"] == vacant("A101", locked=True)


def test_vacating_takes_the_unit_off_its_users_list():
    after, _ = apply(state(rented("A101"), users=[pti_user("A101")]), [VacateUnit("A101")])
    assert (after.units["A101"].status, after.users[USER_ID].units) == (UnitStatus.VACANT, ())


@pytest.mark.parametrize(("start", "ops", "reason"), [
    (state(rented("A101", "pti-9"), users=[pti_user()]), [RentUnit("A101", USER_ID)], "unit_rented_to_other"),
    (state(rented("A101"), users=[pti_user("A101")]), [RemoveUser(USER_ID)], "pti_rejected"),
    (state(users=[pti_user()]), [CREATE], "duplicate_access_code"),
    (state(users=[pti_user(), pti_user(id="pti-8", access_code=1)]),
     [UpdateUser("pti-8", (("access_code", 482913),))], "duplicate_access_code"),
    (state(users=[pti_user()]), [RentUnit("A101", USER_ID)], "unit_not_found"),
    (state(vacant("A101")), [RentUnit("A101", "pti-404")], "user_not_found"),
    (state(vacant("A101")), [RentUnit("A101", NEW_USER)], "user_not_found"),
])
def test_operations_pti_would_refuse_are_rejected_with_their_reason(start, ops, reason):
    with pytest.raises(Rejected) as refused:
        apply(start, ops)
    assert refused.value.reason == reason

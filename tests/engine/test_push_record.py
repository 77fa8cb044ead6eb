"""A lock or unlock planned from what the customer's last push left in PTI (pti_accounts.pushed).

A payment's unlock and an overdue's lock cost one PTI call, the lock itself, once the customer's last push
succeeded; an answer that does not show the unit rented to the customer in the state asked for, a refusal, a
failed push or anything more than locks and unlocks sends the customer to live reads, which put PTI right.
"""

from __future__ import annotations

import pytest

from dashboard.engine.intent import mark_dirty
from dashboard.engine.pti_reads import PushRecord
from dashboard.engine.reconcile import reconcile
from dashboard.extensions import db
from dashboard.models import SyncState
from tests.engine.conftest import account_of, by_hand, customer_with, pushed, site

READS = {"get_user", "get_unit", "find_users_by_email", "find_user_by_access_code", "list_users", "list_units"}


def push_now(customer, urgent: bool = True):
    account = mark_dirty(customer, site("northgate").id, urgent=urgent)
    db.session.commit()
    return reconcile(account.id, "test")


def calls_since(pti, before: int) -> list[tuple[str, str | None]]:
    return [(c["operation"], c["unit_name"]) for c in pti.calls()[before:] if c["operation"] != "login"]


def test_an_overdue_lock_and_a_payment_unlock_cost_one_pti_call_each(business, pti):
    customer = customer_with(2)
    account = pushed(customer)
    assert account.pushed["user"]["id"] == account.pti_user_id
    late = customer.rentals[0]
    name = late.unit.pti_unit_name

    before = len(pti.calls())
    late.overlocked = True
    assert push_now(customer).outcome == "ok"
    assert calls_since(pti, before) == [("lock_unit", name)]
    assert pti.unit("NG01", name)["locked"] is True
    assert account_of(customer).pushed["units"][name] is True

    before = len(pti.calls())
    late.overlocked = False
    assert push_now(customer).outcome == "ok"
    assert calls_since(pti, before) == [("unlock_unit", name)]
    assert pti.unit("NG01", name)["locked"] is False
    account = account_of(customer)
    assert account.state == SyncState.IN_SYNC and account.synced_generation == account.generation
    assert all(r.sync_state == SyncState.IN_SYNC for r in customer.rentals)


def test_a_payment_for_a_unit_vacated_by_hand_in_pti_reads_pti_and_gives_the_unit_back_unlocked(business, pti):
    customer = customer_with(1)
    rental = customer.rentals[0]
    rental.overlocked = True
    account = pushed(customer)
    name = rental.unit.pti_unit_name
    with by_hand(pti) as staff:
        staff.vacate_unit(name)  # behind our back: vacant, and the overlock is gone with it

    before = len(pti.calls())
    rental.overlocked = False
    assert push_now(customer).outcome == "ok"
    ops = calls_since(pti, before)
    assert ops[0] == ("unlock_unit", name)  # PTI answers -22: vacant, not the customer's
    assert {op for op, _ in ops} & READS, "the record was wrong: the customer is read live"
    assert ("rent_unit", name) in ops
    assert pti.unit("NG01", name) == {"name": name, "status": "rented", "locked": False,
                                      "user_id": account.pti_user_id}
    assert account_of(customer).pushed["units"] == {name: False}


def test_an_overdue_lock_for_a_unit_vacated_by_hand_rents_it_back_locked(business, pti):
    customer = customer_with(1)
    rental = customer.rentals[0]
    account = pushed(customer)
    name = rental.unit.pti_unit_name
    with by_hand(pti) as staff:
        staff.vacate_unit(name)

    rental.overlocked = True
    assert push_now(customer).outcome == "ok"
    assert pti.unit("NG01", name) == {"name": name, "status": "rented", "locked": True,
                                      "user_id": account.pti_user_id}


def test_a_push_with_nothing_new_in_the_record_still_reads_pti_and_undoes_a_lock_made_by_hand(business, pti):
    """A resync asks for PTI's truth: the record plans locks and unlocks alone, never "nothing to do"."""
    customer = customer_with(1)
    pushed(customer)
    name = customer.rentals[0].unit.pti_unit_name
    with by_hand(pti) as staff:
        staff.lock_unit(name)

    before = len(pti.calls())
    assert push_now(customer, urgent=False).outcome == "ok"
    ops = calls_since(pti, before)
    assert ("get_unit", name) in ops and ("unlock_unit", name) in ops
    assert pti.unit("NG01", name)["locked"] is False


def test_a_failed_push_forgets_the_record_and_the_next_lock_reads_pti(business, pti):
    customer = customer_with(1)
    rental = customer.rentals[0]
    pushed(customer)
    pti.faults(error_rate=1.0)
    rental.overlocked = True
    assert push_now(customer).outcome == "retry"
    assert account_of(customer).pushed is None

    pti.faults()
    before = len(pti.calls())
    assert push_now(customer).outcome == "ok"
    ops = calls_since(pti, before)
    assert ops[-1] == ("lock_unit", rental.unit.pti_unit_name) and {op for op, _ in ops} & READS
    assert pti.unit("NG01", rental.unit.pti_unit_name)["locked"] is True


def test_a_new_access_code_is_not_planned_from_the_record(business, pti):
    from dashboard.engine.reconcile import choose_code

    customer = customer_with(1)
    account = pushed(customer)
    old = account.access_code
    account.access_code = choose_code(account, exclude={old})
    customer.rentals[0].overlocked = True
    before = len(pti.calls())
    assert push_now(customer).outcome == "ok"
    ops = {op for op, _ in calls_since(pti, before)}
    assert "update_user" in ops and "lock_unit" in ops and ops & READS
    user = pti.user_with_marker("NG01", customer.sg_id)
    assert user["access_code"] == account.access_code != old


@pytest.mark.parametrize("record", [
    None, {}, {"user": None, "units": {}}, {"user": {"id": "1001"}, "units": {}},
    {"user": {"id": "1001", "email": "a@b.c", "first_name": "", "last_name": "", "access_code": 123456,
              "access_level": 1, "time_zone": 1}, "units": ["A101"]},
])
def test_an_unreadable_record_is_no_record(record):
    assert PushRecord.of(record, "1001", 123456, "cust-1") is None


def test_a_record_for_another_user_or_code_is_no_record():
    record = {"user": {"id": "1001", "email": "a@b.c", "first_name": "A", "last_name": "B", "access_code": 123456,
                       "access_level": 1, "time_zone": 1}, "units": {"A101": True}}
    assert PushRecord.of(record, "1001", 123456, "cust-1") is not None
    assert PushRecord.of(record, "1002", 123456, "cust-1") is None
    assert PushRecord.of(record, "1001", 654321, "cust-1") is None
    assert PushRecord.of(record, None, 123456, "cust-1") is None

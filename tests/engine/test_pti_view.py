"""PTI beside us: "Check PTI now" reads PTI live, compares it with what PTI Sync wants, and changes nothing."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from dashboard.engine import pti_view
from dashboard.engine.intent import mark_dirty
from dashboard.engine.reconcile import reconcile
from dashboard.extensions import db
from dashboard.models import Rental, SyncAttempt
from tests.engine.conftest import account_of, by_hand, customer_with, site


def _push(customer, site_code: str = "northgate"):
    account = mark_dirty(customer, site(site_code).id)
    db.session.commit()
    return reconcile(account.id, "test")


def _locked_by_hand(pti):
    """A customer pushed to PTI whose unit someone then locked by hand in PTI: (customer, account, unit)."""
    customer = customer_with(1, overdue=False)
    _push(customer)
    unit = customer.rentals[0].unit.pti_unit_name
    with by_hand(pti) as client:
        client.lock_unit(unit)
    return customer, account_of(customer), unit


def _rows(check) -> dict[str, pti_view.Row]:
    return {row.label: row for row in check.rows}


def test_a_customer_in_sync_shows_both_sides_alike_and_nothing_to_push(business, pti):
    customer = customer_with(1, overdue=False)
    _push(customer)
    account = account_of(customer)
    unit = customer.rentals[0].unit.pti_unit_name
    writes = pti.writes()

    check = pti_view.check(account)

    assert check.reason is None and check.differences == 0 and check.next_push == ()
    rows = _rows(check)
    assert rows["PTI user"].found.startswith(f"user {account.pti_user_id}")
    assert rows["Access code"].wanted == rows["Access code"].found == "•••" + str(account.access_code)[-3:]
    assert rows[f"Unit {unit}"].found == "rented to this user, unlocked"
    level = site("northgate").default_access_level
    name = next(item["name"] for item in site("northgate").pti_access_levels if item["id"] == level)
    assert rows["Access level"].wanted == rows["Access level"].found == f"{level} ({name})"  # PTI's own name
    assert pti.writes() == writes  # a check only reads


def test_a_unit_locked_by_hand_in_pti_differs_and_the_next_push_would_unlock_it(business, pti):
    customer, account, unit = _locked_by_hand(pti)
    generation = account.generation
    journal = db.session.scalar(select(func.count()).select_from(SyncAttempt))

    check = pti_view.check(account)

    row = _rows(check)[f"Unit {unit}"]
    assert (row.wanted, row.found, row.differs) == ("rented to this user, unlocked", "rented to this user, locked",
                                                    True)
    assert check.differences == 1 and check.next_push == (f"unlock {unit}",)
    # Nothing owed, nothing journalled: the check is not a push.
    db.session.expire_all()
    assert account_of(customer).generation == generation
    assert db.session.scalar(select(func.count()).select_from(SyncAttempt)) == journal
    assert pti.unit("NG01", unit)["locked"] is True


def test_codes_that_end_alike_still_differ(business, pti):
    customer = customer_with(1, overdue=False)
    _push(customer)
    account = account_of(customer)
    other = int(str(account.access_code)[:-4] + str((int(str(account.access_code)[-4]) + 1) % 10)
                + str(account.access_code)[-3:])
    with by_hand(pti) as client:
        client.update_user(account.pti_user_id, access_code=other)

    row = _rows(pti_view.check(account))["Access code"]

    assert row.wanted == row.found and row.differs  # the same last three digits, a different code


def test_a_customer_not_pushed_yet_shows_the_user_a_push_would_create(business, pti):
    customer = customer_with(1, overdue=False)
    mark_dirty(customer, site("northgate").id)
    db.session.commit()

    check = pti_view.check(account_of(customer))

    row = _rows(check)["PTI user"]
    assert (row.wanted, row.found, row.differs) == (f"a user for {customer.email}", "no user", True)
    unit = customer.rentals[0].unit.pti_unit_name
    assert check.next_push == ("choose an access code", "create user", f"rent {unit}")
    assert _rows(check)["Access code"].wanted == "chosen at the next push"
    assert pti.user_with_marker("NG01", customer.sg_id) is None


def test_a_conflict_a_push_would_stop_on_is_said_with_the_pti_users_in_question(business, pti):
    customer = customer_with(1, overdue=False)
    account = _push(customer) and account_of(customer)
    with by_hand(pti) as client:  # someone copied the customer's PTI user, our mark and all
        copy = client.create_user(email=customer.email, first_name="A", last_name="Copy", access_code=917265,
                                  access_level=1, time_zone=1, marker=customer.sg_id)
    account.pti_user_id = None  # as if the mirror had lost which one is theirs
    db.session.commit()

    check = pti_view.check(account)

    assert check.reason == "duplicate_pti_users" and copy.id in check.others and check.next_push == ()


def test_a_site_pti_refuses_says_why_in_plain_words(business, pti):
    rental = db.session.scalar(select(Rental).where(Rental.site_id == site("hilltop").id,
                                                    Rental.state == "occupied"))
    mark_dirty(rental.customer, rental.site_id)
    db.session.commit()

    check = pti_view.check(account_of(rental.customer, "hilltop"))

    assert check.reason == "invalid_credentials" and check.rows == ()


def test_the_pages_check_pti_for_every_role_and_never_show_a_whole_code(business, pti, auth, client):
    customer, account, unit = _locked_by_hand(pti)
    auth.login("manager")
    token = auth.csrf_token(f"/customers/{customer.id}")

    fragment = client.post(f"/rentals/{customer.rentals[0].id}/check-pti", data={"csrf_token": token},
                           headers={"HX-Request": "true"}).get_data(as_text=True)
    page = client.post(f"/customers/{customer.id}/accounts/{account.id}/check-pti",
                       data={"csrf_token": token}).get_data(as_text=True)

    assert 'data-differences="1"' in fragment and f"unlock {unit}" in fragment
    assert "<html" not in fragment and "<html" in page and f"unlock {unit}" in page
    for html in (fragment, page):
        assert str(account.access_code) not in re.sub(r"<[^>]+>", " ", html)
        assert 'data-differs="yes"' in html


def test_a_rental_whose_customer_was_never_pushed_has_nothing_to_compare(demo_business, auth, client):
    rental = db.session.scalar(select(Rental).order_by(Rental.id))
    auth.login("staff")
    answer = client.post(f"/rentals/{rental.id}/check-pti", data={"csrf_token": auth.csrf_token("/")},
                         headers={"HX-Request": "true"})
    assert answer.status_code == 200 and "Nothing to compare yet" in answer.get_data(as_text=True)

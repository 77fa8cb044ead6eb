"""A push's database work does not grow with the customer's rentals: the commits a push makes along the way (the
access code it chose, the PTI user it created) keep what the push has read, so nothing is read a second time."""

from __future__ import annotations

from dashboard.engine.intent import mark_dirty
from dashboard.engine.reconcile import reconcile
from dashboard.extensions import db
from tests.conftest import sql_statements
from tests.engine.conftest import customer_with, pushed, site


def first_push(customer) -> list[str]:
    account = mark_dirty(customer, site("northgate").id)
    db.session.commit()
    db.session.expire_all()
    with sql_statements() as sent:
        assert reconcile(account.id, "test").outcome == "ok"
    return sent


def test_a_first_push_costs_the_same_statements_for_one_rental_as_for_two(business, pti):
    pushed(customer_with(1, overdue=True))  # the site's access levels and zones are read once, by an earlier push
    one, two = customer_with(1, overdue=False), customer_with(2, overdue=False)
    assert one.id != two.id
    one_rental, two_rentals = first_push(one), first_push(two)
    assert len(two_rentals) == len(one_rental), "\n".join(two_rentals)
    # The account, its site and its customer come in one statement: neither is read on its own.
    assert not [s for s in two_rentals if s.startswith(("select sites", "select customers"))]

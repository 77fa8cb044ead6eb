"""How a push chooses a new access code: never one its site holds, without reading every code of the site."""

from __future__ import annotations

from sqlalchemy import select

from dashboard.engine import reconcile as engine
from dashboard.engine.intent import mark_dirty
from dashboard.engine.reconcile import LOOKED_UP_DRAWS, choose_code
from dashboard.extensions import db
from dashboard.models import Customer, PtiAccount
from dashboard.sync.codes import is_trivial
from tests.conftest import sql_statements
from tests.engine.conftest import account_of, pushed, site


def codes_at_northgate() -> list[int]:
    return sorted(db.session.scalars(select(PtiAccount.access_code).where(
        PtiAccount.site_id == site("northgate").id, PtiAccount.access_code.is_not(None))))


def new_account() -> PtiAccount:
    """An account at Northgate with no code yet, for a customer with none anywhere; the site holding a few codes."""
    customers = db.session.scalars(select(Customer).order_by(Customer.id)).all()
    for customer in customers[:LOOKED_UP_DRAWS + 1]:
        pushed(customer)
    customer = customers[-1]
    account = mark_dirty(customer, site("northgate").id)
    account.access_code, customer.pti_access_code = None, None
    db.session.commit()
    return account


def drawing(monkeypatch, codes: list[int]) -> list[set]:
    """Make the next draws these codes (then real ones); returns what each draw was told was taken."""
    told, queued, real = [], list(codes), engine.generate_code

    def draw(length, taken):
        told.append(set(taken))
        return queued.pop(0) if queued else real(length, taken)

    monkeypatch.setattr(engine, "generate_code", draw)
    return told


def test_a_code_is_chosen_by_looking_up_the_one_drawn_not_every_code_of_the_site(business, pti):
    account = new_account()
    held = codes_at_northgate()
    assert len(held) > LOOKED_UP_DRAWS
    assert account.site.code_length and account.customer.pti_access_code is None  # loaded before counting
    with sql_statements() as sent:
        code = choose_code(account)
    assert code not in held and len(str(code)) == site("northgate").code_length
    looked = [s for s in sent if s.startswith("select pti_accounts.access_code ")]
    assert len(looked) == 1 and "access_code in (" in looked[0], sent


def test_a_drawn_code_the_site_holds_is_passed_over(business, pti, monkeypatch):
    account = new_account()
    held = codes_at_northgate()
    told = drawing(monkeypatch, held[:2])
    code = choose_code(account)
    assert code not in held
    assert len(told) == 3 and set(held[:2]) <= told[-1]  # each later draw is told the codes found taken


def test_a_crowded_site_draws_against_every_code_it_holds(business, pti, monkeypatch):
    account = new_account()
    held = codes_at_northgate()
    told = drawing(monkeypatch, held[:LOOKED_UP_DRAWS])
    code = choose_code(account)
    assert code not in held
    assert len(told) == LOOKED_UP_DRAWS + 1 and set(held) <= told[-1]


def test_the_customers_code_from_another_site_is_kept_only_where_it_is_free(business, pti, monkeypatch):
    account = new_account()
    held = codes_at_northgate()
    customer = db.session.get(Customer, account.customer_id)
    customer.pti_access_code = held[0]  # another customer holds it here
    db.session.commit()
    assert choose_code(account) != held[0]
    free = next(c for c in range(10 ** (site("northgate").code_length - 1) + 12345, 10**7) if c not in held
                and not is_trivial(c))
    customer.pti_access_code = free
    db.session.commit()
    assert choose_code(account) == free
    assert account_of(customer).access_code is None  # chosen, not stored: the push stores it

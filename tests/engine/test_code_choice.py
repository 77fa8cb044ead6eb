"""How a push chooses a new access code: never one its site holds, without reading every code of the site."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from dashboard.engine import reconcile as engine
from dashboard.engine.intent import mark_dirty
from dashboard.engine.reconcile import LOOKED_UP_DRAWS, choose_code
from dashboard.extensions import db
from dashboard.models import Customer, PtiAccount, Rental
from dashboard.sync.codes import generate_code, is_trivial
from jobs.reconcile import reconcile_batch
from tests.conftest import sql_statements
from tests.engine.conftest import account_of, pushed, site
from tests.engine.test_reliability import assert_pti_matches_mirror, pushable


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


def test_a_batch_gives_its_new_customers_codes_together_and_each_push_uses_the_code_given(business, pti):
    """A site's first push: the batch chooses every new customer's code with the statements of one (the codes the
    site holds read once, one UPDATE), so no push looks a code up or stores one on its own; each code is unique at
    the site and is the one PTI's user got. A customer with a code at another site keeps it here."""
    held_before = set(codes_at_northgate())
    accounts = pushable("northgate", 8)
    elsewhere = db.session.get(PtiAccount, accounts[0]).customer
    elsewhere.pti_access_code = generate_code(site("northgate").code_length, held_before)
    db.session.commit()
    with sql_statements() as sent:
        assert reconcile_batch(accounts, "test") == {"ok": 8}
    looked_up = [s for s in sent if s.startswith("select pti_accounts.access_code ")]
    stored = [s for s in sent if s.startswith("update pti_accounts set access_code=")]
    assert len(looked_up) == 1 and "access_code in (" not in looked_up[0], looked_up  # the site's codes, once
    assert len(stored) == 1 and "access_code is null" in stored[0], stored
    db.session.expire_all()
    given = {a: db.session.get(PtiAccount, a).access_code for a in accounts}
    assert len(set(given.values())) == 8 and not set(given.values()) & held_before
    assert given[accounts[0]] == elsewhere.pti_access_code
    assert_pti_matches_mirror(pti, accounts)  # each PTI user got the code its account holds


def test_a_batch_leaves_a_code_chosen_meanwhile_and_gives_none_where_no_push_would(business, pti):
    """Codes are stored only where the account still has none (a push elsewhere may have chosen one since the batch
    read it), and not for a customer who wants no PTI user (no active rental) or at a site that does not sync."""
    from dashboard.engine.reconcile import give_codes

    accounts = pushable("northgate", 3)
    chosen_meanwhile, gone, kept = (db.session.get(PtiAccount, a) for a in accounts)
    for rental in db.session.scalars(select(Rental).where(Rental.customer_id == gone.customer_id,
                                                          Rental.site_id == gone.site_id)):
        rental.state = "completed"
    db.session.commit()
    real_codes_held = engine.codes_held

    def meanwhile(site_ids, codes=None):  # while the batch chooses, a push of the first account stores its own code
        if codes is None:
            db.session.execute(update(PtiAccount).where(PtiAccount.id == chosen_meanwhile.id)
                               .values(access_code=424242).execution_options(synchronize_session=False))
        return real_codes_held(site_ids, codes)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "codes_held", meanwhile)
        assert give_codes(accounts) == 3 - 1  # the completed customer wants no user
    db.session.expire_all()
    assert db.session.get(PtiAccount, chosen_meanwhile.id).access_code == 424242
    assert db.session.get(PtiAccount, gone.id).access_code is None
    assert db.session.get(PtiAccount, kept.id).access_code is not None

    northgate = site("northgate")
    northgate.sync_enabled = False
    db.session.commit()
    others = pushable("northgate", 5)[3:]
    assert give_codes(others) == 0
    assert all(db.session.get(PtiAccount, a).access_code is None for a in others)

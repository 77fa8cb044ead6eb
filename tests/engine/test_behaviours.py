"""Every behaviour of domain.md that the engine drives, observed in the PTI simulator's state.

Each test changes the mirror the way a Storeganise event would, asks for a push, runs the reconcile, and reads
PTI back through the simulator.
"""

from __future__ import annotations

import httpx
from sqlalchemy import select

from dashboard.engine.intent import mark_dirty
from dashboard.engine.reconcile import reconcile
from dashboard.extensions import db
from dashboard.models import Customer, OpenProblem, Rental, SyncAttempt, SyncState
from sim.pti import WRITES as PTI_WRITES
from tests.engine.conftest import account_of, customer_with, site, vacant_unit


def push(customer: Customer, site_code: str = "northgate", urgent: bool = False):
    account = mark_dirty(customer, site(site_code).id, urgent=urgent)
    db.session.commit()
    return reconcile(account.id, "test")


def test_move_in_gives_the_customer_a_pti_user_code_level_zone_and_the_unit(business, pti):
    customer = customer_with(1, overdue=False)
    result = push(customer)
    assert result.outcome == "ok"
    account = account_of(customer)
    user = pti.user_with_marker("NG01", customer.sg_id)
    assert user is not None and user["email"] == customer.email
    assert user["access_code"] == account.access_code and len(str(account.access_code)) == 6
    assert (user["access_level"], user["time_zone"]) == (site("northgate").default_access_level,
                                                         site("northgate").default_zone)
    unit = customer.rentals[0].unit.pti_unit_name
    assert user["units"] == [unit]
    assert pti.unit("NG01", unit) == {"name": unit, "status": "rented", "locked": False, "user_id": user["id"]}
    rental = customer.rentals[0]
    assert rental.sync_state == SyncState.IN_SYNC and rental.pti_synced is not None
    assert account.pti_user_id == user["id"] and account.synced_generation == account.generation


def test_a_customer_with_several_units_has_one_user_and_one_code(business, pti):
    customer = customer_with(2)
    push(customer)
    user = pti.user_with_marker("NG01", customer.sg_id)
    assert sorted(user["units"]) == sorted(r.unit.pti_unit_name for r in customer.rentals)
    assert len([u for u in pti.site("NG01")["users"] if u["access_code"] == user["access_code"]]) == 1


def test_a_converged_customer_costs_zero_pti_writes(business, pti):
    customer = customer_with(2)
    push(customer)
    writes = pti.writes()
    assert push(customer).outcome == "noop"
    assert pti.writes() == writes


def test_customer_overrides_of_level_and_zone_win_over_the_site_defaults(business, pti):
    customer = customer_with(1)
    customer.access_level_override, customer.zone_override = 2, 3
    push(customer)
    user = pti.user_with_marker("NG01", customer.sg_id)
    assert (user["access_level"], user["time_zone"]) == (2, 3)
    customer.access_level_override = None
    push(customer)
    assert pti.user_with_marker("NG01", customer.sg_id)["access_level"] == site("northgate").default_access_level


def test_move_out_of_one_of_several_units_vacates_only_that_unit(business, pti):
    customer = customer_with(2)
    push(customer)
    leaving, staying = customer.rentals
    leaving.state = "ended"
    push(customer)
    user = pti.user_with_marker("NG01", customer.sg_id)
    assert user["units"] == [staying.unit.pti_unit_name]
    assert pti.unit("NG01", leaving.unit.pti_unit_name)["status"] == "vacant"
    assert leaving.sync_state == SyncState.DISABLED


def test_move_out_of_the_last_unit_removes_the_pti_user(business, pti):
    customer = customer_with(1)
    push(customer)
    code = account_of(customer).access_code
    customer.rentals[0].state = "ended"
    push(customer)
    assert pti.user_with_marker("NG01", customer.sg_id) is None
    assert all(u["access_code"] != code for u in pti.site("NG01")["users"])
    assert pti.unit("NG01", customer.rentals[0].unit.pti_unit_name)["status"] == "vacant"


def test_transfer_vacates_the_old_unit_and_rents_the_new_one_with_the_same_code(business, pti):
    customer = customer_with(1, overdue=False)
    push(customer)
    code = account_of(customer).access_code
    old = customer.rentals[0]
    new_unit = vacant_unit()
    old.state = "ended"
    db.session.add(Rental(sg_id="transfer-new", site_id=old.site_id, unit_id=new_unit.id, customer_id=customer.id,
                          state="occupied"))
    push(customer)
    user = pti.user_with_marker("NG01", customer.sg_id)
    assert user["units"] == [new_unit.pti_unit_name] and user["access_code"] == code
    assert pti.unit("NG01", old.unit.pti_unit_name)["status"] == "vacant"


def test_a_unit_given_up_is_not_vacated_once_the_next_tenant_holds_it(business, pti, monkeypatch):
    """A leaves unit X and B moves into it. B's push takes X first; A's push read X before that (still A's, as a
    push running at the same moment would): A reads X again just before vacating it, and leaves B's unit alone."""
    from dashboard.engine import reconcile as engine
    from dashboard.sync import PtiUnit, UnitStatus

    leaver = customer_with(2)
    push(leaver)
    newcomer = next(c for c in db.session.scalars(select(Customer).order_by(Customer.id.desc()))
                    if c.id != leaver.id and len(c.rentals) == 1 and c.rentals[0].site.code == "northgate"
                    and c.rentals[0].active and c.rentals[0].unit.pti_unit_name
                    and " " not in c.rentals[0].unit.pti_unit_name)
    push(newcomer)
    given_up = leaver.rentals[0]
    given_up.state = "ended"
    db.session.add(Rental(sg_id="moved-in", site_id=given_up.site_id, unit_id=given_up.unit_id,
                          customer_id=newcomer.id, state="occupied"))
    push(newcomer)
    unit = given_up.unit.pti_unit_name
    assert pti.unit("NG01", unit)["user_id"] == pti.user_with_marker("NG01", newcomer.sg_id)["id"]

    real = engine.observe
    leaver_user = pti.user_with_marker("NG01", leaver.sg_id)["id"]

    def read_before_the_newcomer_moved_in(reads, desired, account):
        identity, actual = real(reads, desired, account)
        if account.customer_id == leaver.id:
            actual.units[unit] = PtiUnit(unit, UnitStatus.RENTED, locked=False, user_id=leaver_user)
        return identity, actual

    monkeypatch.setattr(engine, "observe", read_before_the_newcomer_moved_in)
    assert push(leaver).outcome in ("ok", "noop")
    assert pti.unit("NG01", unit)["user_id"] == pti.user_with_marker("NG01", newcomer.sg_id)["id"]


def test_overdue_locks_only_the_overdue_unit_and_payment_unlocks_it(business, pti):
    customer = customer_with(2)
    push(customer)
    late, paid = customer.rentals
    late.overlocked, paid.overlocked = True, False
    push(customer, urgent=True)
    assert pti.unit("NG01", late.unit.pti_unit_name)["locked"] is True
    assert pti.unit("NG01", paid.unit.pti_unit_name)["locked"] is False
    late.overlocked = False
    push(customer, urgent=True)
    assert pti.unit("NG01", late.unit.pti_unit_name)["locked"] is False


def test_a_new_code_reaches_pti_and_a_locked_unit_stays_locked(business, pti):
    from dashboard.engine.reconcile import choose_code

    customer = customer_with(2)
    customer.rentals[0].overlocked = True
    push(customer)
    account = account_of(customer)
    old = account.access_code
    account.access_code = choose_code(account, exclude={old})
    push(customer)
    user = pti.user_with_marker("NG01", customer.sg_id)
    assert user["access_code"] == account.access_code != old
    assert all(u["access_code"] != old for u in pti.site("NG01")["users"])
    assert pti.unit("NG01", customer.rentals[0].unit.pti_unit_name)["locked"] is True
    assert len(user["units"]) == 2


def test_units_whose_names_pti_rejects_fail_with_the_fix_and_unmapped_units_are_not_synced(business, pti):
    rejected = db.session.scalar(select(Rental).join(Rental.unit).where(Rental.unit.has(pti_unit_name="LOCKER 12")))
    unmapped = db.session.scalar(select(Rental).where(Rental.unit.has(pti_unit_name=None, pti_switched_off=False)))
    push(rejected.customer)
    push(unmapped.customer, unmapped.site.code)
    assert (rejected.sync_state, rejected.last_error) == (SyncState.FAILED, "invalid_unit_name")
    assert unmapped.sync_state == SyncState.UNMAPPED
    names = {c["unit_name"] for c in pti.calls() if c.get("unit_name")}
    assert "LOCKER 12" not in names and unmapped.unit.name not in names


def test_a_rental_at_a_switched_off_unit_shows_disabled_and_is_never_sent_to_pti(business, pti):
    off = db.session.scalar(select(Rental).where(Rental.unit.has(pti_switched_off=True)))
    assert off is not None, "the demo business switches one unit off"
    push(off.customer, off.site.code)
    assert (off.sync_state, off.last_error) == (SyncState.DISABLED, None)
    assert off.unit.name not in {c["unit_name"] for c in pti.calls() if c.get("unit_name")}


def test_a_site_with_a_wrong_pti_password_parks_its_customers_with_the_fix(business, pti):
    customer = customer_with(1, site_code="hilltop")
    result = push(customer, "hilltop")
    assert (result.outcome, result.reason) == ("failed", "invalid_credentials")
    account = account_of(customer, "hilltop")
    assert account.state == SyncState.FAILED and account.last_error == "invalid_credentials"
    assert customer.rentals[0].sync_state == SyncState.FAILED
    journal = db.session.scalars(select(SyncAttempt).where(SyncAttempt.account_id == account.id)).one()
    assert (journal.outcome, journal.reason) == ("failed", "invalid_credentials")


def _create_by_hand(pti, email: str, code: int, marker: str | None = None) -> dict:
    from dashboard.pti import PtiClient
    from sim.demo_data import DEMO_SITES

    ng = DEMO_SITES[0]
    with PtiClient(pti.url, ng.pti_site_code, ng.pti_site_key, ng.pti_username, ng.pti_password) as client:
        user = client.create_user(email=email, first_name="By", last_name="Hand", access_code=code,
                                  access_level=1, time_zone=1, marker=marker or "")
    return {"id": user.id}


def _sim_state_without_calls(pti) -> dict:
    return pti.state()["sites"]


def test_a_pti_user_found_by_email_that_we_did_not_create_parks_the_customer_and_pti_is_unchanged(business, pti):
    customer = customer_with(1)
    made = _create_by_hand(pti, customer.email, 583920)
    before = _sim_state_without_calls(pti)
    result = push(customer)
    assert (result.outcome, result.reason) == ("failed", "foreign_pti_user")
    assert _sim_state_without_calls(pti) == before
    account = account_of(customer)
    assert (account.state, account.last_error) == (SyncState.FAILED, "foreign_pti_user")
    assert [(u["id"], u["code"], u["matched_by"]) for u in account.foreign_pti_users] == [
        (made["id"], "•••920", ["e-mail"])]


def test_the_conflict_shows_every_pti_user_with_the_customers_email(business, pti):
    customer = customer_with(1)
    first = _create_by_hand(pti, customer.email, 583920)
    second = _create_by_hand(pti, customer.email.upper(), 583921)
    assert push(customer).reason == "foreign_pti_user"
    assert sorted(u["id"] for u in account_of(customer).foreign_pti_users) == sorted([first["id"], second["id"]])


def test_adopting_the_pti_user_staff_chose_converges_with_that_user_marked(business, pti):
    customer = customer_with(1)
    _create_by_hand(pti, customer.email, 583920)
    chosen = _create_by_hand(pti, customer.email, 583921)
    push(customer)
    account = account_of(customer)
    account.adopt_pti_user_id = chosen["id"]
    result = push(customer)
    assert result.outcome == "ok"
    user = pti.user_with_marker("NG01", customer.sg_id)
    assert user["id"] == chosen["id"] == account.pti_user_id
    assert user["units"] == [customer.rentals[0].unit.pti_unit_name] and user["access_code"] == account.access_code
    assert account.foreign_pti_users is None and account.state == SyncState.IN_SYNC
    assert push(customer).outcome == "noop"


def test_a_separate_user_ends_with_two_pti_users_with_that_email_ours_marked(business, pti):
    customer = customer_with(1)
    made = _create_by_hand(pti, customer.email, 583920)
    push(customer)
    account_of(customer).separate_from_foreign = True
    assert push(customer).outcome == "ok"
    users = {u["id"]: u for u in pti.site("NG01")["users"] if u["email"] == customer.email}
    ours = pti.user_with_marker("NG01", customer.sg_id)
    assert set(users) == {made["id"], ours["id"]}
    assert users[made["id"]]["marker"] is None and users[made["id"]]["units"] == []
    assert ours["units"] == [customer.rentals[0].unit.pti_unit_name]


def test_two_pti_users_with_our_marker_stop_with_merge_them(business, pti):
    customer = customer_with(1)
    push(customer)
    account = account_of(customer)
    # Someone copies the customer's user by hand, marker and all; PTI now has two users claiming to be ours.
    httpx.post(f"{pti.url}/_sim/reset")
    _create_by_hand(pti, customer.email, 583921, marker=customer.sg_id)
    _create_by_hand(pti, "other@example.com", account.access_code, marker=customer.sg_id)
    account.pti_user_id = None
    result = push(customer)
    assert (result.outcome, result.reason) == ("failed", "duplicate_pti_users")


def test_a_parked_customer_still_shows_an_unmapped_unit_as_not_mapped(business, pti):
    bay = db.session.scalar(select(Rental).where(Rental.site_id == site("hilltop").id,
                                                 Rental.unit.has(pti_unit_name=None, pti_switched_off=False),
                                                 Rental.state == "occupied"))
    assert push(bay.customer, "hilltop").reason == "invalid_credentials"
    assert (bay.sync_state, bay.last_error) == (SyncState.UNMAPPED, "unit_unmapped")


def test_a_unit_pti_refuses_stands_as_one_problem_on_the_unit_until_it_is_fixed(business, pti):
    rejected = db.session.scalar(select(Rental).join(Rental.unit).where(Rental.unit.has(pti_unit_name="LOCKER 12")))
    push(rejected.customer)
    push(rejected.customer)
    [problem] = db.session.scalars(select(OpenProblem)).all()
    assert (problem.cause, problem.target_type, problem.target_id) == (
        f"unit:{rejected.unit.sg_id}:invalid_unit_name", "unit", rejected.unit.sg_id)
    assert rejected.unit.name in problem.subject
    rejected.unit.pti_switched_off, rejected.unit.pti_unit_name = True, None  # staff switch it off
    push(rejected.customer)
    assert db.session.scalars(select(OpenProblem)).all() == []


def test_a_parked_customer_is_one_problem_on_the_customer_and_gone_after_a_good_push(business, pti):
    customer = customer_with(1, site_code="hilltop")
    assert push(customer, "hilltop").reason == "invalid_credentials"
    [problem] = db.session.scalars(select(OpenProblem)).all()
    assert (problem.entity, problem.reason, problem.target_type) == ("site", "invalid_credentials", "site")


def test_an_access_level_pti_does_not_list_parks_the_customer_before_any_pti_write(business, pti):
    customer = customer_with(1)
    customer.access_level_override = 99
    result = push(customer)
    assert result.reason == "access_level_unknown"
    assert not [c for c in pti.calls() if c["operation"] in PTI_WRITES]
    [problem] = db.session.scalars(select(OpenProblem)).all()
    assert (problem.entity, problem.target_type) == ("account", "user")
    assert "99" in problem.detail and "PTI at NG01 has" in problem.detail

"""Write-back to Storeganise after a push, its echo that changes nothing (no loop), and failure tasks once per cause."""

from __future__ import annotations

from datetime import datetime

import pytest
import redis as redis_lib
from sqlalchemy import select

from dashboard.engine import problems, writeback
from dashboard.engine.intent import account_for
from dashboard.extensions import db
from dashboard.mirror.importer import import_business
from dashboard.models import OpenProblem, PtiAccount, Rental, SyncState
from dashboard.storeganise import StoreganiseClient, StoreganiseError
from dashboard.sync.errors import problem
from jobs.events import handle_delivery
from jobs.writeback import report_problems, write_back_account
from tests.conftest import flush_redis, sql_statements

from .conftest import queued_jobs, reconcile_requests

PUSHED_AT = datetime(2026, 3, 4, 5, 6, 7, 891234)  # the engine's clock has microseconds; Storeganise keeps ms


@pytest.fixture
def business(app, sg, sim, redis_url):
    import_business(sg)
    flush_redis(redis_url)


def multi_unit_customer(sim) -> str:
    owners = [r["ownerId"] for r in sim.rentals.values() if r["state"] == "occupied"]
    return next(o for o in owners if owners.count(o) > 1)


def pushed(customer_sg_id: str, *, code: int = 482913, user_id: str = "PTI-77") -> PtiAccount:
    """What the engine leaves behind after a successful push of the customer's account at their site."""
    rentals = db.session.scalars(select(Rental).join(Rental.customer).where(Rental.customer.has(sg_id=customer_sg_id),
                                                                          Rental.state == "occupied")).all()
    account = account_for(rentals[0].customer, rentals[0].site_id)
    account.access_code, account.pti_user_id = code, user_id
    account.state, account.synced_generation, account.last_synced_at = SyncState.IN_SYNC, account.generation, PUSHED_AT
    for rental in rentals:
        rental.sync_state, rental.pti_synced = SyncState.IN_SYNC, PUSHED_AT
    db.session.commit()
    return account


def failed(account: PtiAccount, reason: str, *, rental: Rental | None = None) -> PtiAccount:
    """What the engine leaves behind when it parks the account for `reason`."""
    account.state, account.last_error = SyncState.FAILED, reason
    if rental is not None:
        rental.last_error = reason
    problems.account_parked(account, reason, None, [rental.unit] if rental is not None else [])
    db.session.commit()
    return account


def test_write_back_sets_pti_synced_overlocked_code_and_user_id_in_storeganise(business, sim):
    owner = multi_unit_customer(sim)
    account = pushed(owner)
    write_back_account(account.id)
    writes = sim.snapshot()["writes"]
    rental_ids = sorted(r["id"] for r in sim.rentals.values() if r["ownerId"] == owner and r["state"] == "occupied")
    assert sorted(w["id"] for w in writes if w["entity"] == "unitRental") == rental_ids
    for rental_id in rental_ids:
        fields = sim.rentals[rental_id]["customFields"]
        assert fields["pti_synced"] == "2026-03-04T05:06:07.891Z"
        assert fields["pti_overlocked"] is sim.rentals[rental_id]["overdue"]
    [user_write] = [w for w in writes if w["entity"] == "user"]
    assert user_write["fields"] == {"pti_access_code": "482913", "pti_user_id": "PTI-77"}
    customer = db.session.get(PtiAccount, account.id).customer
    assert (customer.pti_access_code, customer.pti_user_id) == (482913, "PTI-77")


def test_our_own_write_back_echoes_back_without_asking_for_any_push(business, sim, hooks):
    """The loop test: write-back -> Storeganise's unitRental.updated / user.updated echoes -> zero reconciles."""
    account = pushed(multi_unit_customer(sim))
    hooks.skip_new()
    write_back_account(account.id)
    echoes = hooks.deliver_new()
    assert sorted({e["type"] for e in echoes}) == ["unitRental.updated", "user.updated"]
    # Recognised at the receiver: recorded as echoes, no job for any of them
    assert [handle_delivery(e["id"]) for e in echoes] == ["echo"] * len(echoes)
    assert queued_jobs() == []
    assert reconcile_requests() == []
    db.session.expire_all()
    account = db.session.get(PtiAccount, account.id)
    assert (account.generation, account.state) == (account.synced_generation, SyncState.IN_SYNC)


def test_a_reconcile_that_changed_nothing_writes_nothing(business, sim):
    account = pushed(multi_unit_customer(sim))
    write_back_account(account.id)
    before = len(sim.snapshot()["writes"])
    write_back_account(account.id)
    assert sim.snapshot()["writes"][before:] == []


def test_a_new_push_time_or_lock_state_is_written_again(business, sim):
    account = pushed(multi_unit_customer(sim))
    write_back_account(account.id)
    first, second = db.session.scalars(select(Rental).where(Rental.customer_id == account.customer_id,
                                                           Rental.state == "occupied").order_by(Rental.id)).all()[:2]
    first.pti_synced = datetime(2026, 3, 5, 0, 0, 0, 1000)
    second.overlocked = not second.overlocked
    db.session.commit()
    before = len(sim.snapshot()["writes"])
    write_back_account(account.id)
    code = {"pti_access_code": "482913", "pti_user_id": "PTI-77"}  # the rental carries its code (the seed)
    assert [(w["id"], w["fields"]) for w in sim.snapshot()["writes"][before:]] == [
        (first.sg_id, {"pti_overlocked": first.overlocked, "pti_synced": "2026-03-05T00:00:00.001Z", **code}),
        (second.sg_id, {"pti_overlocked": second.overlocked, "pti_synced": "2026-03-04T05:06:07.891Z", **code}),
    ]


def test_every_rental_carries_its_access_code_and_pti_user_id(business, sim):
    owner = multi_unit_customer(sim)
    account = pushed(owner)
    write_back_account(account.id)
    for rental in (r for r in sim.rentals.values() if r["ownerId"] == owner and r["state"] == "occupied"):
        assert (rental["customFields"]["pti_access_code"], rental["customFields"]["pti_user_id"]) == (
            "482913", "PTI-77")


def test_a_new_code_is_written_to_every_rental_again(business, sim):
    account = pushed(multi_unit_customer(sim))
    write_back_account(account.id)
    account.access_code = 573921
    db.session.commit()
    before = len(sim.snapshot()["writes"])
    write_back_account(account.id)
    rental_writes = [w for w in sim.snapshot()["writes"][before:] if w["entity"] == "unitRental"]
    assert rental_writes and all(w["fields"]["pti_access_code"] == "573921" for w in rental_writes)


def test_rentals_the_engine_did_not_mark_in_sync_are_not_written(business, sim):
    owner = multi_unit_customer(sim)
    account = pushed(owner)
    first, *others = db.session.scalars(select(Rental).where(Rental.customer_id == account.customer_id,
                                                            Rental.state == "occupied").order_by(Rental.id)).all()
    first.sync_state = SyncState.FAILED
    db.session.commit()
    write_back_account(account.id)
    written = {w["id"] for w in sim.snapshot()["writes"] if w["entity"] == "unitRental"}
    assert written == {r.sg_id for r in others}


def test_a_failed_write_back_is_raised_and_written_by_the_retry(business, sim, monkeypatch):
    account = pushed(multi_unit_customer(sim))

    def refuse(self, user_id, fields):
        raise StoreganiseError("Storeganise timed out.", reason="storeganise_unreachable", retryable=True)

    with monkeypatch.context() as patch:
        patch.setattr(StoreganiseClient, "update_user_custom_fields", refuse)
        with pytest.raises(StoreganiseError):
            write_back_account(account.id)
    db.session.expire_all()
    assert db.session.get(PtiAccount, account.id).customer.pti_access_code is None  # as Storeganise still holds
    write_back_account(account.id)
    assert sim.users[db.session.get(PtiAccount, account.id).customer.sg_id]["customFields"]["pti_access_code"] \
        == "482913"


def test_a_unit_problem_is_raised_once_as_a_task_on_the_unit(business, sim):
    account = pushed(multi_unit_customer(sim))
    rental = db.session.scalars(select(Rental).where(Rental.customer_id == account.customer_id)).first()
    failed(account, "invalid_unit_name", rental=rental)
    assert report_problems() == 1
    assert report_problems() == 0
    [task] = sim.snapshot()["tasks"]
    entry = problem("invalid_unit_name")
    assert task["data"]["targetType"] == "unit" and task["data"]["targetId"] == rental.unit.sg_id
    assert entry.message in task["data"]["title"] and entry.fix in task["data"]["desc"]
    assert rental.unit.name in task["data"]["desc"]
    assert "482913" not in str(task)  # never an access code
    assert db.session.scalar(select(OpenProblem)).sg_task_id == task["id"]


def test_a_customer_problem_is_raised_on_the_user(business, sim):
    account = failed(pushed(multi_unit_customer(sim)), "duplicate_pti_users")
    assert report_problems() == 1
    [task] = sim.snapshot()["tasks"]
    assert task["data"]["targetType"] == "user" and task["data"]["targetId"] == account.customer.sg_id


def hilltop_accounts(sim, count: int = 3) -> list[PtiAccount]:
    accounts = []
    owners = {r["ownerId"] for r in sim.rentals.values() if r["state"] == "occupied"}
    for number, owner in enumerate(sorted(owners)):
        account = pushed(owner, code=500000 + number)
        if account.site.code == "hilltop":
            accounts.append(failed(account, "invalid_credentials"))
        if len(accounts) == count:
            return accounts
    raise AssertionError("the demo has fewer customers at Hilltop")


def test_a_site_connection_problem_is_raised_once_for_the_whole_site_on_the_site(business, sim):
    [account, *_] = hilltop_accounts(sim)
    assert report_problems() == 1
    [task] = sim.snapshot()["tasks"]
    assert (task["data"]["targetType"], task["data"]["targetId"]) == ("site", account.site.sg_id)
    assert "Hilltop Lockers" in task["data"]["desc"]


def test_a_settings_problem_is_raised_on_the_add_on_when_the_business_has_it(app, business, sim):
    app.config["STOREGANISE_ADDON_ID"] = "64de6a00dd7adb0014825f41"
    hilltop_accounts(sim, count=1)
    assert report_problems() == 1
    [task] = sim.snapshot()["tasks"]
    assert (task["data"]["targetType"], task["data"]["targetId"]) == ("addon", "64de6a00dd7adb0014825f41")


def test_a_problem_that_comes_back_after_a_successful_push_is_reported_again(business, sim):
    account = failed(pushed(multi_unit_customer(sim)), "duplicate_pti_users")
    report_problems()
    problems.account_synced(account, {})  # the engine's success: the problem is over
    db.session.commit()
    assert db.session.scalar(select(OpenProblem)) is None
    failed(account, "duplicate_pti_users")
    assert report_problems() == 1
    assert len(sim.snapshot()["tasks"]) == 2


def test_nothing_standing_reports_nothing(business, sim):
    pushed(multi_unit_customer(sim))
    assert report_problems() == 0 and sim.snapshot()["tasks"] == []


def test_a_task_storeganise_could_not_create_is_tried_again(business, sim):
    failed(pushed(multi_unit_customer(sim)), "duplicate_pti_users")
    sim.configure(faults={"error_rate": 1.0, "error_status": 503})
    with pytest.raises(StoreganiseError):
        report_problems()
    assert db.session.scalar(select(OpenProblem)).reported_at is None  # still owed: the relay asks again
    sim.configure(faults={"error_rate": 0.0})
    assert report_problems() == 1


def test_an_access_override_set_by_staff_reaches_storeganise_and_its_echo_asks_for_nothing(business, sim, hooks):
    from dashboard.actions import set_access
    from dashboard.models import Customer
    from jobs.writeback import write_back_overrides

    customer = db.session.scalar(select(Customer).where(Customer.sg_id == multi_unit_customer(sim)))
    set_access(customer, "staff@demo.test", level=2, zone=3)
    asked = reconcile_requests()
    hooks.skip_new()
    write_back_overrides(customer.id)
    assert sim.users[customer.sg_id]["customFields"]["pti_access_level"] == 2
    assert sim.users[customer.sg_id]["customFields"]["pti_zone"] == 3
    echoes = hooks.deliver_new()
    assert [e["type"] for e in echoes] == ["user.updated"]
    assert [handle_delivery(e["id"]) for e in echoes] == ["echo"]
    assert reconcile_requests() == asked  # the echo added no push of its own


def test_a_persons_edit_of_a_field_we_wrote_is_still_handled_once_our_echo_came_back(business, sim, hooks):
    """Only one delivery per write is taken for its echo: staff changing pti_synced afterwards (a resync request)
    is queued and handled as before."""
    account = pushed(multi_unit_customer(sim))
    hooks.skip_new()
    write_back_account(account.id)
    hooks.deliver_new()
    rental_id = next(r for r in sim.rentals.values() if r["ownerId"] == account.customer.sg_id
                     and r["state"] == "occupied")["id"]
    sim.edit("unitRental", rental_id, {"pti_synced": "2026-01-01T00:00:00.000Z"})
    [edit] = hooks.deliver_new()
    assert handle_delivery(edit["id"]) == "processed"


def test_two_writes_of_one_rental_before_their_echoes_come_back_are_both_taken_for_echoes(business, sim, hooks, sg):
    """An overdue flip's PUT and the push's write-back a moment later: each expects its own echo, so the second one
    is not taken for a person's edit (which would re-read the rental and could ask for a push of its own)."""
    from dashboard.engine.writeback import put_fields

    account = pushed(multi_unit_customer(sim))
    hooks.skip_new()
    rental_id = next(r for r in sim.rentals.values() if r["ownerId"] == account.customer.sg_id
                     and r["state"] == "occupied")["id"]
    put_fields(sg, "unitRental", rental_id, {"pti_overlocked": True})
    put_fields(sg, "unitRental", rental_id, {"pti_overlocked": True, "pti_synced": "2026-03-04T05:06:07.891Z"})
    echoes = hooks.deliver_new()
    assert len(echoes) == 2
    assert [handle_delivery(e["id"]) for e in echoes] == ["echo", "echo"]
    sim.edit("unitRental", rental_id, {"pti_overlocked": False})  # then staff unsuspend: that is no echo
    [edit] = hooks.deliver_new()
    assert handle_delivery(edit["id"]) == "processed"


def test_without_redis_an_echo_takes_the_normal_path_and_changes_nothing(business, sim, hooks, monkeypatch):
    account = pushed(multi_unit_customer(sim))
    hooks.skip_new()
    write_back_account(account.id)
    monkeypatch.setattr("dashboard.echoes.get_redis", lambda: redis_lib.Redis(port=1, socket_timeout=0.2))
    echoes = hooks.deliver_new()
    assert [handle_delivery(e["id"]) for e in echoes] == ["processed"] * len(echoes)
    assert reconcile_requests() == []


def test_a_write_back_storeganise_already_held_leaves_no_echo_to_swallow_a_manual_suspend(business, sim, hooks,
                                                                                           redis_url):
    """Redis forgot what we wrote, so the same values are written again: Storeganise changes nothing and sends no
    echo. Staff suspending the rental a moment later must not be taken for that echo."""
    account = pushed(multi_unit_customer(sim))
    write_back_account(account.id)
    hooks.deliver_new()  # our echoes, recognised
    flush_redis(redis_url)
    hooks.skip_new()
    write_back_account(account.id)  # the same values again
    assert hooks.deliver_new() == []  # Storeganise changed nothing: no echo comes
    rental_id = next(r for r in sim.rentals.values() if r["ownerId"] == account.customer.sg_id
                     and r["state"] == "occupied" and not r["overdue"])["id"]
    sim.edit("unitRental", rental_id, {"pti_overlocked": True})
    [suspend] = hooks.deliver_new()
    assert handle_delivery(suspend["id"]) == "processed"
    assert db.session.scalar(select(Rental).where(Rental.sg_id == rental_id)).overlocked is True


def test_a_write_back_costs_the_same_statements_for_one_rental_as_for_several(business, sim, sg):
    """What Storeganise's answers say is noted on the rentals in one statement, and nothing is read again after the
    commit before the PUTs: the database work does not grow with the customer's rentals."""
    owners = [r["ownerId"] for r in sim.rentals.values() if r["state"] == "occupied"]
    single = next(o for o in owners if owners.count(o) == 1)
    counts, written = [], []
    for code, owner in ((482913, single), (573921, multi_unit_customer(sim))):
        account_id = pushed(owner, code=code).id
        db.session.expire_all()
        with sql_statements() as sent:
            written.append(writeback.write_back(account_id, sg).rentals)
        counts.append(len(sent))
    assert written[0] == 1 and written[1] > 1
    assert counts[0] == counts[1]
    assert all(r.sg_updated is not None for r in db.session.scalars(
        select(Rental).where(Rental.sg_id.in_([w["id"] for w in sim.snapshot()["writes"]
                                               if w["entity"] == "unitRental"]))))


def owed_accounts(sim, count: int) -> list[int]:
    """`count` customers pushed, each owed a write-back, with their own codes; their account ids in id order."""
    owners = sorted({r["ownerId"] for r in sim.rentals.values() if r["state"] == "occupied"})
    assert len(owners) >= count
    ids = []
    for i, owner in enumerate(owners[:count]):
        account = pushed(owner, code=610000 + i, user_id=f"PTI-{900 + i}")
        account.write_back_owed = True
        db.session.commit()
        ids.append(account.id)
    db.session.expire_all()
    return sorted(ids)


def refusing_the_user(customer_sg_id: str):
    """Storeganise's client, timing out on one customer's PUT and answering the others as usual."""
    real = StoreganiseClient.update_user_custom_fields

    def refuse_one(self, user_id, fields):
        if user_id == customer_sg_id:
            raise StoreganiseError("Storeganise timed out.", reason="storeganise_unreachable", retryable=True)
        return real(self, user_id, fields)

    return refuse_one


def test_several_accounts_are_written_back_with_the_database_work_of_one(business, sim, sg):
    """A bulk batch's writer hands over whatever accounts are owed at once: two reads, one commit before the PUTs
    and the answers recorded together, the same statements for four accounts as for one, and each written in full."""
    first, *rest = owed_accounts(sim, 5)
    with sql_statements() as one:
        assert writeback.write_back_many([first], sg).error is None
    with sql_statements() as four:
        result = writeback.write_back_many(rest, sg)
    assert result.error is None and result.not_done == [] and len(result.done) == 4
    assert len(four) == len(one), "\n".join(four)
    db.session.expire_all()
    for account in db.session.scalars(select(PtiAccount).where(PtiAccount.id.in_([first, *rest]))):
        assert account.write_back_owed is False
        user = sim.users[account.customer.sg_id]["customFields"]
        assert (user["pti_access_code"], user["pti_user_id"]) == (str(account.access_code), account.pti_user_id)
        for rental in account.customer.rentals:
            if rental.state == "occupied":
                assert sim.rentals[rental.sg_id]["customFields"]["pti_access_code"] == str(account.access_code)


def test_a_write_back_of_several_stops_at_the_first_refusal_and_leaves_the_rest_owed(business, sim, sg, monkeypatch):
    """Storeganise fails on the second account: the first is done, the second and third stay owed (the second's
    customer keeps the values Storeganise still holds, so its retry sends them), and the error is handed back with
    them; the retry then writes them."""
    ids = owed_accounts(sim, 3)
    with monkeypatch.context() as patch:
        patch.setattr(StoreganiseClient, "update_user_custom_fields",
                      refusing_the_user(db.session.get(PtiAccount, ids[1]).customer.sg_id))
        result = writeback.write_back_many(ids, sg)
    assert isinstance(result.error, StoreganiseError)
    assert len(result.done) == 1 and result.not_done == ids[1:]
    db.session.expire_all()
    owed = {a.id: a.write_back_owed for a in db.session.scalars(select(PtiAccount).where(PtiAccount.id.in_(ids)))}
    assert owed == {ids[0]: False, ids[1]: True, ids[2]: True}
    assert db.session.get(PtiAccount, ids[1]).customer.pti_access_code is None  # as Storeganise still holds
    assert "pti_access_code" not in sim.users[db.session.get(PtiAccount, ids[2]).customer.sg_id]["customFields"]

    assert writeback.write_back_many(result.not_done, sg).error is None
    db.session.expire_all()
    for account_id in ids[1:]:
        account = db.session.get(PtiAccount, account_id)
        assert account.write_back_owed is False
        assert sim.users[account.customer.sg_id]["customFields"]["pti_access_code"] == str(account.access_code)


def test_a_batch_writer_writes_back_what_is_owed_together_and_hands_the_rest_to_jobs_after_a_failure(
        app, business, sim, sg, monkeypatch):
    """The bulk batch's writer thread: the accounts waiting when it comes back for more go in one write-back (two at
    most here); once Storeganise failed, the account it failed on and every later one get their own write-back job,
    the later ones without being tried."""
    import queue

    from jobs import reconcile as batch_jobs

    ids = owed_accounts(sim, 3)
    calls = []
    real = writeback.write_back_many

    def counted(account_ids, client, overlocks=None):
        calls.append(list(account_ids))
        return real(account_ids, client, overlocks)

    owed: queue.SimpleQueue = queue.SimpleQueue()
    for account_id in [*ids, None]:
        owed.put(account_id)
    with monkeypatch.context() as patch:
        patch.setattr(writeback, "write_back_many", counted)
        patch.setattr(StoreganiseClient, "update_user_custom_fields",
                      refusing_the_user(db.session.get(PtiAccount, ids[1]).customer.sg_id))
        patch.setattr(batch_jobs, "WRITE_BACK_CHUNK", 2)
        batch_jobs.write_back_all(app, owed)
    assert calls == [ids[:2]]  # two went together; the third came after the failure
    assert sorted(job.args[0] for _, job in queued_jobs("jobs.writeback.write_back_account")) == ids[1:]
    db.session.expire_all()
    assert [db.session.get(PtiAccount, i).write_back_owed for i in ids] == [False, True, True]

"""Nothing owed to Storeganise is lost: a push's results and staff's overrides are database facts until Storeganise
accepted them, whatever happens to Redis or the jobs in between; the relay's re-drive writes what is still owed."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis as redis_lib
from sqlalchemy import select, update

from dashboard.engine import writeback
from dashboard.engine.problems import refused_overlocks
from dashboard.engine.reconcile import reconcile
from dashboard.extensions import db
from dashboard.jobqueue import REPORT_PROBLEMS
from dashboard.mirror.importer import import_business
from dashboard.models import Customer, PtiAccount, Rental, Site, utcnow
from dashboard.storeganise import StoreganiseClient, StoreganiseError
from jobs.writeback import write_back_account, write_back_owed
from tests.conftest import flush_redis, sql_statements
from tests.engine.conftest import pti, pti_server  # noqa: F401 - the live PTI simulator, as the engine tests use it

from .conftest import queued_jobs, sole_rental
from .conftest import rental as rental_row


@pytest.fixture
def business(app, sg, sim, pti, redis_url):  # noqa: F811
    """The simulator's business in the mirror, its sites' PTI pointing at the live PTI simulator."""
    import_business(sg)
    for site in db.session.scalars(select(Site)):
        site.pti_base_url = pti.url
    db.session.commit()
    flush_redis(redis_url)


def pushable_account(sim) -> PtiAccount:
    from dashboard.engine.intent import mark_dirty

    rental = next(r for r in db.session.scalars(select(Rental).where(Rental.state == "occupied").order_by(Rental.id))
                  if r.unit.pti_unit_name and " " not in r.unit.pti_unit_name and r.site.code == "northgate")
    account = mark_dirty(rental.customer_id, rental.site_id)
    db.session.commit()
    return account


class RedisDown:
    """Every enqueue fails as when Redis stops answering (the database still works)."""

    def __init__(self, monkeypatch):
        from rq import Queue

        def refuse(*args, **kwargs):
            raise redis_lib.ConnectionError("Redis is down")

        monkeypatch.setattr(Queue, "enqueue", refuse)
        monkeypatch.setattr(Queue, "enqueue_in", refuse)


def test_a_push_whose_write_back_could_not_be_enqueued_is_owed_and_written_by_the_relay(business, sim, monkeypatch):
    account = pushable_account(sim)
    with monkeypatch.context() as patch:
        RedisDown(patch)
        assert reconcile(account.id, "test").outcome == "ok"
    db.session.expire_all()
    account = db.session.get(PtiAccount, account.id)
    assert account.write_back_owed is True and queued_jobs() == []
    assert writeback.request_write_backs() is True
    [(_, job)] = queued_jobs()
    assert job.id == writeback.WRITE_BACK_JOB_ID
    assert write_back_owed() >= 1
    db.session.expire_all()
    assert db.session.get(PtiAccount, account.id).write_back_owed is False
    rental = next(r for r in account.customer.rentals if r.site_id == account.site_id and r.active)
    assert sim.rentals[rental.sg_id]["customFields"]["pti_access_code"] == str(account.access_code)
    assert writeback.request_write_backs() is False  # nothing left: the relay asks for nothing


def test_a_write_back_storeganise_refused_stays_owed_until_it_accepts(business, sim):
    account = pushable_account(sim)
    assert reconcile(account.id, "test").outcome == "ok"
    sim.configure(faults={"error_rate": 1.0, "error_status": 503})
    with pytest.raises(StoreganiseError):
        write_back_account(account.id)
    db.session.expire_all()
    assert db.session.get(PtiAccount, account.id).write_back_owed is True
    sim.configure(faults={"error_rate": 0.0})
    write_back_owed()
    db.session.expire_all()
    assert db.session.get(PtiAccount, account.id).write_back_owed is False


def test_a_write_back_of_an_older_push_leaves_the_newer_push_owed(business, sim, monkeypatch):
    account = pushable_account(sim)
    account_id = account.id
    assert reconcile(account_id, "test").outcome == "ok"
    real = StoreganiseClient.update_unit_rental_custom_fields

    def push_again_meanwhile(self, rental_id, fields, **options):  # a newer push finishes while this one is on its way
        db.session.execute(update(PtiAccount).where(PtiAccount.id == account_id)
                           .values(last_synced_at=utcnow(), write_back_owed=True))
        db.session.commit()
        return real(self, rental_id, fields, **options)

    monkeypatch.setattr(StoreganiseClient, "update_unit_rental_custom_fields", push_again_meanwhile)
    write_back_account(account.id)
    db.session.expire_all()
    assert db.session.get(PtiAccount, account.id).write_back_owed is True


def test_an_access_override_staff_set_while_redis_is_down_is_saved_owed_and_written_by_the_relay(business, sim,
                                                                                                monkeypatch):
    from dashboard.actions import set_access

    customer = db.session.scalar(select(Customer).join(Rental).where(Rental.state == "occupied").limit(1))
    with monkeypatch.context() as patch:
        RedisDown(patch)
        set_access(customer, "staff@demo.test", level=2, zone=3)  # no error for staff: the change is saved
    db.session.expire_all()
    customer = db.session.get(Customer, customer.id)
    assert (customer.access_level_override, customer.zone_override, customer.overrides_owed) == (2, 3, True)
    assert writeback.request_write_backs() is True
    write_back_owed()
    assert sim.users[customer.sg_id]["customFields"]["pti_access_level"] == 2
    assert sim.users[customer.sg_id]["customFields"]["pti_zone"] == 3
    db.session.expire_all()
    assert db.session.get(Customer, customer.id).overrides_owed is False


def test_a_pull_before_an_owed_override_lands_keeps_staffs_value(business, sg, sim, monkeypatch):
    from dashboard.actions import set_access
    from dashboard.mirror.importer import pull_changes

    customer = db.session.scalar(select(Customer).join(Rental).where(Rental.state == "occupied").limit(1))
    with monkeypatch.context() as patch:
        RedisDown(patch)
        set_access(customer, "staff@demo.test", level=2, zone=3)
    sim.edit("user", customer.sg_id, {"pti_zone": 1})  # Storeganise still holds (or gets) another value meanwhile
    pull_changes(sg)
    db.session.expire_all()
    assert (db.session.get(Customer, customer.id).access_level_override,
            db.session.get(Customer, customer.id).zone_override) == (2, 3)


def test_a_batch_whose_write_backs_redis_and_storeganise_both_refused_leaves_every_one_owed(app, business, sim,
                                                                                           monkeypatch):
    from dashboard.engine.intent import mark_dirty
    from jobs.reconcile import reconcile_batch

    rentals = db.session.scalars(select(Rental).where(Rental.state == "occupied")).all()
    pairs = sorted({(r.customer_id, r.site_id) for r in rentals if r.site.code == "northgate"})[:5]
    ids = [mark_dirty(c, s).id for c, s in pairs]
    db.session.commit()
    sim.configure(faults={"error_rate": 1.0, "error_status": 503})
    app.config["STOREGANISE_API_URL"] = None  # the batch's writer cannot write: each account falls back to a job...
    with monkeypatch.context() as patch:
        RedisDown(patch)  # ...which Redis cannot take either
        outcomes = reconcile_batch(ids, "test")
    assert set(outcomes) <= {"ok", "noop"} and sum(outcomes.values()) == len(ids)  # every account pushed
    db.session.expire_all()
    assert [db.session.get(PtiAccount, i).write_back_owed for i in ids] == [True] * len(ids)
    assert writeback.owed_write_backs().accounts == sorted(ids)


def test_a_write_back_storeganise_refuses_for_good_waits_longer_each_time_then_stands_as_a_problem(business, sim):
    """The rental was deleted in Storeganise after the push: each PUT is a 404. It must not cost Storeganise a call
    every relay for ever, nor hold back the accounts behind it; after a few refusals staff see it as a problem."""
    from dashboard.engine.intent import mark_dirty
    from dashboard.models import OpenProblem

    refused = pushable_account(sim)
    assert reconcile(refused.id, "test").outcome == "ok"
    rental = next(r for r in refused.customer.rentals if r.site_id == refused.site_id and r.active)
    other = next(r for r in db.session.scalars(select(Rental).where(Rental.state == "occupied").order_by(Rental.id))
                 if r.customer_id != refused.customer_id and r.site.code == "northgate" and r.unit.pti_unit_name
                 and " " not in r.unit.pti_unit_name)
    fine = mark_dirty(other.customer_id, other.site_id)
    db.session.commit()
    assert reconcile(fine.id, "test").outcome == "ok"
    sim.rentals.pop(rental.sg_id)  # deleted in Storeganise: its PUT is refused with a 404

    assert write_back_owed() == 1, "the account behind the refused one is still written"
    db.session.expire_all()
    first = db.session.get(PtiAccount, refused.id)
    assert (first.write_back_owed, first.write_back_refusals) == (True, 1)
    assert first.write_back_retry_at > utcnow()
    assert writeback.owed_write_backs().accounts == [], "not tried again before its wait is over"

    waits = []
    for refusal in range(2, writeback.REFUSALS_BEFORE_GIVING_UP + 1):
        account = db.session.get(PtiAccount, refused.id)
        waits.append(account.write_back_retry_at - utcnow())
        account.write_back_retry_at = utcnow()  # its wait is over
        db.session.commit()
        assert write_back_owed() == 0
        db.session.expire_all()
        assert db.session.get(PtiAccount, refused.id).write_back_refusals == refusal
    assert waits == sorted(waits), "each wait is longer than the one before"
    gave_up = db.session.get(PtiAccount, refused.id)
    assert gave_up.write_back_owed is False, "given up: no longer owed"
    [row] = db.session.scalars(select(OpenProblem).where(OpenProblem.entity == "customer",
                                                         OpenProblem.record_sg_id == gave_up.customer.sg_id)).all()
    assert row.reason == "storeganise_not_found"
    assert "refused the push's results (pti_* fields) 5 times in a row" in row.detail
    assert writeback.request_write_backs() is False

    # Recreated in Storeganise and pushed again: the write is accepted and the problem is gone.
    sim.rentals[rental.sg_id] = {"id": rental.sg_id, "customFields": {}}
    db.session.execute(update(PtiAccount).where(PtiAccount.id == refused.id)
                       .values(write_back_owed=True, write_back_retry_at=None))
    db.session.commit()
    assert write_back_owed() == 1
    db.session.expire_all()
    assert db.session.get(PtiAccount, refused.id).write_back_refusals == 0
    assert db.session.scalars(select(OpenProblem).where(OpenProblem.entity == "customer")).all() == []


def test_a_worker_killed_between_saving_the_customers_code_and_sending_it_still_sends_it(business, sim, sg,
                                                                                          monkeypatch):
    """The mirror takes the customer's new code before the PUT (so the echo finds nothing changed): a worker killed
    in between must not leave the retry believing Storeganise has it."""

    class Killed(BaseException):
        pass

    account = pushable_account(sim)
    assert reconcile(account.id, "test").outcome == "ok"
    db.session.execute(update(PtiAccount).where(PtiAccount.id == account.id).values(write_back_owed=True))
    db.session.commit()
    owner = account.customer.sg_id
    sim.users[owner].setdefault("customFields", {}).pop("pti_access_code", None)
    real = writeback.put_fields

    def killed(client, entity, *args):
        if entity == "user":
            raise Killed
        return real(client, entity, *args)

    from dashboard.jobqueue import get_redis
    get_redis().flushall()  # nothing remembered of the earlier write
    monkeypatch.setattr(writeback, "put_fields", killed)
    with pytest.raises(Killed):
        writeback.write_back(account.id, sg)
    db.session.rollback()
    assert db.session.get(PtiAccount, account.id).customer.pti_access_code == account.access_code  # saved before
    monkeypatch.setattr(writeback, "put_fields", real)
    write_back_owed()
    assert sim.users[owner]["customFields"]["pti_access_code"] == str(account.access_code)
    db.session.expire_all()
    assert db.session.get(PtiAccount, account.id).write_back_owed is False



def test_a_write_back_takes_the_account_before_its_rentals_as_every_writer_does(business, sim):
    """A write-back that wrote its rentals (Storeganise's answer to each PUT, flushed while the next PUT was on its
    way) before the account deadlocked on PostgreSQL with an overdue event's handler, which takes the account and
    then the rentals: the payment's unlock waited out RQ's retry. Every writer of a customer takes the account's row
    first."""
    account = pushable_account(sim)
    assert reconcile(account.id, "test").outcome == "ok"
    with sql_statements() as statements:
        write_back_account(account.id)
    rental_writes = [i for i, s in enumerate(statements) if s.startswith("update rentals")]
    account_locks = [i for i, s in enumerate(statements)  # SELECT ... FOR UPDATE, or an UPDATE of the row
                     if s.startswith(("select pti_accounts.id from pti_accounts where pti_accounts.id =",
                                      "update pti_accounts"))]
    assert rental_writes, "the write-back records Storeganise's answer on the rentals"
    assert account_locks and account_locks[0] < rental_writes[0]  # every rental written after the account's lock


def test_a_push_that_finishes_after_an_older_write_back_landed_is_owed_again(business, sim, monkeypatch):
    """The push read the account while its previous push's write-back was still owed; that write-back lands (and
    clears the flag) while this push runs. This push's results are owed all the same: the flag is written by its
    finish whatever the push read at its start (a value equal to the one read is not left out of the UPDATE)."""
    from dashboard.engine import reconcile as engine
    from dashboard.engine.intent import mark_dirty

    account = pushable_account(sim)
    account_id, site_id, customer_id = account.id, account.site_id, account.customer_id
    assert reconcile(account_id, "test").outcome == "ok"
    assert db.session.get(PtiAccount, account_id).write_back_owed is True  # its write-back not run yet
    mark_dirty(customer_id, site_id)
    db.session.commit()
    real = engine.apply_plan

    def older_write_back_lands(*args, **kwargs):  # what writeback._record does, from another process
        with db.engine.connect() as other:
            other.execute(update(PtiAccount.__table__).where(PtiAccount.__table__.c.id == account_id)
                          .values(write_back_owed=False))
            other.commit()
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "apply_plan", older_write_back_lands)
    assert reconcile(account_id, "test").outcome in ("ok", "noop")
    db.session.expire_all()
    assert db.session.get(PtiAccount, account_id).write_back_owed is True


def test_an_override_staff_change_while_the_previous_one_lands_is_owed(business, sim):
    """Staff's page read the customer while their previous override was still owed; that write-back lands (and clears
    the flag) before the new override is saved. The new one is owed all the same."""
    from dashboard.actions import set_access

    customer = db.session.scalar(select(Customer).join(Rental).where(Rental.state == "occupied").limit(1))
    set_access(customer, "staff@demo.test", level=2, zone=3)
    customer = db.session.get(Customer, customer.id)
    assert customer.overrides_owed is True  # read as staff's next request reads it
    with db.engine.connect() as other:  # what write_back_overrides does, from a worker
        other.execute(update(Customer.__table__).where(Customer.__table__.c.id == customer.id)
                      .values(overrides_owed=False))
        other.commit()
    set_access(customer, "staff@demo.test", level=4, zone=3)
    db.session.expire_all()
    customer = db.session.get(Customer, customer.id)
    assert (customer.access_level_override, customer.overrides_owed) == (4, True)


# --- a rental's pti_overlocked: owed from the change's own transaction until Storeganise accepted it ---------------


class Killed(BaseException):
    """The worker process dies (SIGKILL, the machine stops): nothing after the line that raises it runs."""


def lockout_killed_before_its_write(sim, hooks, monkeypatch, redis_url) -> dict:
    """An overdue event whose worker died after the mirror committed the lock, before its pti_overlocked PUT; then
    Redis forgot the memo of that write (it lasts two minutes). Returns Storeganise's rental."""
    from jobs.events import handle_delivery

    target = sole_rental(sim, overdue=False)
    sim.set_overdue(target["id"], True)
    [event] = hooks.deliver_new()

    def killed(self, rental_id, fields, **options):
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(StoreganiseClient, "update_unit_rental_custom_fields", killed)
        with pytest.raises(Killed):
            handle_delivery(event["id"])
    db.session.rollback()
    flush_redis(redis_url)
    return target


def land_copy(sg, sg_id: str):
    """A pull (or any handler) lands Storeganise's rental as it is now."""
    from dashboard.mirror.records import Effects, refresh_rental

    fx = Effects()
    refresh_rental(sg, sg_id, fx)
    db.session.commit()
    return fx


def past_the_grace(sg_id: str) -> None:
    """The relay's grace for the rental's own job ends (OVERLOCK_OWED_GRACE_S)."""
    owed_at = rental_row(sg_id).overlock_owed_at
    db.session.execute(update(Rental).where(Rental.sg_id == sg_id).values(
        overlock_owed_at=owed_at - timedelta(seconds=writeback.OVERLOCK_OWED_GRACE_S + 1)))
    db.session.commit()


def test_a_lock_whose_own_write_landed_is_owed_no_more(business, sim, hooks):
    from jobs.events import handle_delivery

    target = sole_rental(sim, overdue=False)
    sim.set_overdue(target["id"], True)
    [event] = hooks.deliver_new()
    assert handle_delivery(event["id"]) == "processed"
    row = rental_row(target["id"])
    assert (row.overlocked, row.overlock_owed_at) == (True, None)
    assert sim.rentals[target["id"]]["customFields"]["pti_overlocked"] is True


def test_a_lock_whose_worker_died_before_its_write_stays_locked_against_storeganises_older_value(
        business, sim, sg, hooks, monkeypatch, redis_url):
    """Storeganise still holds pti_overlocked false (our PUT never left) and the memo of our write is gone: the next
    copy of the rental, still overdue, must not read as a person's unsuspend. It did: the unit was unlocked for a
    customer who had not paid."""
    target = lockout_killed_before_its_write(sim, hooks, monkeypatch, redis_url)
    row = rental_row(target["id"])
    assert row.overlocked is True and row.overlock_owed_at is not None
    assert sim.rentals[target["id"]]["customFields"]["pti_overlocked"] is False
    generation_then = db.session.scalar(select(PtiAccount.generation).where(
        PtiAccount.customer_id == row.customer_id, PtiAccount.site_id == row.site_id))
    fx = land_copy(sg, target["id"])
    row = rental_row(target["id"])
    assert (row.overdue, row.overlocked) == (True, True)
    assert row.overlock_owed_at is not None  # still owed: the relay writes it
    assert fx.overlocks == {} and fx.accounts == {}  # nothing pushed, nothing written by the landing
    assert db.session.scalar(select(PtiAccount.generation).where(
        PtiAccount.customer_id == row.customer_id, PtiAccount.site_id == row.site_id)) == generation_then


def test_the_relay_writes_a_lock_whose_worker_died_before_its_write(business, sim, hooks, monkeypatch, redis_url):
    target = lockout_killed_before_its_write(sim, hooks, monkeypatch, redis_url)
    row = rental_row(target["id"])
    assert writeback.owed_write_backs().rentals == []  # its own job might still write it: the relay waits
    past_the_grace(target["id"])
    assert writeback.owed_write_backs().rentals == [row.id]
    assert writeback.request_write_backs() is True
    assert write_back_owed() >= 1
    assert sim.rentals[target["id"]]["customFields"]["pti_overlocked"] is True
    assert rental_row(target["id"]).overlock_owed_at is None
    assert writeback.request_write_backs() is False


def test_a_lock_storeganise_cannot_take_stays_owed_until_it_can(business, sim, hooks, monkeypatch, redis_url):
    target = lockout_killed_before_its_write(sim, hooks, monkeypatch, redis_url)
    past_the_grace(target["id"])
    sim.configure(faults={"error_rate": 1.0, "error_status": 503})
    with pytest.raises(StoreganiseError):
        write_back_owed()
    assert rental_row(target["id"]).overlock_owed_at is not None
    sim.configure(faults={"error_rate": 0.0})
    assert write_back_owed() >= 1
    assert sim.rentals[target["id"]]["customFields"]["pti_overlocked"] is True
    assert rental_row(target["id"]).overlock_owed_at is None


def test_a_rental_storeganise_refuses_for_good_is_owed_no_more_and_the_others_are_written(
        business, sim, hooks, monkeypatch, caplog, redis_url):
    gone = lockout_killed_before_its_write(sim, hooks, monkeypatch, redis_url)
    other = lockout_killed_before_its_write(sim, hooks, monkeypatch, redis_url)  # the first is overdue now
    for sg_id in (gone["id"], other["id"]):
        past_the_grace(sg_id)
    del sim.rentals[gone["id"]]  # deleted in Storeganise meanwhile: a PUT of it is refused with a 404
    assert write_back_owed() >= 1
    assert rental_row(gone["id"]).overlock_owed_at is None
    assert f"refused pti_overlocked True of rental {gone['id']}" in caplog.text
    assert sim.rentals[other["id"]]["customFields"]["pti_overlocked"] is True
    assert rental_row(other["id"]).overlock_owed_at is None
    assert overlock_problems() == []  # deleted there: nothing for staff to do (its deletion ends it here)


def overlock_problems() -> list[str]:
    """The rentals whose pti_overlocked stands refused, as the problem register holds them."""
    return list(db.session.scalars(refused_overlocks()))


def test_a_pti_overlocked_storeganise_refuses_stands_as_a_problem_until_a_write_of_it_is_accepted(
        business, sim, hooks, monkeypatch, redis_url):
    """Storeganise refuses the lockout's flag (a field it will not take): writing it again would be refused again,
    so it is no longer owed, and staff must hear that Storeganise's field no longer says what the gate does."""
    from dashboard.actions import resync_rental
    from dashboard.engine.problems import problems_of

    target = lockout_killed_before_its_write(sim, hooks, monkeypatch, redis_url)
    past_the_grace(target["id"])
    sim.configure(faults={"error_rate": 1.0, "error_status": 422})
    write_back_owed()
    sim.configure(faults={"error_rate": 0.0})
    row = rental_row(target["id"])
    assert row.overlock_owed_at is None and sim.rentals[target["id"]]["customFields"]["pti_overlocked"] is False
    [standing] = problems_of("rental", target["id"])  # what the rental's page shows
    assert (standing.reason, standing.target_type, standing.target_id) == ("storeganise_rejected", "unit",
                                                                          row.unit.sg_id)
    assert "pti_overlocked = true" in standing.detail and "locked out" in standing.detail
    assert queued_jobs(REPORT_PROBLEMS), "the problem is to be raised in Storeganise as a task"

    resync_rental(row, "support@demo.test")  # staff fixed the field in Storeganise, and resync the rental
    assert rental_row(target["id"]).overlock_owed_at is not None  # owed again: the push's write-back sends it
    account = db.session.scalar(select(PtiAccount).where(PtiAccount.customer_id == row.customer_id,
                                                         PtiAccount.site_id == row.site_id))
    assert reconcile(account.id, "test").outcome in ("ok", "noop")
    write_back_account(account.id)
    assert sim.rentals[target["id"]]["customFields"]["pti_overlocked"] is True
    assert rental_row(target["id"]).overlock_owed_at is None
    assert overlock_problems() == []  # accepted: Storeganise says what the gate does again


def test_a_lock_written_after_the_payment_landed_is_undone_by_the_relay(business, sim, sg, hooks, monkeypatch):
    """The lock's PUT leaves, then the payment lands in the mirror (Storeganise still held false, so its handler
    writes nothing), then the lock's PUT is accepted: Storeganise says locked for a customer who paid. The lock's
    acceptance must not settle what is owed (the mirror's unlock), and the relay writes it."""
    from dashboard.mirror.records import Effects, refresh_rental
    from jobs.events import handle_delivery

    target = sole_rental(sim, overdue=False)
    sim.set_overdue(target["id"], True)
    [event] = hooks.deliver_new()
    real = StoreganiseClient.update_unit_rental_custom_fields
    paid: list[bool] = []

    def payment_lands_meanwhile(self, rental_id, fields, **options):
        if not paid:
            paid.append(True)
            sim.set_overdue(target["id"], False)
            fx = Effects()  # the payment's handler, in another worker: its own PUT is not made here
            refresh_rental(sg, target["id"], fx, overdue_event=True)
            db.session.commit()
            assert fx.overlocks == {}  # Storeganise holds false already, as far as the payment's copy says
        return real(self, rental_id, fields, **options)

    with monkeypatch.context() as patch:
        patch.setattr(StoreganiseClient, "update_unit_rental_custom_fields", payment_lands_meanwhile)
        handle_delivery(event["id"])
    assert sim.rentals[target["id"]]["customFields"]["pti_overlocked"] is True  # the lock's late PUT
    row = rental_row(target["id"])
    assert row.overlocked is False and row.overlock_owed_at is not None  # the mirror's unlock is still owed
    past_the_grace(target["id"])
    assert write_back_owed() >= 1
    assert sim.rentals[target["id"]]["customFields"]["pti_overlocked"] is False
    assert rental_row(target["id"]).overlock_owed_at is None


def test_a_suspend_staff_set_is_owed_until_written_and_kept_against_older_copies(business, sim, sg, redis_url):
    """Staff suspend a rental whose push has not run (PTI down, say): Storeganise is owed pti_overlocked true, a copy
    of the rental read meanwhile must not undo the suspend, and the relay writes it."""
    from dashboard.actions import set_suspended

    target = sole_rental(sim, overdue=False)
    row = rental_row(target["id"])
    set_suspended(row, True, "test")
    row = rental_row(target["id"])
    assert row.overlocked is True and row.overlock_owed_at is not None
    flush_redis(redis_url)
    land_copy(sg, target["id"])
    assert rental_row(target["id"]).overlocked is True
    past_the_grace(target["id"])
    assert write_back_owed() >= 1
    assert sim.rentals[target["id"]]["customFields"]["pti_overlocked"] is True
    assert rental_row(target["id"]).overlock_owed_at is None


def test_a_push_whose_write_back_carries_an_owed_lock_settles_it_even_when_redis_remembers_writing_it(business, sim):
    """The push's write-back PUTs every in-sync rental's pti_overlocked: one that is owed is sent whatever Redis
    remembers (only Storeganise's acceptance settles it), and no longer owed after."""
    account = pushable_account(sim)
    rental = next(r for r in account.customer.rentals if r.site_id == account.site_id and r.active)
    assert reconcile(account.id, "test").outcome == "ok"
    write_back_owed()
    writes_before = len(sim.snapshot()["writes"])
    db.session.execute(update(Rental).where(Rental.id == rental.id).values(overlock_owed_at=utcnow()))
    db.session.execute(update(PtiAccount).where(PtiAccount.id == account.id).values(write_back_owed=True))
    db.session.commit()
    write_back_owed()
    assert [w["id"] for w in sim.snapshot()["writes"][writes_before:]] == [rental.sg_id]
    assert rental_row(rental.sg_id).overlock_owed_at is None

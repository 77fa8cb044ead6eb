"""Each Storeganise event lands in the mirror and marks the right customer for a push (without running the engine).

The simulator plays Storeganise; its webhooks reach the product's receiver signed, and the worker's job function
(jobs.events.handle_delivery) then runs in the test. Reconcile requests are read from the RQ queues.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from dashboard.extensions import db
from dashboard.jobqueue import get_redis
from dashboard.mirror.importer import import_business
from dashboard.models import Customer, PtiAccount, Rental, Unit, WebhookDelivery
from dashboard.storeganise import StoreganiseError, compact_json, sign
from jobs.events import handle_delivery
from tests.conftest import flush_redis, sql_statements

from .conftest import reconcile_requests, rental, sole_rental


@pytest.fixture
def business(app, sg, redis_url):
    """The simulator's business imported into the mirror; then the import's own reconcile requests forgotten."""
    import_business(sg)
    flush_redis(redis_url)


def run(records: list[dict]) -> list[str]:
    """Run the worker's job for each delivered webhook; returns their final statuses."""
    return [handle_delivery(record["id"]) for record in records]


def settle(hooks) -> list[str]:
    """Deliver and handle everything the simulator sent, until it sends nothing more (echoes included)."""
    statuses = []
    while records := hooks.deliver_new():
        statuses += run(records)
    return statuses


def forget_requests(redis_url) -> None:
    flush_redis(redis_url)


def account_of(rental_row: Rental) -> PtiAccount:
    return db.session.scalar(select(PtiAccount).where(PtiAccount.customer_id == rental_row.customer_id,
                                                      PtiAccount.site_id == rental_row.site_id))


def generation(rental_row: Rental) -> int:
    account = account_of(rental_row)
    return account.generation if account else 0


def free_unit(sim) -> dict:
    return next(u for u in sim.units.values() if u["state"] == "available" and u["customFields"].get("pti_id"))


def test_move_in_lands_the_rental_and_the_new_customer_and_asks_for_a_push(business, sim, hooks):
    unit = free_unit(sim)
    ids = sim.move_in(unit["id"], "new.tenant@example.com", "New", "Tenant")
    [record] = hooks.deliver_new()
    assert record["type"] == "job.unit_moveIn.completed"
    assert run([record]) == ["processed"]
    row = rental(ids["unitRentalId"])
    assert row.state == "occupied" and row.unit.sg_id == unit["id"] and not row.overlocked
    assert row.customer.email == "new.tenant@example.com" and row.customer.sg_id == ids["userId"]
    account = account_of(row)
    assert (account.generation, account.synced_generation, account.state) == (2, 0, "pending")
    assert reconcile_requests() == [("default", account.id, "job.unit_moveIn.completed")]
    assert db.session.get(WebhookDelivery, record["id"]).status == "processed"


def test_move_out_ends_the_rental_and_asks_for_a_push(business, sim, hooks):
    target = sole_rental(sim)
    before = generation(rental(target["id"]))
    sim.move_out(target["id"])
    assert settle(hooks) == ["processed"]
    row = rental(target["id"])
    assert row.state == "ended" and not row.active
    assert generation(row) == before + 1
    assert reconcile_requests() == [("default", account_of(row).id, "job.unit_moveOut.completed")]


def test_transfer_lands_both_rentals_for_the_same_customer(business, sim, hooks):
    old = sole_rental(sim)
    unit = free_unit(sim)
    ids = sim.transfer(old["id"], unit["id"])
    assert settle(hooks) == ["processed"]
    old_row, new_row = rental(old["id"]), rental(ids["newRentalId"])
    assert old_row.state == "ended" and new_row.state == "occupied"
    assert new_row.customer_id == old_row.customer_id and new_row.unit.sg_id == unit["id"]
    assert reconcile_requests() == [("default", account_of(new_row).id, "job.unit_transfer.completed")]


def test_overdue_locks_the_rental_urgently_and_writes_pti_overlocked_back(business, sim, hooks, redis_url):
    target = sole_rental(sim, overdue=False)
    before = generation(rental(target["id"]))
    sim.set_overdue(target["id"], True)
    [record] = hooks.deliver_new()
    received = db.session.get(WebhookDelivery, record["id"])
    assert (received.rental_sg_id, received.handled_at) == (target["id"], None)  # named at receipt, for its journey
    assert run([record]) == ["processed"]
    row = rental(target["id"])
    assert row.overdue and row.overlocked
    assert db.session.get(WebhookDelivery, record["id"]).handled_at is not None
    account = account_of(row)
    assert account.urgent and account.generation == before + 1
    assert reconcile_requests() == [("urgent", account.id, "unitRental.markOverdue")]
    assert sim.rentals[target["id"]]["customFields"]["pti_overlocked"] is True
    assert sim.snapshot()["writes"][-1] == {**sim.snapshot()["writes"][-1], "entity": "unitRental",
                                            "id": target["id"], "fields": {"pti_overlocked": True}}
    forget_requests(redis_url)
    [echo] = hooks.deliver_new()  # our own write comes back as unitRental.updated
    assert echo["type"] == "unitRental.updated"
    assert run([echo]) == ["processed"]
    assert reconcile_requests() == [] and generation(rental(target["id"])) == before + 1


def test_an_overdue_event_locks_the_account_before_it_writes_the_rental(business, sim, hooks):
    """The order every writer of a customer keeps, the account and then its rentals: a handler that wrote the rental
    first deadlocked on PostgreSQL with a push finishing the same customer, and the lock waited out RQ's retry."""
    target = sole_rental(sim, overdue=False)
    sim.set_overdue(target["id"], True)
    [record] = hooks.deliver_new()
    with sql_statements() as statements:
        assert run([record]) == ["processed"]
    rental_writes = [i for i, s in enumerate(statements) if s.startswith("update rentals")]
    account_locks = [i for i, s in enumerate(statements) if s.startswith("select pti_accounts.id from pti_accounts")]
    assert rental_writes and account_locks and account_locks[0] < rental_writes[0]
    assert rental(target["id"]).overlocked


def test_an_overdue_event_asks_for_its_push_without_reading_the_account_again(business, sim, hooks):
    """The landing's commit keeps what it wrote loaded: the urgent push it asks for takes the account's id and
    urgency from the mark, not from a read of the account after the commit (one statement fewer an event)."""
    target = sole_rental(sim, overdue=False)
    sim.set_overdue(target["id"], True)
    [record] = hooks.deliver_new()
    with sql_statements() as statements:
        assert run([record]) == ["processed"]
    account_reads = [s for s in statements if s.startswith("select pti_accounts.id, pti_accounts.customer_id")]
    assert len(account_reads) == 1, account_reads  # the mark's, under its lock
    assert reconcile_requests() == [("urgent", account_of(rental(target["id"])).id, "unitRental.markOverdue")]


def test_an_overdue_event_reads_what_stands_on_its_three_records_at_once_and_closes_what_reads_well(
        business, sim, hooks):
    """The rental, its unit and its owner land together: the unreadable values standing on them are read in one
    statement, and one that reads well now is closed as before."""
    from dashboard.engine.problems import BAD_VALUE
    from dashboard.models import OpenProblem, utcnow

    target = sole_rental(sim, overdue=False)
    unit = db.session.scalar(select(Unit).where(Unit.sg_id == target["unitId"]))
    db.session.add(OpenProblem(cause=f"value:unit:{unit.sg_id}:pti_id", reason=BAD_VALUE, entity="unit",
                               record_sg_id=unit.sg_id, target_type="unit", target_id=unit.sg_id,
                               subject=f"unit {unit.name}", detail="pti_id is ?: unreadable.", site_id=unit.site_id,
                               opened_at=utcnow()))
    db.session.commit()
    sim.set_overdue(target["id"], True)
    [record] = hooks.deliver_new()
    with sql_statements() as statements:
        assert run([record]) == ["processed"]
    reads = [s for s in statements if s.startswith("select") and " from problems " in s
             and "problems.record_sg_id" in s]
    assert len(reads) == 1, reads
    assert db.session.scalar(select(OpenProblem).where(OpenProblem.record_sg_id == unit.sg_id)) is None


def test_payment_unlocks_the_rental_urgently(business, sim, hooks, redis_url):
    target = sole_rental(sim, overdue=True)
    assert rental(target["id"]).overlocked
    sim.set_overdue(target["id"], False)
    assert settle(hooks) == ["processed", "echo"]  # the event, then the echo of our pti_overlocked write
    row = rental(target["id"])
    assert not row.overdue and not row.overlocked
    assert reconcile_requests() == [("urgent", account_of(row).id, "unitRental.unmarkOverdue")]
    assert sim.rentals[target["id"]]["customFields"]["pti_overlocked"] is False


def test_a_manual_suspend_in_storeganise_is_pushed_urgently(business, sim, hooks):
    target = sole_rental(sim, overdue=False)
    sim.edit("unitRental", target["id"], {"pti_overlocked": True})
    assert settle(hooks) == ["processed"]
    row = rental(target["id"])
    assert row.overlocked and not row.overdue
    assert reconcile_requests() == [("urgent", account_of(row).id, "unitRental.updated")]


def test_a_manual_unsuspend_of_an_overdue_rental_stays_unsuspended(business, sim, hooks):
    target = sole_rental(sim, overdue=True)
    sim.edit("unitRental", target["id"], {"pti_overlocked": False})
    settle(hooks)
    row = rental(target["id"])
    assert row.overdue and not row.overlocked  # staff's decision, recorded in pti_overlocked, is kept
    assert [q for q, *_ in reconcile_requests()] == ["urgent"]


def test_editing_pti_synced_by_hand_asks_for_a_push(business, sim, hooks):
    target = sole_rental(sim)
    sim.edit("unitRental", target["id"], {"pti_synced": "2023-08-17T19:03:12.008Z"})
    settle(hooks)
    row = rental(target["id"])
    assert row.pti_synced.isoformat() == "2023-08-17T19:03:12.008000"
    assert reconcile_requests() == [("default", account_of(row).id, "unitRental.updated")]
    assert not account_of(row).urgent


def test_a_rental_update_of_fields_pti_does_not_use_is_not_even_read(business, sim, hooks, sg_app):
    target = sole_rental(sim)
    body = compact_json({"id": "e-notes", "type": "unitRental.updated", "created": None,
                         "data": {"unitRentalId": target["id"], "changedKeys": ["notes", "customFields.gate_note"]}})
    hooks.post(body)
    sim.configure(faults={"error_rate": 1.0})  # any read would fail
    assert handle_delivery("e-notes") == "processed"
    assert reconcile_requests() == []


def test_an_override_on_the_customer_is_pushed_at_every_site_they_rent(business, sim, hooks):
    target = sole_rental(sim)
    sim.edit("user", target["ownerId"], {"pti_access_level": 3, "pti_zone": 2})
    settle(hooks)
    customer = db.session.scalar(select(Customer).where(Customer.sg_id == target["ownerId"]))
    assert (customer.access_level_override, customer.zone_override) == (3, 2)
    row = rental(target["id"])
    assert reconcile_requests() == [("default", account_of(row).id, "user.updated")]


def test_a_user_the_mirror_does_not_hold_is_not_fetched(business, sim, hooks, sg_app):
    body = compact_json({"id": "e-stranger", "type": "user.updated", "data": {"userId": "0123456789abcdef01234567"}})
    hooks.post(body)
    assert handle_delivery("e-stranger") == "processed"
    assert db.session.scalar(select(Customer).where(Customer.sg_id == "0123456789abcdef01234567")) is None


def test_a_renamed_pti_unit_name_pushes_the_customer_renting_it(business, sim, hooks):
    target = sole_rental(sim)
    sim.edit("unit", target["unitId"], {"pti_id": "Z999"})
    settle(hooks)
    unit = db.session.scalar(select(Unit).where(Unit.sg_id == target["unitId"]))
    assert unit.pti_unit_name == "Z999"
    assert reconcile_requests() == [("default", account_of(rental(target["id"])).id, "unit.updated")]


def test_renaming_an_empty_unit_pushes_nobody(business, sim, hooks):
    unit = free_unit(sim)
    sim.edit("unit", unit["id"], {"pti_id": "Z998"})
    settle(hooks)
    assert db.session.scalar(select(Unit).where(Unit.sg_id == unit["id"])).pti_unit_name == "Z998"
    assert reconcile_requests() == []


def test_an_event_with_only_a_job_id_is_read_through_its_job(business, sim, hooks):
    unit = free_unit(sim)
    ids = sim.move_in(unit["id"], "job.only@example.com", "Job", "Only")
    hooks.skip_new()
    body = compact_json({"id": "e-job", "type": "job.unit_moveIn.completed", "data": {"jobId": ids["jobId"]}})
    hooks.post(body)
    assert handle_delivery("e-job") == "processed"
    assert rental(ids["unitRentalId"]).customer.email == "job.only@example.com"


def test_a_site_and_unit_the_mirror_does_not_know_are_fetched_first(app, sg, sim, hooks):
    unit = free_unit(sim)
    ids = sim.move_in(unit["id"], "first@example.com", "First", "Ever")
    assert settle(hooks) == ["processed"]  # the mirror was empty
    row = rental(ids["unitRentalId"])
    assert row.site.sg_id == unit["siteId"] and row.site.pti_site_code and row.site.pti_credentials
    assert row.unit.pti_unit_name == unit["customFields"]["pti_id"]


def test_a_record_storeganise_no_longer_has_fails_the_delivery_with_the_message(business, hooks):
    body = compact_json({"id": "e-gone", "type": "unitRental.markOverdue", "data": {"unitRentalId": "gone"}})
    hooks.post(body)
    assert handle_delivery("e-gone") == "failed"
    delivery = db.session.get(WebhookDelivery, "e-gone")
    assert delivery.status == "failed" and "no such record" in delivery.error
    assert reconcile_requests() == []


def test_an_event_naming_nothing_fails_with_a_plain_error(business, hooks):
    hooks.post(compact_json({"id": "e-empty", "type": "job.unit_moveOut.completed", "data": {}}))
    assert handle_delivery("e-empty") == "failed"
    assert "names no unit rental" in db.session.get(WebhookDelivery, "e-empty").error


def test_a_transient_storeganise_error_is_raised_and_the_delivery_stays_queued(business, sim, hooks):
    target = sole_rental(sim)
    sim.set_overdue(target["id"], True)
    [record] = hooks.deliver_new()
    sim.configure(faults={"error_rate": 1.0, "error_status": 503})
    with pytest.raises(StoreganiseError) as failure:
        handle_delivery(record["id"])
    assert failure.value.retryable
    db.session.expire_all()
    delivery = db.session.get(WebhookDelivery, record["id"])
    assert delivery.status == "queued" and "503" in delivery.error
    assert not rental(target["id"]).overdue  # nothing half-applied
    sim.configure(faults={"error_rate": 0.0})
    assert handle_delivery(record["id"]) == "processed"  # the retry
    assert rental(target["id"]).overlocked


def test_a_failed_pti_overlocked_write_is_written_by_the_retry(business, sim, hooks, sg_app, monkeypatch):
    target = sole_rental(sim, overdue=False)
    sim.set_overdue(target["id"], True)
    [record] = hooks.deliver_new()
    from dashboard.storeganise import StoreganiseClient

    def refuse(self, rental_id, fields, **options):
        raise StoreganiseError("Storeganise timed out.", reason="storeganise_unreachable", retryable=True)

    with monkeypatch.context() as patch:
        patch.setattr(StoreganiseClient, "update_unit_rental_custom_fields", refuse)
        with pytest.raises(StoreganiseError):
            handle_delivery(record["id"])
    assert rental(target["id"]).overlocked  # PTI is locked meanwhile
    assert db.session.get(WebhookDelivery, record["id"]).status == "queued"
    assert handle_delivery(record["id"]) == "processed"
    assert sim.rentals[target["id"]]["customFields"]["pti_overlocked"] is True


def test_a_delivery_handled_twice_acts_once(business, sim, hooks, redis_url):
    target = sole_rental(sim)
    sim.move_out(target["id"])
    [record] = hooks.deliver_new()
    assert run([record]) == ["processed"]
    gen = generation(rental(target["id"]))
    forget_requests(redis_url)
    assert run([record]) == ["processed"]
    assert generation(rental(target["id"])) == gen and reconcile_requests() == []


def test_an_ignored_type_recorded_as_queued_is_ignored_by_the_worker(business, hooks, app):
    db.session.add(WebhookDelivery(id="e-odd", type="invoice.paid", status="queued", payload={}))
    db.session.commit()
    assert handle_delivery("e-odd") == "ignored"


def test_signed_bodies_from_the_simulator_verify_with_the_products_secret(hooks, sim, app):
    unit = free_unit(sim)
    sim.move_in(unit["id"], "sig@example.com", "Sig", "Check")
    [record] = sim.snapshot()["webhooks"]
    body = hooks.body(record)
    assert hooks.post(body, sign("wrong", body)).status_code == 401
    assert hooks.post(body).status_code == 200


def test_the_late_echo_of_an_overdue_lock_does_not_lock_a_rental_just_paid(business, sim, hooks, sg):
    """Payment lands between our pti_overlocked=true write and its echo: the echo must not read as a suspend."""
    from dashboard.engine.writeback import write_overlocks
    from dashboard.mirror.records import Effects, refresh_rental

    target = sole_rental(sim, overdue=False)
    sim.set_overdue(target["id"], True)
    [overdue] = hooks.deliver_new()
    assert run([overdue]) == ["processed"]  # locks, and writes pti_overlocked=true to Storeganise
    sim.set_overdue(target["id"], False)
    # The payment's handler has updated the mirror, but its pti_overlocked=false has not reached Storeganise yet.
    fx = Effects()
    refresh_rental(sg, target["id"], fx, overdue_event=True)
    db.session.commit()
    for key in get_redis().scan_iter("pti-sync:echo:*"):  # the receiver's note of our write is lost: the echo
        get_redis().delete(key)                           # takes the handler's path, which must be as safe
    echo = next(r for r in hooks.deliver_new() if r["type"] == "unitRental.updated")
    assert run([echo]) == ["processed"]
    assert rental(target["id"]).overlocked is False  # not re-locked by our own older value
    write_overlocks(sg, fx.overlocks)
    assert sim.rentals[target["id"]]["customFields"]["pti_overlocked"] is False


def _apply_snapshot(sg, monkeypatch, snapshot: dict):
    """Land a copy of a rental some handler read earlier (its GET answered before our PUT landed)."""
    from dashboard.mirror.records import Effects, refresh_rental
    from dashboard.storeganise import StoreganiseClient

    fx = Effects()
    with monkeypatch.context() as patch:
        patch.setattr(StoreganiseClient, "get_unit_rental", lambda self, rental_id, include=(): snapshot)
        refresh_rental(sg, snapshot["id"], fx)
    db.session.commit()
    return fx


@pytest.mark.parametrize("overdue", [True, False], ids=["lockout", "payment"])
def test_a_copy_read_before_our_overlock_write_landed_is_not_a_manual_change(business, sim, hooks, sg, monkeypatch,
                                                                            overdue):
    """A second handler read the rental while our pti_overlocked was on its way, and lands that copy after the write
    succeeded: its old value is our own past, not a person's (un)suspend. A lockout must stay locked, a payment
    unlocked, and nothing is written again."""
    target = sole_rental(sim, overdue=not overdue)
    sim.set_overdue(target["id"], overdue)
    stale = sg.get_unit_rental(target["id"], include=("unit", "owner", "customFields"))
    [event] = [r for r in hooks.deliver_new() if r["type"] != "unitRental.updated"]
    assert run([event]) == ["processed"]
    assert sim.rentals[target["id"]]["customFields"]["pti_overlocked"] is overdue
    fx = _apply_snapshot(sg, monkeypatch, stale)
    assert rental(target["id"]).overlocked is overdue and fx.overlocks == {}


def test_a_manual_unsuspend_after_our_lock_landed_is_honoured(business, sim, hooks, sg, monkeypatch):
    """The memo of our write must not hide what staff do after it: a newer copy is Storeganise's word."""
    target = sole_rental(sim, overdue=False)
    sim.set_overdue(target["id"], True)
    [overdue] = [r for r in hooks.deliver_new() if r["type"] != "unitRental.updated"]
    assert run([overdue]) == ["processed"]
    sim.edit("unitRental", target["id"], {"pti_overlocked": False})
    fresh = sg.get_unit_rental(target["id"], include=("unit", "owner", "customFields"))
    _apply_snapshot(sg, monkeypatch, fresh)
    assert rental(target["id"]).overlocked is False


def test_a_copy_older_than_the_mirrors_is_not_landed(business, sim, hooks, sg, monkeypatch):
    """An import or pull read the rental before Storeganise marked it overdue, and lands it after the overdue event
    was handled: that old copy must not read as a payment (unlocking the unit and writing pti_overlocked=false)."""
    target = sole_rental(sim, overdue=False)
    before = sg.get_unit_rental(target["id"], include=("unit", "owner", "customFields"))
    sim.set_overdue(target["id"], True)
    [overdue] = [r for r in hooks.deliver_new() if r["type"] != "unitRental.updated"]
    assert run([overdue]) == ["processed"]
    generation_then = generation(rental(target["id"]))
    fx = _apply_snapshot(sg, monkeypatch, before)
    landed = rental(target["id"])
    assert (landed.overdue, landed.overlocked) == (True, True)
    assert fx.overlocks == {} and generation(landed) == generation_then
    assert sim.rentals[target["id"]]["customFields"]["pti_overlocked"] is True


def test_a_payment_between_our_read_and_our_overlock_write_still_unlocks(business, sim, hooks, sg, monkeypatch):
    """The overdue handler reads the rental, the customer pays, then our pti_overlocked PUT lands: Storeganise answers
    it with a newer `updated`, but the payment's handler read the rental before that PUT. Its copy is older than the
    answer and yet carries a change the mirror never saw: it must land (seen on the full-size bench: the unit stayed
    locked after the payment until the next pull)."""
    from dashboard.mirror.records import Effects, refresh_rental
    from dashboard.storeganise import StoreganiseClient

    target = sole_rental(sim, overdue=False)
    sim.set_overdue(target["id"], True)
    [overdue] = [r for r in hooks.deliver_new() if r["type"] != "unitRental.updated"]
    paid_copy: dict = {}
    real = StoreganiseClient.update_unit_rental_custom_fields

    def paid_meanwhile(self, rental_id, fields, **options):
        if not paid_copy:
            sim.set_overdue(target["id"], False)
            paid_copy.update(sg.get_unit_rental(target["id"], include=("unit", "owner", "customFields")))
        return real(self, rental_id, fields, **options)

    with monkeypatch.context() as patch:
        patch.setattr(StoreganiseClient, "update_unit_rental_custom_fields", paid_meanwhile)
        assert run([overdue]) == ["processed"]
    assert rental(target["id"]).overdue  # the overdue handler landed what it read
    generation_then = generation(rental(target["id"]))
    fx = Effects()
    with monkeypatch.context() as patch:  # the payment's handler lands the copy it read before our PUT landed
        patch.setattr(StoreganiseClient, "get_unit_rental", lambda self, rental_id, include=(): paid_copy)
        refresh_rental(sg, target["id"], fx, overdue_event=True)
    db.session.commit()
    row = rental(target["id"])
    assert (row.overdue, row.overlocked) == (False, False)
    assert generation(row) > generation_then and fx.accounts

"""POST /webhooks/storeganise (R8): only signed, fresh, well-formed deliveries are recorded, each id once, and
the answer never waits for Storeganise, PTI or even Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from dashboard.extensions import db
from dashboard.jobqueue import HANDLE_DELIVERY
from dashboard.mirror.deliveries import job_id, requeue_stale_deliveries
from dashboard.models import WebhookDelivery
from dashboard.storeganise import compact_json, sign
from tests.conftest import flush_redis

from .conftest import queued_jobs

SECRET = "test-webhook-secret"


def now_iso(offset: timedelta = timedelta()) -> str:
    return (datetime.now(UTC) + offset).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(event_id: str = "65a1f0c2e4b0a1b2c3d4e5f6", event_type: str = "unitRental.updated", **changes) -> dict:
    body = {"id": event_id, "type": event_type, "created": now_iso(),
            "data": {"unitRentalId": "r1", "changedKeys": ["customFields.pti_synced"]}}
    return {**body, **changes}


def post(client, body: bytes, signature: str | None = None, *, sign_it: bool = True):
    headers = {"Content-Type": "application/json"}
    if sign_it:
        headers["sg-signature"] = signature if signature is not None else sign(SECRET, body)
    return client.post("/webhooks/storeganise", data=body, headers=headers)


def deliveries() -> list[WebhookDelivery]:
    db.session.expire_all()
    return db.session.scalars(select(WebhookDelivery)).all()


def test_a_signed_delivery_is_recorded_and_enqueued_for_the_worker(client):
    response = post(client, compact_json(event()))
    assert response.status_code == 200 and response.json == {"status": "queued"}
    [row] = deliveries()
    assert (row.id, row.type, row.status) == ("65a1f0c2e4b0a1b2c3d4e5f6", "unitRental.updated", "queued")
    assert row.payload["data"]["unitRentalId"] == "r1"
    [(queue, job)] = queued_jobs(HANDLE_DELIVERY)
    assert queue == "default" and job.args == ("65a1f0c2e4b0a1b2c3d4e5f6",)
    assert job.id == job_id(row.id)


@pytest.mark.parametrize("event_type", ["unitRental.markOverdue", "unitRental.unmarkOverdue"])
def test_lock_and_unlock_events_go_to_the_urgent_queue(client, event_type):
    assert post(client, compact_json(event(event_type=event_type, data={"unitRentalId": "r1"}))).status_code == 200
    assert [queue for queue, _ in queued_jobs(HANDLE_DELIVERY)] == ["urgent"]


def test_a_delivery_without_a_signature_is_refused_and_not_recorded(client):
    response = post(client, compact_json(event()), sign_it=False)
    assert response.status_code == 401
    assert deliveries() == [] and queued_jobs() == []


def test_a_forged_signature_is_refused_and_not_recorded(client):
    body = compact_json(event())
    assert post(client, body, sign("someone-else's-secret", body)).status_code == 401
    assert post(client, body, "not base64 at all ✓").status_code == 401
    assert deliveries() == [] and queued_jobs() == []


def test_the_signature_covers_the_raw_bytes_not_a_reserialisation(client):
    body = compact_json(event())
    spaced = body.replace(b",", b", ")
    assert post(client, spaced, sign(SECRET, body)).status_code == 401
    assert post(client, spaced, sign(SECRET, spaced)).status_code == 200


def test_non_ascii_bodies_are_verified_over_their_utf8_bytes(client):
    body = compact_json(event(data={"unitRentalId": "r1", "note": "Crème brûlée, 東京"}))
    assert b"\xc3\xa8" in body
    assert post(client, body).status_code == 200


@pytest.mark.parametrize("body, words", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (compact_json({"type": "unitRental.updated", "data": {}}), "no event id"),
    (compact_json({"id": "e1", "data": {}}), "no event type"),
    (compact_json({"id": "e1", "type": "unitRental.updated", "created": "yesterday"}), "not an ISO-8601"),
    (compact_json({"id": "e" * 65, "type": "unitRental.updated"}), "longer than 64"),
])
def test_a_malformed_body_gets_400_with_a_plain_message_and_is_not_recorded(client, body, words):
    response = post(client, body)
    assert response.status_code == 400
    assert response.mimetype == "text/plain" and words in response.get_data(as_text=True)
    assert deliveries() == []


def test_an_unknown_event_type_is_recorded_as_ignored_and_not_enqueued(client):
    response = post(client, compact_json(event(event_type="invoice.paid", data={"invoiceId": "i1"})))
    assert response.status_code == 200 and response.json == {"status": "ignored"}
    [row] = deliveries()
    assert row.status == "ignored" and row.type == "invoice.paid"
    assert queued_jobs() == []


def test_a_replayed_delivery_id_is_acknowledged_once_and_acted_on_once(client):
    body = compact_json(event())
    assert post(client, body).json == {"status": "queued"}
    replay = post(client, body)
    assert replay.status_code == 200 and replay.json == {"status": "duplicate"}
    resent = compact_json(event(created=now_iso(timedelta(seconds=5))))  # same id, new bytes: still a replay
    assert post(client, resent).json == {"status": "duplicate"}
    assert len(deliveries()) == 1 and len(queued_jobs(HANDLE_DELIVERY)) == 1


@pytest.mark.parametrize("offset", [timedelta(hours=-25), timedelta(hours=2)])
def test_a_stale_or_future_delivery_is_refused(client, offset):
    response = post(client, compact_json(event(created=now_iso(offset))))
    assert response.status_code == 401 and "stale" in response.get_data(as_text=True)
    assert deliveries() == []


def test_the_maximum_age_is_configurable(app, client):
    app.config["STOREGANISE_WEBHOOK_MAX_AGE_S"] = 60
    assert post(client, compact_json(event(created=now_iso(timedelta(minutes=-2))))).status_code == 401
    assert post(client, compact_json(event(created=now_iso(timedelta(seconds=-30))))).status_code == 200


def test_without_a_configured_secret_every_delivery_is_refused(app, client):
    app.config["STOREGANISE_WEBHOOK_SECRET"] = None
    body = compact_json(event())
    assert post(client, body, sign("", body)).status_code == 401
    assert deliveries() == []


def test_the_receiver_needs_no_log_in_and_no_csrf_token(app, client):
    app.config["WTF_CSRF_ENABLED"] = True
    assert post(client, compact_json(event())).status_code == 200


def test_with_redis_down_the_delivery_is_acknowledged_and_stays_queued_for_the_relay(app, client, redis_server):
    redis_server.stop()
    try:
        response = post(client, compact_json(event()))
        assert response.status_code == 200 and response.json == {"status": "queued"}
        [row] = deliveries()
        assert row.status == "queued"
    finally:
        redis_server.start()
    app.extensions.pop("pti_sync_redis", None)
    assert queued_jobs() == []
    row.received_at -= timedelta(minutes=1)
    db.session.commit()
    assert requeue_stale_deliveries(older_than_s=30) == 1
    [(queue, job)] = queued_jobs(HANDLE_DELIVERY)
    assert job.args == (row.id,)


def test_the_relay_leaves_alone_deliveries_whose_job_is_still_waiting(client):
    post(client, compact_json(event()))
    [row] = deliveries()
    row.received_at -= timedelta(minutes=5)
    db.session.commit()
    assert requeue_stale_deliveries(older_than_s=30) == 0
    assert len(queued_jobs(HANDLE_DELIVERY)) == 1


def test_the_relay_waits_before_re_enqueueing_a_fresh_delivery(client, redis_url):
    post(client, compact_json(event()))
    flush_redis(redis_url)  # Redis lost the job
    assert requeue_stale_deliveries(older_than_s=30) == 0  # it may still be on its way
    [row] = deliveries()
    row.received_at -= timedelta(seconds=31)
    db.session.commit()
    assert requeue_stale_deliveries(older_than_s=30) == 1


def test_delivery_ids_that_rq_cannot_use_as_job_ids_still_get_a_stable_one():
    assert job_id("65a1f0c2e4b0a1b2c3d4e5f6") == "sg-delivery-65a1f0c2e4b0a1b2c3d4e5f6"
    odd = job_id("evt:42/a b")
    assert odd == job_id("evt:42/a b") and odd.startswith("sg-delivery-") and ":" not in odd


def test_a_delivery_whose_pooled_connection_the_database_dropped_a_moment_ago_is_still_recorded(client):
    """A connection checked in a moment ago is handed out unpinged (extensions.ping_when_rested): should the database
    have dropped it since (a restart), the row is written again on a new connection, not refused with a 500."""
    from sqlalchemy import event as sa_event

    opened = []

    def note(dbapi_connection, record) -> None:
        opened.append(dbapi_connection)

    db.engine.dispose()
    sa_event.listen(db.engine, "connect", note)
    try:
        assert post(client, compact_json(event("first-of-two"))).status_code == 200
        assert opened, "the first delivery opened no connection"
        for dbapi_connection in opened:  # what a restart does to the pooled connections, underneath the pool
            dbapi_connection.close()
        answer = post(client, compact_json(event("second-of-two")))
    finally:
        sa_event.remove(db.engine, "connect", note)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["status"] == "queued"
    assert {d.id for d in deliveries()} == {"first-of-two", "second-of-two"}

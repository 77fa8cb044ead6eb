"""Storeganise webhook signing, verification over the raw bytes, and event parsing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from dashboard.storeganise.webhooks import (
    KNOWN_EVENT_TYPES,
    WebhookError,
    compact_json,
    is_stale,
    parse_event,
    sign,
    verify,
)

SECRET = "demo-webhook-secret"
EVENT = {
    "id": "65a1f0c2e4b0a1b2c3d4e5f6",
    "type": "job.unit_moveIn.completed",
    "created": "2023-09-13T10:00:00.000Z",
    "data": {"jobId": "j1", "unitRentalId": "r1", "userId": "u1"},
    "apiUrl": "https://biz.storeganise.com/api/v1/admin",
}


def test_signature_is_base64_hmac_sha256_of_the_body():
    body = b'{"id":"1"}'
    expected = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
    assert sign(SECRET, body) == expected


def test_verify_accepts_a_genuine_signature():
    body = compact_json(EVENT)
    assert verify(SECRET, body, sign(SECRET, body))


def test_verify_rejects_a_forged_signature():
    body = compact_json(EVENT)
    assert not verify(SECRET, body, sign("someone-else", body))


def test_verify_rejects_a_tampered_body():
    body = compact_json(EVENT)
    signature = sign(SECRET, body)
    assert not verify(SECRET, body.replace(b"r1", b"r2"), signature)


@pytest.mark.parametrize("header", [None, "", "   ", "not base64 at all", "été"])
def test_verify_rejects_missing_or_garbage_signatures(header):
    assert not verify(SECRET, compact_json(EVENT), header)


def test_verify_without_a_secret_rejects_everything():
    body = compact_json(EVENT)
    assert not verify("", body, sign("", body))


def test_compact_json_has_no_spaces_and_keeps_non_ascii():
    assert compact_json({"a": 1, "name": "Zoë Ó Súilleabháin"}) == '{"a":1,"name":"Zoë Ó Súilleabháin"}'.encode()


def test_signature_covers_the_raw_non_ascii_bytes_not_a_reserialisation():
    body = compact_json({**EVENT, "data": {"userId": "u1", "firstName": "Zoë", "lastName": "Müller"}})
    signature = sign(SECRET, body)
    assert verify(SECRET, body, signature)
    # The same event re-serialised with Python's defaults (escaped, spaced) is other bytes: its signature differs,
    # which is why receivers must verify the bytes they received.
    reserialised = json.dumps(json.loads(body)).encode()
    assert reserialised != body
    assert not verify(SECRET, reserialised, signature)


def test_parse_event_reads_every_field():
    event = parse_event(compact_json({**EVENT, "addonId": "addon-7"}))
    assert event.id == EVENT["id"]
    assert event.type == "job.unit_moveIn.completed"
    assert event.created == datetime(2023, 9, 13, 10, 0, tzinfo=UTC)
    assert event.data == EVENT["data"]
    assert event.api_url == EVENT["apiUrl"]
    assert event.addon_id == "addon-7"
    assert event.known


def test_parse_event_tolerates_missing_optional_fields():
    event = parse_event(b'{"id":"e1","type":"unit.updated"}')
    assert event.data == {} and event.created is None and event.api_url is None and event.addon_id is None


def test_parse_event_keeps_unknown_types_for_the_caller_to_ignore():
    event = parse_event(b'{"id":"e1","type":"invoice.paid","data":{}}')
    assert not event.known


def test_changed_keys_of_an_update_event():
    event = parse_event(compact_json({"id": "e1", "type": "unitRental.updated",
                                      "data": {"unitRentalId": "r1", "changedKeys": ["customFields.pti_synced"]}}))
    assert event.changed_keys == ("customFields.pti_synced",)


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1,2]", "JSON object"),
    (b'{"type":"unit.updated"}', "no event id"),
    (b'{"id":"","type":"unit.updated"}', "no event id"),
    (b'{"id":"e1"}', "no event type"),
    (b'{"id":"e1","type":7}', "no event type"),
    (b'{"id":"e1","type":"unit.updated","data":[1]}', "data must be a JSON object"),
    (b'{"id":"e1","type":"unit.updated","created":"yesterday"}', "not an ISO-8601"),
    (b'{"id":"e1","type":"unit.updated","created":"2023-09-13T10:00:00"}', "no time zone"),
    (b'{"id":"e1","type":"unit.updated","apiUrl":5}', "apiUrl must be a string"),
])
def test_parse_event_rejects_malformed_bodies_in_plain_words(body, message):
    with pytest.raises(WebhookError, match=message):
        parse_event(body)


def test_known_event_types_are_the_ones_the_product_handles():
    assert KNOWN_EVENT_TYPES == {
        "job.unit_moveIn.completed", "job.unit_moveOut.completed", "job.unit_transfer.completed",
        "unitRental.updated", "unitRental.markOverdue", "unitRental.unmarkOverdue", "user.updated", "unit.updated",
    }


def test_a_fresh_event_is_not_stale():
    event = parse_event(compact_json(EVENT))
    assert not is_stale(event, event.created + timedelta(minutes=4), timedelta(minutes=5))


def test_an_old_event_is_stale():
    event = parse_event(compact_json(EVENT))
    assert is_stale(event, event.created + timedelta(minutes=6), timedelta(minutes=5))


def test_an_event_from_far_in_the_future_is_stale():
    event = parse_event(compact_json(EVENT))
    assert is_stale(event, event.created - timedelta(hours=1), timedelta(minutes=5))


def test_an_event_without_created_is_not_judged_by_age():
    event = parse_event(b'{"id":"e1","type":"unit.updated"}')
    assert not is_stale(event, datetime.now(UTC), timedelta(minutes=5))

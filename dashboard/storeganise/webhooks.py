"""Storeganise webhooks: signing, verification and parsing, as plain functions (no Flask).

Storeganise signs the exact bytes it sends (`sg-signature` = base64 of HMAC-SHA256 over the compact JSON body),
so verification always runs over the raw request body, never over a re-serialisation of the parsed JSON.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

SIGNATURE_HEADER = "sg-signature"

MOVE_IN_COMPLETED = "job.unit_moveIn.completed"
MOVE_OUT_COMPLETED = "job.unit_moveOut.completed"
TRANSFER_COMPLETED = "job.unit_transfer.completed"
UNIT_RENTAL_UPDATED = "unitRental.updated"
MARK_OVERDUE = "unitRental.markOverdue"
UNMARK_OVERDUE = "unitRental.unmarkOverdue"
USER_UPDATED = "user.updated"
UNIT_UPDATED = "unit.updated"

KNOWN_EVENT_TYPES = frozenset({
    MOVE_IN_COMPLETED, MOVE_OUT_COMPLETED, TRANSFER_COMPLETED, UNIT_RENTAL_UPDATED, MARK_OVERDUE, UNMARK_OVERDUE,
    USER_UPDATED, UNIT_UPDATED,
})


class WebhookError(ValueError):
    """A webhook body that cannot be an event; the message says why in plain words."""


@dataclass(frozen=True)
class WebhookEvent:
    """One delivery from Storeganise. `id` identifies the delivery: process each id once."""

    id: str
    type: str
    created: datetime | None
    data: dict[str, Any] = field(default_factory=dict)
    api_url: str | None = None
    addon_id: str | None = None

    @property
    def known(self) -> bool:
        return self.type in KNOWN_EVENT_TYPES

    @property
    def rental_id(self) -> str | None:
        """The rental the event is about, when its data names one (a transfer: the new rental); None otherwise or
        when the id is not one Storeganise would send (text, at most 64 characters)."""
        for key in ("unitRentalId", "newRentalId"):
            value = self.data.get(key)
            if isinstance(value, str) and 0 < len(value) <= 64:
                return value
        return None

    @property
    def changed_keys(self) -> tuple[str, ...]:
        """For *.updated events: which fields changed, e.g. ("customFields.pti_synced",)."""
        keys = self.data.get("changedKeys") or ()
        return tuple(k for k in keys if isinstance(k, str)) if isinstance(keys, list | tuple) else ()


def compact_json(obj: Any) -> bytes:
    """JSON as Storeganise sends it: no spaces, non-ASCII characters kept as they are, UTF-8."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(secret: str, body: bytes) -> str:
    """The `sg-signature` value for `body`: base64 of HMAC-SHA256 keyed with the webhook secret."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(secret: str, body: bytes, signature_header: str | None) -> bool:
    """True when `signature_header` is the signature of exactly these raw bytes (constant-time compare)."""
    if not secret or not signature_header:
        return False
    expected = sign(secret, body).encode("ascii")
    try:
        given = signature_header.strip().encode("ascii")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(expected, given)


def parse_event(body: bytes) -> WebhookEvent:
    """The event in a webhook body; WebhookError with a plain message when the body is not one."""
    try:
        payload = json.loads(body)
    except ValueError as exc:  # not JSON, not UTF-8, or a number longer than Python converts
        raise WebhookError(f"The webhook body is not valid JSON ({str(exc)[:120]}).") from None
    except RecursionError:
        raise WebhookError("The webhook body is not valid JSON (nested too deeply).") from None
    if not isinstance(payload, dict):
        raise WebhookError("The webhook body must be a JSON object.")
    event_id, event_type = payload.get("id"), payload.get("type")
    if not isinstance(event_id, str) or not event_id:
        raise WebhookError("The webhook has no event id.")
    if not isinstance(event_type, str) or not event_type:
        raise WebhookError("The webhook has no event type.")
    data = payload.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WebhookError("The webhook's data must be a JSON object.")
    return WebhookEvent(
        id=event_id,
        type=event_type,
        created=_parse_created(payload.get("created")),
        data=data,
        api_url=_optional_str(payload, "apiUrl"),
        addon_id=_optional_str(payload, "addonId"),
    )


def is_stale(event: WebhookEvent, now: datetime, max_age: timedelta) -> bool:
    """True when the event was created more than `max_age` before (or after: a skewed clock) `now`.

    An event without `created` cannot be judged by age and is not stale; a replay of it is still caught by
    its delivery id.
    """
    if event.created is None:
        return False
    return abs(now - event.created) > max_age


def _parse_created(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise WebhookError("The webhook's created time must be an ISO-8601 timestamp.")
    try:
        created = datetime.fromisoformat(value)
    except ValueError:
        raise WebhookError(f"The webhook's created time {value!r} is not an ISO-8601 timestamp.") from None
    if created.tzinfo is None:
        raise WebhookError(f"The webhook's created time {value!r} has no time zone.")
    return created


def _optional_str(payload: dict, key: str) -> str | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise WebhookError(f"The webhook's {key} must be a string.")
    return value

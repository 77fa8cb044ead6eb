"""What each Storeganise event means: re-read the records it names, update the mirror, mark customers for a push.

Runs in the worker (jobs.events.handle_delivery). Events are hints: every handler re-reads Storeganise (the source
of truth) instead of trusting the event's content, so a late, repeated or out-of-order delivery still leaves the
mirror equal to Storeganise. A transient Storeganise error puts the delivery back to "queued" and re-raises (RQ
retries, then the relay); a permanent one marks it "failed" with the message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError

from ..clients import remember_addon_id
from ..extensions import commit_keeping_loaded, db
from ..models import Customer, Unit, WebhookDelivery, utcnow
from ..storeganise import StoreganiseClient, StoreganiseError, WebhookEvent
from ..storeganise import webhooks as sg
from . import deliveries
from .records import Effects, PushHere, apply_customer, apply_unit, ensure_site, refresh_rental

log = logging.getLogger(__name__)

# unitRental.updated keys worth a re-read; any other change (notes, prices...) cannot matter to PTI.
ADDON_ID_CHARS = 200
RENTAL_KEYS = frozenset({"state", "overdue", "unitId", "siteId", "ownerId", "customFields"})


class EventError(Exception):
    """The event cannot be acted on (it names no record we can read): permanent."""


def _rental_ids(client: StoreganiseClient, event: WebhookEvent, *keys: str) -> list[str]:
    """The rental ids an event names, read from its job when the event carries only the job id."""
    data = event.data
    if not any(data.get(k) for k in keys) and data.get("jobId"):
        data = client.get_job(data["jobId"]).get("data") or {}
    ids = [data[k] for k in keys if isinstance(data.get(k), str) and data[k]]
    if not ids:
        raise EventError(f"The {event.type} event names no unit rental ({' or '.join(keys)}), nor a job with one.")
    return ids


def on_rental_job(client: StoreganiseClient, event: WebhookEvent, fx: Effects) -> None:
    """Move-in, move-out: the rental (and its unit and customer) as Storeganise holds them now."""
    for rental_id in _rental_ids(client, event, "unitRentalId"):
        refresh_rental(client, rental_id, fx)


def on_transfer(client: StoreganiseClient, event: WebhookEvent, fx: Effects) -> None:
    for rental_id in _rental_ids(client, event, "oldRentalId", "newRentalId"):
        refresh_rental(client, rental_id, fx)


def on_overdue(client: StoreganiseClient, event: WebhookEvent, fx: Effects) -> None:
    """Overdue or paid: the lock follows the overdue flag Storeganise holds now, and is pushed urgently."""
    for rental_id in _rental_ids(client, event, "unitRentalId"):
        refresh_rental(client, rental_id, fx, overdue_event=True)


def on_rental_updated(client: StoreganiseClient, event: WebhookEvent, fx: Effects) -> None:
    """A person changed pti_synced (asks for a push) or pti_overlocked (a manual suspend: urgent); our own
    write-backs come back here too and find the mirror already equal."""
    keys = event.changed_keys
    codes = current_app.config["STOREGANISE_FIELDS"]
    inputs = {codes.changed_key(code) for code in codes.inputs}
    if keys and not any(k in RENTAL_KEYS or k in inputs for k in keys):
        return
    for rental_id in _rental_ids(client, event, "unitRentalId"):
        refresh_rental(client, rental_id, fx)


def on_user_updated(client: StoreganiseClient, event: WebhookEvent, fx: Effects) -> None:
    """An override (PTI access level or zone) or the customer's name or e-mail changed: push at every site."""
    user_id = event.data.get("userId")
    if not user_id:
        raise EventError("The user.updated event names no user (userId).")
    if db.session.scalar(select(Customer.id).where(Customer.sg_id == user_id)) is None:
        return  # not a customer of any unit we mirror: nothing PTI needs
    apply_customer(client.get_user(user_id), fx)


def on_unit_updated(client: StoreganiseClient, event: WebhookEvent, fx: Effects) -> None:
    """A changed PTI Unit Name: the customer renting the unit is pushed again."""
    unit_id = event.data.get("unitId")
    if not unit_id:
        raise EventError("The unit.updated event names no unit (unitId).")
    data = client.get_unit(unit_id)
    known = db.session.scalar(select(Unit).where(Unit.sg_id == unit_id))
    site = known.site if known is not None and known.site.sg_id == data["siteId"] else \
        ensure_site(client, data["siteId"], fx)
    apply_unit(data, site, fx)


HANDLERS: dict[str, Callable[[StoreganiseClient, WebhookEvent, Effects], None]] = {
    sg.MOVE_IN_COMPLETED: on_rental_job,
    sg.MOVE_OUT_COMPLETED: on_rental_job,
    sg.TRANSFER_COMPLETED: on_transfer,
    sg.MARK_OVERDUE: on_overdue,
    sg.UNMARK_OVERDUE: on_overdue,
    sg.UNIT_RENTAL_UPDATED: on_rental_updated,
    sg.USER_UPDATED: on_user_updated,
    sg.UNIT_UPDATED: on_unit_updated,
}


def _event(delivery: WebhookDelivery) -> WebhookEvent:
    payload = delivery.payload or {}
    data = payload.get("data")
    return WebhookEvent(id=delivery.id, type=delivery.type, created=None, data=data if isinstance(data, dict) else {},
                        api_url=payload.get("apiUrl"), addon_id=payload.get("addonId"))


def _finish(delivery_id: str, status: str, error: str | None) -> None:
    delivery = db.session.get(WebhookDelivery, delivery_id)
    delivery.status, delivery.error = status, error
    db.session.commit()


def flips_not_written(delivery_id: str, exc: StoreganiseError) -> str:
    """The pti_overlocked flips a delivery's job handed to its process's write-back thread (jobs/after_gate.py) did
    not reach Storeganise (the mirror has forgotten them already, `writeback.write_overlocks`): as if the job itself
    had failed on them, the delivery runs again (a transient error: put back to "queued" and enqueued, so its
    re-read lands the flip again) or fails with the message. Returns the delivery's new status."""
    if not exc.retryable:
        log.warning("Storeganise delivery %s failed writing pti_overlocked back: %s", delivery_id, exc.message)
        _finish(delivery_id, deliveries.FAILED, exc.message)
        return deliveries.FAILED
    delivery = db.session.get(WebhookDelivery, delivery_id)
    _finish(delivery_id, deliveries.QUEUED, exc.message)
    deliveries.enqueue_delivery(delivery_id, delivery.type)
    return deliveries.QUEUED


def process_delivery(delivery_id: str, client: StoreganiseClient, push_here: PushHere | None = None) -> str:
    """Act on one recorded delivery, at most once to completion; returns its final status. With `push_here` (the
    delivery's job), a lock or unlock it owes is pushed by that job right after the commit (Effects.deliver)."""
    delivery = db.session.get(WebhookDelivery, delivery_id)
    if delivery is None:
        raise LookupError(f"No recorded Storeganise delivery {delivery_id!r}.")
    if delivery.status != deliveries.QUEUED:
        return delivery.status  # processed already (the job ran twice) or ignored
    event = _event(delivery)
    handler = HANDLERS.get(event.type)
    if handler is None:
        _finish(delivery_id, deliveries.IGNORED, None)
        return deliveries.IGNORED
    fx = Effects()
    if isinstance(event.addon_id, str) and event.addon_id:
        remember_addon_id(event.addon_id[:ADDON_ID_CHARS])
    try:
        handler(client, event, fx)
        delivery.status, delivery.error, delivery.handled_at = deliveries.PROCESSED, None, utcnow()
        # What the landing wrote stays loaded: the pushes it asks for next take each marked account's id and urgency
        # from it, not from a read of each account again (a push reads its account fresh, under its lock, anyway).
        commit_keeping_loaded()
        fx.deliver(client, trigger=event.type, push_here=push_here)
    except StoreganiseError as exc:
        db.session.rollback()
        if exc.retryable:
            _finish(delivery_id, deliveries.QUEUED, exc.message)
            raise
        log.warning("Storeganise delivery %s (%s) failed: %s", delivery_id, event.type, exc.message)
        _finish(delivery_id, deliveries.FAILED, exc.message)
        return deliveries.FAILED
    except EventError as exc:
        db.session.rollback()
        log.warning("Storeganise delivery %s (%s) failed: %s", delivery_id, event.type, exc)
        _finish(delivery_id, deliveries.FAILED, str(exc))
        return deliveries.FAILED
    except (IntegrityError, OperationalError) as exc:
        # Another writer (an import, a second delivery) inserted the same record first, or the database was busy:
        # running again finds the row.
        db.session.rollback()
        _finish(delivery_id, deliveries.QUEUED, f"Database conflict, retried: {type(exc).__name__}")
        raise
    except Exception as exc:
        db.session.rollback()
        _finish(delivery_id, deliveries.FAILED, f"Unexpected error: {type(exc).__name__}: {exc}")
        raise
    return deliveries.PROCESSED

"""POST /webhooks/storeganise: verify, record, enqueue, answer; nothing slower happens in the request.

Storeganise wants a 200 within 2 seconds and may deliver an event more than once, so the receiver only checks
the signature over the raw bytes, records the delivery by its id (a replay finds the row and stops there) and
hints a job to the worker. If Redis is down the delivery is still recorded as "queued": the relay enqueues it
again (jobs.events.requeue_stale_deliveries).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import redis
from flask import Blueprint, current_app, jsonify, request
from sqlalchemy.exc import DBAPIError, IntegrityError

from .. import echoes
from ..extensions import csrf, db
from ..mirror import deliveries
from ..models import WebhookDelivery
from ..security import public
from ..storeganise import SIGNATURE_HEADER, WebhookError, is_stale, parse_event, verify
from ..storeganise.webhooks import UNIT_RENTAL_UPDATED, USER_UPDATED

bp = Blueprint("webhooks", __name__)
log = logging.getLogger(__name__)

MAX_DELIVERY_ID_LENGTH = 64  # WebhookDelivery.id
# The delivery's row, as one plain INSERT of the table: its values go as parameters, so the statement is built and
# compiled once per process, not through the ORM's insert for every webhook (6 % of the receiver's time in-process,
# under cProfile).
RECORD = WebhookDelivery.__table__.insert()


# The updates our own custom-field writes cause, and the data key naming their record.
ECHO_TYPES = {UNIT_RENTAL_UPDATED: ("unitRental", "unitRentalId"), USER_UPDATED: ("user", "userId")}


def our_echo(event) -> bool:
    entity, id_key = ECHO_TYPES.get(event.type, (None, None))
    record_id = event.data.get(id_key) if entity else None
    return isinstance(record_id, str) and echoes.is_echo(entity, record_id, event.changed_keys)


def _plain(message: str, status: int):
    return current_app.response_class(message + "\n", status=status, mimetype="text/plain")


def _record(row: dict) -> None:
    """The hot path: one autocommitted statement, no session, no BEGIN/COMMIT round trips.

    Only a rested pooled connection is pinged before use (`extensions.ping_when_rested`): one the database dropped a
    moment ago (it restarted since this process last wrote) fails here instead, as a disconnect. The pool is then
    started afresh and the row written once more, on a new connection, so the webhook is not refused for it."""
    for attempt in (1, 2):
        with db.engine.connect() as conn:
            try:
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(RECORD, row)
                return
            except IntegrityError:
                raise
            except Exception as exc:
                if attempt == 2 or not _dropped(exc, conn):
                    raise
                conn.invalidate()  # not handed back to the pool, nor reset there
        db.engine.dispose()  # its other connections are as dead: every one opened afresh


def _dropped(exc: Exception, conn) -> bool:
    """The connection was gone: SQLAlchemy's word for it, or the driver's error where SQLAlchemy does not wrap it
    (setting the connection's isolation level)."""
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated
    dialect = db.engine.dialect
    return isinstance(exc, dialect.loaded_dbapi.Error) and dialect.is_disconnect(
        exc, conn.connection.dbapi_connection, None)


@bp.post("/webhooks/storeganise")
@csrf.exempt
@public
def storeganise():
    body = request.get_data(cache=False)
    if not verify(current_app.config.get("STOREGANISE_WEBHOOK_SECRET") or "", body,
                  request.headers.get(SIGNATURE_HEADER)):
        return _plain("Missing or invalid sg-signature.", 401)
    try:
        event = parse_event(body)
    except WebhookError as exc:
        return _plain(str(exc), 400)
    if len(event.id) > MAX_DELIVERY_ID_LENGTH:
        return _plain(f"The webhook's id is longer than {MAX_DELIVERY_ID_LENGTH} characters.", 400)
    now = datetime.now(UTC)
    max_age = timedelta(seconds=current_app.config["STOREGANISE_WEBHOOK_MAX_AGE_S"])
    max_skew = timedelta(seconds=current_app.config["STOREGANISE_WEBHOOK_MAX_SKEW_S"])
    if is_stale(event, now, max_age) or (event.created is not None and event.created - now > max_skew):
        return _plain("The webhook is stale: its created time is too far from now.", 401)

    status = deliveries.ECHO if our_echo(event) else deliveries.QUEUED if event.known else deliveries.IGNORED
    row = {"id": event.id, "type": event.type, "status": status, "payload": json.loads(body),
           "rental_sg_id": event.rental_id}
    try:
        _record(row)
    except IntegrityError:
        return jsonify(status="duplicate")
    if status == deliveries.ECHO:  # our own write: the mirror holds it already, nothing to do
        return jsonify(status="echo")
    if not event.known:
        log.info("webhook %s of unknown type %s recorded and ignored", event.id, event.type)
        return jsonify(status="ignored")
    try:
        deliveries.enqueue_delivery(event.id, event.type)
    except redis.RedisError as exc:
        log.warning("webhook %s recorded but not enqueued (%s): the relay will enqueue it",
                    event.id, exc.__class__.__name__)
    return jsonify(status="queued")

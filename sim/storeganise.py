"""Storeganise simulator: the Admin API subset the product uses, plus signed webhooks and control endpoints.

Records are in the shapes real Storeganise sends (docs/storeganise.md, "Shapes"): localised site titles,
`created`/`updated` timestamps that move on every change, a user's `overdue` a timestamp or null, custom-field
values stored as sent (the type the field was created with, or whatever staff typed). Seeded from the demo
business; control calls (`/_sim/move-in`, `/_sim/overdue`...) play what staff and the
nightly overdue run do in Storeganise, and each sends the webhook real Storeganise would send. Deliveries run on
a background thread so control calls answer at once. Run it with `python -m sim.storeganise --port 5002`.
"""

from __future__ import annotations

import argparse
import collections
import copy
import hmac
import logging
import os
import random
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from flask import Blueprint, Flask, current_app, jsonify, request

from dashboard.storeganise.webhooks import SIGNATURE_HEADER, compact_json, sign
from sim.demo_data import DEMO_ADDON_ID, build_demo_business, sites_from_env

log = logging.getLogger(__name__)

DEFAULT_PORT = 5002
DEFAULT_WEBHOOK_URL = "http://127.0.0.1:5000/webhooks/storeganise"
DEFAULT_PTI_URL = "http://127.0.0.1:5001"
DEMO_API_KEY = "demo-api-key"
DEMO_WEBHOOK_SECRET = "demo-webhook-secret"
API_PREFIX = "/api/v1/admin"

DELIVERY_ATTEMPTS = 3
DELIVERY_BACKOFF_S = 0.3  # doubled after each failed attempt
DELIVERY_TIMEOUT_S = 5.0
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
ACTIVE_STATES = frozenset({"reserved", "occupied"})
EXTENSION = "storeganise_sim"
# List filters the simulator can be told to ignore (`/_sim/config` `ignore_filters`), to play a Storeganise that
# does not support a filter we assume it does: the records come back unfiltered.
IGNORABLE_FILTERS = frozenset({"units.siteId", "units.updatedAfter", "users.ids", "users.updatedAfter",
                               "unitRentals.siteId", "unitRentals.updatedAfter"})


class SimError(Exception):
    """A request the simulator refuses; answered as JSON `{"error": message}`."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _new_id() -> str:
    return secrets.token_hex(12)  # Storeganise ids are 24-hex ObjectIds; random so they never repeat after a reset


class Clock:
    """Storeganise-style timestamps (ms, Z) that strictly increase, so `updatedAfter` never misses a change."""

    def __init__(self) -> None:
        self._last = datetime.min.replace(tzinfo=UTC)

    def now(self) -> str:
        now = datetime.now(UTC)
        moment = now.replace(microsecond=now.microsecond // 1000 * 1000)
        if moment <= self._last:
            moment = self._last + timedelta(milliseconds=1)
        self._last = moment
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StoreganiseSim:
    """The simulated business: records, jobs, API writes and the webhook outbox, behind one lock."""

    def __init__(self, *, pti_base_url: str, webhook_url: str | None, webhook_secret: str, api_key: str,
                 deliver: bool, addon_id: str | None = None, sites: list | None = None) -> None:
        self.pti_base_url = pti_base_url
        self.business_sites = sites  # DemoSite specs; None: the demo's (or PTI_SYNC_DEMO_SITES')
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.api_key = api_key
        self.deliver = deliver
        self.addon_id = addon_id  # set: webhooks carry addonId and apiUrl, as an add-on's do
        self.ignore_filters: set[str] = set()
        self.api_url = f"http://127.0.0.1:{DEFAULT_PORT}{API_PREFIX}"  # replaced by the address actually called
        self.faults = {"error_rate": 0.0, "error_status": 503, "latency_ms": 0}
        self._random = random.Random()
        self._clock = Clock()
        self.lock = threading.Condition(threading.RLock())
        self._outbox: collections.deque[dict] = collections.deque()
        self._bodies: dict[str, bytes] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reset()

    # --- state -----------------------------------------------------------------------------------------------

    def reset(self) -> None:
        biz = build_demo_business(self.pti_base_url, sites=self.business_sites or sites_from_env())
        with self.lock:
            self.sites = {s["id"]: copy.deepcopy(s) for s in biz.sites}
            self.units = {u["id"]: copy.deepcopy(u) for u in biz.units}
            self.users = {u["id"]: copy.deepcopy(u) for u in biz.users}
            self.rentals = {r["id"]: copy.deepcopy(r) for r in biz.unit_rentals}
            self.addon = {**copy.deepcopy(biz.addon), "id": self.addon_id or DEMO_ADDON_ID}
            self.jobs: dict[str, dict] = {}
            self.webhooks: list[dict] = []
            self.writes: list[dict] = []
            self._outbox.clear()
            self._bodies.clear()
            self.lock.notify_all()

    def snapshot(self) -> dict:
        with self.lock:
            return copy.deepcopy({
                "sites": list(self.sites.values()),
                "units": list(self.units.values()),
                "users": list(self.users.values()),
                "unitRentals": list(self.rentals.values()),
                "addon": self.addon,
                "jobs": list(self.jobs.values()),
                "tasks": [j for j in self.jobs.values() if j["type"] == "task"],
                "webhooks": self.webhooks,
                "writes": self.writes,
                "config": self.config(),
            })

    def config(self) -> dict:
        return {"webhook_url": self.webhook_url, "deliver": self.deliver, "faults": dict(self.faults),
                "addon_id": self.addon_id, "ignore_filters": sorted(self.ignore_filters)}

    def table(self, entity: str) -> dict[str, dict]:
        return {"site": self.sites, "unit": self.units, "user": self.users, "unitRental": self.rentals}[entity]

    def find(self, entity: str, record_id: Any, status: int = 400, field: str | None = None) -> dict:
        if not isinstance(record_id, str) or not record_id:
            raise SimError(f"{field or entity + 'Id'} is required.")
        record = self.table(entity).get(record_id)
        if record is None:
            raise SimError(f"No {entity} with id {record_id!r}.", status)
        return record

    def _touch(self, record: dict) -> None:
        record["updated"] = self._clock.now()

    def _refresh_owner_overdue(self, user_id: str) -> None:
        """A user's `overdue` is a timestamp (since when) while any active rental of theirs is overdue, else null."""
        user = self.users[user_id]
        overdue = any(r["overdue"] for r in self.rentals.values()
                      if r["ownerId"] == user_id and r["state"] in ACTIVE_STATES)
        if overdue and not user.get("overdue"):
            user["overdue"] = self._clock.now()
            self._touch(user)
        elif not overdue and user.get("overdue") is not None:
            user["overdue"] = None
            self._touch(user)

    def _job(self, job_type: str, owner_id: str | None, data: dict, state: str = "completed") -> dict:
        now = self._clock.now()
        job = {"id": _new_id(), "type": job_type, "state": state, "ownerId": owner_id, "data": data, "result": {},
               "created": now, "updated": now}
        self.jobs[job["id"]] = job
        return job

    def _rental(self, unit: dict, owner_id: str, overdue: bool = False) -> dict:
        now = self._clock.now()
        rental = {"id": _new_id(), "unitId": unit["id"], "siteId": unit["siteId"], "ownerId": owner_id,
                  "state": "occupied", "overdue": overdue, "startDate": now[:10], "created": now, "updated": now,
                  "customFields": {"pti_overlocked": False}}
        self.rentals[rental["id"]] = rental
        unit["state"] = "occupied"
        self._touch(unit)
        return rental

    def _end(self, rental: dict) -> None:
        rental["state"] = "ended"
        rental["endDate"] = self._clock.now()[:10]
        self._touch(rental)
        unit = self.units.get(rental["unitId"])
        if unit is not None:
            unit["state"] = "available"
            self._touch(unit)

    def _active(self, rental_id: Any) -> dict:
        rental = self.find("unitRental", rental_id)
        if rental["state"] not in ACTIVE_STATES:
            raise SimError(f"Unit rental {rental_id} is {rental['state']}, not active (reserved or occupied).")
        return rental

    def _available_unit(self, unit_id: Any, field: str = "unitId") -> dict:
        unit = self.find("unit", unit_id, field=field)
        if unit["state"] != "available":
            raise SimError(f"Unit {unit['name']} ({unit_id}) is not available: it is {unit['state']}.")
        return unit

    def set_custom_fields(self, entity: str, record: dict, fields: dict, title: Any = None) -> list[str]:
        """Apply a partial update; the changed keys as Storeganise names them (`customFields.pti_synced`).

        Values are stored exactly as sent (a boolean, a number, a string staff typed, ""); null deletes the key.
        A change moves `updated` and sends `<entity>.updated`, except for sites: Storeganise sends no site webhook.
        """
        custom = record.setdefault("customFields", {})
        changed = []
        for key, value in fields.items():
            if value is None:
                if key in custom:
                    del custom[key]
                    changed.append(f"customFields.{key}")
            elif key not in custom or custom[key] != value or type(custom[key]) is not type(value):
                custom[key] = copy.deepcopy(value)
                changed.append(f"customFields.{key}")
        if title is not None and record.get("title") != title:
            record["title"] = copy.deepcopy(title)
            changed.append("title")
        if changed:
            self._touch(record)
            if entity != "site":
                self._emit(f"{entity}.updated", {f"{entity}Id": record["id"], "changedKeys": changed})
        return changed

    # --- what staff and Storeganise do (control endpoints) ----------------------------------------------------

    def move_in(self, unit_id: Any, email: Any, first_name: Any, last_name: Any, send: Any = True) -> dict:
        _check_send(send)
        if not isinstance(email, str) or "@" not in email:
            raise SimError("email is required and must be an e-mail address.")
        with self.lock:
            unit = self._available_unit(unit_id)
            user = next((u for u in self.users.values() if u["email"].lower() == email.strip().lower()), None)
            if user is None:
                if not (isinstance(first_name, str) and first_name and isinstance(last_name, str) and last_name):
                    raise SimError("firstName and lastName are required for a new customer.")
                now = self._clock.now()
                user = {"id": _new_id(), "email": email.strip(), "firstName": first_name, "lastName": last_name,
                        "overdue": None, "created": now, "updated": now, "customFields": {}}
                self.users[user["id"]] = user
            rental = self._rental(unit, user["id"])
            job = self._job("unit_moveIn", user["id"],
                            {"unitRentalId": rental["id"], "unitId": unit["id"], "siteId": unit["siteId"]})
            event = self._emit("job.unit_moveIn.completed",
                               {"jobId": job["id"], "unitRentalId": rental["id"], "userId": user["id"]}, send)
            return _with_webhook({"userId": user["id"], "unitRentalId": rental["id"], "unitId": unit["id"],
                                  "jobId": job["id"]}, event, send)

    def move_out(self, rental_id: Any, send: Any = True) -> dict:
        _check_send(send)
        with self.lock:
            rental = self._active(rental_id)
            self._end(rental)
            rental["overdue"] = False
            self._refresh_owner_overdue(rental["ownerId"])
            job = self._job("unit_moveOut", rental["ownerId"],
                            {"unitRentalId": rental["id"], "unitId": rental["unitId"]})
            event = self._emit("job.unit_moveOut.completed",
                               {"jobId": job["id"], "unitRentalId": rental["id"], "userId": rental["ownerId"]}, send)
            return _with_webhook({"userId": rental["ownerId"], "unitRentalId": rental["id"],
                                  "unitId": rental["unitId"], "jobId": job["id"]}, event, send)

    def transfer(self, rental_id: Any, new_unit_id: Any) -> dict:
        with self.lock:
            old = self._active(rental_id)
            unit = self._available_unit(new_unit_id, field="newUnitId")
            if unit["siteId"] != old["siteId"]:
                raise SimError("A transfer moves a customer to another unit of the same site.")
            self._end(old)
            new = self._rental(unit, old["ownerId"], overdue=old["overdue"])
            old["overdue"] = False
            self._refresh_owner_overdue(old["ownerId"])
            job = self._job("unit_transfer", old["ownerId"],
                            {"oldRentalId": old["id"], "newRentalId": new["id"], "unitId": unit["id"]})
            self._emit("job.unit_transfer.completed",
                       {"jobId": job["id"], "oldRentalId": old["id"], "newRentalId": new["id"]})
            return {"userId": old["ownerId"], "unitRentalId": new["id"], "oldRentalId": old["id"],
                    "newRentalId": new["id"], "unitId": unit["id"], "jobId": job["id"]}

    def set_overdue(self, rental_id: Any, overdue: Any, send: Any = True) -> dict:
        _check_send(send)
        if not isinstance(overdue, bool):
            raise SimError("overdue must be true or false.")
        with self.lock:
            rental = self._active(rental_id)
            rental["overdue"] = overdue
            self._touch(rental)
            self._refresh_owner_overdue(rental["ownerId"])
            kind = "markOverdue" if overdue else "unmarkOverdue"
            event = self._emit(f"unitRental.{kind}", {"unitRentalId": rental["id"]}, send)
            return _with_webhook({"userId": rental["ownerId"], "unitRentalId": rental["id"], "overdue": overdue},
                                 event, send)

    def edit(self, entity: Any, record_id: Any, fields: Any = None, title: Any = None) -> dict:
        """What staff do in Storeganise's UI (or a CSV update): custom fields set to any JSON value, as typed.

        Sites also take a `title` (a string is stored as `{"en": title}`). Null deletes a custom field.
        """
        if entity not in ("site", "unitRental", "user", "unit"):
            raise SimError('entity must be "site", "unitRental", "user" or "unit".')
        if fields is None and title is None:
            raise SimError("Send customFields (an object) or, for a site, title.")
        if fields is not None and (not isinstance(fields, dict) or not fields):
            raise SimError("customFields must be a non-empty object.")
        if title is not None:
            if entity != "site":
                raise SimError("Only a site's title can be edited here.")
            if isinstance(title, str):
                title = {"en": title}
            if not (isinstance(title, dict) and title and all(isinstance(v, str) for v in title.values())):
                raise SimError('title must be a string or a localised object like {"en": "Northgate"}.')
        with self.lock:
            record = self.find(entity, record_id, field="id")
            changed = self.set_custom_fields(entity, record, fields or {}, title=title)
            return {f"{entity}Id": record["id"], "changedKeys": changed}

    # --- what the product does through the Admin API ----------------------------------------------------------

    def api_update_custom_fields(self, entity: str, record_id: str, body: Any) -> dict:
        if not isinstance(body, dict) or set(body) != {"customFields"} or not isinstance(body["customFields"], dict):
            raise SimError('This simulator updates only custom fields: send {"customFields": {...}}.')
        with self.lock:
            record = self.find(entity, record_id, status=404)
            fields = body["customFields"]
            self.writes.append({"time": self._clock.now(), "entity": entity, "id": record_id,
                                "fields": copy.deepcopy(fields)})
            self.set_custom_fields(entity, record, fields)
            return copy.deepcopy(record)

    def api_create_job(self, body: Any) -> dict:
        if not isinstance(body, dict) or body.get("type") != "task":
            raise SimError('This simulator creates only task jobs: {"type": "task", ...}.')
        data = body.get("data")
        if not isinstance(data, dict) or data.get("targetType") not in ("unit", "user", "addon", "site"):
            raise SimError('A task needs data.targetType "unit", "user", "addon" or "site" (the last our guess).')
        if not isinstance(data.get("title"), str) or not data["title"]:
            raise SimError("A task needs data.title.")
        with self.lock:
            return copy.deepcopy(self._job("task", body.get("ownerId"), copy.deepcopy(data), state="created"))

    # --- webhooks ---------------------------------------------------------------------------------------------

    def _emit(self, event_type: str, data: dict, send: bool = True) -> dict:
        """Record a webhook and queue it for the delivery thread (called with the lock held); returns the event.

        `send=False`: recorded with status "caller", never queued: the caller of the control endpoint delivers it
        (a load test that times each delivery itself), while the echoes of our write-backs are still sent."""
        event = {"id": _new_id(), "type": event_type, "created": self._clock.now(), "data": data}
        if self.addon_id:  # an add-on's webhooks say which add-on and where to call back
            event.update(apiUrl=self.api_url, addonId=self.addon_id)
        record = {**copy.deepcopy(event), "status": "pending" if send else "caller", "attempts": 0,
                  "responseStatus": None, "error": None}
        self.webhooks.append(record)
        if send:
            self._bodies[record["id"]] = compact_json(event)
            self._outbox.append(record)
            self._ensure_thread()
            self.lock.notify_all()
        return event

    def configure(self, *, webhook_url: Any = ..., deliver: Any = ..., webhook_secret: Any = ...,
                  faults: Any = ..., drop_pending: Any = ..., addon_id: Any = ..., ignore_filters: Any = ...) -> dict:
        if webhook_url is not ... and webhook_url is not None and not isinstance(webhook_url, str):
            raise SimError("webhook_url must be a URL or null.")
        if deliver is not ... and not isinstance(deliver, bool):
            raise SimError("deliver must be true or false.")
        if webhook_secret is not ... and not (isinstance(webhook_secret, str) and webhook_secret):
            raise SimError("webhook_secret must be a non-empty string.")
        if faults is not ...:
            faults = _check_faults(faults)
        if drop_pending is not ... and not isinstance(drop_pending, bool):
            raise SimError("drop_pending must be true or false.")
        if addon_id is not ... and addon_id is not None and not (isinstance(addon_id, str) and addon_id):
            raise SimError("addon_id must be a non-empty string or null.")
        if ignore_filters is not ... and not (isinstance(ignore_filters, list)
                                              and set(ignore_filters) <= IGNORABLE_FILTERS):
            raise SimError(f"ignore_filters must be a list of: {', '.join(sorted(IGNORABLE_FILTERS))}.")
        with self.lock:
            if addon_id is not ...:
                self.addon_id = addon_id
                self.addon["id"] = addon_id or DEMO_ADDON_ID
            if ignore_filters is not ...:
                self.ignore_filters = set(ignore_filters)
            if webhook_url is not ...:
                self.webhook_url = webhook_url
            if deliver is not ...:
                self.deliver = deliver
            if webhook_secret is not ...:
                self.webhook_secret = webhook_secret
            if faults is not ...:
                self.faults.update(faults)
            if drop_pending is True:  # webhooks recorded while delivery was off are never sent (status "dropped")
                for record in self._outbox:
                    if record["status"] == "pending":
                        record["status"] = "dropped"
                        self._bodies.pop(record["id"], None)
                self._outbox = collections.deque(r for r in self._outbox if r["status"] != "dropped")
            self.lock.notify_all()
            return self.config()

    def wait_for_webhooks(self, timeout: float = 5.0) -> bool:
        """Block until every queued webhook has been delivered or given up on; False on timeout."""
        with self.lock:
            return self.lock.wait_for(lambda: not self._outbox, timeout)

    def close(self) -> None:
        self._stop.set()
        with self.lock:
            self.lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=DELIVERY_TIMEOUT_S * 2)

    def _ensure_thread(self) -> None:
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._deliver_forever, name="sg-sim-webhooks", daemon=True)
            self._thread.start()

    def _deliver_forever(self) -> None:
        with httpx.Client(timeout=DELIVERY_TIMEOUT_S) as http:
            while True:
                with self.lock:
                    self.lock.wait_for(lambda: self._stop.is_set()
                                        or (self._outbox and self.deliver and self.webhook_url))
                    if self._stop.is_set():
                        return
                    record = self._outbox[0]
                    body, url, secret = self._bodies[record["id"]], self.webhook_url, self.webhook_secret
                self._deliver(http, record, body, url, secret)
                with self.lock:
                    if self._outbox and self._outbox[0] is record:
                        self._outbox.popleft()
                        self._bodies.pop(record["id"], None)
                    self.lock.notify_all()

    def _deliver(self, http: httpx.Client, record: dict, body: bytes, url: str, secret: str) -> None:
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body)}
        delay = DELIVERY_BACKOFF_S
        for attempt in range(1, DELIVERY_ATTEMPTS + 1):
            status, error = None, None
            try:
                status = http.post(url, content=body, headers=headers).status_code
            except Exception as exc:  # a network error or a malformed URL: recorded, and the thread lives on
                error = f"{type(exc).__name__}: {exc}"
            delivered = status is not None and 200 <= status < 300
            with self.lock:
                record.update(attempts=attempt, responseStatus=status, error=error,
                              status="delivered" if delivered else "retrying")
                if not delivered and attempt == DELIVERY_ATTEMPTS:
                    record["status"] = "failed"
            if delivered or attempt == DELIVERY_ATTEMPTS or self._stop.wait(delay):
                log.info("webhook %s %s -> %s", record["type"], record["id"], record["status"])
                return
            delay *= 2


def _check_send(send: Any) -> None:
    if not isinstance(send, bool):
        raise SimError("send must be true or false.")


def _with_webhook(result: dict, event: dict, send: bool) -> dict:
    """A control call's answer; with `send` false, the webhook the caller is to deliver (its exact JSON body)."""
    return result if send else {**result, "webhook": copy.deepcopy(event)}


def _check_faults(faults: Any) -> dict:
    if not isinstance(faults, dict):
        raise SimError("faults must be an object.")
    allowed = {"error_rate": float, "error_status": int, "latency_ms": int}
    clean = {}
    for key, value in faults.items():
        if key not in allowed or isinstance(value, bool) or not isinstance(value, int | float):
            raise SimError(f"Unknown or non-numeric fault {key!r}; known: {', '.join(allowed)}.")
        clean[key] = allowed[key](value)
    if not 0 <= clean.get("error_rate", 0) <= 1:
        raise SimError("error_rate must be between 0 and 1.")
    if not 400 <= clean.get("error_status", 503) <= 599:
        raise SimError("error_status must be an HTTP error status (400-599).")
    if clean.get("latency_ms", 0) < 0:
        raise SimError("latency_ms cannot be negative.")
    return clean


# --- HTTP ------------------------------------------------------------------------------------------------------

api = Blueprint("storeganise_api", __name__, url_prefix=API_PREFIX)
control = Blueprint("storeganise_control", __name__, url_prefix="/_sim")


def _sim() -> StoreganiseSim:
    return current_app.extensions[EXTENSION]


def _body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise SimError("Send a JSON object.")
    return body


def _int_arg(name: str, default: int, low: int, high: int | None) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SimError(f"{name} must be an integer.") from None
    if value < low or (high is not None and value > high):
        raise SimError(f"{name} must be between {low} and {high}." if high else f"{name} must be at least {low}.")
    return value


def _includes() -> set[str]:
    return {part.strip() for part in request.args.get("include", "").split(",") if part.strip()}


def _arg(collection: str, name: str) -> str | None:
    """A list filter's value; None when absent or when the simulator is told to ignore that filter."""
    if f"{collection}.{name}" in _sim().ignore_filters:
        return None
    return request.args.get(name) or None


def _csv_arg(name: str, collection: str | None = None) -> set[str] | None:
    raw = _arg(collection, name) if collection else request.args.get(name)
    return {part for part in raw.split(",") if part} if raw else None


def _after(collection: str) -> datetime | None:
    raw = _arg(collection, "updatedAfter")
    return _parse_time(raw) if raw else None


def _updated_since(record: dict, after: datetime | None) -> bool:
    return after is None or _parse_time(record["updated"]) > after


EMBEDS = {"unitRental": (("unit", "unitId", "unit"), ("owner", "ownerId", "user"), ("site", "siteId", "site"))}


def _render(sim: StoreganiseSim, entity: str, record: dict, include: set[str]) -> dict:
    """A record as the Admin API returns it: custom fields only when included, related records when asked."""
    out = copy.deepcopy(record)
    if "customFields" not in include:
        out.pop("customFields", None)
    for name, key, related in EMBEDS.get(entity, ()):
        if name in include:
            target = sim.table(related).get(record.get(key))
            out[name] = _render(sim, related, target, include & {"customFields"}) if target else None
    return out


def _list(entity: str, keep) -> Any:
    sim, include = _sim(), _includes()
    limit, offset = _int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT), _int_arg("offset", 0, 0, None)
    with sim.lock:
        records = [r for r in sim.table(entity).values() if keep(r)][offset:offset + limit]
        return jsonify([_render(sim, entity, r, include) for r in records])


def _get(entity: str, record_id: str) -> Any:
    sim = _sim()
    with sim.lock:
        return jsonify(_render(sim, entity, sim.find(entity, record_id, status=404), _includes()))


@api.before_request
def _authenticate_and_inject_faults():
    sim = _sim()
    sim.api_url = request.url_root.rstrip("/") + API_PREFIX
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    key = credentials if scheme == "ApiKey" else credentials.partition("|")[2] if scheme == "Addon" else ""
    if not key or not hmac.compare_digest(key.encode(), sim.api_key.encode()):
        return jsonify(error="Missing or invalid API key (Authorization: ApiKey <key>)."), 401
    faults = dict(sim.faults)
    if faults["latency_ms"]:
        time.sleep(faults["latency_ms"] / 1000)
    if faults["error_rate"] and sim._random.random() < faults["error_rate"]:
        return jsonify(error="Simulated failure."), faults["error_status"]
    return None


@api.get("/sites")
def list_sites():
    return _list("site", lambda r: True)


@api.get("/units")
def list_units():
    site_id, states, after = _arg("units", "siteId"), _csv_arg("state"), _after("units")
    return _list("unit", lambda r: (not site_id or r["siteId"] == site_id) and (not states or r["state"] in states)
                 and _updated_since(r, after))


@api.get("/users")
def list_users():
    ids, search = _csv_arg("ids", "users"), request.args.get("search", "").strip().lower()
    after = _after("users")

    def keep(user: dict) -> bool:
        text = f"{user['email']} {user['firstName']} {user['lastName']}".lower()
        return (not ids or user["id"] in ids) and (not search or search in text) and _updated_since(user, after)
    return _list("user", keep)


@api.get("/unit-rentals")
def list_unit_rentals():
    states, ids, after = _csv_arg("state"), _csv_arg("ids"), _after("unitRentals")
    filters = {"siteId": _arg("unitRentals", "siteId"), "ownerId": request.args.get("ownerId"),
               "unitId": request.args.get("unitId")}

    def keep(rental: dict) -> bool:
        return (all(not v or rental[k] == v for k, v in filters.items())
                and (not states or rental["state"] in states) and (not ids or rental["id"] in ids)
                and _updated_since(rental, after))
    return _list("unitRental", keep)


@api.get("/sites/<record_id>")
def get_site(record_id):
    return _get("site", record_id)


@api.get("/units/<record_id>")
def get_unit(record_id):
    return _get("unit", record_id)


@api.get("/users/<record_id>")
def get_user(record_id):
    return _get("user", record_id)


@api.get("/unit-rentals/<record_id>")
def get_unit_rental(record_id):
    return _get("unitRental", record_id)


@api.get("/addons/<record_id>")
def get_addon(record_id):
    """The add-on and its settings (`customFields`); the per-site layout of those settings is our guess."""
    sim = _sim()
    with sim.lock:
        if record_id != sim.addon["id"]:
            raise SimError(f"No addon with id {record_id!r}.", 404)
        return jsonify(copy.deepcopy(sim.addon))


@api.get("/jobs/<record_id>")
def get_job(record_id):
    sim = _sim()
    with sim.lock:
        job = sim.jobs.get(record_id)
        if job is None:
            raise SimError(f"No job with id {record_id!r}.", 404)
        return jsonify(copy.deepcopy(job))


def _put(entity: str, record_id: str) -> Any:
    sim = _sim()
    record = sim.api_update_custom_fields(entity, record_id, request.get_json(silent=True))
    return jsonify(_render(sim, entity, record, {"customFields"}))


@api.put("/unit-rentals/<record_id>")
def update_unit_rental(record_id):
    return _put("unitRental", record_id)


@api.put("/users/<record_id>")
def update_user(record_id):
    return _put("user", record_id)


@api.post("/jobs")
def create_job():
    return jsonify(_sim().api_create_job(request.get_json(silent=True))), 201


@control.before_request
def _remember_address():
    _sim().api_url = request.url_root.rstrip("/") + API_PREFIX


@control.post("/move-in")
def move_in():
    body = _body()
    return jsonify(_sim().move_in(body.get("unitId"), body.get("email"), body.get("firstName"), body.get("lastName"),
                                  body.get("send", True)))


@control.post("/move-out")
def move_out():
    body = _body()
    return jsonify(_sim().move_out(body.get("unitRentalId"), body.get("send", True)))


@control.post("/transfer")
def transfer():
    body = _body()
    return jsonify(_sim().transfer(body.get("unitRentalId"), body.get("newUnitId")))


@control.post("/overdue")
def overdue():
    body = _body()
    return jsonify(_sim().set_overdue(body.get("unitRentalId"), body.get("overdue"), body.get("send", True)))


@control.post("/edit")
def edit():
    body = _body()
    return jsonify(_sim().edit(body.get("entity"), body.get("id"), body.get("customFields"), body.get("title")))


@control.get("/state")
def state():
    return jsonify(_sim().snapshot())


@control.post("/reset")
def reset():
    _sim().reset()
    return jsonify(status="reset")


@control.route("/config", methods=["GET", "POST"])
def config():
    if request.method == "GET":
        return jsonify(_sim().config())
    body = _body()
    unknown = set(body) - {"webhook_url", "deliver", "webhook_secret", "faults", "drop_pending", "addon_id",
                           "ignore_filters"}
    if unknown:
        raise SimError(f"Unknown settings: {', '.join(sorted(unknown))}.")
    return jsonify(_sim().configure(**body))


def _parse_time(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise SimError(f"{value!r} is not an ISO-8601 timestamp.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def create_app(*, webhook_url: str | None = None, webhook_secret: str = DEMO_WEBHOOK_SECRET,
               api_key: str = DEMO_API_KEY, pti_base_url: str = DEFAULT_PTI_URL,
               deliver_webhooks: bool = True, addon_id: str | None = None, sites: list | None = None) -> Flask:
    """The simulator as a WSGI app; `app.extensions["storeganise_sim"]` is its StoreganiseSim (call close())."""
    app = Flask(__name__)
    app.json.sort_keys = False
    app.extensions[EXTENSION] = StoreganiseSim(pti_base_url=pti_base_url, webhook_url=webhook_url,
                                               webhook_secret=webhook_secret, api_key=api_key,
                                               deliver=deliver_webhooks, addon_id=addon_id, sites=sites)
    app.register_blueprint(api)
    app.register_blueprint(control)

    @app.errorhandler(SimError)
    def _sim_error(exc: SimError):
        return jsonify(error=exc.message), exc.status

    @app.errorhandler(404)
    def _not_found(exc):
        return jsonify(error=f"No such endpoint: {request.method} {request.path}."), 404

    @app.errorhandler(405)
    def _not_allowed(exc):
        return jsonify(error=f"{request.method} is not allowed on {request.path}."), 405

    return app


def from_environment() -> Flask:
    """The simulator as `main` builds it, from the environment alone: for a WSGI server that keeps connections open,
    as Storeganise's own does (`gunicorn 'sim.storeganise:from_environment()'`, which bench/stack.py runs); the
    development server of `main` closes each connection after its answer."""
    return create_app(webhook_url=os.environ.get("SG_WEBHOOK_URL", DEFAULT_WEBHOOK_URL),
                      pti_base_url=os.environ.get("PTI_SIM_URL", DEFAULT_PTI_URL),
                      webhook_secret=os.environ.get("SG_WEBHOOK_SECRET", DEMO_WEBHOOK_SECRET),
                      api_key=os.environ.get("SG_API_KEY", DEMO_API_KEY),
                      addon_id=os.environ.get("SG_ADDON_ID") or None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Storeganise simulator (Admin API subset + signed webhooks)")
    parser.add_argument("--host", default=os.environ.get("SG_SIM_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("SG_SIM_PORT", DEFAULT_PORT)))
    parser.add_argument("--webhook-url", default=os.environ.get("SG_WEBHOOK_URL", DEFAULT_WEBHOOK_URL))
    parser.add_argument("--pti-url", default=os.environ.get("PTI_SIM_URL", DEFAULT_PTI_URL))
    parser.add_argument("--no-webhooks", action="store_true", help="record webhooks but do not send them")
    parser.add_argument("--addon-id", default=os.environ.get("SG_ADDON_ID") or None,
                        help="act as this add-on: webhooks carry addonId and apiUrl")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s storeganise-sim %(levelname)s %(message)s")
    app = create_app(webhook_url=args.webhook_url, pti_base_url=args.pti_url, deliver_webhooks=not args.no_webhooks,
                     webhook_secret=os.environ.get("SG_WEBHOOK_SECRET", DEMO_WEBHOOK_SECRET),
                     api_key=os.environ.get("SG_API_KEY", DEMO_API_KEY), addon_id=args.addon_id)
    app.run(host=args.host, port=args.port, threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()

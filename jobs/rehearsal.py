"""A worker's rehearsal of a lockout and a payment, before its first job (jobs.worker.warm_up).

A worker process's first event took two to three times as long in its handler as its next (docs/benchmarks.md):
SQLAlchemy compiled each of the path's statements the first time (its cache lives in the process) and psycopg
converted each the first time it sent it. So every worker's first lockout or unlock after a start or a deploy paid
for that, and those first events were most of event_to_gate's idle tail.

So, before its first job, the process takes one made-up customer through the product's own path: the first push,
then an overdue and a payment, each landed, pushed and written back as a delivery's job does. Nothing leaves the
process and nothing is kept but what the process learnt (compiled statements, converted queries, imported code):

- PTI and Storeganise are the simulators of sim/, in this process, reached through httpx's WSGI transport, with a
  site, its units, a customer and a rental under ids made up for this rehearsal;
- the database work is one transaction that is rolled back at the end: the path's commits are savepoints in it;
- what the path keeps in Redis is keyed by those made-up ids and expires (locks, echo expectations, stamps), and
  nothing is enqueued: the pushes run in the rehearsal, as a delivery's job runs its own.

PostgreSQL only: there the first statements cost most, and a transaction rolled back holds nobody up. On SQLite (a
trial, the tests) the rehearsal's writes would hold the database's one write lock, so it is skipped. It is only ever a
head start: should it fail, the failure is logged and the worker starts as it would have without it.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator

import httpx
from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from dashboard.clients import PTI_CLIENTS_EXTENSION
from dashboard.crypto import PtiCredentials, seal
from dashboard.demo import load_business
from dashboard.engine import writeback
from dashboard.engine.intent import mark_dirty
from dashboard.extensions import db
from dashboard.mirror import deliveries
from dashboard.mirror.events import process_delivery
from dashboard.models import Rental, Site, Unit, WebhookDelivery
from dashboard.pti import PtiClientRegistry
from dashboard.storeganise import StoreganiseClient
from jobs.events import PushHere
from jobs.reconcile import reconcile_account
from sim.demo_data import build_demo_business, make_sites
from sim.pti import create_app as create_pti_sim
from sim.storeganise import EXTENSION as SG_SIM_EXTENSION
from sim.storeganise import create_app as create_sg_sim

log = logging.getLogger(__name__)

PTI_URL = "http://pti.rehearsal.invalid"  # never resolved: the transport answers in this process
SG_URL = "http://storeganise.rehearsal.invalid/api/v1/admin"
SG_KEY = "rehearsal-key"
UNITS, RENTED = 4, 3  # one unit with a PTI Unit Name, rented, and the demo's parking bays (two of them rented)


class RehearsalError(RuntimeError):
    """The rehearsal did not end as a lockout and a payment should: logged, and the worker starts anyway."""


def rehearse() -> bool:
    """Take a made-up customer through a first push, a lockout and a payment (see the module's note); True when it
    went as it should, False when skipped (not PostgreSQL) or when it failed (logged)."""
    if db.engine.dialect.name != "postgresql":
        return False
    started = time.monotonic()
    try:
        with _quiet(), Stage() as stage:
            stage.lockout_and_payment()
    except Exception as exc:  # noqa: BLE001 - a head start only: the worker starts as it would have without it
        log.warning("the worker's rehearsal of a payment failed (%s: %s): its first event prepares its statements "
                    "itself", exc.__class__.__name__, exc)
        return False
    log.info("worker rehearsed a lockout and a payment in %.0f ms (nothing kept)", (time.monotonic() - started) * 1000)
    return True


class Stage:
    """The simulators with a one-site business under made-up ids, our clients on them, and a database session in a
    transaction that is rolled back on leaving; the app's own PTI clients and session are put back as they were."""

    def __init__(self) -> None:
        token = uuid.uuid4().hex[:12]
        self.spec = make_sites(1, UNITS, RENTED, prefix=f"rehearsal-{token}-")[0]
        self.business = build_demo_business(PTI_URL, sites=[self.spec])
        self.job_id = f"rehearsal-{token}"
        self.app = current_app._get_current_object()

    def __enter__(self) -> Stage:
        config = self.app.config
        with contextlib.ExitStack() as undo:  # what is set up here is undone in reverse, also when a step fails
            self.pti_app = create_pti_sim(self.business.pti_sites)
            self.sg_app = create_sg_sim(webhook_url=None, deliver_webhooks=False, pti_base_url=PTI_URL,
                                        api_key=SG_KEY, sites=[self.spec])
            self.sim = self.sg_app.extensions[SG_SIM_EXTENSION]
            undo.callback(self.sim.close)
            self.client = StoreganiseClient(SG_URL, api_key=SG_KEY, transport=httpx.WSGITransport(app=self.sg_app))
            undo.callback(self.client.close)
            registry = PtiClientRegistry(
                None, transport=httpx.WSGITransport(app=self.pti_app), connect_timeout=config["PTI_CONNECT_TIMEOUT_S"],
                read_timeout=config["PTI_READ_TIMEOUT_S"], deadline=config["PTI_CALL_DEADLINE_S"])
            undo.callback(registry.close_all)
            # One transaction for everything, rolled back on leaving; the path's commits and rollbacks are savepoints.
            connection = undo.enter_context(db.engine.connect())
            undo.callback(connection.begin().rollback)
            session = Session(bind=connection, join_transaction_mode="create_savepoint")
            undo.callback(session.close)
            # Last, and undone first: the app's PTI clients and database session are the rehearsal's while it runs (a
            # worker rehearses before it takes any job, so nothing else uses them meanwhile).
            kept_registry = self.app.extensions.get(PTI_CLIENTS_EXTENSION)
            self.app.extensions[PTI_CLIENTS_EXTENSION] = registry
            undo.callback(self._put_back, PTI_CLIENTS_EXTENSION, kept_registry)
            kept_session = db.session.registry() if db.session.registry.has() else None
            db.session.registry.set(session)
            undo.callback(self._put_back_session, kept_session)
            self._undo = undo.pop_all()
        return self

    def __exit__(self, *exc_info) -> None:
        self._undo.close()

    def _put_back(self, name: str, kept) -> None:
        if kept is None:
            self.app.extensions.pop(name, None)
        else:
            self.app.extensions[name] = kept

    @staticmethod
    def _put_back_session(kept) -> None:
        if kept is None:
            db.session.registry.clear()
        else:
            db.session.registry.set(kept)

    def lockout_and_payment(self) -> None:
        rental = self._land()
        pushed: list[int] = []
        account = mark_dirty(rental.customer_id, rental.site_id)
        db.session.commit()
        reconcile_account(account.id, "rehearsal", write_back=pushed.append)  # the customer's first push
        for account_id in pushed:
            writeback.write_back(account_id, self.client, {})
        for overdue in (True, False):  # a lockout, then the payment
            self._deliver(self.sim.set_overdue(rental.sg_id, overdue, send=False)["webhook"])
            unit = self.pti_app.extensions["pti_sim"].sites[self.spec.pti_site_code].units[self._unit_name()]
            if unit["locked"] is not overdue:
                raise RehearsalError(f"the unit was not {'locked' if overdue else 'unlocked'} at the end")
        # A flip its write-back did not carry is PUT by the delivery itself, after reading what the mirror holds
        # (writeback.Fresh): that read is the path's too.
        writeback.Fresh({rental.sg_id: rental.overlocked}, read=True).holds(rental.sg_id)

    def _land(self) -> Rental:
        """The business in the mirror, without asking for any push; the rental with a PTI Unit Name, not overdue."""
        for record in self.business.unit_rentals:  # the demo draws a few overdue: this one starts paid up
            for copy in (record, self.sim.rentals[record["id"]]):
                copy["overdue"] = False
                copy["customFields"]["pti_overlocked"] = False
        for user in self.business.users:
            user["overdue"] = None
            self.sim.users[user["id"]]["overdue"] = None
        load_business(self.business)
        site = db.session.scalar(select(Site).where(Site.sg_id == self.business.sites[0]["id"]))
        # Set here whatever the site's custom fields are called in this product's settings.
        site.pti_base_url, site.pti_site_code = PTI_URL, self.spec.pti_site_code
        site.pti_credentials = seal(self.app.config["ENCRYPTION_KEYS"], site.sg_id, PtiCredentials(
            self.spec.pti_site_key, self.spec.pti_username, self.spec.pti_password))
        db.session.commit()
        rental = db.session.scalar(select(Rental).join(Unit, Unit.id == Rental.unit_id).where(
            Rental.site_id == site.id, Unit.pti_unit_name == self._unit_name()))
        if rental is None:
            raise RehearsalError("the made-up business has no rental of a unit with a PTI Unit Name")
        return rental

    def _unit_name(self) -> str:
        """The one unit of the made-up site with a PTI Unit Name (the others are the demo's parking bays)."""
        return self.business.pti_sites[self.spec.pti_site_code]["units"][0]

    def _deliver(self, event: dict) -> None:
        """Record the webhook as the receiver does, then handle it as the delivery's job does."""
        db.session.add(WebhookDelivery(id=event["id"], type=event["type"], status=deliveries.QUEUED, payload=event,
                                       rental_sg_id=event["data"].get("unitRentalId")))
        db.session.commit()
        status = process_delivery(event["id"], self.client, push_here=PushHere(self.job_id, self.client))
        if status != deliveries.PROCESSED:
            raise RehearsalError(f"the {event['type']} delivery ended {status}")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The path's own log lines (a lock, an unlock, the simulators' requests) would read as real work: not logged."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)

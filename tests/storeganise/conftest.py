"""Fixtures for the product's Storeganise side: the simulator in-process, signed deliveries, the jobs Redis holds."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest
from rq import Queue

from dashboard.queue import QUEUE_NAMES, get_redis
from dashboard.sg import TRANSPORT_EXTENSION
from dashboard.storeganise import StoreganiseClient, compact_json, sign
from sim.storeganise import DEMO_API_KEY
from sim.storeganise import create_app as create_sim

SIM_API_URL = "http://sg.test/api/v1/admin"
RECONCILE_JOB = "jobs.reconcile.reconcile_account"


@pytest.fixture
def sg_app():
    """The Storeganise simulator, reached in-process; webhooks are recorded, not sent (tests deliver them)."""
    app = create_sim(webhook_url=None, deliver_webhooks=False)
    yield app
    app.extensions["storeganise_sim"].close()


@pytest.fixture
def sim(sg_app):
    return sg_app.extensions["storeganise_sim"]


@pytest.fixture
def sg(app, sg_app):
    """Our Storeganise client on the simulator; the product's jobs build the same one from config."""
    transport = httpx.WSGITransport(app=sg_app)
    app.config.update(STOREGANISE_API_URL=SIM_API_URL, STOREGANISE_API_KEY=DEMO_API_KEY)
    app.extensions[TRANSPORT_EXTENSION] = transport
    with StoreganiseClient(SIM_API_URL, api_key=DEMO_API_KEY, transport=transport, sleep=lambda s: None) as client:
        yield client
    app.extensions.pop(TRANSPORT_EXTENSION, None)


@dataclass
class Hooks:
    """Delivers the simulator's recorded webhooks to the product, signed, through the Flask test client."""

    sim: object
    client: object
    secret: str
    sent: int = 0

    def body(self, record: dict) -> bytes:
        """The body the simulator sent: addonId and apiUrl only when it plays an add-on."""
        return compact_json({k: record[k] for k in ("id", "type", "created", "data", "apiUrl", "addonId")
                             if k in record})

    def post(self, body: bytes, signature: str | None = ...):
        headers = {"Content-Type": "application/json"}
        if signature is ...:
            signature = sign(self.secret, body)
        if signature is not None:
            headers["sg-signature"] = signature
        return self.client.post("/webhooks/storeganise", data=body, headers=headers)

    def deliver_new(self) -> list[dict]:
        """POST every webhook the simulator emitted since the last call; returns those records."""
        records = self.sim.snapshot()["webhooks"][self.sent:]
        self.sent += len(records)
        for record in records:
            response = self.post(self.body(record))
            assert response.status_code == 200, response.get_data(as_text=True)
        return records

    def skip_new(self) -> None:
        self.sent = len(self.sim.snapshot()["webhooks"])


@pytest.fixture
def hooks(app, client, sim):
    return Hooks(sim, client, app.config["STOREGANISE_WEBHOOK_SECRET"])


def queued_jobs(func_name: str | None = None) -> list[tuple[str, object]]:
    """(queue name, job) for every job waiting in our queues, optionally only those of one function."""
    found = []
    for name in QUEUE_NAMES:
        for job in Queue(name, connection=get_redis()).jobs:
            if func_name is None or job.func_name == func_name:
                found.append((name, job))
    return found


def reconcile_requests() -> list[tuple[str, int, str]]:
    """(queue, account id, trigger) of every reconcile the product asked for and no worker ran yet."""
    return [(queue, *job.args) for queue, job in queued_jobs(RECONCILE_JOB)]


@pytest.fixture(autouse=True)
def _fresh_filter_warnings():
    """The client warns once per process about a filter Storeganise ignores; each test starts unwarned."""
    from dashboard.storeganise import client as sg_client

    sg_client._WARNED_IGNORED.clear()
    yield
    sg_client._WARNED_IGNORED.clear()

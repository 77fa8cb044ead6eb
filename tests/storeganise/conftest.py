"""Fixtures for the product's Storeganise side: the simulator in-process, signed deliveries, the jobs Redis holds."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
from rq import Queue
from sqlalchemy import select

from dashboard.clients import TRANSPORT_EXTENSION
from dashboard.extensions import db
from dashboard.jobqueue import QUEUE_NAMES, RECONCILE, get_redis
from dashboard.models import Rental
from dashboard.storeganise import StoreganiseClient, compact_json, sign
from jobs.pull import import_all
from sim.server import serve_in_thread
from sim.storeganise import DEMO_API_KEY
from sim.storeganise import create_app as create_sim
from tests.conftest import flush_redis

SIM_API_URL = "http://sg.test/api/v1/admin"


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
    return [(queue, *job.args) for queue, job in queued_jobs(RECONCILE)]


@pytest.fixture(autouse=True)
def _fresh_filter_warnings():
    """The client warns once per process about a filter Storeganise ignores; each test starts unwarned."""
    from dashboard.storeganise import client as sg_client

    sg_client._WARNED_IGNORED.clear()
    yield
    sg_client._WARNED_IGNORED.clear()


# --- the contract suite's two backends (tests/storeganise/test_contract.py) ------------------------------------

FAKE_API_URL = "https://demo.storeganise.com/api/v1/admin"
CONTRACT_ADDON_ID = "64de6a00dd7adb0014825f41"  # the add-on id of fixtures/addon.json, given to the simulator too


class SgBackend:
    """What a contract test needs from a Storeganise: a client, known record ids, staff edits, ignored filters."""

    kind: str
    api_url: str
    transport: httpx.BaseTransport | None = None
    ids: dict

    def client(self, **options) -> StoreganiseClient:
        options.setdefault("sleep", lambda s: None)
        return StoreganiseClient(self.api_url, api_key=DEMO_API_KEY, transport=self.transport, **options)


class RespxSgBackend(SgBackend):
    kind = "respx"

    def __init__(self) -> None:
        from tests.storeganise.fake_storeganise import FakeStoreganise, fixture

        self.fake = FakeStoreganise(FAKE_API_URL, DEMO_API_KEY)
        self.api_url, self.transport = FAKE_API_URL, self.fake.transport
        site, other, unit, user, other_user, rental = (fixture(f"{n}.json") for n in (
            "site", "site_other", "unit", "user", "user_other", "rental"))
        self.ids = {"site": site["id"], "other_site": other["id"], "unit": unit["id"], "rental": rental["id"],
                    "users": [user["id"], other_user["id"]], "job": fixture("job.json")["id"],
                    "addon": CONTRACT_ADDON_ID}

    def edit(self, entity: str, record_id: str, fields: dict) -> None:
        self.fake.edit(entity, record_id, fields)

    def ignore(self, *filters: str) -> None:
        self.fake.ignore = set(filters)


class SimSgBackend(SgBackend):
    kind = "sim"

    def __init__(self, url: str) -> None:
        self.api_url = url + "/api/v1/admin"
        self.control = httpx.Client(base_url=url + "/_sim", timeout=10)
        self.control.post("/reset").raise_for_status()
        state = self.control.get("/state").json()
        sites = state["sites"]
        unit = next(u for u in state["units"] if u["siteId"] == sites[0]["id"] and u["state"] == "available"
                    and u["customFields"].get("pti_id") not in (None, "", "NONE"))
        done = self.control.post("/move-in", json={"unitId": unit["id"], "email": "ava.contract@example.com",
                                                   "firstName": "Ava", "lastName": "Contract"})
        done.raise_for_status()
        done = done.json()
        other_user = next(u["id"] for u in state["users"] if u["id"] != done["userId"])
        self.ids = {"site": sites[0]["id"], "other_site": sites[1]["id"], "unit": unit["id"],
                    "rental": done["unitRentalId"], "users": [done["userId"], other_user], "job": done["jobId"],
                    "addon": CONTRACT_ADDON_ID}

    def edit(self, entity: str, record_id: str, fields: dict) -> None:
        self.control.post("/edit", json={"entity": entity, "id": record_id, "customFields": fields}).raise_for_status()

    def ignore(self, *filters: str) -> None:
        self.control.post("/config", json={"ignore_filters": list(filters)}).raise_for_status()

    def close(self) -> None:
        self.ignore()
        self.control.post("/reset").raise_for_status()
        self.control.close()


@pytest.fixture(scope="session")
def sg_sim_server():
    from sim.server import serve_in_thread

    app = create_sim(webhook_url=None, deliver_webhooks=False, addon_id=CONTRACT_ADDON_ID)
    server = serve_in_thread(app)
    server.app = app
    yield server
    app.extensions["storeganise_sim"].close()
    server.stop()


@pytest.fixture
def sg_sim(sg_sim_server):
    backend = SimSgBackend(sg_sim_server.url)
    backend.sim = sg_sim_server.app.extensions["storeganise_sim"]
    yield backend
    backend.close()


@pytest.fixture(params=["respx", "sim"])
def storeganise(request) -> SgBackend:
    """The same expectations, once against respx serving the real-shape fixtures, once against the simulator."""
    if request.param == "respx":
        return RespxSgBackend()
    return request.getfixturevalue("sg_sim")


# --- the product and the simulators on ports, end to end (test_live.py and the tests built on it) ----------


@contextmanager
def serving(app, redis_url, **sim_options):
    """The product and the Storeganise simulator, each on a port, the business imported: (simulator, its control)."""
    product = serve_in_thread(app)
    sim_app = create_sim(webhook_url=product.url + "/webhooks/storeganise",
                         webhook_secret=app.config["STOREGANISE_WEBHOOK_SECRET"], **sim_options)
    sim_server = serve_in_thread(sim_app)
    app.config.update(STOREGANISE_API_URL=sim_server.url + "/api/v1/admin", STOREGANISE_API_KEY=DEMO_API_KEY)
    sim = sim_app.extensions["storeganise_sim"]
    import_all()
    flush_redis(redis_url)
    try:
        with httpx.Client(base_url=sim_server.url, timeout=10) as control:
            yield sim, control
    finally:
        sim.close()
        sim_server.stop()
        product.stop()


@pytest.fixture
def live(app, redis_url):
    with serving(app, redis_url) as both:
        yield both


@pytest.fixture
def live_with_pti(app, redis_url):
    """`live`, with the sites' PTI a simulator of its own on a port, so the pushes succeed."""
    from sim.pti import create_app as create_pti

    pti_server = serve_in_thread(create_pti())
    try:
        with serving(app, redis_url, pti_base_url=pti_server.url) as (sim, control), \
                httpx.Client(base_url=pti_server.url, timeout=10) as pti:
            yield sim, control, pti
    finally:
        pti_server.stop()


def rental(sg_id: str) -> Rental:
    """The mirror's rental as the database holds it now."""
    db.session.expire_all()
    return db.session.scalar(select(Rental).where(Rental.sg_id == sg_id))


def sole_rental(sim, overdue: bool = False) -> dict:
    """An active rental whose customer rents nothing else."""
    counts = {}
    for r in sim.rentals.values():
        counts[r["ownerId"]] = counts.get(r["ownerId"], 0) + (r["state"] == "occupied")
    return next(r for r in sim.rentals.values()
                if r["state"] == "occupied" and counts[r["ownerId"]] == 1 and r["overdue"] == overdue
                and sim.units[r["unitId"]]["customFields"].get("pti_id"))

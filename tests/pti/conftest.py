"""Two PTI backends for one contract suite: respx routes (tests/pti/fake_pti.py) and the live simulator."""

from __future__ import annotations

import httpx
import pytest

from dashboard.pti import PtiClient
from sim.pti import create_app
from sim.server import serve_in_thread
from tests.pti.fake_pti import FakePti

LEVELS = [{"id": 1, "name": "All Hours Access"}, {"id": 2, "name": "Business Hours Access"}]
ZONES = [{"id": 1, "name": "24 hours"}, {"id": 3, "name": "Weekdays 7am-7pm"}]
SITES = {
    "NG01": {"site_key": "ng-key-SECRETKEY", "username": "sync.northgate", "password": "ng-pass-SECRETPW",
             "units": ["A101", "A102", "A103", "B201", "B202"], "access_levels": LEVELS, "time_zones": ZONES},
    "RS02": {"site_key": "rs-key-SECRETKEY", "username": "sync.riverside", "password": "rs-pass-SECRETPW",
             "units": ["R101", "R102"], "access_levels": LEVELS, "time_zones": ZONES},
}
FAKE_URL = "https://pti.fake.test"
# The client gives up after READ_TIMEOUT seconds; the simulator holds a simulated time-out longer than that. A
# second, not a quarter: an in-process simulator on a loaded CI machine once took longer than 0.25 s to answer a
# plain rent_unit, and the contract tests are about PTI's answers, not about a tight clock.
READ_TIMEOUT = 1.0
SIM_TIMEOUT_MS = 1500


class Backend:
    """What a contract test needs from a PTI: clients, faults, token expiry, state and call counts."""

    kind: str
    base_url: str
    transport: httpx.BaseTransport | None = None

    def client(self, site: str = "NG01", *, password: str | None = None, **options) -> PtiClient:
        seed = SITES[site]
        options.setdefault("read_timeout", READ_TIMEOUT)
        options.setdefault("connect_timeout", 1.0)
        return PtiClient(self.base_url, site, seed["site_key"], seed["username"], password or seed["password"],
                         transport=self.transport, **options)


class RespxBackend(Backend):
    kind = "respx"

    def __init__(self) -> None:
        self.fake = FakePti(FAKE_URL, SITES)
        self.base_url = FAKE_URL
        self.transport = self.fake.transport

    def faults(self, **config) -> None:
        self.fake.faults = config

    def expire_tokens(self) -> None:
        self.fake.expire_tokens()

    def state(self) -> dict:
        return self.fake.state()

    def lists(self, site: str = "NG01", **lists) -> None:
        self.fake.set_lists(site, **lists)

    def count(self, operation: str = "total") -> int:
        return self.fake.counts[operation]


class SimBackend(Backend):
    kind = "sim"

    def __init__(self, url: str) -> None:
        self.base_url = url
        self.control = httpx.Client(base_url=url, timeout=5)

    def faults(self, **config) -> None:
        config.setdefault("timeout_ms", SIM_TIMEOUT_MS)
        self.control.post("/_sim/faults", json=config).raise_for_status()

    def expire_tokens(self) -> None:
        self.control.post("/_sim/expire-tokens").raise_for_status()

    def state(self) -> dict:
        return self.control.get("/_sim/state").json()["sites"]

    def lists(self, site: str = "NG01", **lists) -> None:
        self.control.post("/_sim/lists", json={"site": site, **lists}).raise_for_status()

    def count(self, operation: str = "total") -> int:
        calls = self.control.get("/_sim/state").json()["calls"]
        return calls["total"] if operation == "total" else calls["by_operation"].get(operation, 0)

    def calls(self) -> list[dict]:
        return self.control.get("/_sim/calls").json()["calls"]


@pytest.fixture(scope="session")
def sim_server():
    server = serve_in_thread(create_app(SITES, seed=7))
    yield server
    server.stop()


@pytest.fixture
def sim(sim_server):
    backend = SimBackend(sim_server.url)
    backend.control.post("/_sim/reset").raise_for_status()
    yield backend
    backend.control.post("/_sim/reset").raise_for_status()
    backend.control.close()


@pytest.fixture(params=["respx", "sim"])
def pti(request) -> Backend:
    """The same expectations, once against respx routes and once against the live simulator."""
    if request.param == "respx":
        return RespxBackend()
    return request.getfixturevalue("sim")


@pytest.fixture
def client(pti):
    with pti.client() as c:
        yield c

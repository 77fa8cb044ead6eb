"""A worker process keeps its Storeganise client between the jobs it runs warm (kept_storeganise_client): a
delivery's first call (its re-read of the rental, before the lock or unlock) goes out on the connection the last job
left open, where a client of each job's own connected (and in production negotiated TLS) first."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from werkzeug.test import Client

from dashboard.clients import STOREGANISE_CLIENT_EXTENSION, TRANSPORT_EXTENSION, kept_storeganise_client
from dashboard.mirror.importer import import_business
from jobs.events import handle_delivery
from sim.storeganise import DEMO_API_KEY
from tests.conftest import flush_redis

from .conftest import sole_rental


class KeepAlive(ThreadingHTTPServer):
    """The simulator behind an HTTP/1.1 server that keeps connections open, as Storeganise's does (the development
    server our tests use otherwise closes every connection); counts the connections it accepted."""

    daemon_threads = True

    def __init__(self, wsgi_app) -> None:
        self.wsgi, self.connections = Client(wsgi_app), 0
        super().__init__(("127.0.0.1", 0), Forward)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        answer = self.server.wsgi.open(self.path, method=self.command, data=body,
                                       headers=[(k, v) for k, v in self.headers.items() if k.lower() != "host"])
        data = answer.get_data()
        self.send_response(answer.status_code)
        self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = forward

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def served(app, sg, sg_app, redis_url):
    """The business imported; then the product's jobs reach the simulator over a kept-alive HTTP connection."""
    import_business(sg)
    flush_redis(redis_url)
    server = KeepAlive(sg_app)
    app.extensions.pop(TRANSPORT_EXTENSION, None)
    app.config["STOREGANISE_API_URL"] = server.url + "/api/v1/admin"
    yield server
    server.shutdown()
    server.server_close()


def test_the_deliveries_of_one_worker_process_reach_storeganise_over_one_connection(served, sim, hooks):
    target = sole_rental(sim, overdue=False)
    statuses = []
    for overdue in (True, False, True):
        sim.set_overdue(target["id"], overdue)
        statuses += [handle_delivery(record["id"]) for record in hooks.deliver_new()]
    # three jobs, each a GET of the rental and a PUT of its pti_overlocked (their echoes ask for nothing)
    assert [s for s in statuses if s != "echo"] == ["processed"] * 3
    assert served.connections == 1  # one for every job before


def test_a_changed_setting_builds_a_new_client_and_closes_the_old(app, sg):
    first = kept_storeganise_client()
    assert kept_storeganise_client() is first
    app.config["STOREGANISE_API_KEY"] = DEMO_API_KEY + "-rotated"
    second = kept_storeganise_client()
    assert second is not first and first._http.is_closed and not second._http.is_closed
    assert app.extensions[STOREGANISE_CLIENT_EXTENSION][1] is second


def test_a_forked_work_horse_does_not_use_its_parents_connection(app, sg, monkeypatch):
    """A whole-site job's horse builds a client of its own; the worker's kept one stays open for its warm jobs."""
    from rq import Queue

    from dashboard.jobqueue import BULK, FORKED_JOBS, get_redis
    from jobs.worker import build_worker

    kept = kept_storeganise_client()
    monkeypatch.setattr("jobs.worker.FORKED_JOBS", FORKED_JOBS | {"tests.storeganise.test_kept_client.kept_probe"})
    forked = Queue(BULK, connection=get_redis()).enqueue("tests.storeganise.test_kept_client.kept_probe")
    assert build_worker().work(burst=True, with_scheduler=False)
    assert forked.get_status(refresh=True) == "finished"
    assert forked.return_value() is False  # the horse found no client kept
    assert kept_storeganise_client() is kept and not kept._http.is_closed


def kept_probe() -> bool:
    from flask import current_app

    return STOREGANISE_CLIENT_EXTENSION in current_app.extensions

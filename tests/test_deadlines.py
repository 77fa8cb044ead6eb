"""Every call to another process is bounded in all, not only per phase: a PTI or Storeganise server that answers
byte by byte (never idle long enough for httpx's read time-out) costs the call's deadline, then a time-out error;
PostgreSQL connections carry lock and statement time-outs."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from dashboard.pti import PtiClient, PtiRetryableError
from dashboard.storeganise import StoreganiseClient, StoreganiseError


class TricklingServer:
    """Answers every request with headers at once, then its body one byte every `every` seconds."""

    def __init__(self, body: bytes = b'{"result": 0, "data": {"token": "t", "expires_in": 3600}}' + b" " * 200,
                 every: float = 0.05) -> None:
        self.body, self.every = body, every
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by stop()
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(self.body))
                for byte in self.body:
                    if self.stopped.is_set():
                        return
                    conn.sendall(bytes([byte]))
                    time.sleep(self.every)
            except OSError:
                return

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def trickling():
    server = TricklingServer()
    yield server
    server.stop()


def test_a_pti_answer_trickled_byte_by_byte_ends_at_the_call_deadline(trickling):
    client = PtiClient(trickling.url, "SITE", "key", "user", "secret", read_timeout=1.0, deadline=0.5)
    started = time.monotonic()
    with pytest.raises(PtiRetryableError) as caught:
        client.login()
    assert caught.value.reason == "pti_unreachable"
    assert time.monotonic() - started < 2  # the body alone would take about 13 s
    client.close()


def test_a_storeganise_answer_trickled_byte_by_byte_ends_at_the_call_deadline(trickling):
    client = StoreganiseClient(trickling.url, api_key="key", timeout=1.0, deadline=0.5, max_attempts=1)
    started = time.monotonic()
    with pytest.raises(StoreganiseError) as caught:
        client.get_site("s1")
    assert caught.value.reason == "storeganise_unreachable" and caught.value.retryable
    assert time.monotonic() - started < 2
    client.close()


def test_the_product_builds_its_clients_with_the_configured_deadlines(app):
    from dashboard.clients import pti_client, storeganise_client
    from dashboard.pti import PtiConnection

    app.config.update(PTI_CALL_DEADLINE_S=7.0, STOREGANISE_CALL_DEADLINE_S=9.0, STOREGANISE_API_URL="http://sg.test",
                      STOREGANISE_API_KEY="k")
    site = type("S", (), {"id": 1})()
    with storeganise_client() as sg:
        assert sg.deadline == 9.0
    assert pti_client(site, PtiConnection("http://pti.test", "C", "k", "u", "p")).deadline == 7.0


def test_postgresql_connections_carry_lock_and_statement_time_outs(monkeypatch, tmp_path):
    from dashboard import create_app

    monkeypatch.setenv("PTI_SYNC_INSTANCE", str(tmp_path))
    monkeypatch.setenv("DATABASE_LOCK_TIMEOUT_S", "2.5")
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://u@127.0.0.1:1/x",
                      "SECRET_KEY": "s", "ENCRYPTION_KEYS": "k"})
    options = app.config["SQLALCHEMY_ENGINE_OPTIONS"]["connect_args"]["options"]
    assert options == "-c lock_timeout=2500 -c statement_timeout=60000"


def test_sqlite_connections_get_no_postgresql_options(monkeypatch, tmp_path):
    from dashboard import create_app

    monkeypatch.setenv("PTI_SYNC_INSTANCE", str(tmp_path))
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'x.sqlite3'}",
                      "SECRET_KEY": "s", "ENCRYPTION_KEYS": "k"})
    assert "options" not in app.config["SQLALCHEMY_ENGINE_OPTIONS"].get("connect_args", {})


def test_the_test_database_enforces_the_time_outs_it_understands(app):
    """On PostgreSQL (CI runs the db tests there too) a real connection reports the time-outs; SQLite has none."""
    from sqlalchemy import text

    from dashboard.extensions import db

    if db.engine.dialect.name == "postgresql":
        with db.engine.connect() as conn:
            assert conn.execute(text("SHOW lock_timeout")).scalar() == "10s"
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "1min"
    else:
        assert db.engine.dialect.name == "sqlite"
        assert "options" not in app.config["SQLALCHEMY_ENGINE_OPTIONS"].get("connect_args", {})

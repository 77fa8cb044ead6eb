"""Browser tests: Debian's Chromium driven by Playwright against the product served on a real port.

A missing Chromium fails these tests (it never skips them): `make test` installs it, or says how.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sim.server import serve_in_thread

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is missing at {CHROMIUM}: run `make browser` (apt-get install chromium).")
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"],
    }


@pytest.fixture
def live_server(app, demo_users, demo_business):
    server = serve_in_thread(app)
    yield server
    server.stop()


@pytest.fixture
def url(live_server):
    """Absolute URL of a path on the live server (base_url is session-wide in pytest-base-url; ours is per test)."""
    return lambda path: f"{live_server.url}{path}"

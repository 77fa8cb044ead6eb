"""One PTI session a site, shared by every process through Redis (dashboard.clients.SharedPtiSession), against the
live PTI simulator and a real Redis: a process that has no token yet takes the one another opened instead of
logging in; a refused token is dropped for everyone; a changed password, an unreadable value or a Redis that cannot
answer all mean "log in yourself"."""

from __future__ import annotations

import socket

import pytest
import redis
from cryptography.fernet import Fernet

from dashboard.clients import SharedPtiSession, close_pti_clients, pti_client
from dashboard.models import Site
from dashboard.pti import PtiConnection
from dashboard.pti.client import TOKEN_RENEW_MARGIN
from sim.pti import DEFAULT_TOKEN_TTL_S
from tests.pti.conftest import SITES

KEYS = "ZGVtby1vbmx5LWtleS1kZW1vLW9ubHkta2V5LWRlbW8="


def connection(sim, site: str = "NG01", password: str | None = None) -> PtiConnection:
    seed = SITES[site]
    return PtiConnection(sim.base_url, site, seed["site_key"], seed["username"], password or seed["password"])


@pytest.fixture
def conn(redis_url):
    with redis.Redis.from_url(redis_url) as c:
        yield c


def process(sim, conn, site: str = "NG01", keys: str = KEYS, password: str | None = None, redis_conn=None):
    """A client as one worker process builds it: its own pool, the site's session shared through Redis."""
    settings = connection(sim, site, password)
    store = SharedPtiSession(redis_conn or conn, site, settings, keys)
    return settings.client(sessions=store, read_timeout=1.0)


def test_a_second_process_takes_the_session_the_first_opened_instead_of_logging_in(sim, conn):
    with process(sim, conn) as first, process(sim, conn) as second:
        assert len(first.list_units()) == 5
        assert len(second.list_units()) == 5
    assert sim.count("login") == 1 and sim.count("list_units") == 2


def test_the_shared_token_is_sealed_and_named_by_the_site_not_its_secrets(sim, conn):
    with process(sim, conn) as client:
        client.list_units()
    (key,) = conn.keys("pti-sync:pti-session:*")
    assert key == b"pti-sync:pti-session:NG01"
    value = conn.get(key)
    token, _ = SharedPtiSession(conn, "NG01", connection(sim), KEYS).get()
    for secret in (token, SITES["NG01"]["password"], SITES["NG01"]["site_key"], "fingerprint"):
        assert secret.encode() not in value
    usable = DEFAULT_TOKEN_TTL_S - TOKEN_RENEW_MARGIN  # as long as the client itself would use it, not longer
    assert usable - 5 < conn.pttl(key) / 1000 <= usable


def test_a_token_pti_refuses_is_dropped_for_every_process_and_one_new_session_shared(sim, conn):
    with process(sim, conn) as first, process(sim, conn) as second:
        first.list_units()
        second.list_units()
        sim.expire_tokens()
        assert len(first.list_units()) == 5  # -2: the token dropped, a new session shared, the call again
        # -2 too: the shared token is the first's new one, which stays; the retry after a refusal opens a session of
        # its own rather than trust another process's (a PTI that ties sessions to an address would refuse it too)
        assert len(second.list_units()) == 5
        logins = sim.count("login")
        with process(sim, conn) as third:
            assert len(third.list_units()) == 5
        assert sim.count("login") == logins == 3  # the third process took the session shared last


def test_a_session_opened_with_other_credentials_is_not_taken(sim, conn):
    with process(sim, conn) as before:
        before.list_units()
    # The same site's settings with another password (PTI's password changed): its fingerprint differs.
    store = SharedPtiSession(conn, "NG01", connection(sim, password="another-password"), KEYS)
    assert store.get() is None
    assert SharedPtiSession(conn, "NG01", connection(sim), KEYS).get() is not None


def test_a_value_the_keys_cannot_open_means_log_in_and_share_anew(sim, conn):
    with process(sim, conn, keys=Fernet.generate_key().decode()) as other:
        other.list_units()
    with process(sim, conn) as client:
        assert len(client.list_units()) == 5
    assert sim.count("login") == 2
    assert SharedPtiSession(conn, "NG01", connection(sim), KEYS).get() is not None  # replaced by a readable one


def test_dropping_a_refused_token_keeps_one_another_process_shared_since(sim, conn):
    settings = connection(sim)
    store = SharedPtiSession(conn, "NG01", settings, KEYS)
    store.put("old-token", 60)
    store.put("new-token", 60)  # another process's new session, after the old one was refused
    store.drop("old-token")
    assert store.get()[0] == "new-token"
    store.drop("new-token")
    assert store.get() is None


def test_a_redis_that_cannot_answer_means_each_process_logs_in(sim):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    with redis.Redis(port=port, socket_connect_timeout=0.2, socket_timeout=0.2) as down:
        with process(sim, None, redis_conn=down) as first, process(sim, None, redis_conn=down) as second:
            assert len(first.list_units()) == 5
            assert len(second.list_units()) == 5
    assert sim.count("login") == 2


def test_an_explicit_login_always_opens_a_session_of_its_own(sim, conn):
    """A connection check proves the credentials: it never passes on a token another process opened."""
    with process(sim, conn) as first:
        first.list_units()
    with process(sim, conn) as check:
        check.login()
    assert sim.count("login") == 2


@pytest.mark.parametrize("shared,logins", [(True, 1), (False, 2)])
def test_the_products_clients_share_the_session_unless_switched_off(app, sim, shared, logins):
    app.config["PTI_SHARED_SESSIONS"] = shared
    site = Site(id=1)
    settings = connection(sim)
    pti_client(site, settings).list_units()
    close_pti_clients(app)  # as a new process: no client, no token of its own
    pti_client(site, settings).list_units()
    close_pti_clients(app)
    assert sim.count("login") == logins

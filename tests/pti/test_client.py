"""The PTI client beyond the contract: secrets stay secret, helpers, the per-site registry, odd answers."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
import respx

from dashboard.pti import (
    PtiClient,
    PtiClientRegistry,
    PtiConnection,
    PtiPermanentError,
    PtiRetryableError,
    is_valid_unit_name,
    parse_retry_after,
)
from sim.server import free_port
from tests.pti.conftest import SITES

SECRETS = [SITES["NG01"]["site_key"], SITES["NG01"]["password"], SITES["NG01"]["username"], "NG01", "482913"]
BASE = "https://pti.example.test"


def envelope(data=None, result=0, status=200, **extra):
    return httpx.Response(status, json={"result": result, "data": data, **extra})


def routed(router: respx.Router, **options) -> PtiClient:
    seed = SITES["NG01"]
    return PtiClient(BASE, "NG01", seed["site_key"], seed["username"], seed["password"],
                     transport=httpx.MockTransport(router.handler), **options)


def logged_in_router() -> respx.Router:
    router = respx.Router(base_url=f"{BASE}/api/v1", assert_all_called=False)
    router.post("/login").mock(return_value=envelope({"token": "t1", "expires_in": 600}))
    return router


# --- secrets ---------------------------------------------------------------------------------------------------


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked"


def test_the_client_repr_and_str_hold_no_credentials(pti):
    client = pti.client()
    client.login()
    assert_no_secret(repr(client) + str(client) + repr(vars(client)))
    client.close()


def test_errors_hold_no_credentials_or_access_codes(pti, caplog):
    caplog.set_level(logging.DEBUG)
    errors = []
    with pti.client(password=SITES["NG01"]["password"] + "x") as bad:
        try:
            bad.login()
        except PtiPermanentError as exc:
            errors.append(exc)
    with pti.client() as client:
        client.create_user(email="a@example.com", first_name="A", last_name="B", access_code=482913,
                           access_level=1, time_zone=1, marker="cust-1")
        for call in (lambda: client.create_user(email="b@example.com", first_name="A", last_name="B",
                                                access_code=482913, access_level=1, time_zone=1, marker="c"),
                     lambda: client.update_user("nobody", access_code=482913)):
            try:
                call()
            except PtiPermanentError as exc:
                errors.append(exc)
        pti.faults(apply_then_timeout_rate=1)
        try:
            client.update_user("nobody", access_code=482913)
        except PtiRetryableError as exc:
            errors.append(exc)
    assert [e.reason for e in errors] == ["invalid_credentials", "duplicate_access_code", "user_not_found",
                                          "pti_unreachable"]
    for error in errors:
        assert_no_secret(str(error) + repr(error) + repr(vars(error)))
    assert_no_secret("\n".join(r.getMessage() for r in caplog.records))


def test_a_connection_describes_itself_without_secrets():
    connection = PtiConnection(BASE, "NG01", "ng-key-SECRETKEY", "sync.northgate", "ng-pass-SECRETPW", label="ng")
    assert_no_secret(repr(connection))


# --- pure helpers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, valid", [("A101", True), ("ABCDEFGHIJ", True), ("ABCDEFGHIJK", False),
                                         ("LOCKER 12", False), ("A\t1", False), ("", False), (None, False)])
def test_unit_names_are_at_most_10_characters_without_spaces(name, valid):
    assert is_valid_unit_name(name) is valid


def test_retry_after_reads_seconds_and_http_dates():
    assert parse_retry_after("7") == 7
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("-3") == 0
    now = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    when = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(when, now=now.timestamp()) == 30


@pytest.mark.parametrize("value", [None, "", "soon", "Wed, 99 Foo 2025"])
def test_a_missing_or_unreadable_retry_after_waits_one_second(value):
    assert parse_retry_after(value) == 1.0


# --- odd answers -----------------------------------------------------------------------------------------------


def test_a_refused_connection_is_unreachable_and_certain_even_for_writes():
    port = free_port()
    with PtiClient(f"http://127.0.0.1:{port}", "NG01", "k", "u", "p", connect_timeout=0.5) as client:
        with pytest.raises(PtiRetryableError) as info:
            client.lock_unit("A101")
    assert (info.value.reason, info.value.operation, info.value.uncertain) == ("pti_unreachable", "login", False)


def test_an_answer_that_is_not_the_envelope_is_a_permanent_rejection():
    router = respx.Router(base_url=f"{BASE}/api/v1", assert_all_called=False)
    router.post("/login").mock(return_value=httpx.Response(404, text="<html>Not Found</html>"))
    with routed(router) as client, pytest.raises(PtiPermanentError) as info:
        client.login()
    assert (info.value.reason, info.value.http_status) == ("pti_rejected", 404)


def test_a_token_refused_again_after_relogin_is_rejected_not_looped():
    router = logged_in_router()
    units = router.get("/units").mock(return_value=envelope(result=-2, status=401))
    with routed(router) as client, pytest.raises(PtiPermanentError) as info:
        client.list_units()
    assert (info.value.reason, info.value.result_code) == ("pti_rejected", -2)
    assert units.call_count == 2 and router.routes[0].call_count == 2


@pytest.mark.parametrize("answer,problem", [
    ({"result": 0}, "the answer holds no data"),
    ({"result": 0, "data": {"id": 1, "name": "24 hours"}}, "it is {'id': 1, 'name': '24 hours'}, not a list"),
    ({"result": 0, "data": "24 hours"}, "it is '24 hours', not a list"),
    ({"result": 0, "data": [None]}, "entry 1 is null, not an object"),
    ({"result": 0, "data": [{"id": 1, "name": "x" * 80}, {"id": "y" * 80}]},
     "entry 2 has the id '" + "y" * 38 + "…, not a whole number"),
])
def test_a_time_zone_answer_that_is_no_list_is_rejected_with_a_plain_detail(answer, problem):
    router = logged_in_router()
    router.get("/time-zones").mock(return_value=httpx.Response(200, json=answer))
    with routed(router) as client, pytest.raises(PtiPermanentError) as info:
        client.list_time_zones()
    assert (info.value.reason, info.value.operation, info.value.retryable) == ("pti_bad_response", "list_time_zones",
                                                                               False)
    assert info.value.detail == f"PTI's list of time zones could not be read: {problem}."


def test_an_unknown_negative_result_is_pti_rejected_with_its_code():
    router = logged_in_router()
    router.post("/units/A101/lock").mock(return_value=envelope(result=-77))
    with routed(router) as client, pytest.raises(PtiPermanentError) as info:
        client.lock_unit("A101")
    assert (info.value.reason, info.value.result_code) == ("pti_rejected", -77)


@pytest.mark.parametrize("answer", [None, {"name": "A101"}, {"name": "A101", "status": "let", "locked": True}, [1]])
def test_a_lock_whose_answer_does_not_say_the_unit_is_applied_and_answers_none(answer):
    """The write happened: an answer that is not a unit is no error (not a retry that would lock twice), only no news
    for a push that wanted to check it (it then reads the unit)."""
    router = logged_in_router()
    lock = router.post("/units/A101/lock").mock(return_value=envelope(answer))
    with routed(router) as client:
        assert client.lock_unit("A101") is None
    assert lock.call_count == 1


def test_a_404_without_item_is_read_from_the_operation():
    router = logged_in_router()
    router.post("/units/A101/lock").mock(return_value=envelope(result=-404))
    router.delete("/users/9").mock(return_value=envelope(result=-404))
    with routed(router) as client:
        with pytest.raises(PtiPermanentError, match="unit_not_found"):
            client.lock_unit("A101")
        with pytest.raises(PtiPermanentError, match="user_not_found"):
            client.remove_user("9")


def test_429_with_an_http_date_is_honoured():
    router = logged_in_router()
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    router.get("/units").mock(return_value=httpx.Response(429, headers={"Retry-After": later}))
    with routed(router) as client, pytest.raises(PtiRetryableError) as info:
        client.list_units()
    assert 18 <= info.value.retry_after <= 20


def test_unit_names_travel_url_encoded():
    router = logged_in_router()
    route = router.get("/units/A%2F1").mock(return_value=envelope(result=-3))
    with routed(router) as client, pytest.raises(PtiPermanentError, match="invalid_unit_name"):
        client.get_unit("A/1")
    assert route.called


def test_the_site_code_travels_in_a_header_and_never_in_the_url():
    router = logged_in_router()
    units = router.get("/units").mock(return_value=envelope([]))
    with routed(router) as client:
        client.list_units()
    request = units.calls.last.request
    assert request.headers["X-PTI-Site"] == "NG01" and "NG01" not in str(request.url)
    assert request.headers["Authorization"] == "Bearer t1"


# --- threads and the registry ----------------------------------------------------------------------------------


def test_threads_sharing_a_client_log_in_once(sim):
    with sim.client() as client:
        barrier = threading.Barrier(10)

        def work():
            barrier.wait()
            client.list_units()

        threads = [threading.Thread(target=work) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sim.count("login") == 1 and sim.count("list_units") == 10


def test_the_registry_keeps_one_client_per_site_until_its_settings_change():
    registry = PtiClientRegistry(read_timeout=1)
    ng = PtiConnection(BASE, "NG01", "key", "user", "pass")
    first = registry.get("site-1", ng)
    assert registry.get("site-1", PtiConnection(BASE, "NG01", "key", "user", "pass")) is first
    assert registry.get("site-2", PtiConnection(BASE, "RS02", "key", "user", "pass")) is not first
    renewed = registry.get("site-1", PtiConnection(BASE, "NG01", "key", "user", "new-pass"))
    assert renewed is not first and first._http.is_closed and not renewed._http.is_closed
    registry.close_all()
    assert renewed._http.is_closed

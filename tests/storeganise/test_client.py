"""The Storeganise Admin API client: endpoints, paging, auth, retries and errors (HTTP mocked with respx)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest
import respx

from dashboard.storeganise import StoreganiseClient, StoreganiseError

API = "https://biz.storeganise.com/api/v1/admin"
KEY = "sk-very-secret-0123"


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(sleeps):
    with StoreganiseClient(API, api_key=KEY, sleep=sleeps.append, jitter=lambda: 0.5, page_size=2) as c:
        yield c


@pytest.fixture
def api():
    with respx.mock(base_url=API, assert_all_called=False) as router:
        yield router


# --- auth ------------------------------------------------------------------------------------------------------

def test_api_key_is_sent_as_apikey_authorization(client, api):
    route = api.get("/sites/s1").respond(json={"id": "s1"})
    client.get_site("s1")
    assert route.calls.last.request.headers["Authorization"] == f"ApiKey {KEY}"


def test_addon_credentials_are_sent_as_addon_authorization(api):
    route = api.get("/sites/s1").respond(json={"id": "s1"})
    with StoreganiseClient(API, addon_id="addon-1", addon_key="ak-2") as c:
        c.get_site("s1")
    assert route.calls.last.request.headers["Authorization"] == "Addon addon-1|ak-2"


def test_client_needs_credentials():
    with pytest.raises(ValueError, match="api_key"):
        StoreganiseClient(API)


def test_client_refuses_both_kinds_of_credentials():
    with pytest.raises(ValueError, match="not both"):
        StoreganiseClient(API, api_key=KEY, addon_id="a", addon_key="b")


def test_repr_does_not_show_the_key(client):
    assert KEY not in repr(client)
    assert "ApiKey" in repr(client)


# --- reads -----------------------------------------------------------------------------------------------------

def test_list_sites_pages_until_a_short_page(client, api):
    route = api.get("/sites").mock(side_effect=[
        httpx.Response(200, json=[{"id": "a"}, {"id": "b"}]),
        httpx.Response(200, json=[{"id": "c"}]),
    ])
    assert [s["id"] for s in client.list_sites()] == ["a", "b", "c"]
    offsets = [(r.request.url.params["offset"], r.request.url.params["limit"]) for r in route.calls]
    assert offsets == [("0", "2"), ("2", "2")]
    assert all(r.request.url.params["include"] == "customFields" for r in route.calls)


def test_listing_stops_on_an_empty_page_after_a_full_one(client, api):
    route = api.get("/units").mock(side_effect=[
        httpx.Response(200, json=[{"id": "a"}, {"id": "b"}]),
        httpx.Response(200, json=[]),
    ])
    assert len(client.list_units()) == 2
    assert route.call_count == 2


def test_list_units_filters_by_site(client, api):
    route = api.get("/units").respond(json=[{"id": "u1", "siteId": "s1"}])
    assert client.list_units(site_id="s1") == [{"id": "u1", "siteId": "s1"}]
    assert route.calls.last.request.url.params["siteId"] == "s1"


def test_list_users_filters_by_ids_and_search(client, api):
    route = api.get("/users").respond(json=[{"id": "u1"}])
    api.get("/users/u2").respond(json={"id": "u2"})
    client.list_users(ids=["u1", "u2"], search="ava@example.com")
    params = route.calls.last.request.url.params
    assert params["ids"] == "u1,u2"
    assert params["search"] == "ava@example.com"


def test_users_an_ids_list_leaves_out_are_read_one_by_one(client, api, caplog):
    api.get("/users").respond(json=[{"id": "u1"}])
    api.get("/users/u2").respond(json={"id": "u2"})
    api.get("/users/u3").respond(404, json={"message": "Not found"})
    assert client.list_users(ids=["u2", "u1", "u3"]) == [{"id": "u2"}, {"id": "u1"}]
    assert "ignored" not in caplog.text  # a short answer is not an ignored filter


def test_an_ignored_ids_filter_stops_the_listing_and_reads_one_by_one(client, api, caplog):
    listing = api.get("/users").respond(json=[{"id": "x1"}, {"id": "u1"}])  # a full page of everyone
    api.get("/users/u2").respond(json={"id": "u2"})
    caplog.set_level("WARNING")
    assert client.list_users(ids=["u1", "u2"]) == [{"id": "u1"}, {"id": "u2"}]
    assert listing.call_count == 1  # no paging through every customer
    assert client.list_users(ids=["u2"]) == [{"id": "u2"}]
    assert listing.call_count == 1  # known to be ignored: not asked again
    assert caplog.text.count("ignored the ids filter") == 1


def test_records_outside_a_site_or_updated_after_filter_are_dropped(api):
    client = StoreganiseClient(API, api_key=KEY, page_size=10)
    api.get("/units").respond(json=[{"id": "u1", "siteId": "s1", "updated": "2023-09-13T10:00:00.000Z"},
                                    {"id": "u2", "siteId": "s2", "updated": "2023-09-14T10:00:00.000Z"},
                                    {"id": "u3", "siteId": "s1", "updated": "2023-09-12T10:00:00.000Z"}])
    after = datetime(2023, 9, 13, tzinfo=UTC)
    assert [u["id"] for u in client.list_units(site_id="s1", updated_after=after)] == ["u1"]
    assert client.ignored_filters == {("units", "siteId"), ("units", "updatedAfter")}


def test_list_users_with_no_ids_asks_nothing(client, api):
    route = api.get("/users").respond(json=[{"id": "u1"}])
    assert client.list_users(ids=[]) == []
    assert route.call_count == 0


def test_list_unit_rentals_sends_filters(client, api):
    route = api.get("/unit-rentals").respond(json=[])
    client.list_unit_rentals(site_id="s1", state=("reserved", "occupied"),
                             updated_after=datetime(2023, 9, 13, 10, 0, 1, 5000, tzinfo=UTC), owner_id="o1")
    params = route.calls.last.request.url.params
    assert params["siteId"] == "s1"
    assert params["state"] == "reserved,occupied"
    assert params["updatedAfter"] == "2023-09-13T10:00:01.005Z"
    assert params["ownerId"] == "o1"


def test_list_unit_rentals_omits_filters_not_given(client, api):
    route = api.get("/unit-rentals").respond(json=[])
    client.list_unit_rentals()
    assert set(route.calls.last.request.url.params) == {"include", "limit", "offset"}


def test_list_answer_that_is_not_a_list_is_an_error(client, api):
    api.get("/sites").respond(json={"items": []})
    with pytest.raises(StoreganiseError) as err:
        client.list_sites()
    assert err.value.reason == "storeganise_bad_response"


@pytest.mark.parametrize(("method", "path"), [
    ("get_site", "/sites/x1"), ("get_unit", "/units/x1"), ("get_user", "/users/x1"),
])
def test_single_reads_include_custom_fields(client, api, method, path):
    route = api.get(path).respond(json={"id": "x1", "customFields": {}})
    assert getattr(client, method)("x1") == {"id": "x1", "customFields": {}}
    assert route.calls.last.request.url.params["include"] == "customFields"


def test_get_unit_rental_embeds_unit_and_owner_by_default(client, api):
    route = api.get("/unit-rentals/r1").respond(json={"id": "r1", "unit": {}, "owner": {}})
    assert client.get_unit_rental("r1")["id"] == "r1"
    assert route.calls.last.request.url.params["include"] == "unit,owner,customFields"


def test_get_unit_rental_include_is_configurable(client, api):
    route = api.get("/unit-rentals/r1").respond(json={"id": "r1"})
    client.get_unit_rental("r1", include=("customFields",))
    assert route.calls.last.request.url.params["include"] == "customFields"


def test_get_job(client, api):
    api.get("/jobs/j1").respond(json={"id": "j1", "type": "unit_moveIn", "state": "completed"})
    assert client.get_job("j1")["type"] == "unit_moveIn"


def test_ids_cannot_escape_their_path_segment(client, api):
    route = api.get(url__regex=r".*/users/.*").respond(json={"id": "x"})
    client.get_user("../sites")
    assert route.calls.last.request.url.raw_path.startswith(b"/api/v1/admin/users/..%2Fsites")


# --- writes ----------------------------------------------------------------------------------------------------

def test_update_unit_rental_custom_fields_puts_only_the_given_keys(client, api):
    route = api.put("/unit-rentals/r1").respond(json={"id": "r1"})
    client.update_unit_rental_custom_fields("r1", {"pti_synced": "2023-09-13T10:00:00.000Z"})
    assert json.loads(route.calls.last.request.content) == {"customFields": {"pti_synced": "2023-09-13T10:00:00.000Z"}}


def test_update_user_custom_fields(client, api):
    route = api.put("/users/u1").respond(json={"id": "u1"})
    client.update_user_custom_fields("u1", {"pti_user_id": "17", "pti_access_code": "483920"})
    assert json.loads(route.calls.last.request.content) == {
        "customFields": {"pti_user_id": "17", "pti_access_code": "483920"}}


def test_create_task_posts_a_task_job(client, api):
    route = api.post("/jobs").respond(json={"id": "j9", "type": "task"})
    assert client.create_task("unit", "u1", "PTI rejected the unit name", "Rename it")["id"] == "j9"
    assert json.loads(route.calls.last.request.content) == {
        "type": "task", "ownerId": None,
        "data": {"targetType": "unit", "targetId": "u1", "title": "PTI rejected the unit name", "desc": "Rename it"},
    }


def test_create_task_refuses_unknown_target_type(client):
    with pytest.raises(ValueError, match="target_type"):
        client.create_task("rental", "r1", "t", "d")  # not a target Storeganise knows


# --- retries ---------------------------------------------------------------------------------------------------

def test_5xx_is_retried_with_growing_backoff(client, api, sleeps):
    route = api.get("/sites/s1").mock(side_effect=[
        httpx.Response(503), httpx.Response(500), httpx.Response(200, json={"id": "s1"}),
    ])
    assert client.get_site("s1") == {"id": "s1"}
    assert route.call_count == 3
    # jitter fixed at 0.5: half the ceiling plus a quarter of it
    assert sleeps == [0.375, 0.75]


def test_backoff_is_capped(sleeps, api):
    api.get("/sites/s1").respond(503)
    with StoreganiseClient(API, api_key=KEY, sleep=sleeps.append, jitter=lambda: 1.0, max_attempts=10) as c:
        with pytest.raises(StoreganiseError):
            c.get_site("s1")
    assert len(sleeps) == 9
    assert max(sleeps) == 8.0


def test_429_honours_retry_after_seconds(client, api, sleeps):
    api.get("/sites/s1").mock(side_effect=[
        httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200, json={"id": "s1"}),
    ])
    client.get_site("s1")
    assert sleeps == [7.0]


def test_429_honours_retry_after_http_date(client, api, sleeps):
    later = datetime.now(UTC).timestamp() + 30
    header = httpx.Headers({"Retry-After": datetime.fromtimestamp(later, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")})
    api.get("/sites/s1").mock(side_effect=[
        httpx.Response(429, headers=header), httpx.Response(200, json={"id": "s1"}),
    ])
    client.get_site("s1")
    assert 25 <= sleeps[0] <= 31


def test_retry_after_too_long_is_handed_back_to_the_caller(client, api, sleeps):
    api.get("/sites/s1").respond(429, headers={"Retry-After": "3600"})
    with pytest.raises(StoreganiseError) as err:
        client.get_site("s1")
    assert err.value.retryable and err.value.retry_after == 3600
    assert err.value.reason == "storeganise_unreachable"
    assert sleeps == []


def test_timeouts_and_connection_errors_are_retried(client, api, sleeps):
    route = api.get("/sites/s1").mock(side_effect=[
        httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), httpx.Response(200, json={"id": "s1"}),
    ])
    assert client.get_site("s1") == {"id": "s1"}
    assert route.call_count == 3


def test_exhausted_retries_say_storeganise_is_unreachable(client, api, sleeps):
    route = api.get("/sites/s1").respond(502)
    with pytest.raises(StoreganiseError) as err:
        client.get_site("s1")
    assert route.call_count == 4
    assert len(sleeps) == 3
    assert err.value.reason == "storeganise_unreachable"
    assert err.value.retryable
    assert err.value.status == 502
    assert "GET sites/s1" in str(err.value) and "4 attempt" in str(err.value)


def test_exhausted_timeouts_say_storeganise_timed_out(client, api):
    api.get("/sites/s1").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(StoreganiseError, match="timed out") as err:
        client.get_site("s1")
    assert err.value.reason == "storeganise_unreachable"


def test_put_is_retried_because_it_is_idempotent(client, api):
    route = api.put("/unit-rentals/r1").mock(side_effect=[httpx.ReadTimeout("slow"), httpx.Response(200, json={})])
    client.update_unit_rental_custom_fields("r1", {"pti_overlocked": True})
    assert route.call_count == 2


def test_a_put_that_a_newer_write_made_obsolete_is_given_up_before_its_retry(client, api):
    """After a failed try and its back-off the caller is asked whether the PUT is still wanted (a newer write of the
    record may have landed meanwhile): not asked before the first try; answered no, nothing more is sent."""
    route = api.put("/unit-rentals/r1").mock(side_effect=[httpx.Response(503), httpx.Response(200, json={})])
    asked: list[int] = []

    def still_wanted() -> bool:
        asked.append(route.call_count)
        return False

    assert client.update_unit_rental_custom_fields("r1", {"pti_overlocked": True}, still_wanted=still_wanted) is None
    assert route.call_count == 1 and asked == [1]


def test_create_task_is_not_retried_after_a_read_timeout(client, api):
    route = api.post("/jobs").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(StoreganiseError) as err:
        client.create_task("user", "u1", "t", "d")
    assert route.call_count == 1
    assert err.value.retryable


def test_create_task_is_retried_when_the_request_never_left(client, api):
    route = api.post("/jobs").mock(side_effect=[httpx.ConnectError("refused"), httpx.Response(429),
                                                httpx.Response(200, json={"id": "j1"})])
    assert client.create_task("user", "u1", "t", "d") == {"id": "j1"}
    assert route.call_count == 3


# --- permanent errors ------------------------------------------------------------------------------------------

def test_4xx_is_permanent_and_names_status_and_endpoint(client, api, sleeps):
    route = api.put("/unit-rentals/r1").respond(400, json={"message": "customFields.pti_synced must be a date"})
    with pytest.raises(StoreganiseError) as err:
        client.update_unit_rental_custom_fields("r1", {"pti_synced": "soon"})
    assert route.call_count == 1 and sleeps == []
    assert not err.value.retryable
    assert err.value.reason == "storeganise_rejected"
    assert err.value.status == 400
    assert "PUT unit-rentals/r1" in str(err.value) and "HTTP 400" in str(err.value)
    assert "must be a date" in str(err.value)


def test_404_is_not_found(client, api):
    api.get("/unit-rentals/r404").respond(404, json={"error": "Not found"})
    with pytest.raises(StoreganiseError) as err:
        client.get_unit_rental("r404")
    assert err.value.reason == "storeganise_not_found"
    assert err.value.status == 404


def test_401_is_an_auth_failure_that_does_not_echo_the_key(client, api):
    api.get("/sites").respond(401, json={"message": "Invalid API key"})
    with pytest.raises(StoreganiseError) as err:
        client.list_sites()
    assert err.value.reason == "storeganise_auth_failed"
    assert KEY not in str(err.value) and KEY not in repr(err.value)


def test_key_never_appears_in_logs_or_errors(client, api, caplog):
    caplog.set_level("DEBUG")
    api.get("/sites/s1").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(StoreganiseError) as err:
        client.get_site("s1")
    assert KEY not in caplog.text
    assert KEY not in str(err.value) and KEY not in repr(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_non_json_success_body_is_a_bad_response(client, api):
    api.get("/sites/s1").respond(200, text="<html>maintenance</html>")
    with pytest.raises(StoreganiseError) as err:
        client.get_site("s1")
    assert err.value.reason == "storeganise_bad_response"

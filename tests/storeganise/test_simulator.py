"""The Storeganise simulator: its Admin API through our client, every control endpoint, and signed webhooks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import httpx
import pytest
from flask import Flask, request

from dashboard.storeganise import StoreganiseClient, StoreganiseError, compact_json, parse_event, verify
from sim.demo_data import DEMO_ADDON_ID, build_demo_business
from sim.server import free_port, serve_in_thread
from sim.storeganise import create_app

SECRET = "demo-webhook-secret"
KEY = "demo-api-key"
DEMO = build_demo_business("http://127.0.0.1:5001")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


class Receiver:
    """A stand-in for the product's webhook endpoint: verifies every delivery with our own verify()."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.fail_next = 0
        self.delay_s = 0.0
        self.app = Flask("receiver")
        self.app.add_url_rule("/hook", "hook", self._hook, methods=["POST"])

    def _hook(self):
        raw = request.get_data()
        time.sleep(self.delay_s)
        self.received.append({"raw": raw, "verified": verify(SECRET, raw, request.headers.get("sg-signature")),
                              "event": parse_event(raw)})
        if self.fail_next:
            self.fail_next -= 1
            return "boom", 500
        return "", 200

    def types(self) -> list[str]:
        return [r["event"].type for r in self.received]


# Servers live for the whole module (stopping one takes half a second); each test starts from a fresh state.
@pytest.fixture(scope="module")
def receiver_server():
    rec = Receiver()
    server = serve_in_thread(rec.app)
    rec.url = server.url + "/hook"
    yield rec
    server.stop()


@pytest.fixture(scope="module")
def sim_server(receiver_server):
    app = create_app(webhook_url=receiver_server.url)
    server = serve_in_thread(app)
    app.url = server.url
    yield app
    app.extensions["storeganise_sim"].close()
    server.stop()


@pytest.fixture
def receiver(receiver_server, sim_server):
    receiver_server.fail_next, receiver_server.delay_s = 0, 0.0
    sim = sim_server.extensions["storeganise_sim"]
    sim.configure(webhook_url=receiver_server.url, deliver=True, webhook_secret=SECRET,
                  faults={"error_rate": 0, "error_status": 503, "latency_ms": 0})
    assert sim.wait_for_webhooks(10), "a previous test left webhooks undelivered"
    sim.reset()
    receiver_server.received.clear()
    return receiver_server


@pytest.fixture
def sim_app(sim_server, receiver):
    return sim_server


@pytest.fixture
def sim(sim_app):
    return sim_app.extensions["storeganise_sim"]


@pytest.fixture
def control(sim_app):
    with httpx.Client(base_url=sim_app.url + "/_sim") as http:
        yield http


@pytest.fixture
def client(sim_app):
    with StoreganiseClient(sim_app.url + "/api/v1/admin", api_key=KEY, sleep=lambda s: None) as c:
        yield c


def state(control) -> dict:
    return control.get("/state").json()


def available_unit(control, site_id: str | None = None) -> dict:
    return next(u for u in state(control)["units"]
                if u["state"] == "available" and u["customFields"].get("pti_id")
                and (site_id is None or u["siteId"] == site_id))


def move_in(control, email="zoe.muller@example.com", unit=None) -> dict:
    unit = unit or available_unit(control)
    answer = control.post("/move-in", json={"unitId": unit["id"], "email": email, "firstName": "Zoë",
                                            "lastName": "Müller"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def webhooks(sim) -> list[dict]:
    assert sim.wait_for_webhooks(5)
    return sim.snapshot()["webhooks"]


# --- Admin API through the client ------------------------------------------------------------------------------

def test_client_reads_the_whole_demo_business(client):
    assert len(client.list_sites()) == len(DEMO.sites)
    assert len(client.list_units()) == len(DEMO.units)
    assert len(client.list_users()) == len(DEMO.users)
    assert len(client.list_unit_rentals()) == len(DEMO.unit_rentals)


def test_lists_carry_custom_fields(client):
    site = client.list_sites()[0]
    assert site["customFields"]["pti_site_code"] == DEMO.sites[0]["customFields"]["pti_site_code"]


def test_custom_fields_are_left_out_unless_included(sim_app):
    unit_id = DEMO.units[0]["id"]
    plain = httpx.get(f"{sim_app.url}/api/v1/admin/units/{unit_id}", headers={"Authorization": f"ApiKey {KEY}"})
    assert "customFields" not in plain.json()


def test_limit_and_offset_page_the_records(sim_app):
    page = httpx.get(f"{sim_app.url}/api/v1/admin/units", params={"limit": 2, "offset": 3},
                     headers={"Authorization": f"ApiKey {KEY}"}).json()
    assert [u["id"] for u in page] == [u["id"] for u in DEMO.units[3:5]]


def test_units_filter_by_site(client):
    site_id = DEMO.sites[1]["id"]
    units = client.list_units(site_id=site_id)
    assert units and {u["siteId"] for u in units} == {site_id}
    assert len(units) == sum(1 for u in DEMO.units if u["siteId"] == site_id)


def test_unit_rentals_filter_by_site_state_and_owner(client, control):
    site_id = DEMO.sites[0]["id"]
    rental = next(r for r in DEMO.unit_rentals if r["siteId"] == site_id)
    client_rentals = client.list_unit_rentals(site_id=site_id, state="occupied")
    assert {r["siteId"] for r in client_rentals} == {site_id}
    control.post("/move-out", json={"unitRentalId": rental["id"]})
    assert rental["id"] not in {r["id"] for r in client.list_unit_rentals(site_id=site_id, state="occupied")}
    assert rental["id"] in {r["id"] for r in client.list_unit_rentals(state="ended")}
    owned = client.list_unit_rentals(owner_id=rental["ownerId"])
    assert rental["id"] in {r["id"] for r in owned} and {r["ownerId"] for r in owned} == {rental["ownerId"]}


def test_updated_after_returns_only_rentals_changed_since(client, control):
    cutoff = datetime.now(UTC)
    rental = DEMO.unit_rentals[5]
    control.post("/overdue", json={"unitRentalId": rental["id"], "overdue": not rental["overdue"]})
    assert [r["id"] for r in client.list_unit_rentals(updated_after=cutoff)] == [rental["id"]]


def test_users_can_be_found_by_search_and_ids(client):
    user = DEMO.users[3]
    assert [u["id"] for u in client.list_users(search=user["email"].upper())] == [user["id"]]
    assert [u["id"] for u in client.list_users(ids=[user["id"], DEMO.users[4]["id"]])] == [
        user["id"], DEMO.users[4]["id"]]


def test_single_reads(client):
    assert client.get_site(DEMO.sites[0]["id"])["title"] == DEMO.sites[0]["title"]
    assert client.get_unit(DEMO.units[0]["id"])["name"] == DEMO.units[0]["name"]
    assert client.get_user(DEMO.users[0]["id"])["email"] == DEMO.users[0]["email"]


def test_a_rental_embeds_its_unit_and_owner(client):
    rental = DEMO.unit_rentals[0]
    got = client.get_unit_rental(rental["id"])
    assert got["unit"]["id"] == rental["unitId"] and "customFields" in got["unit"]
    assert got["owner"]["id"] == rental["ownerId"]
    assert got["customFields"] == rental["customFields"]


def test_get_job_reads_the_move_in_job(client, control):
    done = move_in(control)
    job = client.get_job(done["jobId"])
    assert (job["type"], job["state"]) == ("unit_moveIn", "completed")
    assert job["data"]["unitRentalId"] == done["unitRentalId"]


def test_unknown_record_is_not_found(client):
    with pytest.raises(StoreganiseError) as err:
        client.get_unit_rental("000000000000000000000000")
    assert err.value.reason == "storeganise_not_found"


def test_wrong_api_key_is_refused(sim_app):
    with StoreganiseClient(sim_app.url + "/api/v1/admin", api_key="wrong") as bad:
        with pytest.raises(StoreganiseError) as err:
            bad.list_sites()
    assert err.value.reason == "storeganise_auth_failed"
    assert httpx.get(sim_app.url + "/api/v1/admin/sites").status_code == 401


def test_addon_authorization_is_accepted(sim_app):
    with StoreganiseClient(sim_app.url + "/api/v1/admin", addon_id="pti-sync", addon_key=KEY) as addon:
        assert len(addon.list_sites()) == len(DEMO.sites)


# --- writes and their echo -------------------------------------------------------------------------------------

def test_custom_field_write_changes_only_the_keys_sent_and_is_recorded(client, sim):
    rental = DEMO.unit_rentals[0]
    answer = client.update_unit_rental_custom_fields(rental["id"], {"pti_synced": "2023-09-13T10:00:00.000Z"})
    assert answer["customFields"] == {"pti_synced": "2023-09-13T10:00:00.000Z",
                                      "pti_overlocked": rental["customFields"]["pti_overlocked"]}
    write = sim.snapshot()["writes"][-1]
    assert (write["entity"], write["id"], write["fields"]) == (
        "unitRental", rental["id"], {"pti_synced": "2023-09-13T10:00:00.000Z"})
    assert write["time"].endswith("Z")


def test_our_rental_write_comes_back_as_unit_rental_updated(client, sim, receiver):
    rental = DEMO.unit_rentals[0]
    client.update_unit_rental_custom_fields(rental["id"], {"pti_synced": "2023-09-13T10:00:00.000Z"})
    [hook] = webhooks(sim)
    assert hook["type"] == "unitRental.updated"
    assert hook["data"] == {"unitRentalId": rental["id"], "changedKeys": ["customFields.pti_synced"]}
    assert receiver.received[-1]["verified"]


def test_our_user_write_comes_back_as_user_updated(client, sim):
    user = DEMO.users[0]
    client.update_user_custom_fields(user["id"], {"pti_user_id": "17", "pti_access_code": "483920"})
    [hook] = webhooks(sim)
    assert hook["type"] == "user.updated"
    assert hook["data"] == {"userId": user["id"],
                            "changedKeys": ["customFields.pti_user_id", "customFields.pti_access_code"]}


def test_a_write_that_changes_nothing_sends_no_webhook(client, sim):
    rental = DEMO.unit_rentals[0]
    client.update_unit_rental_custom_fields(rental["id"], {"pti_overlocked": rental["customFields"]["pti_overlocked"]})
    assert webhooks(sim) == []
    assert len(sim.snapshot()["writes"]) == 1


def test_a_write_of_anything_but_custom_fields_is_rejected(sim_app):
    answer = httpx.put(f"{sim_app.url}/api/v1/admin/users/{DEMO.users[0]['id']}",
                       json={"email": "x@example.com"}, headers={"Authorization": f"ApiKey {KEY}"})
    assert answer.status_code == 400
    assert "customFields" in answer.json()["error"]


def test_create_task_is_recorded(client, sim):
    job = client.create_task("unit", DEMO.units[0]["id"], "PTI rejected the unit name", "Rename it in PTI.")
    [task] = sim.snapshot()["tasks"]
    assert task["id"] == job["id"]
    assert task["data"] == {"targetType": "unit", "targetId": DEMO.units[0]["id"],
                            "title": "PTI rejected the unit name", "desc": "Rename it in PTI."}


# --- control endpoints -----------------------------------------------------------------------------------------

def test_move_in_creates_customer_rental_job_and_webhook(control, sim, receiver):
    unit = available_unit(control)
    done = move_in(control, unit=unit)
    now = state(control)
    user = next(u for u in now["users"] if u["id"] == done["userId"])
    rental = next(r for r in now["unitRentals"] if r["id"] == done["unitRentalId"])
    assert (user["email"], user["firstName"], user["lastName"]) == ("zoe.muller@example.com", "Zoë", "Müller")
    assert (rental["unitId"], rental["ownerId"], rental["state"]) == (unit["id"], user["id"], "occupied")
    assert next(u for u in now["units"] if u["id"] == unit["id"])["state"] == "occupied"
    [hook] = webhooks(sim)
    assert hook["type"] == "job.unit_moveIn.completed"
    assert hook["data"] == {"jobId": done["jobId"], "unitRentalId": done["unitRentalId"], "userId": done["userId"]}
    assert receiver.types() == ["job.unit_moveIn.completed"]


def test_move_in_of_a_known_email_reuses_the_customer(control):
    first = move_in(control, email="same@example.com")
    second = move_in(control, email="SAME@example.com")
    assert first["userId"] == second["userId"]
    assert first["unitRentalId"] != second["unitRentalId"]


@pytest.mark.parametrize(("body", "message"), [
    ({"email": "a@example.com", "firstName": "A", "lastName": "B"}, "unitId is required"),
    ({"unitId": "nope", "email": "a@example.com", "firstName": "A", "lastName": "B"}, "No unit"),
    ({"unitId": DEMO.unit_rentals[0]["unitId"], "email": "a@example.com", "firstName": "A", "lastName": "B"},
     "not available"),
    ({"unitId": "x", "email": "not-an-email"}, "e-mail"),
])
def test_move_in_refuses_bad_input(control, body, message):
    answer = control.post("/move-in", json=body)
    assert answer.status_code == 400
    assert message in answer.json()["error"]


def test_move_in_of_a_new_customer_needs_a_name(control):
    answer = control.post("/move-in", json={"unitId": available_unit(control)["id"], "email": "new@example.com"})
    assert answer.status_code == 400 and "firstName" in answer.json()["error"]


def test_control_calls_need_a_json_object(control):
    answer = control.post("/move-out", content=b"nonsense", headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and "JSON object" in answer.json()["error"]


def test_move_out_ends_the_rental_and_frees_the_unit(control, sim):
    rental = DEMO.unit_rentals[1]
    done = control.post("/move-out", json={"unitRentalId": rental["id"]}).json()
    assert (done["unitRentalId"], done["userId"]) == (rental["id"], rental["ownerId"])
    now = state(control)
    assert next(r for r in now["unitRentals"] if r["id"] == rental["id"])["state"] == "ended"
    assert next(u for u in now["units"] if u["id"] == rental["unitId"])["state"] == "available"
    assert next(j for j in now["jobs"] if j["id"] == done["jobId"])["type"] == "unit_moveOut"
    [hook] = webhooks(sim)
    assert hook["type"] == "job.unit_moveOut.completed"
    assert hook["data"] == {"jobId": done["jobId"], "unitRentalId": rental["id"], "userId": rental["ownerId"]}


def test_moving_out_twice_is_refused(control):
    rental = DEMO.unit_rentals[1]
    control.post("/move-out", json={"unitRentalId": rental["id"]})
    answer = control.post("/move-out", json={"unitRentalId": rental["id"]})
    assert answer.status_code == 400 and "ended" in answer.json()["error"]


def test_transfer_moves_the_customer_to_another_unit(control, sim):
    rental = DEMO.unit_rentals[2]
    target = available_unit(control, rental["siteId"])
    done = control.post("/transfer", json={"unitRentalId": rental["id"], "newUnitId": target["id"]}).json()
    now = state(control)
    old = next(r for r in now["unitRentals"] if r["id"] == rental["id"])
    new = next(r for r in now["unitRentals"] if r["id"] == done["newRentalId"])
    assert old["state"] == "ended" and new["state"] == "occupied"
    assert (new["ownerId"], new["unitId"]) == (rental["ownerId"], target["id"])
    units = {u["id"]: u["state"] for u in now["units"]}
    assert (units[rental["unitId"]], units[target["id"]]) == ("available", "occupied")
    assert done["oldRentalId"] == rental["id"] and done["unitRentalId"] == done["newRentalId"]
    [hook] = webhooks(sim)
    assert hook["type"] == "job.unit_transfer.completed"
    assert hook["data"] == {"jobId": done["jobId"], "oldRentalId": rental["id"], "newRentalId": done["newRentalId"]}


def test_transfer_to_another_site_or_an_occupied_unit_is_refused(control):
    rental = DEMO.unit_rentals[2]
    other_site = available_unit(control, next(s["id"] for s in DEMO.sites if s["id"] != rental["siteId"]))
    answer = control.post("/transfer", json={"unitRentalId": rental["id"], "newUnitId": other_site["id"]})
    assert answer.status_code == 400 and "same site" in answer.json()["error"]
    answer = control.post("/transfer", json={"unitRentalId": rental["id"], "newUnitId": rental["unitId"]})
    assert answer.status_code == 400 and "not available" in answer.json()["error"]


def test_overdue_flags_the_rental_and_its_owner(control, sim):
    rental = next(r for r in DEMO.unit_rentals if not r["overdue"]
                  and sum(1 for o in DEMO.unit_rentals if o["ownerId"] == r["ownerId"]) == 1)
    done = control.post("/overdue", json={"unitRentalId": rental["id"], "overdue": True}).json()
    assert done == {"userId": rental["ownerId"], "unitRentalId": rental["id"], "overdue": True}
    now = state(control)
    assert next(r for r in now["unitRentals"] if r["id"] == rental["id"])["overdue"] is True
    since = next(u for u in now["users"] if u["id"] == rental["ownerId"])["overdue"]
    assert TIMESTAMP.fullmatch(since)  # a user's overdue is since when, a rental's a flag
    control.post("/overdue", json={"unitRentalId": rental["id"], "overdue": False})
    assert next(u for u in state(control)["users"] if u["id"] == rental["ownerId"])["overdue"] is None
    assert [(h["type"], h["data"]) for h in webhooks(sim)] == [
        ("unitRental.markOverdue", {"unitRentalId": rental["id"]}),
        ("unitRental.unmarkOverdue", {"unitRentalId": rental["id"]}),
    ]


@pytest.mark.parametrize("call", ["overdue", "move-out", "move-in"])
def test_with_send_false_the_caller_gets_the_webhook_to_deliver_itself(control, sim, receiver, call):
    rental = DEMO.unit_rentals[3]
    body = {"overdue": {"unitRentalId": rental["id"], "overdue": not rental["overdue"]},
            "move-out": {"unitRentalId": rental["id"]},
            "move-in": {"unitId": available_unit(control)["id"], "email": "caller@example.com", "firstName": "C",
                        "lastName": "Aller"}}[call]
    answer = control.post(f"/{call}", json={**body, "send": False})
    assert answer.status_code == 200, answer.text
    event = answer.json()["webhook"]
    assert event["type"] in ("unitRental.markOverdue", "unitRental.unmarkOverdue", "job.unit_moveOut.completed",
                             "job.unit_moveIn.completed")
    assert event["data"]["unitRentalId"] == answer.json()["unitRentalId"]
    assert parse_event(compact_json(event)).id == event["id"]
    [hook] = webhooks(sim)  # recorded as Storeganise's, never sent by the simulator
    assert (hook["id"], hook["status"]) == (event["id"], "caller")
    assert receiver.received == []
    refused = control.post(f"/{call}", json={**body, "send": "no"})
    assert refused.status_code == 400 and "send must be true or false" in refused.json()["error"]


def test_overdue_needs_a_boolean(control):
    answer = control.post("/overdue", json={"unitRentalId": DEMO.unit_rentals[0]["id"], "overdue": "yes"})
    assert answer.status_code == 400 and "true or false" in answer.json()["error"]


@pytest.mark.parametrize(("entity", "record", "event"), [
    ("unitRental", DEMO.unit_rentals[0], "unitRental.updated"),
    ("user", DEMO.users[0], "user.updated"),
    ("unit", DEMO.units[0], "unit.updated"),
])
def test_staff_edit_sends_the_matching_updated_webhook(control, sim, entity, record, event):
    done = control.post("/edit", json={"entity": entity, "id": record["id"],
                                       "customFields": {"pti_synced": "2023-08-17T19:03:12.008Z"}}).json()
    assert done == {f"{entity}Id": record["id"], "changedKeys": ["customFields.pti_synced"]}
    [hook] = webhooks(sim)
    assert hook["type"] == event
    assert hook["data"] == {f"{entity}Id": record["id"], "changedKeys": ["customFields.pti_synced"]}


def test_edit_refuses_unknown_entities_and_ids(control):
    assert control.post("/edit", json={"entity": "job", "id": "x", "customFields": {"a": 1}}).status_code == 400
    assert control.post("/edit", json={"entity": "site", "id": "x", "customFields": {"a": 1}}).status_code == 400
    assert control.post("/edit", json={"entity": "unit", "id": DEMO.units[0]["id"], "title": "X"}).status_code == 400
    answer = control.post("/edit", json={"entity": "user", "id": "nope", "customFields": {"a": 1}})
    assert answer.status_code == 400 and "No user" in answer.json()["error"]


def test_staff_edit_a_site_title_and_custom_fields_without_a_webhook(control, sim):
    site = DEMO.sites[0]
    done = control.post("/edit", json={"entity": "site", "id": site["id"], "title": "Northgate North",
                                       "customFields": {"pti_zone": "2"}}).json()
    assert done == {"siteId": site["id"], "changedKeys": ["customFields.pti_zone", "title"]}
    now = next(s for s in state(control)["sites"] if s["id"] == site["id"])
    assert now["title"] == {"en": "Northgate North"} and now["customFields"]["pti_zone"] == "2"
    assert now["updated"] > site["updated"]
    control.post("/edit", json={"entity": "site", "id": site["id"], "title": {"en": "N", "fr": "Nord"}})
    assert webhooks(sim) == []  # Storeganise sends no webhook for sites


@pytest.mark.parametrize("value", ["13/09/2023", "false", "", 0, True, {"a": 1}])
def test_staff_edit_stores_any_value_as_typed(control, sim, value):
    rental = DEMO.unit_rentals[1]
    control.post("/edit", json={"entity": "unitRental", "id": rental["id"], "customFields": {"pti_synced": value}})
    now = next(r for r in state(control)["unitRentals"] if r["id"] == rental["id"])
    assert now["customFields"]["pti_synced"] == value and type(now["customFields"]["pti_synced"]) is type(value)
    assert TIMESTAMP.fullmatch(now["updated"]) and now["updated"] > rental["updated"]


def test_staff_edit_with_null_deletes_the_field(control, sim):
    rental = DEMO.unit_rentals[2]
    done = control.post("/edit", json={"entity": "unitRental", "id": rental["id"],
                                       "customFields": {"pti_overlocked": None}}).json()
    assert done["changedKeys"] == ["customFields.pti_overlocked"]
    assert "pti_overlocked" not in next(r for r in state(control)["unitRentals"]
                                        if r["id"] == rental["id"])["customFields"]
    assert control.post("/edit", json={"entity": "unitRental", "id": rental["id"],
                                       "customFields": {"pti_overlocked": None}}).json()["changedKeys"] == []


def test_a_boolean_and_a_number_are_different_values(control):
    user = next(u for u in DEMO.users if u["customFields"].get("pti_access_level") == 2)
    done = control.post("/edit", json={"entity": "user", "id": user["id"],
                                       "customFields": {"pti_access_level": "2"}}).json()
    assert done["changedKeys"] == ["customFields.pti_access_level"]


def test_records_carry_real_storeganise_shapes(control):
    now = state(control)
    for collection in ("sites", "units", "users", "unitRentals"):
        for record in now[collection]:
            assert TIMESTAMP.fullmatch(record["created"]) and TIMESTAMP.fullmatch(record["updated"]), collection
    assert all(isinstance(s["title"], dict) and s["title"]["en"] for s in now["sites"])
    assert all(u["overdue"] is None or TIMESTAMP.fullmatch(u["overdue"]) for u in now["users"])
    assert any(u["overdue"] for u in now["users"])
    assert all(isinstance(r["overdue"], bool) for r in now["unitRentals"])
    codes = {k for u in now["units"] for k in u["customFields"]}
    assert codes == {"pti_id"}
    assert any(u["customFields"].get("pti_id") == "NONE" for u in now["units"])
    site = now["sites"][0]["customFields"]
    assert isinstance(site["pti_zone"], int) and isinstance(site["pti_access_level"], int)
    assert all(isinstance(r["customFields"]["pti_overlocked"], bool) for r in now["unitRentals"])


def test_the_addon_holds_per_site_pti_settings(client, control):
    addon = client.get_addon(DEMO_ADDON_ID)
    assert addon["id"] == DEMO_ADDON_ID
    assert set(addon["customFields"]) == {s["id"] for s in DEMO.sites}
    settings = addon["customFields"][DEMO.sites[0]["id"]]
    assert settings["pti_site_code"] == DEMO.sites[0]["customFields"]["pti_site_code"]
    with pytest.raises(StoreganiseError) as info:
        client.get_addon("0" * 24)
    assert info.value.reason == "storeganise_not_found"


def test_with_an_addon_id_webhooks_carry_it_and_the_api_url(control, sim, receiver, sim_app):
    try:
        assert control.post("/config", json={"addon_id": "addon-123"}).json()["addon_id"] == "addon-123"
        control.post("/edit", json={"entity": "user", "id": DEMO.users[0]["id"], "customFields": {"x": 1}})
        webhooks(sim)
        event = receiver.received[0]["event"]
        assert (event.addon_id, event.api_url) == ("addon-123", sim_app.url + "/api/v1/admin")
        assert state(control)["addon"]["id"] == "addon-123"
    finally:
        control.post("/config", json={"addon_id": None})


def test_units_and_users_filter_by_updated_after(client, control):
    cutoff = datetime.now(UTC)
    unit, user = DEMO.units[7], DEMO.users[7]
    control.post("/edit", json={"entity": "unit", "id": unit["id"], "customFields": {"pti_id": "Z777"}})
    control.post("/edit", json={"entity": "user", "id": user["id"], "customFields": {"pti_zone": 2}})
    assert [u["id"] for u in client.list_units(updated_after=cutoff)] == [unit["id"]]
    assert [u["id"] for u in client.list_users(updated_after=cutoff)] == [user["id"]]


def test_ignored_filters_return_every_record(sim_app, control):
    try:
        control.post("/config", json={"ignore_filters": ["users.ids"]}).raise_for_status()
        everyone = httpx.get(f"{sim_app.url}/api/v1/admin/users", params={"ids": DEMO.users[0]["id"], "limit": 5},
                             headers={"Authorization": f"ApiKey {KEY}"}).json()
        assert len(everyone) == 5
        assert control.post("/config", json={"ignore_filters": ["users.nope"]}).status_code == 400
    finally:
        control.post("/config", json={"ignore_filters": []})


def test_state_lists_every_collection(control):
    now = state(control)
    assert {"sites", "units", "users", "unitRentals", "webhooks", "writes", "tasks"} <= set(now)
    assert len(now["unitRentals"]) == len(DEMO.unit_rentals)


def test_reset_restores_the_demo_business(control, sim):
    move_in(control)
    assert control.post("/reset").status_code == 200
    now = state(control)
    assert len(now["unitRentals"]) == len(DEMO.unit_rentals)
    assert now["webhooks"] == [] and now["writes"] == [] and now["tasks"] == []


def test_rental_updated_timestamp_moves_on_every_change(control):
    rental = DEMO.unit_rentals[0]
    stamps = []
    for value in (True, False, True):
        control.post("/overdue", json={"unitRentalId": rental["id"], "overdue": value})
        stamps.append(next(r for r in state(control)["unitRentals"] if r["id"] == rental["id"])["updated"])
    assert stamps == sorted(set(stamps))


# --- webhook delivery ------------------------------------------------------------------------------------------

def test_webhooks_are_signed_compact_json_the_receiver_verifies(control, sim, receiver, sim_app):
    control.post("/edit", json={"entity": "user", "id": DEMO.users[0]["id"], "customFields": {"note_für": "ü"}})
    webhooks(sim)
    [got] = receiver.received
    assert got["verified"]
    assert "für".encode() in got["raw"] and b", " not in got["raw"] and b": " not in got["raw"]
    event = got["event"]
    assert event.type == "user.updated" and event.api_url is None and event.addon_id is None
    assert event.created is not None
    assert sim.snapshot()["webhooks"][0]["status"] == "delivered"


def test_webhooks_signed_with_another_secret_fail_verification(control, sim, receiver):
    control.post("/config", json={"webhook_secret": "someone-else"})
    move_in(control)
    webhooks(sim)
    assert [r["verified"] for r in receiver.received] == [False]


def test_control_calls_answer_before_the_webhook_is_delivered(control, sim, receiver):
    receiver.delay_s = 1.0
    started = time.monotonic()
    move_in(control)
    assert time.monotonic() - started < 0.5
    assert webhooks(sim)[0]["status"] == "delivered"


def test_failed_delivery_is_retried(control, sim, receiver):
    receiver.fail_next = 2
    move_in(control)
    [hook] = webhooks(sim)
    assert (hook["status"], hook["attempts"], hook["responseStatus"]) == ("delivered", 3, 200)
    assert len(receiver.received) == 3 and len({r["event"].id for r in receiver.received}) == 1


def test_delivery_gives_up_after_a_few_attempts(control, sim, receiver):
    receiver.fail_next = 99
    move_in(control)
    [hook] = webhooks(sim)
    assert (hook["status"], hook["attempts"], hook["responseStatus"]) == ("failed", 3, 500)


def test_unreachable_receiver_is_recorded_as_failed(control, sim):
    control.post("/config", json={"webhook_url": f"http://127.0.0.1:{free_port()}/hook"})
    move_in(control)
    [hook] = webhooks(sim)
    assert hook["status"] == "failed" and "ConnectError" in hook["error"]


def test_paused_delivery_holds_webhooks_until_resumed_in_order(control, sim, receiver):
    assert control.post("/config", json={"deliver": False}).json()["deliver"] is False
    first, second = move_in(control, "one@example.com"), move_in(control, "two@example.com")
    time.sleep(0.2)
    assert receiver.received == []
    assert [h["status"] for h in sim.snapshot()["webhooks"]] == ["pending", "pending"]
    control.post("/config", json={"deliver": True})
    webhooks(sim)
    assert [r["event"].data["unitRentalId"] for r in receiver.received] == [first["unitRentalId"],
                                                                              second["unitRentalId"]]


def test_webhooks_can_be_pointed_at_a_new_url(control, sim, receiver):
    other = Receiver()
    server = serve_in_thread(other.app)
    try:
        control.post("/config", json={"webhook_url": server.url + "/hook"})
        move_in(control)
        webhooks(sim)
        assert receiver.received == [] and other.types() == ["job.unit_moveIn.completed"]
    finally:
        server.stop()


def test_config_refuses_bad_values(control):
    assert control.post("/config", json={"deliver": "yes"}).status_code == 400
    assert control.post("/config", json={"colour": "red"}).status_code == 400
    assert control.post("/config", json={"faults": {"error_rate": 2}}).status_code == 400


def test_api_faults_make_the_client_give_up_as_unreachable(control, client):
    control.post("/config", json={"faults": {"error_rate": 1, "error_status": 503}})
    with pytest.raises(StoreganiseError) as err:
        client.list_sites()
    assert err.value.reason == "storeganise_unreachable" and err.value.status == 503


# --- running it ------------------------------------------------------------------------------------------------

def test_module_runs_as_a_server_configured_from_the_environment(receiver):
    port = free_port()
    env = {**os.environ, "SG_SIM_PORT": str(port), "SG_WEBHOOK_URL": receiver.url}
    proc = subprocess.Popen([sys.executable, "-m", "sim.storeganise"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                config = httpx.get(f"http://127.0.0.1:{port}/_sim/config").json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the simulator did not start"
                time.sleep(0.1)
        assert config["webhook_url"] == receiver.url and config["deliver"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_many_concurrent_move_ins_keep_state_consistent(control, sim):
    units = [u for u in state(control)["units"] if u["state"] == "available"][:20]
    results: list[int] = []

    def one(unit):
        with httpx.Client(base_url=str(control.base_url)) as http:
            results.append(http.post("/move-in", json={"unitId": unit["id"], "email": f"{unit['id']}@example.com",
                                                       "firstName": "A", "lastName": "B"}).status_code)
    threads = [threading.Thread(target=one, args=(u,)) for u in units] + [
        threading.Thread(target=one, args=(units[0],))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200] * 20 + [400]
    assert len(webhooks(sim)) == 20


def test_a_server_that_keeps_connections_builds_the_simulator_from_the_environment_as_main_does(monkeypatch):
    """gunicorn 'sim.storeganise:from_environment()' (the benchmarks' Storeganise): the settings `main` reads."""
    from sim.storeganise import from_environment

    monkeypatch.setenv("SG_WEBHOOK_URL", "http://product.test/webhooks/storeganise")
    monkeypatch.setenv("PTI_SIM_URL", "http://pti.test")
    monkeypatch.setenv("SG_WEBHOOK_SECRET", "env-secret")
    monkeypatch.setenv("SG_API_KEY", "env-key")
    monkeypatch.setenv("SG_ADDON_ID", "env-addon")
    app = from_environment()
    sim = app.extensions["storeganise_sim"]
    try:
        assert (sim.webhook_url, sim.pti_base_url, sim.webhook_secret, sim.api_key, sim.addon_id) == (
            "http://product.test/webhooks/storeganise", "http://pti.test", "env-secret", "env-key", "env-addon")
        assert app.test_client().get("/api/v1/admin/sites", headers={"Authorization": "ApiKey env-key"}).status_code \
            == 200
    finally:
        sim.close()

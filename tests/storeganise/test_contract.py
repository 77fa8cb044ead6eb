"""The Storeganise client against Storeganise's real shapes: each test runs on respx (serving fixtures/) and on the
live simulator, so the simulator, the fixtures and the client cannot drift apart (see fixtures/README.md)."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta

import pytest

from dashboard.storeganise import StoreganiseError, parse_event
from dashboard.storeganise.client import _parse_instant
from tests.storeganise.fake_storeganise import FIXTURES, fixture

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
RENTAL_STATES = {"submitted", "cancelled", "abandoned", "reserved", "occupied", "ended"}


def stamped(record: dict) -> None:
    assert TIMESTAMP.fullmatch(record["created"]) and TIMESTAMP.fullmatch(record["updated"])


def later_than_all(records: list[dict]) -> str:
    """A moment after every record's `updated` (1 ms later, Storeganise's precision)."""
    newest = max(_parse_instant(r["updated"]) for r in records) + timedelta(milliseconds=1)
    return newest.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture
def client(storeganise):
    with storeganise.client() as c:
        yield c


# --- shapes ----------------------------------------------------------------------------------------------------

def test_a_site_has_a_localised_title_timestamps_and_typed_custom_fields(storeganise, client):
    site = client.get_site(storeganise.ids["site"])
    stamped(site)
    assert isinstance(site["title"], dict) and isinstance(site["title"]["en"], str) and site["title"]["en"]
    fields = site["customFields"]
    assert isinstance(fields["pti_site_code"], str) and isinstance(fields["pti_zone"], int)
    assert isinstance(fields["pti_access_level"], int)


def test_a_unit_carries_the_pti_add_on_unit_code(storeganise, client):
    unit = client.get_unit(storeganise.ids["unit"])
    stamped(unit)
    assert unit["siteId"] == storeganise.ids["site"] and isinstance(unit["name"], str)
    assert isinstance(unit["customFields"]["pti_id"], str) and "pti_unit_name" not in unit["customFields"]


def test_a_users_overdue_is_a_timestamp_or_null(storeganise, client):
    for user_id in storeganise.ids["users"]:
        user = client.get_user(user_id)
        stamped(user)
        assert user["overdue"] is None or TIMESTAMP.fullmatch(user["overdue"])
        assert {"email", "firstName", "lastName", "customFields"} <= set(user)


def test_a_rental_embeds_unit_and_owner_and_its_overdue_is_a_flag(storeganise, client):
    rental = client.get_unit_rental(storeganise.ids["rental"])
    stamped(rental)
    assert isinstance(rental["overdue"], bool) and rental["state"] in RENTAL_STATES
    assert rental["unit"]["id"] == rental["unitId"] and "customFields" in rental["unit"]
    assert rental["owner"]["id"] == rental["ownerId"]
    assert isinstance(rental["customFields"]["pti_overlocked"], bool)


def test_a_move_in_job_names_its_rental(storeganise, client):
    job = client.get_job(storeganise.ids["job"])
    assert (job["type"], job["state"]) == ("unit_moveIn", "completed")
    assert isinstance(job["data"]["unitRentalId"], str)
    stamped(job)


def test_the_addon_settings_hold_a_pti_connection_per_site(storeganise, client):
    addon = client.get_addon(storeganise.ids["addon"])
    assert addon["id"] == storeganise.ids["addon"]
    settings = addon["customFields"][storeganise.ids["site"]]  # our guess at the layout: docs/storeganise.md
    assert {"pti_site_code", "pti_site_key", "pti_username", "pti_password"} <= set(settings)
    with pytest.raises(StoreganiseError) as info:
        client.get_addon("0" * 24)
    assert info.value.reason == "storeganise_not_found"


# --- filters, honoured and ignored -----------------------------------------------------------------------------

def test_units_of_one_site(storeganise, client):
    units = client.list_units(site_id=storeganise.ids["site"])
    assert storeganise.ids["unit"] in {u["id"] for u in units}
    assert {u["siteId"] for u in units} == {storeganise.ids["site"]}


def test_units_and_users_changed_after_a_moment(storeganise, client):
    since = later_than_all(client.list_units() + client.list_users())
    time.sleep(0.002)
    storeganise.edit("unit", storeganise.ids["unit"], {"pti_id": "Z999"})
    storeganise.edit("user", storeganise.ids["users"][1], {"pti_zone": 2})
    assert [u["id"] for u in client.list_units(updated_after=since)] == [storeganise.ids["unit"]]
    assert [u["id"] for u in client.list_users(updated_after=since)] == [storeganise.ids["users"][1]]


def test_users_by_ids_in_the_order_asked_without_those_storeganise_lacks(storeganise, client):
    wanted = list(reversed(storeganise.ids["users"]))
    assert [u["id"] for u in client.list_users(ids=[*wanted, "f" * 24])] == wanted


def test_rentals_of_one_site(storeganise, client):
    rentals = client.list_unit_rentals(site_id=storeganise.ids["site"])
    assert storeganise.ids["rental"] in {r["id"] for r in rentals}
    assert {r["siteId"] for r in rentals} == {storeganise.ids["site"]}


def _lists(storeganise, client, since):
    ids = storeganise.ids
    return {
        "units.siteId": lambda: client.list_units(site_id=ids["site"]),
        "units.updatedAfter": lambda: client.list_units(updated_after=since),
        "users.ids": lambda: client.list_users(ids=ids["users"][1:]),  # the other records are outsiders
        "users.updatedAfter": lambda: client.list_users(updated_after=since),
        "unitRentals.siteId": lambda: client.list_unit_rentals(site_id=ids["site"]),
    }


@pytest.mark.parametrize("ignored", ["units.siteId", "units.updatedAfter", "users.ids", "users.updatedAfter",
                                     "unitRentals.siteId"])
def test_a_filter_storeganise_ignores_gives_the_same_records_and_one_warning(storeganise, ignored, caplog):
    with storeganise.client() as probe:
        since = later_than_all(probe.list_units() + probe.list_users())
    time.sleep(0.002)
    storeganise.edit("unit", storeganise.ids["unit"], {"pti_id": "Z998"})
    storeganise.edit("user", storeganise.ids["users"][0], {"pti_zone": 3})
    with storeganise.client(page_size=1 if ignored == "users.ids" else 100) as client:
        honoured = [r["id"] for r in _lists(storeganise, client, since)[ignored]()]
        assert honoured and not client.ignored_filters
        storeganise.ignore(ignored)
        caplog.set_level("WARNING", logger="dashboard.storeganise.client")
        call = _lists(storeganise, client, since)[ignored]
        assert [r["id"] for r in call()] == honoured
        assert [r["id"] for r in call()] == honoured
    name = ignored.split(".")[1]
    assert caplog.text.count(f"ignored the {name} filter") == 1
    if storeganise.kind == "respx" and ignored == "users.ids":
        assert "GET users/{id}" in storeganise.fake.calls  # the users the listing did not give are read one by one


# --- writes ----------------------------------------------------------------------------------------------------

def test_a_custom_field_write_changes_only_the_keys_sent_and_moves_updated(storeganise, client):
    before = client.get_unit_rental(storeganise.ids["rental"], include=("customFields",))
    time.sleep(0.002)
    client.update_unit_rental_custom_fields(storeganise.ids["rental"], {"pti_synced": "2023-09-13T10:00:00.123Z"})
    after = client.get_unit_rental(storeganise.ids["rental"], include=("customFields",))
    assert after["customFields"] == {**before["customFields"], "pti_synced": "2023-09-13T10:00:00.123Z"}
    assert _parse_instant(after["updated"]) > _parse_instant(before["updated"])


def test_a_task_is_created_from_the_fixture_body(storeganise, client):
    body = fixture("task.json")
    task = client.create_task(body["data"]["targetType"], storeganise.ids["unit"], body["data"]["title"],
                              body["data"]["desc"])
    assert (task["type"], task["data"]["title"]) == ("task", body["data"]["title"])


# --- webhooks: the fixtures parse, and the simulator sends the same shapes -------------------------------------

WEBHOOK_FIXTURES = sorted(p.name for p in FIXTURES.glob("webhook_*.json"))


@pytest.mark.parametrize("name", WEBHOOK_FIXTURES)
def test_each_webhook_fixture_is_a_known_event(name):
    raw = (FIXTURES / name).read_bytes()
    event = parse_event(raw)
    assert event.known and name == f"webhook_{event.type}.json"
    assert event.addon_id and event.api_url and event.created is not None


def test_the_simulator_sends_every_webhook_in_the_fixtures_shape(sg_sim):
    ids, control = sg_sim.ids, sg_sim.control
    rental = ids["rental"]
    control.post("/overdue", json={"unitRentalId": rental, "overdue": True}).raise_for_status()
    control.post("/overdue", json={"unitRentalId": rental, "overdue": False}).raise_for_status()
    sg_sim.edit("unitRental", rental, {"pti_synced": "2023-09-13T10:00:00.123Z"})
    sg_sim.edit("user", ids["users"][0], {"pti_access_level": 2})
    sg_sim.edit("unit", ids["unit"], {"pti_id": "Z997"})
    state = control.get("/state").json()
    free = next(u for u in state["units"] if u["siteId"] == ids["site"] and u["state"] == "available")
    moved = control.post("/transfer", json={"unitRentalId": rental, "newUnitId": free["id"]}).json()
    control.post("/move-out", json={"unitRentalId": moved["newRentalId"]}).raise_for_status()
    sent = {h["type"]: h for h in control.get("/state").json()["webhooks"]}
    for name in WEBHOOK_FIXTURES:
        expected = json.loads((FIXTURES / name).read_text())
        got = sent[expected["type"]]
        assert set(expected) <= set(got), name
        assert set(got["data"]) == set(expected["data"]), name
        assert got["addonId"] == ids["addon"] and got["apiUrl"] == sg_sim.api_url

"""The PTI simulator's own promises: control endpoints, PTI's rules, fault injection and the call log."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from dashboard.pti import PtiPermanentError, PtiRetryableError
from sim.pti import create_app
from sim.server import free_port, serve_in_thread
from tests.pti.conftest import SITES

NG = SITES["NG01"]


def login(sim, site="NG01") -> dict:
    seed = SITES[site]
    body = {"site_key": seed["site_key"], "username": seed["username"], "password": seed["password"]}
    token = sim.control.post("/api/v1/login", json=body, headers={"X-PTI-Site": site}).json()["data"]["token"]
    return {"X-PTI-Site": site, "Authorization": f"Bearer {token}"}


def create(sim, headers, **overrides) -> httpx.Response:
    body = {"first_name": "Ava", "last_name": "Adams", "email": "ava@example.com", "access_code": 482913,
            "access_level": 1, "time_zone": 1, "marker": "cust-1", **overrides}
    return sim.control.post("/api/v1/users", json=body, headers=headers)


# --- control endpoints ---------------------------------------------------------------------------------------


def test_state_starts_with_every_seeded_unit_vacant_and_no_users(sim):
    state = sim.control.get("/_sim/state").json()
    assert set(state["sites"]) == {"NG01", "RS02"}
    assert state["sites"]["NG01"]["users"] == []
    assert state["sites"]["RS02"]["units"] == [
        {"name": "R101", "status": "vacant", "locked": False, "user_id": None},
        {"name": "R102", "status": "vacant", "locked": False, "user_id": None}]
    assert state["calls"]["total"] == 0


def test_state_shows_users_with_their_units_code_and_marker(sim):
    with sim.client() as client:
        user = client.create_user(email="ava@example.com", first_name="Ava", last_name="Adams", access_code=482913,
                                  access_level=2, time_zone=3, marker="cust-1")
        client.rent_unit("A103", user.id)
        client.lock_unit("A103")
    site = sim.state()["NG01"]
    assert {k: site["users"][0][k] for k in ("id", "email", "access_code", "access_level", "time_zone", "units",
                                             "marker")} == {
        "id": user.id, "email": "ava@example.com", "access_code": 482913, "access_level": 2, "time_zone": 3,
        "units": ["A103"], "marker": "cust-1"}
    assert {"name": "A103", "status": "rented", "locked": True, "user_id": user.id} in site["units"]


def test_a_wait_for_a_units_lock_answers_when_the_lock_lands_and_otherwise_at_its_time_out(sim):
    """What event_to_gate waits on instead of polling: the answer comes as the lock lands, not at the time-out."""
    url = "/_sim/units/NG01/A103"
    with ThreadPoolExecutor(max_workers=1) as pool:
        began = time.monotonic()
        waiting = pool.submit(lambda: sim.control.get(url, params={"locked": "true", "wait_s": 5}, timeout=10))
        time.sleep(0.2)
        assert not waiting.done()  # still unlocked: the answer waits
        with sim.client() as client:
            client.lock_unit("A103")
        answer = waiting.result()
    assert answer.json()["locked"] is True and time.monotonic() - began < 2
    began = time.monotonic()
    answer = sim.control.get(url, params={"locked": "false", "wait_s": 0.3})
    assert answer.json()["locked"] is True and 0.25 <= time.monotonic() - began < 2  # not so: the unit as it is
    assert sim.control.get(url, params={"locked": "maybe", "wait_s": 1}).status_code == 400
    assert sim.control.get(url, params={"locked": "true", "wait_s": "soon"}).status_code == 400


def test_call_counts_split_reads_writes_and_logins_by_operation_and_site(sim):
    with sim.client() as ng, sim.client("RS02") as rs:
        ng.list_units()
        ng.lock_unit("A101")
        ng.unlock_unit("A101")
        rs.find_users_by_email("x@example.com")
    calls = sim.control.get("/_sim/state").json()["calls"]
    assert {k: calls[k] for k in ("total", "reads", "writes", "logins")} == {
        "total": 6, "reads": 2, "writes": 2, "logins": 2}
    assert calls["by_operation"] == {"login": 2, "list_units": 1, "lock_unit": 1, "unlock_unit": 1,
                                     "find_users_by_email": 1}
    assert calls["by_site"] == {"NG01": 4, "RS02": 2}


def test_the_call_log_names_the_targets_and_times_of_each_call(sim):
    with sim.client() as client:
        user = client.create_user(email="ava@example.com", first_name="Ava", last_name="Adams", access_code=482913,
                                  access_level=1, time_zone=1, marker="cust-1")
        client.rent_unit("B201", user.id)
        client.lock_unit("B201")
    calls = sim.calls()
    assert [c["operation"] for c in calls] == ["login", "create_user", "rent_unit", "lock_unit"]
    assert [(c["user_id"], c["unit_name"]) for c in calls[1:]] == [(user.id, None), (user.id, "B201"),
                                                                   (user.id, "B201")]
    assert calls[1]["access_code"] == 482913
    assert all(c["start"] <= c["end"] and c["status"] == 200 and c["site"] == "NG01" for c in calls)
    assert calls[0]["access_code"] is None  # a login never records credentials as targets


def test_reset_restores_the_seed_and_clears_faults_and_calls(sim):
    with sim.client() as client:
        user = client.create_user(email="a@example.com", first_name="A", last_name="B", access_code=111222,
                                  access_level=1, time_zone=1, marker="c")
        client.rent_unit("A101", user.id)
    sim.faults(error_rate=1)
    sim.control.post("/_sim/reset").raise_for_status()
    state = sim.control.get("/_sim/state").json()
    assert state["sites"]["NG01"]["users"] == []
    assert all(u["status"] == "vacant" for u in state["sites"]["NG01"]["units"])
    assert state["calls"]["total"] == 0 and sim.calls() == []
    assert sim.control.get("/_sim/faults").json()["default"]["error_rate"] == 0
    with sim.client() as client:
        assert len(client.list_units()) == 5


def test_unknown_fault_keys_are_refused(sim):
    answer = sim.control.post("/_sim/faults", json={"error_rat": 0.5})
    assert answer.status_code == 400 and "error_rat" in answer.json()["error"]


def test_state_lists_each_sites_access_levels_and_time_zones_as_seeded(sim):
    site = sim.control.get("/_sim/state").json()["sites"]["RS02"]
    assert set(site) == {"users", "units", "access_levels", "time_zones"}
    assert (site["access_levels"], site["time_zones"]) == (NG["access_levels"], NG["time_zones"])


def test_the_lists_control_replaces_one_sites_lists_until_a_reset(sim):
    levels = [{"id": 5, "name": "Gate only"}]
    answer = sim.control.post("/_sim/lists", json={"site": "NG01", "access_levels": levels})
    assert answer.json() == {"access_levels": levels, "time_zones": NG["time_zones"]}  # left out: kept
    state = sim.state()
    assert (state["NG01"]["access_levels"], state["RS02"]["access_levels"]) == (levels, NG["access_levels"])
    with sim.client() as client:
        assert [a.id for a in client.list_access_levels()] == [5]
    sim.control.post("/_sim/reset").raise_for_status()
    assert sim.state()["NG01"]["access_levels"] == NG["access_levels"]


@pytest.mark.parametrize("body,status,error", [
    ({"site": "XX99", "time_zones": []}, 404, "no site 'XX99'"),
    ({"access_levels": []}, 404, "no site None"),
    ({"site": "NG01", "time_zones": {"id": 1}}, 400, "time_zones must be a list"),
    ({"site": "NG01", "zones": []}, 400, "unknown keys: ['zones']"),
    ([{"id": 1}], 400, "a JSON object is required"),
])
def test_the_lists_control_refuses_what_it_cannot_apply(sim, body, status, error):
    answer = sim.control.post("/_sim/lists", json=body)
    assert (answer.status_code, answer.json()["error"]) == (status, error)
    assert sim.state()["NG01"]["time_zones"] == NG["time_zones"]


def test_a_user_with_a_level_or_zone_the_site_does_not_list_is_refused_naming_the_known_ids(sim):
    headers = login(sim)
    assert create(sim, headers, access_level=3).json() == {
        "result": -4, "message": "unknown access level 3 (this site has: 1, 2)"}
    assert create(sim, headers, time_zone="24 Hours").json() == {
        "result": -4, "message": "unknown time zone '24 Hours' (this site has: 1, 3)"}
    user = create(sim, headers).json()["data"]
    answer = sim.control.patch(f"/api/v1/users/{user['id']}", json={"time_zone": 2}, headers=headers)
    assert answer.json()["result"] == -4
    assert sim.state()["NG01"]["users"][0]["time_zone"] == 1


def test_a_malformed_list_entry_does_not_break_the_users_checks(sim):
    sim.lists(access_levels=[{"name": "no id"}, "junk", {"id": True, "name": "yes"}, {"id": 2, "name": "ok"}],
              time_zones=[[1]])
    headers = login(sim)
    assert create(sim, headers, access_level=1).json() == {
        "result": -4, "message": "unknown access level 1 (this site has: True, 2)"}
    assert create(sim, headers, access_level=2).json()["message"] == "unknown time zone 1 (this site has: none)"


def test_a_level_dropped_from_the_list_stays_on_the_users_holding_it(sim):
    headers = login(sim)
    user = create(sim, headers, access_level=2).json()["data"]
    sim.lists(access_levels=[{"id": 1, "name": "All Hours Access"}])
    assert sim.state()["NG01"]["users"][0]["access_level"] == 2
    renamed = sim.control.patch(f"/api/v1/users/{user['id']}", json={"first_name": "Eva"}, headers=headers)
    assert renamed.json()["result"] == 0


def test_the_demo_business_uses_only_levels_and_zones_its_pti_sites_list():
    from sim.demo_data import build_demo_business

    biz = build_demo_business("http://pti.invalid")
    for sg_site in biz.sites:
        pti_site = biz.pti_sites[sg_site["customFields"]["pti_site_code"]]
        levels = {a["id"] for a in pti_site["access_levels"]}
        zones = {z["id"] for z in pti_site["time_zones"]}
        customers = {r["ownerId"] for r in biz.unit_rentals if r["siteId"] == sg_site["id"]}
        fields = [sg_site["customFields"]] + [u["customFields"] for u in biz.users if u["id"] in customers]
        assert {f["pti_access_level"] for f in fields if "pti_access_level" in f} <= levels
        assert {f["pti_zone"] for f in fields if "pti_zone" in f} <= zones
        assert sg_site["customFields"]["pti_access_level"] in levels and sg_site["customFields"]["pti_zone"] in zones


# --- PTI's rules -----------------------------------------------------------------------------------------------


def test_calls_without_a_valid_token_answer_401_minus_2(sim):
    answer = sim.control.get("/api/v1/units", headers={"X-PTI-Site": "NG01", "Authorization": "Bearer forged"})
    assert (answer.status_code, answer.json()["result"]) == (401, -2)


def test_tokens_expire_after_their_lifetime():
    seed = {"NG01": NG}
    server = serve_in_thread(create_app(seed, token_ttl_s=0.3))
    try:
        body = {"site_key": NG["site_key"], "username": NG["username"], "password": NG["password"]}
        data = httpx.post(f"{server.url}/api/v1/login", json=body, headers={"X-PTI-Site": "NG01"}).json()["data"]
        headers = {"X-PTI-Site": "NG01", "Authorization": f"Bearer {data['token']}"}
        assert data["expires_in"] == 0.3
        assert httpx.get(f"{server.url}/api/v1/units", headers=headers).json()["result"] == 0
        time.sleep(0.35)
        assert httpx.get(f"{server.url}/api/v1/units", headers=headers).json()["result"] == -2
    finally:
        server.stop()


def test_a_token_of_one_site_does_not_open_another(sim):
    headers = {**login(sim, "NG01"), "X-PTI-Site": "RS02"}
    assert sim.control.get("/api/v1/units", headers=headers).json()["result"] == -2


@pytest.mark.parametrize("body", [{"access_code": True}, {"access_code": "123456"}, {"access_code": 12.5},
                                  {"email": None}, {"access_level": None}])
def test_malformed_user_values_are_minus_4(sim, body):
    assert create(sim, login(sim), **body).json()["result"] == -4


def test_creating_a_user_with_a_missing_field_is_minus_4(sim):
    headers = login(sim)
    body = {"first_name": "Ava", "last_name": "Adams", "email": "a@example.com", "access_code": 5}
    assert sim.control.post("/api/v1/users", json=body, headers=headers).json()["result"] == -4


def test_access_codes_are_unique_per_site_not_across_sites(sim):
    assert create(sim, login(sim, "NG01")).json()["result"] == 0
    assert create(sim, login(sim, "RS02")).json()["result"] == 0
    assert create(sim, login(sim, "NG01"), email="b@example.com").json()["result"] == -5


def test_units_cannot_be_created_or_renamed_through_the_api(sim):
    headers = login(sim)
    assert sim.control.post("/api/v1/units", json={"name": "NEW1"}, headers=headers).status_code == 405
    assert sim.control.get("/api/v1/units/NEW1", headers=headers).json() == {
        "result": -404, "message": "unit not found", "item": "unit"}


def test_a_unit_name_longer_than_10_characters_is_minus_3_even_if_otherwise_fine(sim):
    assert sim.control.get("/api/v1/units/ABCDEFGHIJK", headers=login(sim)).json()["result"] == -3
    assert sim.control.get("/api/v1/units/ABCDEFGHIJ", headers=login(sim)).json()["result"] == -404


def test_paging_limits_are_enforced(sim):
    headers = login(sim)
    assert sim.control.get("/api/v1/users?limit=101", headers=headers).json()["result"] == -4
    assert sim.control.get("/api/v1/users?offset=x", headers=headers).json()["result"] == -4


def test_concurrent_creates_with_one_code_make_exactly_one_user(sim):
    headers = login(sim)
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(lambda i: create(sim, headers, email=f"p{i}@example.com").json()["result"],
                                range(24)))
    assert sorted(results) == [-5] * 23 + [0]
    assert len(sim.state()["NG01"]["users"]) == 1


def test_concurrent_creates_get_distinct_ids(sim):
    headers = login(sim)
    with ThreadPoolExecutor(max_workers=12) as pool:
        ids = list(pool.map(lambda i: create(sim, headers, access_code=600000 + i).json()["data"]["id"], range(24)))
    assert len(set(ids)) == 24


# --- faults ----------------------------------------------------------------------------------------------------


def test_latency_delays_every_call(sim):
    with sim.client(read_timeout=2) as client:
        client.login()
        sim.faults(latency_ms=150)
        started = time.monotonic()
        client.list_units()
        assert time.monotonic() - started >= 0.15


def test_error_rate_fails_about_that_share_of_calls_without_applying_them(sim):
    with sim.client() as client:
        client.login()
        sim.faults(error_rate=0.5, error_status=500, seed=3)
        outcomes = []
        for i in range(60):
            try:
                client.lock_unit("A101")
                outcomes.append("ok")
            except PtiRetryableError as exc:
                assert exc.http_status == 500
                outcomes.append("failed")
    assert 15 <= outcomes.count("failed") <= 45
    calls = [c for c in sim.calls() if c["operation"] == "lock_unit"]
    assert [c["fault"] == "error" for c in calls] == [o == "failed" for o in outcomes]
    assert all(not c["applied"] for c in calls if c["fault"] == "error")


def test_a_simulated_timeout_holds_for_timeout_ms_and_then_answers_504(sim):
    with sim.client(read_timeout=2) as client:
        client.login()
        sim.faults(timeout_rate=1, timeout_ms=300)
        started = time.monotonic()
        with pytest.raises(PtiRetryableError) as info:
            client.get_unit("A101")
        assert time.monotonic() - started >= 0.3
    assert (info.value.reason, info.value.http_status) == ("pti_server_error", 504)


def test_apply_then_timeout_applies_the_write_before_the_client_gives_up(sim):
    with sim.client(read_timeout=0.25) as client:  # gives up before the simulator's 400 ms
        client.login()
        sim.faults(apply_then_timeout_rate=1, timeout_ms=400)
        with pytest.raises(PtiRetryableError) as info:
            client.lock_unit("A101")
    assert info.value.uncertain
    assert {"name": "A101", "status": "vacant", "locked": True, "user_id": None} in sim.state()["NG01"]["units"]
    time.sleep(0.25)  # the simulator finishes holding the answer
    call = [c for c in sim.calls() if c["operation"] == "lock_unit"][0]
    assert (call["fault"], call["applied"], call["end"] - call["start"] >= 0.4) == ("apply_then_timeout", True, True)


def test_faults_scoped_to_one_site_leave_the_others_healthy(sim):
    with sim.client("NG01") as ng, sim.client("RS02") as rs:
        sim.faults(site="NG01", error_rate=1, error_status=503)
        with pytest.raises(PtiRetryableError):
            ng.list_units()
        assert [u.name for u in rs.list_units()] == ["R101", "R102"]
        faults = sim.control.get("/_sim/faults").json()
        assert faults["sites"]["NG01"]["error_rate"] == 1 and faults["default"]["error_rate"] == 0
        sim.faults(error_rate=1)  # every other site now fails too
        with pytest.raises(PtiRetryableError):
            rs.list_time_zones()


def test_faults_limited_to_some_operations_leave_the_others_alone(sim):
    with sim.client("NG01") as ng:
        sim.faults(error_rate=1, operations=["create_user"])
        assert len(ng.list_units()) == 5
        with pytest.raises(PtiRetryableError):
            ng.create_user(email="a@example.com", first_name="A", last_name="B", access_code=583920,
                           access_level=1, time_zone=1, marker="c1")
        assert sim.control.get("/_sim/faults").json()["default"]["operations"] == ["create_user"]


def test_a_site_profile_replaces_the_default_profile_for_that_site(sim):
    with sim.client("NG01") as ng:
        ng.login()
        sim.faults(error_rate=1)
        sim.faults(site="NG01", latency_ms=1)
        assert len(ng.list_units()) == 5


def test_retry_after_answers_429_until_it_expires_and_records_early_calls(sim):
    headers = login(sim)
    sim.faults(retry_after_s=0.6)
    first = sim.control.get("/api/v1/units", headers=headers)
    second = sim.control.get("/api/v1/units", headers=headers)
    assert (first.status_code, first.headers["Retry-After"]) == (429, "1")
    assert second.status_code == 429
    time.sleep(0.65)
    assert sim.control.get("/api/v1/units", headers=headers).json()["result"] == 0
    calls = sim.control.get("/_sim/state").json()["calls"]
    assert (calls["rate_limited"], calls["early"]) == (2, 1)
    assert [c["early"] for c in sim.calls()[1:]] == [False, True, False]


def test_a_client_that_honours_retry_after_makes_no_early_call(sim):
    with sim.client() as client:
        client.login()
        sim.faults(retry_after_s=0.5)
        outcomes = []
        for _ in range(5):
            try:
                client.list_units()
                outcomes.append("ok")
            except PtiRetryableError:
                outcomes.append("wait")
        assert outcomes == ["wait"] * 5
    assert sim.control.get("/_sim/state").json()["calls"]["early"] == 0


def test_the_simulator_runs_from_the_command_line():
    port = free_port()
    env = {**os.environ, "PTI_SIM_PORT": str(port)}
    with subprocess.Popen([sys.executable, "-m", "sim.pti"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as process:
        try:
            assert "PTI simulator on" in process.stdout.readline()
            state = httpx.get(f"http://127.0.0.1:{port}/_sim/state", timeout=5).json()
            assert set(state["sites"]) == {"NG01", "RS02", "HT03"}
            assert len(state["sites"]["NG01"]["units"]) == 105
        finally:
            process.terminate()


def test_the_simulator_serves_many_threads_at_once(sim):
    with sim.client(read_timeout=10.0) as client:  # 8 calls of 200 ms at once: generous on a loaded machine
        client.login()
        sim.faults(latency_ms=200)
        threads = [threading.Thread(target=client.list_units) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        calls = sorted((c for c in sim.calls() if c["operation"] == "list_units"), key=lambda c: c["start"])
        assert len(calls) == 8
        # Served side by side, not one after another: some call starts before the previous one has ended.
        assert any(b["start"] < a["end"] for a, b in zip(calls, calls[1:]))


def test_wrong_site_code_at_login_is_minus_1(sim):
    body = {"site_key": NG["site_key"], "username": NG["username"], "password": NG["password"]}
    answer = sim.control.post("/api/v1/login", json=body, headers={"X-PTI-Site": "XX99"})
    assert (answer.status_code, answer.json()["result"]) == (401, -1)
    with sim.client(password="nope") as client, pytest.raises(PtiPermanentError):
        client.login()

"""The PTI contract (docs/pti-contract.md) as the client sees it: each test runs on respx routes and on the sim."""

from __future__ import annotations

import pytest

from dashboard.pti import PtiPermanentError, PtiRetryableError
from dashboard.sync.model import (
    NEW_USER,
    AccessLevel,
    CreateUser,
    LockUnit,
    PtiUnit,
    PtiUser,
    RemoveUser,
    RentUnit,
    TimeZone,
    UnitStatus,
    UnlockUnit,
    UpdateUser,
    VacateUnit,
)


def new_user(client, code=482913, email="ava.adams@example.com", **overrides) -> PtiUser:
    fields = dict(email=email, first_name="Ava", last_name="Adams", access_code=code, access_level=1, time_zone=1,
                  marker="cust-1")
    return client.create_user(**{**fields, **overrides})


def permanent(call, *args, **kwargs) -> PtiPermanentError:
    with pytest.raises(PtiPermanentError) as info:
        call(*args, **kwargs)
    assert not info.value.retryable
    return info.value


# --- session -------------------------------------------------------------------------------------------------


def test_wrong_password_is_a_permanent_invalid_credentials_error(pti):
    with pti.client(password="not-the-password") as client:
        error = permanent(client.login)
    assert (error.reason, error.result_code, error.operation) == ("invalid_credentials", -1, "login")
    assert error.fix.startswith("Correct the site's PTI")


def test_a_site_code_pti_does_not_know_is_refused_as_invalid_credentials(pti):
    from dashboard.pti import PtiClient

    seed = {"site_key": "k", "username": "u", "password": "p"}
    with PtiClient(pti.base_url, "XX99", **seed, transport=pti.transport, read_timeout=1) as client:
        assert permanent(client.list_units).reason == "invalid_credentials"


def test_the_client_logs_in_once_and_reuses_its_token(pti, client):
    client.list_units()
    client.list_access_levels()
    client.list_time_zones()
    assert pti.count("login") == 1


def test_an_expired_token_is_renewed_by_one_relogin_and_the_call_repeated(pti, client):
    client.list_units()
    pti.expire_tokens()
    assert len(client.list_units()) == 5
    assert pti.count("login") == 2
    assert pti.count("list_units") == 3  # first call, the refused one, the repeat


def test_a_token_past_its_lifetime_is_renewed_before_the_call(pti):
    now = [1000.0]
    with pti.client(clock=lambda: now[0]) as client:
        client.list_units()
        now[0] += 3600  # both backends issue tokens for at most 15 minutes
        client.list_units()
    assert pti.count("login") == 2
    assert pti.count("list_units") == 2  # renewed up front: no call was refused


# --- units ---------------------------------------------------------------------------------------------------


def test_units_are_listed_vacant_and_unlocked_as_seeded(client):
    units = client.list_units()
    assert [u.name for u in units] == ["A101", "A102", "A103", "B201", "B202"]
    assert all(u == PtiUnit(u.name, UnitStatus.VACANT, False, None) for u in units)


def test_get_unit_returns_the_named_unit(client):
    assert client.get_unit("B201") == PtiUnit("B201", UnitStatus.VACANT, False, None)


@pytest.mark.parametrize("name", ["LOCKER 12", "NORTHGATE-XL1"])
def test_a_unit_name_pti_rejects_is_result_minus_3(client, name):
    error = permanent(client.get_unit, name)
    assert (error.reason, error.result_code, error.target) == ("invalid_unit_name", -3, name)


def test_a_unit_pti_does_not_have_is_unit_not_found(client):
    error = permanent(client.get_unit, "Z999")
    assert (error.reason, error.result_code) == ("unit_not_found", -404)


def test_access_levels_and_time_zones_are_listed(client):
    assert client.list_access_levels() == [AccessLevel(1, "All Hours Access"), AccessLevel(2, "Business Hours Access")]
    assert client.list_time_zones() == [TimeZone(1, "24 hours"), TimeZone(3, "Weekdays 7am-7pm")]


def test_the_lists_are_what_pti_has_now_in_pti_order(pti, client):
    pti.lists(access_levels=[{"id": 7, "name": "Office Only"}, {"id": 2, "name": "Business Hours Access"}],
              time_zones=[])
    assert client.list_access_levels() == [AccessLevel(7, "Office Only"), AccessLevel(2, "Business Hours Access")]
    assert client.list_time_zones() == []
    site = pti.state()["NG01"]
    assert (site["access_levels"], site["time_zones"]) == ([{"id": 7, "name": "Office Only"},
                                                            {"id": 2, "name": "Business Hours Access"}], [])


def test_a_user_may_only_get_a_level_and_zone_from_the_site_lists_as_they_are_now(pti, client):
    user = new_user(client)
    pti.lists(access_levels=[{"id": 7, "name": "Office Only"}], time_zones=[{"id": 4, "name": "Nights"}])
    assert permanent(client.update_user, user.id, access_level=1).result_code == -4
    assert permanent(client.update_user, user.id, time_zone=1).result_code == -4
    updated = client.update_user(user.id, access_level=7, time_zone=4)
    assert (updated.access_level, updated.time_zone) == (7, 4)
    assert permanent(new_user, client, code=500600, email="ben@example.com").reason == "pti_rejected"


MALFORMED_ENTRIES = [
    ([{"id": "24 Hours", "name": "24 hours"}], "entry 1 has the id '24 Hours', not a whole number"),
    ([{"id": 1, "name": "ok"}, {"id": "2", "name": "two"}], "entry 2 has the id '2', not a whole number"),
    ([{"id": 1.5, "name": "half"}], "entry 1 has the id 1.5, not a whole number"),
    ([{"id": True, "name": "yes"}], "entry 1 has the id True, not a whole number"),
    ([{"name": "no id"}], "entry 1 has no id"),
    ([{"id": 1}], "{noun} 1 has no name"),
    ([{"id": 1, "name": 24}], "{noun} 1 has the name 24, not text"),
    (["All Hours Access"], "entry 1 is 'All Hours Access', not an object"),
    ([{"id": 1, "name": "a"}, {"id": 1, "name": "b"}], "{noun} 1 is listed twice"),
]


@pytest.mark.parametrize("entries,problem", MALFORMED_ENTRIES)
@pytest.mark.parametrize("key,noun,operation", [("access_levels", "access level", "list_access_levels"),
                                                ("time_zones", "time zone", "list_time_zones")])
def test_a_malformed_list_is_a_permanent_error_saying_what_is_wrong(pti, client, entries, problem, key, noun,
                                                                     operation):
    pti.lists(**{key: entries})
    error = permanent(getattr(client, operation))
    assert (error.reason, error.operation) == ("pti_bad_response", operation)
    assert error.detail == f"PTI's list of {noun}s could not be read: {problem.format(noun=noun)}."
    assert error.detail in str(error)


# --- users ---------------------------------------------------------------------------------------------------


def test_create_user_returns_the_pti_user_with_our_marker(client):
    user = new_user(client)
    assert user.id
    assert (user.email, user.access_code, user.access_level, user.time_zone) == ("ava.adams@example.com", 482913, 1, 1)
    assert (user.first_name, user.last_name, user.marker, user.units) == ("Ava", "Adams", "cust-1", ())
    assert client.get_user(user.id) == user


def test_get_user_of_an_unknown_id_is_none(client):
    assert client.get_user("nobody-42") is None


def test_find_users_by_email_ignores_case_and_answers_an_empty_list_when_absent(client):
    user = new_user(client)
    assert client.find_users_by_email("Ava.Adams@Example.com") == [user]
    assert client.find_users_by_email("someone.else@example.com") == []


def test_find_users_by_email_answers_every_user_with_that_email(client):
    first = new_user(client)
    second = client.create_user(email="AVA.ADAMS@example.com", first_name="Ava", last_name="Twice", access_code=731846,
                                access_level=1, time_zone=1, marker="")
    assert sorted(client.find_users_by_email("ava.adams@example.com"), key=lambda u: u.id) == sorted(
        [first, second], key=lambda u: u.id)


def test_find_user_by_access_code_answers_none_when_no_user_has_it(client):
    user = new_user(client)
    assert client.find_user_by_access_code(482913) == user
    assert client.find_user_by_access_code(482914) is None


def test_a_second_user_with_the_same_code_is_duplicate_access_code(client):
    new_user(client)
    error = permanent(new_user, client, email="someone@example.com")
    assert (error.reason, error.result_code) == ("duplicate_access_code", -5)


@pytest.mark.parametrize("fields", [{"access_code": 0}, {"access_code": 4294967296}, {"access_level": 9},
                                    {"time_zone": 2}, {"access_level": "24 Hours"}, {"access_level": "1"},
                                    {"time_zone": True}, {"time_zone": None}])
def test_values_pti_does_not_accept_are_rejected(client, fields):
    error = permanent(new_user, client, **fields)
    assert (error.reason, error.result_code) == ("pti_rejected", -4)


def test_the_largest_access_code_is_accepted(client):
    assert new_user(client, code=4294967295).access_code == 4294967295


def test_update_user_changes_code_level_zone_and_names(client):
    user = new_user(client)
    updated = client.update_user(user.id, access_code=771204, access_level=2, time_zone=3, first_name="Eva",
                                 last_name="Adams-Reid")
    assert (updated.access_code, updated.access_level, updated.time_zone) == (771204, 2, 3)
    assert (updated.first_name, updated.last_name, updated.marker) == ("Eva", "Adams-Reid", "cust-1")
    assert client.find_user_by_access_code(482913) is None
    assert client.find_user_by_access_code(771204) == updated


def test_update_to_a_code_another_user_holds_is_duplicate_access_code(client):
    new_user(client)
    other = new_user(client, code=100200, email="ben@example.com")
    assert permanent(client.update_user, other.id, access_code=482913).reason == "duplicate_access_code"


def test_update_of_an_unknown_user_is_user_not_found(client):
    error = permanent(client.update_user, "nobody-42", access_level=2)
    assert (error.reason, error.result_code) == ("user_not_found", -404)


def test_update_refuses_fields_pti_users_do_not_have_without_calling_pti(pti, client):
    with pytest.raises(ValueError, match="pin"):
        client.update_user("u1", pin="x")
    assert pti.count() == 0


def test_update_adopts_a_user_by_writing_our_marker(client):
    user = client.create_user(email="walk-in@example.com", first_name="Walk", last_name="In", access_code=583920,
                              access_level=1, time_zone=1, marker="")
    assert user.marker is None
    assert client.update_user(user.id, marker="cust-7").marker == "cust-7"
    assert client.get_user(user.id).marker == "cust-7"


def test_remove_user_deletes_it_and_vacates_its_units(client):
    user = new_user(client)
    client.rent_unit("A101", user.id)
    client.lock_unit("A101")
    client.remove_user(user.id)
    assert client.get_user(user.id) is None
    assert client.get_unit("A101") == PtiUnit("A101", UnitStatus.VACANT, False, None)
    assert permanent(client.remove_user, user.id).reason == "user_not_found"


def test_list_users_reads_every_page(pti):
    with pti.client(page_size=2) as client:
        made = [new_user(client, code=300000 + i, email=f"p{i}@example.com") for i in range(5)]
        assert client.list_users() == made
    assert pti.count("list_users") == 3


def test_list_users_of_an_empty_site_is_one_call(pti, client):
    assert client.list_users() == []
    assert pti.count("list_users") == 1


# --- rent, vacate, lock, unlock ------------------------------------------------------------------------------


def test_rent_gives_the_unit_to_the_user_and_the_user_lists_it(client):
    user = new_user(client)
    client.rent_unit("A101", user.id)
    client.rent_unit("A102", user.id)
    assert client.get_unit("A101") == PtiUnit("A101", UnitStatus.RENTED, False, user.id)
    assert client.get_user(user.id).units == ("A101", "A102")


def test_renting_again_to_the_same_user_is_harmless(client):
    user = new_user(client)
    client.rent_unit("A101", user.id)
    client.rent_unit("A101", user.id)
    assert client.get_unit("A101").user_id == user.id


def test_renting_a_unit_another_user_holds_is_unit_rented_to_other(client):
    first = new_user(client)
    second = new_user(client, code=500600, email="ben@example.com")
    client.rent_unit("A101", first.id)
    error = permanent(client.rent_unit, "A101", second.id)
    assert (error.reason, error.result_code) == ("unit_rented_to_other", -6)
    assert client.get_unit("A101").user_id == first.id


def test_renting_to_an_unknown_user_is_user_not_found(client):
    error = permanent(client.rent_unit, "A101", "nobody-42")
    assert (error.reason, error.result_code) == ("user_not_found", -404)


def test_renting_an_unknown_or_invalid_unit_names_the_unit_problem(client):
    user = new_user(client)
    assert permanent(client.rent_unit, "Z999", user.id).reason == "unit_not_found"
    assert permanent(client.rent_unit, "LOCKER 12", user.id).reason == "invalid_unit_name"


def test_vacate_frees_the_unit_and_clears_its_overlock(client):
    user = new_user(client)
    client.rent_unit("A101", user.id)
    client.lock_unit("A101")
    client.vacate_unit("A101")
    assert client.get_unit("A101") == PtiUnit("A101", UnitStatus.VACANT, False, None)
    assert client.get_user(user.id).units == ()


def test_vacate_and_unlock_of_an_already_vacant_unit_count_as_success(pti, client):
    client.vacate_unit("A102")  # PTI answers -22
    client.unlock_unit("A102")  # -22 again
    assert pti.count("vacate_unit") == 1 and pti.count("unlock_unit") == 1
    assert client.get_unit("A102").status is UnitStatus.VACANT


def test_lock_and_unlock_answer_the_unit_as_pti_holds_it_after_the_call(client):
    user = new_user(client)
    client.rent_unit("A101", user.id)
    assert client.lock_unit("A101") == PtiUnit("A101", UnitStatus.RENTED, True, user.id)
    assert client.apply(UnlockUnit("A101")) == PtiUnit("A101", UnitStatus.RENTED, False, user.id)
    assert client.lock_unit("A102") == PtiUnit("A102", UnitStatus.VACANT, True, None)  # operators lock empty units
    client.unlock_unit("A102")
    assert client.unlock_unit("A102") is None  # -22: vacant, rented to nobody


def test_vacate_of_an_unknown_unit_is_still_an_error(client):
    assert permanent(client.vacate_unit, "Z999").reason == "unit_not_found"
    assert permanent(client.unlock_unit, "LOCKER 12").reason == "invalid_unit_name"


def test_lock_and_unlock_set_the_overlock(client):
    user = new_user(client)
    client.rent_unit("A101", user.id)
    client.lock_unit("A101")
    client.lock_unit("A101")
    assert client.get_unit("A101").locked is True
    client.unlock_unit("A101")
    assert client.get_unit("A101") == PtiUnit("A101", UnitStatus.RENTED, False, user.id)


def test_lock_of_a_unit_pti_does_not_have_is_unit_not_found(client):
    assert permanent(client.lock_unit, "Z999").reason == "unit_not_found"


# --- apply(op) -----------------------------------------------------------------------------------------------


def test_apply_runs_a_whole_plan(pti, client):
    created = client.apply(CreateUser("ava@example.com", "Ava", "Adams", 482913, 1, 1, "cust-1"))
    assert isinstance(created, PtiUser) and created.access_code == 482913
    assert client.apply(RentUnit("A101", NEW_USER), new_user_id=created.id) is None
    assert client.apply(RentUnit("A102", created.id)) is None
    client.apply(LockUnit("A102"))
    updated = client.apply(UpdateUser(created.id, (("access_code", 739105), ("time_zone", 3))))
    assert (updated.access_code, updated.time_zone, updated.units) == (739105, 3, ("A101", "A102"))
    assert client.get_unit("A102").locked is True
    client.apply(UnlockUnit("A102"))
    client.apply(VacateUnit("A101"))
    client.apply(VacateUnit("A101"))
    assert client.get_user(created.id).units == ("A102",)
    client.apply(RemoveUser(created.id))
    site = pti.state()["NG01"]
    assert site["users"] == []
    assert all(u["status"] == "vacant" and not u["locked"] for u in site["units"])


def test_apply_refuses_new_user_without_its_id(pti, client):
    with pytest.raises(ValueError, match="new_user_id"):
        client.apply(RentUnit("A101", NEW_USER))
    assert pti.count() == 0


# --- faults: retryable vs permanent, uncertainty -------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_a_retryable_server_error_certain_on_reads(pti, client, status):
    client.login()
    pti.faults(error_rate=1, error_status=status)
    with pytest.raises(PtiRetryableError) as info:
        client.list_units()
    assert (info.value.reason, info.value.http_status, info.value.uncertain) == ("pti_server_error", status, False)
    assert info.value.retryable and info.value.retry_after is None


def test_5xx_on_a_write_is_uncertain(pti, client):
    client.login()
    pti.faults(error_rate=1, error_status=503)
    with pytest.raises(PtiRetryableError) as info:
        client.lock_unit("A101")
    assert (info.value.reason, info.value.uncertain, info.value.operation) == ("pti_server_error", True, "lock_unit")


def test_a_read_timeout_is_retryable_unreachable(pti, client):
    client.login()
    pti.faults(timeout_rate=1)
    with pytest.raises(PtiRetryableError) as info:
        client.get_user("u1")
    assert (info.value.reason, info.value.uncertain) == ("pti_unreachable", False)


def test_a_timeout_on_a_write_is_uncertain_even_when_pti_did_not_apply_it(pti, client):
    client.login()
    pti.faults(timeout_rate=1)
    with pytest.raises(PtiRetryableError) as info:
        new_user(client)
    assert (info.value.reason, info.value.uncertain) == ("pti_unreachable", True)
    pti.faults()
    assert client.find_user_by_access_code(482913) is None


def test_apply_then_timeout_leaves_an_uncertain_error_and_a_user_to_look_up(pti, client):
    client.login()
    pti.faults(apply_then_timeout_rate=1)
    with pytest.raises(PtiRetryableError) as info:
        client.apply(CreateUser("ava@example.com", "Ava", "Adams", 482913, 1, 1, "cust-1"))
    assert info.value.uncertain is True
    pti.faults()
    found = client.find_user_by_access_code(482913)
    assert found is not None and found.marker == "cust-1"
    assert len(pti.state()["NG01"]["users"]) == 1


def test_429_is_retryable_with_retry_after_and_holds_later_calls_back(pti, client):
    client.login()
    pti.faults(retry_after_s=3)
    with pytest.raises(PtiRetryableError) as info:
        client.list_units()
    assert info.value.reason == "pti_rate_limited" and info.value.uncertain is False
    assert 2 <= info.value.retry_after <= 3
    sent = pti.count()
    with pytest.raises(PtiRetryableError) as again:
        client.lock_unit("A101")
    assert again.value.reason == "pti_rate_limited" and 0 < again.value.retry_after <= 3
    assert pti.count() == sent  # not sent: PTI said to wait


def test_faults_hit_login_too(pti, client):
    pti.faults(error_rate=1, error_status=503)
    with pytest.raises(PtiRetryableError) as info:
        client.list_units()
    assert (info.value.operation, info.value.reason) == ("login", "pti_server_error")

"""check_site: can we reach PTI, do the credentials work, do our PTI Unit Names exist there, are the site's default
access level and zone among PTI's."""

from __future__ import annotations

from dashboard.pti import AccessLevel, PtiClient, TimeZone, check_site
from sim.server import free_port

DEFAULTS = {"default_access_level": 1, "default_zone": 3}
LISTS = ['PTI has 2 access levels: 1 "All Hours Access", 2 "Business Hours Access".',
         'PTI has 2 time zones: 1 "24 hours", 3 "Weekdays 7am-7pm".']


def test_a_healthy_site_with_matching_names_is_ok(sim):
    with sim.client() as client:
        check = check_site(client, ["A101", "A102", "B201"], **DEFAULTS)
    assert check.ok and check.reachable and check.credentials_valid
    assert (check.pti_unit_count, check.matched, check.invalid, check.unknown) == (5, ["A101", "A102", "B201"], [], [])
    assert check.access_levels == [AccessLevel(1, "All Hours Access"), AccessLevel(2, "Business Hours Access")]
    assert check.time_zones == [TimeZone(1, "24 hours"), TimeZone(3, "Weekdays 7am-7pm")]
    assert (check.default_access_level_ok, check.default_zone_ok) == (True, True)
    assert check.lines == ["PTI is reachable and accepted the site's credentials; it has 5 units.",
                           "3 of our 3 units match a PTI unit.",
                           LISTS[0],
                           'The site\'s PTI Access Level 1 is PTI\'s "All Hours Access".',
                           LISTS[1],
                           'The site\'s PTI zone 3 is PTI\'s "Weekdays 7am-7pm".',
                           "Everything needed to sync this site is in place."]


def test_names_pti_rejects_or_lacks_and_units_without_a_name_are_reported(sim):
    with sim.client() as client:
        check = check_site(client, ["A101", "LOCKER 12", "NORTHGATE-XL1", "Z999", None, ""], **DEFAULTS)
    assert not check.ok
    assert (check.matched, check.invalid, check.unknown, check.missing) == (
        ["A101"], ["LOCKER 12", "NORTHGATE-XL1"], ["Z999"], 2)
    text = "\n".join(check.lines)
    assert "1 of our 6 units match a PTI unit." in text
    assert "2 of our units have no PTI Unit Name" in text
    assert "2 PTI Unit Names break PTI's rule (at most 10 characters, no spaces): LOCKER 12, NORTHGATE-XL1" in text
    assert "1 PTI Unit Names do not exist in PTI: Z999." in text


def test_long_lists_are_cut_in_the_lines_but_kept_in_full(sim):
    missing = [f"X{i}" for i in range(14)]
    with sim.client() as client:
        check = check_site(client, missing, **DEFAULTS)
    assert check.unknown == missing
    assert "X0, X1, X2, X3, X4, X5, X6, X7, X8, X9 and 4 more" in check.lines[2]


def test_a_default_level_pti_does_not_have_is_reported_with_the_levels_it_has(sim):
    with sim.client() as client:
        check = check_site(client, ["A101"], default_access_level=24, default_zone=1)
    assert (check.ok, check.error, check.default_access_level_ok, check.default_zone_ok) == (False, None, False, True)
    assert check.lines[2:] == [
        LISTS[0],
        "The site's PTI Access Level is 24, but PTI has no access level 24. Set the site's PTI Access Level in "
        'Storeganise to one of PTI\'s: 1 "All Hours Access", 2 "Business Hours Access".',
        LISTS[1],
        'The site\'s PTI zone 1 is PTI\'s "24 hours".']


def test_a_site_without_a_default_zone_is_told_to_set_one(sim):
    with sim.client() as client:
        check = check_site(client, ["A101"], default_access_level=2)
    assert (check.ok, check.default_access_level_ok, check.default_zone_ok) == (False, True, False)
    assert check.lines[-1] == ("The site has no PTI zone, so customers without their own cannot be synced. Set the "
                               'site\'s PTI zone in Storeganise to one of PTI\'s: 1 "24 hours", 3 "Weekdays 7am-7pm".')


def test_empty_lists_are_reported_with_the_fix_in_pti(sim):
    sim.lists(access_levels=[], time_zones=[])
    with sim.client() as client:
        check = check_site(client, ["A101"], **DEFAULTS)
    assert (check.ok, check.access_levels, check.time_zones) == (False, [], [])
    assert check.lines[2:] == [
        "PTI has no access levels for this site: nobody can get in until they are set up in the PTI dashboard.",
        "The site's PTI Access Level is 1, but PTI has no access level 1. Create the access levels in the PTI "
        "dashboard, then set the site's PTI Access Level in Storeganise to one of them.",
        "PTI has no time zones for this site: nobody can get in until they are set up in the PTI dashboard.",
        "The site's PTI zone is 3, but PTI has no time zone 3. Create the time zones in the PTI dashboard, then set "
        "the site's PTI zone in Storeganise to one of them."]


def test_long_lists_of_levels_are_cut_in_the_lines(sim):
    sim.lists(access_levels=[{"id": i, "name": f"Level {i}"} for i in range(1, 13)])
    with sim.client() as client:
        check = check_site(client, ["A101"], **DEFAULTS)
    assert check.ok and len(check.access_levels) == 12
    assert check.lines[2].endswith('10 "Level 10" and 2 more.')


def test_a_malformed_list_is_reported_and_the_rest_still_checked(sim):
    sim.lists(time_zones=[{"id": "24 Hours", "name": "24 hours"}])
    with sim.client() as client:
        check = check_site(client, ["A101"], **DEFAULTS)
    assert (check.ok, check.time_zones, check.default_zone_ok, check.error.reason) == (
        False, None, None, "pti_bad_response")
    assert check.default_access_level_ok is True and check.matched == ["A101"]
    assert check.lines[-1] == ("Could not read PTI's time zones: PTI answered with something the product cannot "
                               "read. PTI's list of time zones could not be read: entry 1 has the id '24 Hours', not "
                               "a whole number. Check the site's PTI URL points at the Storlogix Cloud API (not a web "
                               "page or a proxy), then press Resync; if it persists, contact support with the journal "
                               "entry, which says which part of the answer was wrong.")


def test_wrong_credentials_are_reported_with_the_fix(sim):
    with sim.client(password="wrong-password") as client:
        check = check_site(client, ["A101"])
    assert (check.reachable, check.credentials_valid, check.ok, check.pti_unit_count) == (True, False, False, None)
    assert check.error.reason == "invalid_credentials"
    assert check.lines == ["PTI answered but refused: PTI refused the site's credentials. Correct the site's PTI "
                           "Site Code, Site Key, Username and Password in Storeganise (the add-on's site settings), "
                           "then press Retry all for this cause on the Failures page."]
    assert "wrong-password" not in repr(check)


def test_an_unreachable_pti_is_reported_as_such():
    port = free_port()
    with PtiClient(f"http://127.0.0.1:{port}", "NG01", "k", "u", "p", connect_timeout=0.5) as client:
        check = check_site(client, ["A101"])
    assert (check.reachable, check.credentials_valid, check.ok) == (False, None, False)
    assert check.lines[0].startswith("PTI did not answer properly: PTI did not answer (time-out or connection error).")


def test_a_failing_pti_is_reachable_but_credentials_are_unknown(sim):
    sim.faults(site="NG01", error_rate=1, error_status=503)
    with sim.client() as client:
        check = check_site(client, ["A101"])
    assert (check.reachable, check.credentials_valid, check.error.reason) == (True, None, "pti_server_error")

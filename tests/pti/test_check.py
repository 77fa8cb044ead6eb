"""check_site: can we reach PTI, do the credentials work, do our PTI Unit Names exist there."""

from __future__ import annotations

from dashboard.pti import PtiClient, check_site
from sim.server import free_port


def test_a_healthy_site_with_matching_names_is_ok(sim):
    with sim.client() as client:
        check = check_site(client, ["A101", "A102", "B201"])
    assert check.ok and check.reachable and check.credentials_valid
    assert (check.pti_unit_count, check.matched, check.invalid, check.unknown) == (5, ["A101", "A102", "B201"], [], [])
    assert check.lines == ["PTI is reachable and accepted the site's credentials; it has 5 units.",
                           "3 of our 3 units match a PTI unit.",
                           "Everything needed to sync this site is in place."]


def test_names_pti_rejects_or_lacks_and_units_without_a_name_are_reported(sim):
    with sim.client() as client:
        check = check_site(client, ["A101", "LOCKER 12", "NORTHGATE-XL1", "Z999", None, ""])
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
        check = check_site(client, missing)
    assert check.unknown == missing
    assert "X0, X1, X2, X3, X4, X5, X6, X7, X8, X9 and 4 more" in check.lines[-1]


def test_wrong_credentials_are_reported_with_the_fix(sim):
    with sim.client(password="wrong-password") as client:
        check = check_site(client, ["A101"])
    assert (check.reachable, check.credentials_valid, check.ok, check.pti_unit_count) == (True, False, False, None)
    assert check.error.reason == "invalid_credentials"
    assert check.lines == ["PTI answered but refused: PTI refused the site's credentials. Correct the site's PTI "
                           "Site Code, Site Key, Username and Password in Storeganise (the add-on's site settings), "
                           "then press Retry failed customers on the site's page."]
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

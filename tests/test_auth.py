"""Log-in, log-out, the failure rate limit, and CSRF on every state-changing request."""

import re


def test_manager_logs_in_and_sees_the_overview(client, auth):
    response = auth.login("manager")
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert "Overview" in client.get("/").get_data(as_text=True)


def test_wrong_password_says_so_without_hinting_which_part(client, auth):
    response = auth.login("manager", password="nope")
    page = response.get_data(as_text=True)
    assert response.status_code == 401
    assert "Wrong e-mail or password." in page
    unknown = client.post("/login", data={"email": "nobody@demo.test", "password": "demo",
                                          "csrf_token": auth.csrf_token()})
    assert unknown.status_code == 401 and "Wrong e-mail or password." in unknown.get_data(as_text=True)


def test_repeated_failures_are_rate_limited_even_with_the_right_password(app, client, auth):
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        assert auth.login("staff", password="wrong").status_code == 401
    blocked = auth.login("staff")
    assert blocked.status_code == 429
    assert "Too many failed attempts" in blocked.get_data(as_text=True)
    assert auth.login("manager").status_code == 302  # another account is not affected


def test_pages_require_log_in(client):
    response = client.get("/rentals/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_login_without_csrf_token_is_refused(client, demo_users):
    response = client.post("/login", data={"email": "manager@demo.test", "password": "demo"})
    assert response.status_code == 400
    assert client.get("/").status_code == 302


def test_logout_is_a_post_with_csrf(client, auth):
    auth.login("staff")
    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 400  # no token: still logged in
    assert client.get("/").status_code == 200
    assert auth.logout().status_code == 302
    assert client.get("/").status_code == 302


def test_login_records_an_audit_entry(app, client, auth):
    from dashboard.extensions import db
    from dashboard.models import AuditEntry

    auth.login("support")
    entry = db.session.query(AuditEntry).one()
    assert (entry.actor, entry.action) == ("support@demo.test", "login")


def test_htmx_pages_carry_the_csrf_token_for_htmx_requests(client, auth):
    auth.login("staff")
    html = client.get("/").get_data(as_text=True)
    assert re.search(r'hx-headers=\'\{"X-CSRFToken": "[^"]+"\}\'', html)

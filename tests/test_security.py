"""Route × role matrix over every route of app.url_map, security headers, styled errors.

A route missing from ACCESS fails the test: adding a page means saying who may see it.
"""

import pytest

from dashboard.models import Role

EVERYONE = {"admin", "manager", "staff", "support"}
ACTORS = {"admin", "staff", "support"}  # may act on rentals and customers; managers only read
PUBLIC = None
ACCESS = {
    "auth.login": PUBLIC,
    "auth.logout": EVERYONE,
    "overview.index": EVERYONE,
    "sites.index": EVERYONE,
    "sites.show": EVERYONE,
    "sites.resync": ACTORS,
    "sites.requeue_failed": ACTORS,
    "rentals.index": EVERYONE,
    "rentals.show": EVERYONE,
    "rentals.sync_status": EVERYONE,
    "rentals.resync": ACTORS,
    "rentals.suspend": ACTORS,
    "rentals.unsuspend": ACTORS,
    "customers.index": EVERYONE,
    "customers.show": EVERYONE,
    "customers.access": EVERYONE,
    "customers.resync": ACTORS,
    "customers.regenerate_code": ACTORS,
    "customers.set_access": ACTORS,
    "customers.reveal_code": ACTORS,
    "customers.adopt_pti_user": ACTORS,
    "customers.separate_pti_user": ACTORS,
    "activity.index": EVERYONE,
    "uploads.index": {"admin", "manager", "support"},
    "uploads.show": {"admin", "manager", "support"},
    "uploads.progress_status": {"admin", "manager", "support"},
    "uploads.export": {"admin", "manager", "support"},
    "uploads.create": {"admin", "support"},
    "settings.index": {"admin"},
    "health.healthz": PUBLIC,
    "health.metrics": PUBLIC,
    "webhooks.storeganise": PUBLIC,
    "static": PUBLIC,
}


def test_every_route_is_in_the_access_table(app):
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert endpoints - ACCESS.keys() == set(), "add new routes to ACCESS with the roles that may use them"
    assert ACCESS.keys() - endpoints == set(), "ACCESS lists routes that no longer exist"


def test_every_view_declares_the_roles_of_the_access_table(app):
    for endpoint, roles in ACCESS.items():
        if endpoint == "static":
            continue
        declared = app.view_functions[endpoint].allowed_roles
        assert (set(declared) if declared is not None else None) == roles, endpoint


def _url_for(app, rule):
    values = {arg: 1 for arg in rule.arguments}
    with app.test_request_context():
        from flask import url_for

        return url_for(rule.endpoint, **values)


@pytest.fixture
def an_upload(app):
    """Upload 1, so the per-upload routes (called with id 1) have something to show."""
    from dashboard.extensions import db
    from dashboard.models import Upload

    db.session.add(Upload(filename="pushes.csv", uploaded_by="support@demo.test", status="applied"))
    db.session.commit()


@pytest.mark.parametrize("role", sorted(EVERYONE))
def test_each_role_gets_exactly_its_routes(app, client, auth, demo_business, an_upload, role):
    auth.login(role)
    for rule in app.url_map.iter_rules():
        allowed = ACCESS[rule.endpoint]
        if allowed is PUBLIC or "GET" not in rule.methods:
            continue
        status = client.get(_url_for(app, rule)).status_code
        if role in allowed:
            assert status == 200, f"{role} should reach {rule.endpoint}, got {status}"
        else:
            assert status == 403, f"{role} must not reach {rule.endpoint}, got {status}"


@pytest.mark.parametrize("role", sorted(EVERYONE))
def test_each_role_may_post_exactly_its_actions(app, client, auth, demo_business, role):
    auth.login(role)
    token = auth.csrf_token("/")
    for rule in app.url_map.iter_rules():
        if "POST" not in rule.methods or ACCESS[rule.endpoint] in (PUBLIC, EVERYONE):
            continue
        status = client.post(_url_for(app, rule), data={"csrf_token": token}).status_code
        if role in ACCESS[rule.endpoint]:
            assert status != 403, f"{role} should be allowed to {rule.endpoint}"
        else:
            assert status == 403, f"{role} must not {rule.endpoint}, got {status}"


def test_anonymous_users_are_sent_to_log_in_from_every_private_route(app, client, demo_business):
    for rule in app.url_map.iter_rules():
        if ACCESS[rule.endpoint] is PUBLIC or "GET" not in rule.methods:
            continue
        response = client.get(_url_for(app, rule))
        assert response.status_code == 302 and "/login" in response.headers["Location"], rule.endpoint


def test_state_changing_routes_refuse_requests_without_csrf(app, client, auth):
    auth.login("admin")
    for rule in app.url_map.iter_rules():
        unsafe = rule.methods & {"POST", "PUT", "PATCH", "DELETE"}
        if not unsafe or rule.endpoint in {"webhooks.storeganise"}:
            continue
        response = client.open(_url_for(app, rule), method=sorted(unsafe)[0])
        assert response.status_code == 400, f"{rule.endpoint} accepted a request without a CSRF token"


def test_pages_carry_security_headers_and_a_strict_csp(client, auth):
    auth.login("manager")
    response = client.get("/")
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"


def test_htmx_is_vendored_and_its_history_cache_is_off(client, auth):
    auth.login("manager")
    html = client.get("/").get_data(as_text=True)
    assert "/static/vendor/htmx-2.0.11.min.js" in html and "https://" not in html
    assert '"historyCacheSize": 0' in html
    with client.get("/static/vendor/htmx-2.0.11.min.js") as script:
        assert script.status_code == 200 and b'version:"2.0.11"' in script.data


def test_unknown_urls_get_a_styled_404(client, auth):
    auth.login("staff")
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert "Page not found" in response.get_data(as_text=True)


def test_role_values_match_the_table():
    assert {r.value for r in Role} == EVERYONE

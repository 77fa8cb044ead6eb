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
    "failures.index": EVERYONE,
    "failures.retry": ACTORS,
    "work.index": EVERYONE,
    "work.relay": {"admin"},
    "work.requeue_failed": {"admin"},
    "work.clear_failed": {"admin"},
    "trends.index": EVERYONE,
    "sites.index": EVERYONE,
    "sites.show": EVERYONE,
    "sites.resync": ACTORS,
    "sites.requeue_failed": ACTORS,
    "sites.fix_drift": ACTORS,
    "sites.set_time_zone": {"admin"},
    "rentals.index": EVERYONE,
    "rentals.show": EVERYONE,
    "rentals.sync_status": EVERYONE,
    "rentals.resync": ACTORS,
    "rentals.suspend": ACTORS,
    "rentals.unsuspend": ACTORS,
    "rentals.check_pti": EVERYONE,
    "customers.index": EVERYONE,
    "customers.show": EVERYONE,
    "customers.access": EVERYONE,
    "customers.resync": ACTORS,
    "customers.regenerate_code": ACTORS,
    "customers.set_access": ACTORS,
    "customers.reveal_code": ACTORS,
    "customers.adopt_pti_user": ACTORS,
    "customers.separate_pti_user": ACTORS,
    "customers.check_pti": EVERYONE,
    "activity.index": EVERYONE,
    "activity.export": EVERYONE,
    "uploads.index": {"admin", "manager", "support"},
    "uploads.show": {"admin", "manager", "support"},
    "uploads.progress_status": {"admin", "manager", "support"},
    "uploads.export": {"admin", "manager", "support"},
    "uploads.create": {"admin", "support"},
    "uploads.confirm": {"admin", "support"},
    "uploads.retry": {"admin", "support"},
    "settings.index": {"admin"},
    "users.index": {"admin"},
    "users.create": {"admin"},
    "users.set_role": {"admin"},
    "users.disable": {"admin"},
    "users.enable": {"admin"},
    "users.set_password": {"admin"},
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


# What each action answers when it succeeds (a plain form post): the status, where it leads, and what it says.
# An error answers differently (an "error" flash, a 422, a 400): "not 403" would let those pass.
ACTION_SUCCESS = {
    "sites.resync": (302, "/sites/1", "Every customer of the site is queued for a push."),
    "sites.requeue_failed": (302, "/sites/1", "Failed customers of the site are queued again."),
    "sites.fix_drift": (302, "/sites/1", "Queued: PTI Sync reads PTI again"),
    "sites.set_time_zone": (302, "/sites/1", "Time zone saved"),
    "failures.retry": (302, "/failures/", "queued again"),
    "work.relay": (302, "/work/", "Relay queued on the urgent queue"),
    "work.requeue_failed": (302, "/work/", "Failed RQ jobs put back on their queues."),
    "work.clear_failed": (302, "/work/", "Failed RQ jobs cleared"),
    "rentals.resync": (302, "/rentals/1", "Push to PTI queued."),
    "rentals.suspend": (302, "/rentals/1", "Suspension queued: the keypad will refuse the code."),
    "rentals.unsuspend": (302, "/rentals/1", "Unsuspension queued: the code will open again."),
    "customers.resync": (302, "/customers/1", "Push to PTI queued for every site."),
    "customers.regenerate_code": (302, "/customers/1",
                                  "New access code queued: the old code stops working once PTI has it."),
    "customers.set_access": (302, "/customers/1", "Access level and zone saved; push queued."),
    "customers.adopt_pti_user": (302, "/customers/{customer}", "Adoption queued"),
    "customers.separate_pti_user": (302, "/customers/{customer}", "queued"),
    "customers.reveal_code": (200, None, None),
    "uploads.create": (303, "/uploads/{upload}", None),
    "uploads.confirm": (303, "/uploads/{upload}", "Confirmed: the rentals are being marked for a push."),
    "uploads.retry": (303, "/uploads/{upload}", "Started again."),
    "users.create": (302, "/users/", "Account new@demo.test created (staff)."),
    "users.set_role": (302, "/users/", "target@demo.test is now support"),
    "users.disable": (302, "/users/", "target@demo.test is disabled"),
    "users.enable": (302, "/users/", "target@demo.test is enabled again"),
    "users.set_password": (302, "/users/", "New password set for target@demo.test"),
}


def _in_conflict():
    """Customer 1 parked on PTI users PTI Sync did not create, so adopt and separate have a decision to make."""
    from dashboard.engine.intent import account_for
    from dashboard.extensions import db
    from dashboard.models import Customer

    customer = db.session.get(Customer, 1)
    account = account_for(customer, customer.rentals[0].site_id)
    account.state, account.last_error = "failed", "foreign_pti_user"
    account.adopt_pti_user_id, account.separate_from_foreign = None, False
    account.foreign_pti_users = [{"id": "1001", "first_name": "By", "last_name": "Hand", "email": "x@example.com",
                                  "code": "•••920", "access_level": 1, "time_zone": 1, "units": [],
                                  "matched_by": ["e-mail"]}]
    db.session.commit()
    return account


def _post_action(app, client, endpoint: str, rule, token: str):
    """POST the action as a browser form would, with what it needs to succeed."""
    import io

    from werkzeug.datastructures import FileStorage
    from werkzeug.test import encode_multipart

    from dashboard.extensions import db
    from dashboard.models import Rental

    if endpoint in ("customers.adopt_pti_user", "customers.separate_pti_user"):
        account = _in_conflict()
        verb = "adopt" if endpoint.endswith("adopt_pti_user") else "separate"
        return client.post(f"/customers/{account.customer_id}/accounts/{account.id}/{verb}",
                           data={"csrf_token": token, "pti_user_id": "1001"}), {"customer": account.customer_id}
    if endpoint == "sites.fix_drift":
        from dashboard.models import Site

        site = db.session.get(Site, 1)
        site.drift_report = {"orphans": 1, "orphan_users": [{"id": "4242", "name": "Long Gone"}]}
        db.session.commit()
        return client.post("/sites/1/fix-drift", data={"csrf_token": token, "kind": "orphan",
                                                       "pti_user_id": "4242"}), {}
    if endpoint == "sites.set_time_zone":
        return client.post("/sites/1/time-zone", data={"csrf_token": token, "zone": "Europe/London"}), {}
    if endpoint == "failures.retry":
        account = _in_conflict()
        return client.post("/failures/retry", data={"csrf_token": token, "cause": account.last_error}), {}
    if endpoint in ("work.requeue_failed", "work.clear_failed"):
        from tests.test_work import fail_a_job

        fail_a_job()
        return client.post(_url_for(app, rule), data={"csrf_token": token}), {}
    if endpoint.startswith("users."):
        return _post_user_action(client, endpoint, token), {}
    if endpoint in ("uploads.confirm", "uploads.retry"):
        upload = _upload_to(endpoint.removeprefix("uploads."))
        return client.post(f"/uploads/{upload}/{endpoint.removeprefix('uploads.')}", data={"csrf_token": token}), {
            "upload": upload}
    if endpoint == "uploads.create":
        rental = db.session.get(Rental, 1)
        boundary, body = encode_multipart({"csrf_token": token, "file": FileStorage(
            io.BytesIO(f"id,customFields.pti_synced\n{rental.sg_id},\n".encode()), "p.csv", content_type="text/csv")})
        return client.post("/uploads/", data=body, content_type=f"multipart/form-data; boundary={boundary}"), {}
    return client.post(_url_for(app, rule), data={"csrf_token": token}), {}


def _upload_to(action: str) -> int:
    """An upload one row long that can be confirmed (ready), or retried (its check's job is gone)."""
    from datetime import datetime

    from dashboard.extensions import db
    from dashboard.models import Upload, UploadRow

    ready = action == "confirm"
    upload = Upload(filename="p.csv", uploaded_by="support@demo.test", status="ready" if ready else "checking",
                    row_count=1, data=None if ready else b"id,customFields.pti_synced\n",
                    progress_at=datetime(2020, 1, 1), preview={"totals": {}, "sites": []} if ready else None)
    db.session.add(upload)
    db.session.flush()
    db.session.add(UploadRow(upload_id=upload.id, line=2, rental_id=1, action="push"))
    db.session.commit()
    return upload.id


def _post_user_action(client, endpoint: str, token: str):
    """A change to an account of its own (never the one posting: their session must go on), from the state the change
    needs."""
    from sqlalchemy import select

    from dashboard.extensions import db
    from dashboard.models import StaffUser

    if endpoint == "users.create":
        return client.post("/users/", data={"csrf_token": token, "email": "new@demo.test", "name": "New",
                                            "role": "staff", "password": "a-long-password"})
    target = db.session.scalar(select(StaffUser).where(StaffUser.email == "target@demo.test"))
    if target is None:
        target = StaffUser(email="target@demo.test", role="staff")
        target.set_password("demo")
        db.session.add(target)
    target.active = endpoint != "users.enable"
    db.session.commit()
    verb = endpoint.removeprefix("users.").removeprefix("set_")
    return client.post(f"/users/{target.id}/{verb}", data={"csrf_token": token, "role": "support",
                                                          "password": "a-long-password"})


@pytest.mark.parametrize("role", sorted(EVERYONE))
def test_each_role_may_post_exactly_its_actions(app, client, auth, demo_business, role):
    import re

    from dashboard.extensions import db
    from dashboard.models import Upload

    assert {r.endpoint for r in app.url_map.iter_rules() if "POST" in r.methods
            and ACCESS[r.endpoint] not in (PUBLIC, EVERYONE)} == ACTION_SUCCESS.keys()
    auth.login(role)
    token = auth.csrf_token("/")
    for rule in app.url_map.iter_rules():
        if rule.endpoint not in ACTION_SUCCESS:
            continue
        response, ids = _post_action(app, client, rule.endpoint, rule, token)
        with client.session_transaction() as session:
            flashes = session.pop("_flashes", [])
        if role not in ACCESS[rule.endpoint]:
            assert response.status_code == 403, f"{role} must not {rule.endpoint}, got {response.status_code}"
            continue
        status, location, said = ACTION_SUCCESS[rule.endpoint]
        assert response.status_code == status, f"{role} {rule.endpoint}: {response.status_code} {flashes}"
        if rule.endpoint == "uploads.create":
            ids["upload"] = db.session.scalars(select_uploads(Upload)).first().id
        if location is not None:
            assert response.headers["Location"] == location.format(**ids), rule.endpoint
        if said is not None:
            assert [c for c, _ in flashes] == ["info"] and said in flashes[0][1], (rule.endpoint, flashes)
        if rule.endpoint == "customers.reveal_code":
            assert re.search(r'<span class="code"[^>]*>\d{6}</span>', response.get_data(as_text=True))


def select_uploads(model):
    from sqlalchemy import select

    return select(model).order_by(model.id.desc())


def test_anonymous_users_are_sent_to_log_in_from_every_private_route(app, client, demo_business):
    for rule in app.url_map.iter_rules():
        if ACCESS[rule.endpoint] is PUBLIC or "GET" not in rule.methods:
            continue
        response = client.get(_url_for(app, rule))
        assert response.status_code == 302 and "/login" in response.headers["Location"], rule.endpoint


def _changes():
    """What a refused request must not have touched: the audit log, the accounts' intent, the uploads."""
    from sqlalchemy import func, select

    from dashboard.extensions import db
    from dashboard.models import AuditEntry, PtiAccount, Upload

    db.session.expire_all()
    return (db.session.scalar(select(func.count(AuditEntry.id))),
            db.session.execute(select(PtiAccount.id, PtiAccount.generation, PtiAccount.access_code,
                                      PtiAccount.adopt_pti_user_id).order_by(PtiAccount.id)).all(),
            db.session.scalar(select(func.count(Upload.id))))


@pytest.mark.parametrize("role", sorted(EVERYONE))
def test_state_changing_routes_refuse_a_missing_or_wrong_csrf_token_for_every_role(app, client, auth, demo_business,
                                                                                    role):
    """Every state-changing route, as every role: no token, a made-up token and another session's real token are
    each refused with 400 before the view runs, and nothing changes (the user is not even logged out)."""
    from tests.conftest import Auth

    with app.app_context():  # its own g, so the other client's anonymous user does not leak into this one's
        foreign_token = Auth(app.test_client()).csrf_token()  # a real token, but of another session
    auth.login(role)
    _in_conflict()
    own_token = auth.csrf_token("/")
    before = _changes()
    checked = 0
    for rule in app.url_map.iter_rules():
        unsafe = rule.methods & {"POST", "PUT", "PATCH", "DELETE"}
        if not unsafe or rule.endpoint == "webhooks.storeganise":  # signed by HMAC instead (R8)
            continue
        for label, data in (("missing", {}), ("wrong", {"csrf_token": "not-a-token"}),
                            ("another session's", {"csrf_token": foreign_token}),
                            ("header", None)):
            headers = {"X-CSRFToken": "x" + own_token[1:]} if data is None else {}
            response = client.open(_url_for(app, rule), method=sorted(unsafe)[0], data=data or {},
                                   headers=headers)
            assert response.status_code == 400, f"{rule.endpoint} accepted a {label} CSRF token from {role}"
            checked += 1
    assert checked >= 4 * 12
    assert _changes() == before
    assert client.get("/").status_code == 200  # still logged in: logout refused too
    ok = client.post("/customers/1/resync", data={"csrf_token": own_token})  # the check refuses only bad tokens
    assert ok.status_code == (302 if role in ACTORS else 403)


def _csp(value: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in (p.strip() for p in value.split(";")) if d}


@pytest.mark.parametrize("role", sorted(EVERYONE))
def test_every_get_route_carries_the_security_headers_and_a_strict_csp(app, client, auth, demo_business, an_upload,
                                                                       role):
    """Every GET route of app.url_map, as every role (whatever it answers: a page, a fragment, a 403, a CSV, a
    static file), carries the headers dashboard/security.py sets."""
    auth.login(role)
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods:
            continue
        url = "/static/vendor/htmx-2.0.11.min.js" if rule.endpoint == "static" else _url_for(app, rule)
        response = client.get(url)
        response.close()
        where = f"{rule.endpoint} ({response.status_code}) as {role}"
        csp = _csp(response.headers.get("Content-Security-Policy", ""))
        assert csp.get("default-src") == ["'self'"] and csp.get("script-src") == ["'self'"], where
        assert csp.get("style-src") == ["'self'"] and csp.get("object-src") == ["'none'"], where
        assert csp.get("frame-ancestors") == ["'none'"] and csp.get("base-uri") == ["'self'"], where
        assert csp.get("form-action") == ["'self'"], where
        flat = " ".join(" ".join(v) for v in csp.values())
        assert "unsafe-inline" not in flat and "unsafe-eval" not in flat and "*" not in flat, where
        assert response.headers.get("X-Frame-Options") == "DENY", where
        assert response.headers.get("X-Content-Type-Options") == "nosniff", where
        assert response.headers.get("Referrer-Policy") == "same-origin", where
        assert response.headers.get("Permissions-Policy") == "camera=(), microphone=(), geolocation=()", where
        if rule.endpoint != "static":
            assert response.headers.get("Cache-Control") == "no-store", where


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

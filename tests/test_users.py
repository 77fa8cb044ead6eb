"""The Users page: admins create accounts, change roles, disable and re-enable them, set passwords; sessions end.

Each browser is a test client of its own, each request in an app context of its own (as in production: the user is
loaded again on every request, never kept from the previous one).
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from dashboard.extensions import db
from dashboard.models import AuditEntry, StaffUser


class Browser:
    """One person's browser: its own cookies, each request on a fresh app context."""

    def __init__(self, app):
        self.app = app
        self.client = app.test_client()

    def open(self, method: str, path: str, **kwargs):
        with self.app.app_context():
            return self.client.open(path, method=method, **kwargs)

    def get(self, path: str, **kwargs):
        return self.open("GET", path, **kwargs)

    def token(self) -> str:
        response = self.get("/login")  # logged in: it leads to the overview, which carries the token too
        html = (self.get("/") if response.status_code == 302 else response).get_data(as_text=True)
        match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or re.search(
            r'"X-CSRFToken": "([^"]+)"', html)
        return match.group(1)

    def login(self, email: str, password: str = "demo"):
        return self.open("POST", "/login", data={"email": email, "password": password, "csrf_token": self.token()})

    def post(self, path: str, headers=None, **data):
        return self.open("POST", path, data={"csrf_token": self.token(), **data}, headers=headers or {})

    def logged_in(self) -> bool:
        return self.get("/").status_code == 200


@pytest.fixture
def someone(app, demo_users):
    return lambda: Browser(app)


@pytest.fixture
def admin(someone):
    b = someone()
    assert b.login("admin@demo.test").status_code == 302
    return b


def account(email: str) -> StaffUser:
    db.session.expire_all()
    return db.session.scalar(select(StaffUser).where(StaffUser.email == email))


def audit(action: str) -> list[AuditEntry]:
    db.session.expire_all()
    return db.session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)).all()


def audit_count() -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count(AuditEntry.id)))


def test_the_page_lists_the_accounts_and_only_admins_see_it_in_the_menu(admin, someone):
    page = admin.get("/users/").get_data(as_text=True)
    assert all(f'data-email="{r}@demo.test"' in page for r in ("admin", "manager", "staff", "support"))
    assert 'href="/users/"' in admin.get("/").get_data(as_text=True)
    manager = someone()
    manager.login("manager@demo.test")
    assert 'href="/users/"' not in manager.get("/").get_data(as_text=True)


def test_an_admin_creates_an_account_that_can_log_in_and_the_audit_log_says_so(admin, someone):
    response = admin.post("/users/", email=" Kim@Example.com ", name="Kim", role="support", password="kims-password")
    assert response.status_code == 302 and response.headers["Location"] == "/users/"
    user = account("kim@example.com")
    assert (user.name, user.role, user.active) == ("Kim", "support", True)
    assert someone().login("kim@example.com", "kims-password").status_code == 302
    entry = audit("create account")[0]
    assert (entry.actor, entry.target_type, entry.target_id) == ("admin@demo.test", "staff_user", str(user.id))
    assert entry.detail == {"email": "kim@example.com", "role": "support"}


def test_a_blank_password_is_generated_and_shown_once(admin, someone):
    response = admin.post("/users/", email="lee@example.com", name="", role="staff", password="")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    password = re.search(r'<span class="code" data-password>([^<]+)</span>', page).group(1)
    assert len(password) >= 12 and "shown only this once" in page
    assert password not in admin.get("/users/").get_data(as_text=True)
    assert someone().login("lee@example.com", password).status_code == 302


def test_a_duplicate_email_is_refused_whatever_its_case(admin):
    before = audit_count()
    response = admin.post("/users/", email="STAFF@demo.test", name="", role="staff", password="another-password")
    assert response.status_code == 422
    assert "An account with the e-mail staff@demo.test already exists." in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count(StaffUser.id))) == 4 and audit_count() == before
    assert account("staff@demo.test").check_password("demo")


@pytest.mark.parametrize("form, said", [
    ({"email": "x@example.com", "role": "owner", "password": "long-enough"}, "Not a valid choice"),
    ({"email": "not-an-email", "role": "staff", "password": "long-enough"}, "Not an e-mail address."),
    ({"email": "", "role": "staff", "password": "long-enough"}, "This field is required."),
    ({"email": "x@example.com", "role": "staff", "password": "short"}, "At least 8 characters"),
])
def test_a_form_not_valid_answers_422_saying_why_and_creates_nothing(admin, form, said):
    before = audit_count()
    response = admin.post("/users/", name="", **form)
    page = response.get_data(as_text=True)
    assert response.status_code == 422 and said in page and "The account was not created" in page
    assert db.session.scalar(select(func.count(StaffUser.id))) == 4 and audit_count() == before


def test_a_bad_role_on_an_account_is_refused_and_changes_nothing(admin):
    staff = account("staff@demo.test")
    response = admin.post(f"/users/{staff.id}/role", role="root")
    assert response.status_code == 422 and "Not a valid choice" in response.get_data(as_text=True)
    assert account("staff@demo.test").role == "staff" and audit("change role") == []


def test_an_unknown_account_is_404(admin):
    assert admin.post("/users/999/disable").status_code == 404


@pytest.mark.parametrize("role", ["manager", "staff", "support"])
def test_other_roles_get_403_and_nothing_changes(someone, role):
    b = someone()
    b.login(f"{role}@demo.test")
    target = account("staff@demo.test") if role != "staff" else account("support@demo.test")
    before = audit_count()
    assert b.get("/users/").status_code == 403
    assert b.post("/users/", email="x@example.com", role="admin", password="long-enough").status_code == 403
    assert b.post(f"/users/{target.id}/role", role="admin").status_code == 403
    assert b.post(f"/users/{target.id}/disable").status_code == 403
    assert b.post(f"/users/{target.id}/enable").status_code == 403
    assert b.post(f"/users/{target.id}/password", password="long-enough").status_code == 403
    assert account(target.email).role != "admin" and account(target.email).active
    assert account("x@example.com") is None and audit_count() == before


def test_a_role_change_applies_on_the_users_next_request(admin, someone):
    staff = someone()
    staff.login("staff@demo.test")
    assert staff.get("/users/").status_code == 403
    response = admin.post(f"/users/{account('staff@demo.test').id}/role", role="admin")
    assert response.status_code == 302
    assert staff.get("/users/").status_code == 200  # same session, new role
    entry = audit("change role")[0]
    assert entry.actor == "admin@demo.test"
    assert entry.detail == {"email": "staff@demo.test", "before": "staff", "after": "admin"}


def test_disabling_logs_the_user_out_at_once_and_re_enabling_lets_them_back(admin, someone):
    staff = someone()
    staff.login("staff@demo.test")
    assert staff.logged_in()
    user_id = account("staff@demo.test").id
    response = admin.post(f"/users/{user_id}/disable")
    assert response.status_code == 302
    after = staff.get("/rentals/")
    assert after.status_code == 302 and after.headers["Location"].startswith("/login")
    assert someone().login("staff@demo.test").status_code == 401
    assert admin.post(f"/users/{user_id}/enable").status_code == 302
    assert not staff.logged_in()  # the old session stays ended
    assert someone().login("staff@demo.test").status_code == 302
    assert [e.action for e in audit("disable account") + audit("enable account")] == ["disable account",
                                                                                      "enable account"]
    assert all(e.target_id == str(user_id) and e.actor == "admin@demo.test"
               for e in audit("disable account") + audit("enable account"))


def test_a_new_password_ends_the_users_sessions(admin, someone):
    phone, laptop = someone(), someone()
    phone.login("staff@demo.test")
    laptop.login("staff@demo.test")
    user_id = account("staff@demo.test").id
    assert admin.post(f"/users/{user_id}/password", password="brand-new-pass").status_code == 302
    assert not phone.logged_in() and not laptop.logged_in()
    assert someone().login("staff@demo.test", "demo").status_code == 401
    fresh = someone()
    assert fresh.login("staff@demo.test", "brand-new-pass").status_code == 302 and fresh.logged_in()
    entry = audit("reset password")[0]
    assert (entry.actor, entry.target_id, entry.detail) == ("admin@demo.test", str(user_id),
                                                            {"email": "staff@demo.test"})
    assert "brand-new-pass" not in str(entry.detail)


def test_an_admin_setting_their_own_password_stays_logged_in_and_their_other_sessions_end(admin, someone):
    other = someone()
    other.login("admin@demo.test")
    response = admin.post(f"/users/{account('admin@demo.test').id}/password", password="my-new-password")
    assert response.status_code == 302
    assert admin.logged_in() and not other.logged_in()


def test_a_short_new_password_is_refused(admin):
    staff = account("staff@demo.test")
    response = admin.post(f"/users/{staff.id}/password", password="short")
    assert response.status_code == 422 and "At least 8 characters" in response.get_data(as_text=True)
    assert account("staff@demo.test").check_password("demo") and audit("reset password") == []


def test_the_last_active_admin_cannot_disable_or_demote_themself(admin):
    me = account("admin@demo.test")
    before = audit_count()
    for path, data in ((f"/users/{me.id}/disable", {}), (f"/users/{me.id}/role", {"role": "manager"})):
        response = admin.post(path, **data)
        assert response.status_code == 422, path
        assert "last active admin" in response.get_data(as_text=True)
    me = account("admin@demo.test")
    assert (me.role, me.active) == ("admin", True) and audit_count() == before
    assert admin.logged_in()


def test_a_disabled_admin_does_not_count_as_the_other_admin(admin):
    other = account("manager@demo.test")
    other.role, other.active = "admin", False
    db.session.commit()
    assert admin.post(f"/users/{account('admin@demo.test').id}/disable").status_code == 422


def test_with_another_admin_an_admin_may_step_down(admin):
    assert admin.post(f"/users/{account('manager@demo.test').id}/role", role="admin").status_code == 302
    response = admin.post(f"/users/{account('admin@demo.test').id}/role", role="manager")
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert account("admin@demo.test").role == "manager"
    assert admin.get("/users/").status_code == 403


def test_htmx_posts_get_the_accounts_region_back(admin):
    htmx = {"HX-Request": "true", "HX-Target": "staff-accounts"}
    staff = account("staff@demo.test")
    ok = admin.post(f"/users/{staff.id}/disable", headers=htmx)
    body = ok.get_data(as_text=True)
    assert ok.status_code == 200 and body.lstrip().startswith('<div id="staff-accounts">')
    assert "staff@demo.test is disabled" in body and "<html" not in body
    refused = admin.post("/users/", headers=htmx, email="staff@demo.test", role="staff", password="long-enough")
    assert refused.status_code == 422 and "already exists" in refused.get_data(as_text=True)


def test_a_session_from_before_this_release_is_logged_out(app, client, demo_users):
    with client.session_transaction() as session:
        session["_user_id"] = str(account("admin@demo.test").id)  # the bare id sessions used to keep
        session["_fresh"] = True
    with app.app_context():
        assert client.get("/").status_code == 302


def test_the_command_line_shares_the_rules_and_is_audited(app, runner, demo_users):
    result = runner.invoke(args=["users", "create", "staff@demo.test", "--role", "support", "--password", "pw-2"])
    assert result.exit_code == 0 and "Updated staff@demo.test (support)." in result.output
    assert [e.actor for e in audit("change role") + audit("reset password")] == ["cli", "cli"]
    refused = runner.invoke(args=["users", "create", "admin@demo.test", "--role", "staff", "--password", "pw-3"])
    assert refused.exit_code != 0 and "last active admin" in refused.output
    assert account("admin@demo.test").role == "admin" and account("admin@demo.test").check_password("demo")

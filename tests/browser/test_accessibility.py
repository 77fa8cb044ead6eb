"""axe-core, run in Debian's Chromium through Playwright, finds no accessibility violation on any page.

axe-core comes inside the axe-playwright-python wheel (no download at test time). Each page is checked as the role
that sees the most of it; the login page as nobody.
"""

from __future__ import annotations

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page
from sqlalchemy import select

from dashboard import trends
from dashboard.extensions import db
from dashboard.models import Customer, Rental, Site, Upload, UploadRow
from tests.browser.test_login_overview import log_in

pytestmark = pytest.mark.browser

AXE = Axe()
# Every rule axe-core runs by default (WCAG 2.0, 2.1 and 2.2 A and AA, and best practices).
OPTIONS = {"resultTypes": ["violations"]}


def _paths() -> list[str]:
    rental = db.session.scalar(select(Rental).where(Rental.state == "occupied").order_by(Rental.id))
    customer = db.session.scalar(select(Customer).order_by(Customer.id))
    site = db.session.scalar(select(Site).order_by(Site.id))
    trends.seed_demo()  # so the charts are checked, not only the page's empty state
    paths = ["/", "/failures/", "/work/", "/trends/", f"/trends/?site={site.id}&range=30d", "/sites/",
             f"/sites/{site.id}", "/rentals/", f"/rentals/{rental.id}",
             "/customers/", f"/customers/{customer.id}", "/activity/", "/uploads/", "/settings/", "/users/"]
    return paths + [f"/uploads/{upload_id}" for upload_id in db.session.scalars(select(Upload.id).order_by(Upload.id))]


def _uploads_in_every_state() -> None:
    """An upload being checked, one whose check stopped, a preview, a rejected file, one being applied, one applied:
    each state of the upload page is checked by axe, as every role that may see it."""
    from datetime import datetime

    from dashboard.uploads.check import preview

    rental = db.session.scalar(select(Rental).where(Rental.state == "occupied").order_by(Rental.id))
    common = dict(filename="pushes.csv", uploaded_by="support@demo.test", row_count=1)
    uploads = [Upload(status="checking", checked=0, data=b"id\n", progress_at=datetime.now(), **common),
               Upload(status="checking", data=b"id\n", problem="The check stopped (OperationalError).", **common),
               Upload(status="ready", **common),
               Upload(status="rejected", error_count=1, errors=[{"line": 2, "message": "bad id"}], **common),
               Upload(status="applying", confirmed_by="support@demo.test", confirmed_at=datetime.now(),
                      progress_at=datetime.now(), **common),
               Upload(status="applied", confirmed_by="support@demo.test", confirmed_at=datetime.now(), **common)]
    db.session.add_all(uploads)
    db.session.flush()
    for upload in uploads:
        if upload.status in ("ready", "applying", "applied"):
            db.session.add(UploadRow(upload_id=upload.id, line=2, rental_id=rental.id, action="push"))
    db.session.flush()
    uploads[2].preview = preview(uploads[2].id)
    db.session.commit()


def _violations(page: Page) -> list[str]:
    results = AXE.run(page, options=OPTIONS)
    return [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
            for v in results.response["violations"]]


def test_the_login_page_has_no_accessibility_violation(page: Page, url):
    page.goto(url("/login"))
    assert _violations(page) == []


@pytest.mark.parametrize("role", ["admin", "manager", "staff", "support"])
def test_every_page_has_no_accessibility_violation(page: Page, url, role):
    _uploads_in_every_state()
    log_in(page, url, f"{role}@demo.test")
    found = {}
    for path in _paths():
        answer = page.goto(url(path))
        if answer.status == 403:  # a page this role may not see (its 403 page is checked below)
            continue
        assert answer.ok, f"{path} answered {answer.status}"
        if violations := _violations(page):
            found[path] = violations
    page.goto(url("/no-such-page"))
    if violations := _violations(page):
        found["404"] = violations
    assert found == {}

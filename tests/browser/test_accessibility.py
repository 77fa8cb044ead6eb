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
from dashboard.models import Customer, Rental, Site, Upload
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
    upload = db.session.scalar(select(Upload).order_by(Upload.id))
    return paths + ([f"/uploads/{upload.id}"] if upload else [])


def _violations(page: Page) -> list[str]:
    results = AXE.run(page, options=OPTIONS)
    return [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
            for v in results.response["violations"]]


def test_the_login_page_has_no_accessibility_violation(page: Page, url):
    page.goto(url("/login"))
    assert _violations(page) == []


@pytest.mark.parametrize("role", ["admin", "manager", "staff", "support"])
def test_every_page_has_no_accessibility_violation(page: Page, url, role):
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

"""Each role opens Trends in a real browser: a day's pushes and their event-to-gate time, then a month at one site,
the figures behind each chart in a table, and nothing the page's CSP refuses."""

import os
from datetime import timedelta

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from dashboard import trends
from dashboard.extensions import db
from dashboard.models import Site, utcnow
from tests.browser.test_login_overview import log_in

pytestmark = pytest.mark.browser

SCREENSHOTS = os.environ.get("TRENDS_SCREENSHOTS")  # a folder: the test leaves the page there


@pytest.mark.parametrize("role", ["admin", "manager", "staff", "support"])
def test_each_role_reads_a_days_trend_then_a_month_at_one_site(page: Page, url, role):
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    assert trends.seed_demo(utcnow() - timedelta(hours=1))  # history up to the hour before last
    hilltop = db.session.scalar(select(Site).where(Site.code == "hilltop"))
    log_in(page, url, f"{role}@demo.test")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Trends").click()
    expect(page.get_by_role("heading", name="Trends", exact=True)).to_be_visible()
    expect(page.locator("[data-demo-until]")).to_contain_text("made-up history")
    counts = page.get_by_role("img", name="Pushes and failures per hour at every site, the last 24 hours")
    expect(counts).to_be_visible()
    expect(page.get_by_role("img", name="Event to gate per hour at every site, the last 24 hours")).to_be_visible()
    assert int(page.locator('[data-total="pushes"]').inner_text()) > 0
    table = page.locator('[data-table="counts"]')
    expect(table).to_be_hidden()  # folded away under its chart until asked for
    page.get_by_text("The figures behind this chart").first.click()
    expect(table).to_be_visible()
    expect(table.locator("tbody tr")).to_have_count(24)
    if SCREENSHOTS:
        page.screenshot(path=os.path.join(SCREENSHOTS, f"trends-{role}.png"), full_page=True)

    page.get_by_role("link", name="Last 30 days, per day").click()
    page.get_by_label("Site", exact=True).select_option(label=hilltop.title)
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("img", name="Pushes and failures per day at Hilltop Lockers, the last 30 days")
           ).to_be_visible()
    expect(page.get_by_role("link", name="Last 30 days, per day")).to_have_attribute("aria-current", "page")
    expect(page.locator('[data-table="latency"] tbody tr')).to_have_count(30)
    assert int(page.locator('[data-total="failures"]').inner_text()) > 0  # the demo's broken password, these days
    assert errors == [], f"the page logged errors (CSP or script): {errors}"

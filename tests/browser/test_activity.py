"""Staff open Activity in a real browser, narrow the sync journal to the failed pushes, and export what they see."""

import csv
import io
import os
import re
from datetime import timedelta

import pytest
from playwright.sync_api import Page, expect

from dashboard.extensions import db
from tests.browser.test_login_overview import log_in
from tests.test_activity import DAY, account, attempt, empty_journal

pytestmark = pytest.mark.browser

SCREENSHOTS = os.environ.get("ACTIVITY_SCREENSHOTS")  # a folder: the test leaves the filtered page there


def test_staff_filter_the_journal_by_outcome_and_export_the_same_rows(page: Page, url):
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    empty_journal()
    north, river = account("northgate"), account("riverside")
    for hour, (acct, outcome) in enumerate([(north, "ok"), (river, "failed"), (north, "noop"), (river, "ok"),
                                            (north, "failed")]):
        attempt(acct, DAY + timedelta(hours=hour), "relay", outcome,
                reason="invalid_unit_name" if outcome == "failed" else None)
    db.session.commit()
    log_in(page, url, "staff@demo.test")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Activity").click()
    expect(page.get_by_role("heading", name="Activity", exact=True)).to_be_visible()
    expect(page.locator("[data-total]")).to_have_text("5 pushes, newest first")
    expect(page.locator("tr[data-attempt-id]")).to_have_count(5)

    page.get_by_label("Outcome").select_option("failed")
    expect(page.locator("[data-total]")).to_have_text("2 pushes matching the filters, newest first")
    expect(page.locator("tr[data-attempt-id]")).to_have_count(2)
    expect(page.locator('tr[data-outcome="failed"]')).to_have_count(2)
    expect(page).to_have_url(re.compile(r"/activity/\?.*outcome=failed"))  # the filter is in the address
    link = page.get_by_role("link", name="Export these 2 rows as CSV")
    if SCREENSHOTS:
        page.screenshot(path=os.path.join(SCREENSHOTS, "activity-failed.png"), full_page=True)
    expect(link).to_have_attribute("href", re.compile(r"^/activity/export\.csv\?(.*&)?outcome=failed(&|$)"))

    with page.expect_download() as download:
        link.click()
    body = download.value.path().read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [r["outcome"] for r in rows] == ["failed", "failed"]
    assert [r["site_code"] for r in rows] == ["northgate", "riverside"]
    assert errors == [], f"the page logged errors (CSP or script): {errors}"

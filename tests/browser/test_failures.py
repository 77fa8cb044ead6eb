"""Staff open the Failures page in a real browser, find the site whose credentials PTI refused, and retry it all."""

import os

import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_login_overview import log_in
from tests.test_failures import fail_unit, park

pytestmark = pytest.mark.browser

SCREENSHOTS = os.environ.get("FAILURES_SCREENSHOTS")  # a folder: the test leaves its before and after there


def test_staff_retry_every_customer_of_a_cause_after_confirming_the_count(page: Page, url):
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    parked = park("hilltop", "invalid_credentials")
    fail_unit("northgate")
    log_in(page, url, "staff@demo.test")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Failures").click()
    expect(page.get_by_role("heading", name="Failures", exact=True)).to_be_visible()
    group = page.locator('[data-cause="invalid_credentials"]')
    count = int(group.get_attribute("data-count"))
    assert count >= len(parked) > 0
    expect(group).to_contain_text("PTI refused the site's credentials.")
    expect(group.locator("tr[data-rental-id]")).to_have_count(min(count, 10))  # a glance; "See all" for the rest
    if count > 10:
        expect(group.get_by_role("link", name=f"See all {count}, 50 a page →")).to_be_visible()
    if SCREENSHOTS:
        page.screenshot(path=os.path.join(SCREENSHOTS, "failures.png"), full_page=True)
    asked = []

    def confirm(dialog):
        asked.append(dialog.message)
        dialog.accept()

    page.once("dialog", confirm)
    group.get_by_role("button", name=f"Retry all {count}").click()
    expect(page.locator("#failures-result")).to_contain_text(f"{len(parked)} customers queued again")
    assert asked and asked[0].startswith(f"Retry all {count} failed rentals?")
    expect(group).to_have_count(0)  # the list refreshed itself: those rentals are pending now
    expect(page.locator('[data-cause="invalid_unit_name"]')).to_have_attribute("data-count", "1")
    if SCREENSHOTS:
        page.screenshot(path=os.path.join(SCREENSHOTS, "failures-retried.png"), full_page=True)
    assert errors == [], f"the page logged errors (CSP or script): {errors}"

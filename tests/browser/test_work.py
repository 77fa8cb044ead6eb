"""A manager opens the Work page in a real browser and watches a queue's depth change without reloading."""

import os

import pytest
from playwright.sync_api import Page, expect
from rq import Queue

from dashboard.jobqueue import RECONCILE, URGENT, get_redis
from tests.browser.test_login_overview import log_in

pytestmark = pytest.mark.browser

SCREENSHOTS = os.environ.get("WORK_SCREENSHOTS")  # a folder: the test leaves the page there


def test_a_manager_sees_the_urgent_queue_grow_without_reloading(page: Page, url):
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    log_in(page, url, "manager@demo.test")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Work").click()
    expect(page.get_by_role("heading", name="Work", exact=True)).to_be_visible()
    urgent = page.locator('#queues tr[data-queue="urgent"]')
    expect(urgent).to_have_attribute("data-depth", "0")
    expect(page.locator("#workers")).to_have_count(0)  # no worker in this test: said, not tabled
    expect(page.locator('[data-outage="workers"]')).to_be_visible()
    page.evaluate("window.workPageLoaded = true")
    queue = Queue(URGENT, connection=get_redis())
    for account_id in (1, 2):
        queue.enqueue(RECONCILE, account_id)
    expect(urgent).to_have_attribute("data-depth", "2", timeout=6000)
    assert page.evaluate("window.workPageLoaded") is True, "the figures changed in place, not by a reload"
    expect(page.get_by_role("button", name="Run the relay now")).to_have_count(0)  # managers read, admins act
    if SCREENSHOTS:
        page.screenshot(path=os.path.join(SCREENSHOTS, "work.png"), full_page=True)
    assert errors == [], f"the page logged errors (CSP or script): {errors}"

"""An admin creates a staff account on the Users page, the new person logs in, and the admin disables the account:
the person's open session ends on their next page, in a real browser."""

import re

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.test_login_overview import log_in

pytestmark = pytest.mark.browser


def test_an_admin_creates_an_account_then_disables_it_and_its_session_ends(page: Page, browser: Browser, url):
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda dialog: dialog.accept())
    log_in(page, url, "admin@demo.test")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Users").click()
    expect(page.get_by_role("heading", name="Users", exact=True)).to_be_visible()

    page.get_by_label("E-mail").fill("robin@example.com")
    page.get_by_label("Name").fill("Robin")
    page.get_by_label("Role", exact=True).select_option("support")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_text("Account robin@example.com created (support).")).to_be_visible()
    password = page.locator("[data-password]").inner_text()
    assert len(password) >= 12
    row = page.locator('tr[data-email="robin@example.com"]')
    expect(row).to_have_attribute("data-active", "yes")

    robin = browser.new_context().new_page()
    log_in(robin, url, "robin@example.com", password)
    expect(robin.get_by_role("heading", name="Overview")).to_be_visible()

    row.get_by_role("button", name="Disable robin@example.com").click()
    expect(page.get_by_text("robin@example.com is disabled")).to_be_visible()
    expect(page.locator('tr[data-email="robin@example.com"]')).to_have_attribute("data-active", "no")
    expect(page.locator("[data-password]")).to_have_count(0)  # shown once, gone with the next answer

    robin.goto(url("/rentals/"))
    expect(robin).to_have_url(re.compile(r"/login"))
    log_in(robin, url, "robin@example.com", password)
    expect(robin.get_by_role("alert")).to_have_text("Wrong e-mail or password.")
    robin.context.close()
    assert errors == [], f"the page logged errors (CSP or script): {errors}"

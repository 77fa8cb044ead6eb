"""A manager logs in, sees every demo site on the Overview, searches rentals and logs out, in a real browser."""

import re

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser


def log_in(page: Page, url, email: str, password: str = "demo") -> None:
    page.goto(url("/login"))
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_manager_logs_in_sees_the_sites_and_logs_out(page: Page, url):
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    log_in(page, url, "manager@demo.test")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    tiles = page.locator("[data-site-id]")
    expect(tiles).to_have_count(3)
    for title in ("Northgate Self Storage", "Riverside Storage", "Hilltop Lockers"):
        expect(page.get_by_role("link", name=title)).to_be_visible()
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_text("You are logged out.")).to_be_visible()
    page.goto(url("/"))
    expect(page).to_have_url(re.compile(r"/login"))
    assert errors == [], f"the page logged errors (CSP or script): {errors}"


def test_wrong_password_is_refused_in_the_browser(page: Page, url):
    log_in(page, url, "manager@demo.test", "not-the-password")
    expect(page.get_by_role("alert")).to_have_text("Wrong e-mail or password.")


def test_rental_search_narrows_the_table_as_you_type(page: Page, url):
    log_in(page, url, "staff@demo.test")
    page.get_by_role("link", name="Rentals").click()
    rows = page.locator("tr[data-rental-id]")
    expect(rows).to_have_count(50)
    page.get_by_label("Search").fill("LOCKER")
    expect(rows).to_have_count(1)
    expect(page).to_have_url(re.compile(r"q=LOCKER"))

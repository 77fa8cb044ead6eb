"""A manager compares a rental with PTI in a real browser after someone locked its unit by hand in PTI."""

import os

import pytest
from playwright.sync_api import Page, expect

from dashboard.engine.intent import mark_dirty
from dashboard.engine.reconcile import reconcile
from dashboard.extensions import db
from sim.demo_data import DEMO_SITES
from tests.browser.test_login_overview import log_in
from tests.engine.conftest import by_hand, customer_with, pti, pti_server, site  # noqa: F401 - the live PTI simulator

pytestmark = pytest.mark.browser

SCREENSHOTS = os.environ.get("PTI_SCREENSHOTS")  # a folder: the test leaves what the manager saw there


def test_a_manager_checks_pti_now_and_sees_the_unit_locked_by_hand(page: Page, url, pti):  # noqa: F811
    northgate = site("northgate")
    northgate.pti_base_url = pti.url  # the demo business points nowhere; this site talks to the live simulator
    db.session.commit()
    customer = customer_with(1, overdue=False)
    account = mark_dirty(customer, northgate.id)
    db.session.commit()
    assert reconcile(account.id, "test").outcome == "ok"
    rental = customer.rentals[0]
    unit = rental.unit.pti_unit_name
    with by_hand(pti) as in_pti:
        in_pti.lock_unit(unit)
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    log_in(page, url, "manager@demo.test")
    page.goto(url(f"/rentals/{rental.id}"))
    page.get_by_role("button", name="Check PTI now").click()

    check = page.locator("#pti-check .pti-check")
    expect(check).to_have_attribute("data-differences", "1")
    row = check.locator("tr", has=page.get_by_role("rowheader", name=f"Unit {unit}"))
    expect(row).to_contain_text("rented to this user, unlocked")
    expect(row).to_contain_text("rented to this user, locked")
    expect(row).to_contain_text("differs")
    expect(check).to_contain_text(f"The next push would: unlock {unit}.")
    if SCREENSHOTS:
        page.screenshot(path=os.path.join(SCREENSHOTS, "pti-beside-us.png"), full_page=True)
    assert pti.unit(DEMO_SITES[0].pti_site_code, unit)["locked"] is True  # the check changed nothing
    assert errors == []

"""Support uploads CSV pushes in a real browser: a good file is marked for a push, a bad one lists its errors."""

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from dashboard.extensions import db
from dashboard.models import Rental
from tests.browser.test_login_overview import log_in

pytestmark = pytest.mark.browser

HEADER = "id,customFields.pti_synced"


def demo_rental_ids(n: int) -> list[str]:
    return db.session.scalars(select(Rental.sg_id).where(Rental.state == "occupied").order_by(Rental.id).limit(n)).all()


def upload(page: Page, url, text: str) -> None:
    log_in(page, url, "support@demo.test")
    page.get_by_role("link", name="Uploads").click()
    page.once("dialog", lambda dialog: dialog.accept())  # hx-confirm: "Mark every rental in this file…"
    page.get_by_label("CSV file").set_input_files(
        files=[{"name": "pushes.csv", "mimeType": "text/csv", "buffer": text.encode()}])
    page.get_by_role("button", name="Upload and push").click()


def test_support_uploads_a_good_file_and_sees_it_marked_for_a_push(page: Page, url):
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    ids = demo_rental_ids(3)
    upload(page, url, f"{HEADER}\r\n" + "".join(f"{i},2023-08-17T19:03:12.008Z\r\n" for i in ids))
    expect(page.get_by_role("heading", name="3 rentals marked for a push")).to_be_visible()
    expect(page.locator("#upload-progress [data-count=pending]")).to_have_text("3")
    expect(page.locator("#upload-history tr[data-upload-id]")).to_have_count(1)  # the history refreshed itself
    expect(page.locator("#upload-history")).to_contain_text("Applied")
    assert "/uploads" in page.url and errors == [], errors


def test_support_uploads_a_bad_file_and_sees_its_errors_by_line(page: Page, url):
    good, = demo_rental_ids(1)
    upload(page, url, f"{HEADER}\n{good},\n{good},\nnot-an-id,yesterday\n")
    expect(page.get_by_role("heading", name="Nothing was applied: 3 errors in pushes.csv")).to_be_visible()
    rows = page.locator("#upload-errors tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text(f"3rental {good} is already on line 2")
    expect(rows.nth(1)).to_contain_text('4id "not-an-id" is not a Storeganise rental id')
    expect(rows.nth(2)).to_contain_text('4customFields.pti_synced "yesterday" is not a date and time')
    expect(page.locator("#upload-history")).to_contain_text("Rejected: 3 errors")

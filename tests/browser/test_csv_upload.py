"""CSV pushes in a real browser: the upload's check fills in a preview, Confirm marks it, a bad file lists its errors.

No worker runs beside the live server: the test plays the worker (run_upload_jobs) while the page polls.
"""

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from dashboard.extensions import db
from dashboard.models import Rental
from tests.browser.test_login_overview import log_in
from tests.test_csv_upload import run_upload_jobs

pytestmark = pytest.mark.browser

HEADER = "id,customFields.pti_synced"


def demo_rental_ids(n: int) -> list[str]:
    return db.session.scalars(select(Rental.sg_id).where(Rental.state == "occupied").order_by(Rental.id).limit(n)).all()


def upload(page: Page, url, text: str, who: str = "support@demo.test") -> None:
    log_in(page, url, who)
    page.get_by_role("link", name="Uploads").click()
    page.get_by_label("CSV file").set_input_files(
        files=[{"name": "pushes.csv", "mimeType": "text/csv", "buffer": text.encode()}])
    # Until the upload's answer is in: the job it enqueues must be in the queue before the test plays the worker.
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/uploads/")):
        page.get_by_role("button", name="Upload and check").click()


@pytest.mark.parametrize("role", ["support", "admin"])
def test_an_upload_is_checked_previewed_then_confirmed_and_marked(page: Page, url, role):
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    ids = demo_rental_ids(3)
    upload(page, url, f"{HEADER}\r\n" + "".join(f"{i},2023-08-17T19:03:12.008Z\r\n" for i in ids),
           who=f"{role}@demo.test")
    expect(page.get_by_role("heading", name="Checking pushes.csv")).to_be_visible()
    expect(page.get_by_role("progressbar", name="Rows checked")).to_be_visible()
    run_upload_jobs()  # the worker checks the file; the page's next poll shows the preview
    expect(page.get_by_role("heading", name="Preview: 3 rows checked, nothing changed yet")).to_be_visible()
    expect(page.locator("#upload-history")).to_contain_text("Ready to confirm")  # the history refreshed itself
    page.once("dialog", lambda dialog: dialog.accept())  # hx-confirm: "Mark the 3 rentals of pushes.csv…"
    page.get_by_role("button", name="Confirm and push").click()
    expect(page.get_by_role("heading", name="Marking 3 rentals for a push")).to_be_visible()
    run_upload_jobs()
    expect(page.get_by_role("heading", name="3 rentals marked for a push")).to_be_visible()
    expect(page.locator("#upload-progress [data-count=pending]")).to_have_text("3")
    expect(page.locator("#upload-history tr[data-upload-id]")).to_have_count(1)
    expect(page.locator("#upload-history")).to_contain_text("Applied")
    assert "/uploads" in page.url and errors == [], errors


def test_a_manager_reads_the_preview_without_a_confirm_button(page: Page, url):
    ids = demo_rental_ids(2)
    upload(page, url, f"{HEADER}\n" + "".join(f"{i},\n" for i in ids))
    run_upload_jobs()
    expect(page.get_by_role("heading", name="Preview: 2 rows checked, nothing changed yet")).to_be_visible()
    page.get_by_role("button", name="Log out").click()
    log_in(page, url, "manager@demo.test")
    page.get_by_role("link", name="Uploads").click()
    page.get_by_role("link", name="Details").first.click()
    expect(page.get_by_role("heading", name="Preview: 2 rows checked, nothing changed yet")).to_be_visible()
    expect(page.get_by_role("button", name="Confirm and push")).to_have_count(0)
    expect(page.get_by_text("Support or an admin confirms the preview.")).to_be_visible()


def test_support_uploads_a_bad_file_and_sees_its_errors_by_line(page: Page, url):
    good, = demo_rental_ids(1)
    upload(page, url, f"{HEADER}\n{good},\n{good},\nnot-an-id,yesterday\n")
    run_upload_jobs()
    expect(page.get_by_role("heading", name="Nothing was applied: 3 errors in pushes.csv")).to_be_visible()
    rows = page.locator("#upload-errors tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text(f"3rental {good} is already on line 2")
    expect(rows.nth(1)).to_contain_text('4id "not-an-id" is not a Storeganise rental id')
    expect(rows.nth(2)).to_contain_text('4customFields.pti_synced "yesterday" is not a date and time')
    expect(page.locator("#upload-history")).to_contain_text("Rejected: 3 errors")

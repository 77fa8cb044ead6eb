"""Bulk CSV pushes on the Uploads page (behaviour 10, R9): all or nothing, line-numbered errors, progress, export."""

from __future__ import annotations

import csv
import html as markup
import io
from datetime import datetime

import pytest
from rq import Queue
from sqlalchemy import select
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from dashboard.engine.intent import account_for
from dashboard.extensions import db
from dashboard.jobqueue import BULK, DEFAULT, URGENT, get_redis
from dashboard.models import AuditEntry, PtiAccount, Rental, SyncState, Upload, UploadRow

HTMX = {"HX-Request": "true", "HX-Target": "upload-result"}
HEADER = "id,customFields.pti_synced"
SYNCED = "2023-08-17T19:03:12.008Z"


def demo_rentals(n: int) -> list[Rental]:
    """n occupied rentals of different customers (so each row is its own PTI account)."""
    picked: dict[int, Rental] = {}
    for rental in db.session.scalars(select(Rental).where(Rental.state == "occupied").order_by(Rental.id)):
        picked.setdefault(rental.customer_id, rental)
        if len(picked) == n:
            break
    return list(picked.values())


def post_csv(client, auth, data: bytes, filename: str = "pushes.csv", headers: dict | None = HTMX):
    """The body is built in memory: the test client would spool a large one to a file it never closes."""
    token = auth.csrf_token("/uploads/")
    boundary, body = encode_multipart({"csrf_token": token,
                                       "file": FileStorage(io.BytesIO(data), filename, content_type="text/csv")})
    return client.post("/uploads/", data=body, content_type=f"multipart/form-data; boundary={boundary}",
                       headers=headers or {})


def queued(name: str) -> list[tuple]:
    return [tuple(job.args) for job in Queue(name, connection=get_redis()).jobs]


def snapshot() -> dict:
    """Everything an upload could change: the mirror, the PTI accounts, the upload rows and the queues."""
    db.session.expire_all()
    return {
        "rentals": [(r.sg_id, r.pti_synced, r.overlocked, r.sync_state) for r in
                    db.session.scalars(select(Rental).order_by(Rental.id))],
        "accounts": [(a.id, a.generation, a.state, a.urgent) for a in
                     db.session.scalars(select(PtiAccount).order_by(PtiAccount.id))],
        "upload_rows": db.session.scalars(select(UploadRow.id)).all(),
        "queued": [queued(name) for name in (URGENT, DEFAULT, BULK)],
    }


@pytest.fixture
def support(auth, demo_business):
    auth.login("support")
    return auth


def test_a_good_file_marks_its_rentals_for_a_push(client, support):
    rentals = demo_rentals(3)
    before = {r.id: account_for(r.customer_id, r.site_id).generation for r in rentals}
    db.session.commit()
    data = f"{HEADER}\n{rentals[0].sg_id},{SYNCED}\n{rentals[1].sg_id},\n{rentals[2].sg_id},{SYNCED}\n".encode()
    response = post_csv(client, support, data)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and response.headers["HX-Trigger"] == "uploadsChanged"
    assert "<html" not in html and "3 rentals marked for a push" in html and 'hx-trigger="every 1s"' in html

    upload = db.session.scalars(select(Upload)).one()
    assert (upload.status, upload.row_count, upload.filename, upload.uploaded_by) == (
        "applied", 3, "pushes.csv", "support@demo.test")
    db.session.expire_all()
    assert db.session.get(Rental, rentals[0].id).pti_synced == datetime(2023, 8, 17, 19, 3, 12, 8000)
    assert db.session.get(Rental, rentals[1].id).pti_synced == rentals[1].pti_synced
    for r in rentals:
        account = account_for(r.customer_id, r.site_id)
        assert account.generation > before[r.id] and account.state == SyncState.PENDING
        assert db.session.get(Rental, r.id).sync_state == SyncState.PENDING
    trigger = f"csv:{upload.id}"
    assert sorted(queued(BULK)) == sorted((account_for(r.customer_id, r.site_id).id, trigger) for r in rentals)
    assert queued(URGENT) == [] and queued(DEFAULT) == []
    assert [row.line for row in db.session.scalars(select(UploadRow).order_by(UploadRow.line))] == [2, 3, 4]
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "csv upload")).one()
    assert (entry.actor, entry.target_type, entry.target_id, entry.outcome) == (
        "support@demo.test", "upload", str(upload.id), "applied")
    assert entry.detail["rows"] == 3


def test_a_lock_change_is_pushed_on_the_urgent_queue(client, support):
    locked, same = demo_rentals(2)
    locked.overlocked = same.overlocked = False
    db.session.commit()
    data = (f"{HEADER},customFields.pti_overlocked\r\n{locked.sg_id},,TRUE\r\n{same.sg_id},,no\r\n").encode()
    assert post_csv(client, support, data).status_code == 200
    db.session.expire_all()
    assert db.session.get(Rental, locked.id).overlocked is True
    assert db.session.get(Rental, same.id).overlocked is False
    urgent_account = account_for(locked.customer_id, locked.site_id)
    assert urgent_account.urgent is True
    assert [args[0] for args in queued(URGENT)] == [urgent_account.id]
    assert [args[0] for args in queued(BULK)] == [account_for(same.customer_id, same.site_id).id]


def test_a_bom_and_crlf_file_from_excel_is_applied(client, support):
    (rental,) = demo_rentals(1)
    data = f"\ufeff{HEADER}\r\n{rental.sg_id},{SYNCED}\r\n".encode()
    assert post_csv(client, support, data).status_code == 200
    assert db.session.scalars(select(Upload.status)).one() == "applied"


def bad_files() -> list:
    def build(rentals):
        a, b = rentals[0].sg_id, rentals[1].sg_id
        return {
            "wrong headers": (f"rental_id,pti_synced\n{a},{SYNCED}\n".encode(),
                              ["the header must name the columns id and customFields.pti_synced"], [1]),
            "unknown id": (f"{HEADER}\n{a},{SYNCED}\nffffffffffffffffffffffff,\n".encode(),
                           ["no rental with id ffffffffffffffffffffffff is known here"], [3]),
            "bad date": (f"{HEADER}\n{a},{SYNCED}\n{b},2023-13-01T00:00:00Z\n".encode(),
                         ['customFields.pti_synced "2023-13-01T00:00:00Z" is not a date and time'], [3]),
            "duplicate": (f"{HEADER}\n{a},\n{b},\n{a},{SYNCED}\n".encode(),
                          [f"rental {a} is already on line 2"], [4]),
            "empty": (b"", ["The file is empty."], [None]),
            "no rows": (f"{HEADER}\r\n".encode(), ["The file has a header but no data rows"], [None]),
            "non-utf8": (f"{HEADER}\n{a},\n".encode() + b"caf\xe9,\n",
                         ["this is not UTF-8 text (byte 4 of the line, 0xE9)"], [3]),
            "formula": (f'{HEADER}\n{a},\n"=HYPERLINK(""http://evil.test"")",\n'.encode(),
                        ["starts with =, which a spreadsheet would run as a formula"], [3]),
            "bad boolean": (f"{HEADER},customFields.pti_overlocked\n{a},,maybe\n".encode(),
                            ['customFields.pti_overlocked "maybe" must be true or false'], [2]),
            "bom and crlf with an error": (f"\ufeff{HEADER}\r\n{a},\r\n{b},yesterday\r\n".encode(),
                                           ['"yesterday" is not a date and time'], [3]),
        }
    return build


CASES = ["wrong headers", "unknown id", "bad date", "duplicate", "empty", "no rows", "non-utf8", "formula",
         "bad boolean", "bom and crlf with an error"]


@pytest.mark.parametrize("case", CASES)
def test_a_bad_file_lists_its_errors_by_line_and_changes_nothing(client, support, case):
    data, messages, lines = bad_files()(demo_rentals(2))[case]
    before = snapshot()
    response = post_csv(client, support, data)
    html = response.get_data(as_text=True)
    assert response.status_code == 422 and "<html" not in html
    assert "Nothing was applied" in html
    for message in messages:
        assert message in markup.unescape(html)
    upload = db.session.scalars(select(Upload)).one()
    assert upload.status == "rejected" and [e["line"] for e in upload.errors] == lines
    for line in lines:
        assert f'<tr data-line="{line or ""}"><td>{line or "—"}</td>' in html
    assert snapshot() == before
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "csv upload")).one()
    assert entry.outcome == "rejected" and entry.target_id == str(upload.id)


def test_every_error_of_a_file_is_listed_not_only_the_first(client, support):
    a, b = (r.sg_id for r in demo_rentals(2))
    data = f"{HEADER}\n{a},soon\n{b},\n{'0' * 24},\n{a},\n".encode()
    html = post_csv(client, support, data).get_data(as_text=True)
    assert "3 errors" in html
    for line in (2, 4, 5):
        assert f'data-line="{line}"' in html
    assert 'data-line="3"' not in html


def test_a_lock_change_on_an_ended_rental_is_refused(client, support):
    ended, good = demo_rentals(2)
    ended.state, ended.overlocked = "ended", False
    db.session.commit()
    before = snapshot()
    data = f"{HEADER},customFields.pti_overlocked\n{good.sg_id},,true\n{ended.sg_id},,true\n".encode()
    text = markup.unescape(post_csv(client, support, data).get_data(as_text=True))
    assert f"rental {ended.sg_id} is ended; only a reserved or occupied rental can be suspended" in text
    assert snapshot() == before


def test_a_file_over_the_size_limit_gets_a_clear_413_and_nothing_is_recorded(app, client, support):
    limit = app.config["MAX_CONTENT_LENGTH"]
    data = (HEADER + "\n").encode() + b"x" * limit
    response = post_csv(client, support, data)
    html = response.get_data(as_text=True)
    assert response.status_code == 413 and "<html" not in html
    assert f"The file is too large: an upload takes at most {limit / 1048576:g} MB" in html
    page = post_csv(client, support, data, headers=None)
    assert page.status_code == 413 and "<html" in page.get_data(as_text=True)
    assert "The file is too large" in page.get_data(as_text=True)
    assert db.session.scalars(select(Upload)).all() == []


def test_an_upload_without_a_file_is_refused(client, support):
    token = support.csrf_token("/uploads/")
    response = client.post("/uploads/", data={"csrf_token": token}, headers=HTMX)
    assert response.status_code == 422 and "Choose a CSV file to upload." in response.get_data(as_text=True)
    assert db.session.scalars(select(Upload)).all() == []


def test_without_htmx_the_upload_redirects_to_its_page(client, support):
    (rental,) = demo_rentals(1)
    response = post_csv(client, support, f"{HEADER}\n{rental.sg_id},\nnope,\n".encode(), headers=None)
    upload = db.session.scalars(select(Upload)).one()
    assert response.status_code == 303 and response.headers["Location"].endswith(f"/uploads/{upload.id}")
    html = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Nothing was applied: 1 error" in html and '<tr data-line="3"><td>3</td>' in html


def test_managers_see_past_uploads_but_cannot_upload(client, auth, demo_business):
    (rental,) = demo_rentals(1)
    auth.login("support")
    post_csv(client, auth, f"{HEADER}\n{rental.sg_id},\n".encode(), filename="first.csv")
    post_csv(client, auth, b"", filename="second.csv")
    auth.logout()
    auth.login("manager")
    page = client.get("/uploads/").get_data(as_text=True)
    assert 'type="file"' not in page and "Uploading is for support and admins" in page
    assert page.index("second.csv") < page.index("first.csv")  # newest first
    assert "Applied" in page and "Rejected: 1 error" in page
    before = snapshot()
    response = post_csv(client, auth, f"{HEADER}\n{rental.sg_id},\n".encode())
    assert response.status_code == 403
    assert snapshot() == before and len(db.session.scalars(select(Upload)).all()) == 2


def test_the_history_region_refreshes_alone(client, support):
    html = client.get("/uploads/", headers={"HX-Request": "true", "HX-Target": "upload-history"}).get_data(
        as_text=True)
    assert "<html" not in html and 'id="upload-history"' in html and "No upload yet." in html


def test_the_progress_region_counts_states_and_stops_polling_when_done(client, support):
    rentals = demo_rentals(4)
    post_csv(client, support, (HEADER + "\n" + "".join(f"{r.sg_id},\n" for r in rentals)).encode())
    upload = db.session.scalars(select(Upload)).one()
    states = [SyncState.IN_SYNC, SyncState.FAILED, SyncState.SYNCING, SyncState.UNMAPPED]
    for rental, state in zip(rentals, states, strict=True):
        db.session.get(Rental, rental.id).sync_state = state
    db.session.commit()
    response = client.get(f"/uploads/{upload.id}/progress", headers={"HX-Request": "true"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and 'hx-trigger="every 1s"' in html
    for name, figure in (("in_sync", 1), ("pending", 1), ("failed", 1), ("not_synced", 1)):
        assert f'data-count="{name}">{figure}<' in html
    db.session.get(Rental, rentals[2].id).sync_state = SyncState.IN_SYNC
    db.session.commit()
    response = client.get(f"/uploads/{upload.id}/progress", headers={"HX-Request": "true"})
    html = response.get_data(as_text=True)
    assert response.status_code == 286 and "every 1s" not in html
    assert 'data-count="in_sync">2<' in html and "Done, with failures" in html


def test_the_upload_page_lists_each_row_with_its_state_and_problem(client, support):
    ok, failing = demo_rentals(2)
    post_csv(client, support, f"{HEADER}\n{ok.sg_id},{SYNCED}\n{failing.sg_id},\n".encode())
    upload = db.session.scalars(select(Upload)).one()
    db.session.get(Rental, failing.id).sync_state = SyncState.FAILED
    db.session.get(Rental, failing.id).last_error = "invalid_credentials"
    db.session.commit()
    html = client.get(f"/uploads/{upload.id}").get_data(as_text=True)
    assert html.count("data-rental-id=") == 2 and failing.unit.name in html and failing.customer.name in html
    assert "PTI refused the site's credentials." in markup.unescape(html)
    only_failed = client.get(f"/uploads/{upload.id}?state=failed",
                             headers={"HX-Request": "true", "HX-Target": "upload-rows"}).get_data(as_text=True)
    assert "<html" not in only_failed and only_failed.count("data-rental-id=") == 1
    assert f'data-rental-id="{failing.id}"' in only_failed


def test_the_results_export_escapes_cells_that_would_run_as_formulas(client, support):
    ok, evil = demo_rentals(2)
    evil.customer.first_name, evil.customer.last_name = "=HYPERLINK(\"http://evil.test\")", ""
    db.session.commit()
    post_csv(client, support, f"{HEADER}\n{ok.sg_id},\n{evil.sg_id},\n".encode())
    upload = db.session.scalars(select(Upload)).one()
    db.session.get(Rental, evil.id).last_error = "invalid_credentials"
    db.session.commit()
    response = client.get(f"/uploads/{upload.id}/results.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    text = response.get_data(as_text=True)
    assert text.startswith("\ufeffline,id,")
    rows = list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"))))
    assert [row["id"] for row in rows] == [ok.sg_id, evil.sg_id]
    assert rows[1]["customer"] == "'=HYPERLINK(\"http://evil.test\")"
    assert rows[1]["problem"] == "PTI refused the site's credentials."
    assert rows[1]["sync_state"] == "Pending"
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row.values())


def test_a_rejected_upload_exports_its_errors(client, support):
    post_csv(client, support, f'{HEADER}\n"=1+1",\n'.encode())
    upload = db.session.scalars(select(Upload)).one()
    rows = list(csv.reader(io.StringIO(client.get(f"/uploads/{upload.id}/results.csv").get_data(as_text=True))))
    assert rows[0] == ["\ufeffline", "error"] and rows[1][0] == "2"
    assert "starts with =" in rows[1][1] and not rows[1][1].startswith("=")

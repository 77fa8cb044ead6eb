"""Bulk CSV pushes on the Uploads page (behaviour 10, R9): the request stores the file, a job checks it and builds the
preview, Confirm marks exactly the previewed rentals (all or nothing, once); line-numbered errors, progress, export."""

from __future__ import annotations

import csv
import html as markup
import io
from datetime import datetime

import pytest
from rq import Queue, SimpleWorker
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


def pushes(name: str) -> list[tuple]:
    """The reconciles queued on a queue, one (account id, trigger) each, whether alone or in a site's batch."""
    found = []
    for job in Queue(name, connection=get_redis()).jobs:
        if job.func_name.endswith("reconcile_batch"):
            found += [(account_id, job.args[1]) for account_id in job.args[0]]
        elif job.func_name.endswith("reconcile_account"):
            found.append(tuple(job.args))
    return found


def run_upload_jobs() -> None:
    """What a worker does: the upload jobs wait on the default queue."""
    conn = get_redis()
    SimpleWorker([Queue(DEFAULT, connection=conn)], connection=conn).work(burst=True)
    db.session.expire_all()


def checked(client, auth, data: bytes, **options) -> tuple[Upload, str]:
    """Upload, let the job check it, and read the state region as the page's next poll does."""
    post_csv(client, auth, data, **options)
    upload = db.session.scalars(select(Upload).order_by(Upload.id.desc())).first()
    run_upload_jobs()
    return upload, state_region(client, upload)


def state_region(client, upload: Upload) -> str:
    return client.get(f"/uploads/{upload.id}/progress", headers={"HX-Request": "true"}).get_data(as_text=True)


def confirmed(client, auth, upload: Upload, run: bool = True):
    token = auth.csrf_token(f"/uploads/{upload.id}")
    response = client.post(f"/uploads/{upload.id}/confirm", data={"csrf_token": token}, headers={"HX-Request": "true"})
    if run:
        run_upload_jobs()
    return response


def snapshot() -> dict:
    """Everything an upload could change: the mirror, the PTI accounts, the upload rows and the queues."""
    db.session.expire_all()
    return {
        "rentals": [(r.sg_id, r.pti_synced, r.overlocked, r.sync_state) for r in
                    db.session.scalars(select(Rental).order_by(Rental.id))],
        "accounts": [(a.id, a.generation, a.state, a.urgent) for a in
                     db.session.scalars(select(PtiAccount).order_by(PtiAccount.id))],
        "upload_rows": db.session.scalars(select(UploadRow.id)).all(),
        "queued": [queued(name) for name in (URGENT, BULK)],
    }


@pytest.fixture
def support(auth, demo_business):
    auth.login("support")
    return auth


def test_a_good_file_is_stored_and_checked_in_a_job_and_changes_nothing_until_confirmed(client, support):
    rentals = demo_rentals(3)
    data = f"{HEADER}\n{rentals[0].sg_id},{SYNCED}\n{rentals[1].sg_id},\n{rentals[2].sg_id},{SYNCED}\n".encode()
    before = snapshot()
    response = post_csv(client, support, data)
    html = response.get_data(as_text=True)
    assert response.status_code == 202 and response.headers["HX-Trigger"] == "uploadsChanged"
    assert "<html" not in html and "Checking pushes.csv" in html and 'hx-trigger="every 1s"' in html
    upload = db.session.scalars(select(Upload)).one()
    assert (upload.status, upload.row_count, upload.checked, upload.data) == ("checking", 3, 0, data)
    assert queued(DEFAULT) == [(upload.id, 1)]  # the check waits for a worker; the request read nothing
    assert snapshot() == before

    run_upload_jobs()
    upload = db.session.get(Upload, upload.id)
    assert (upload.status, upload.row_count, upload.checked, upload.data) == ("ready", 3, 3, None)
    assert upload.preview["totals"]["push"] + upload.preview["totals"]["in_sync"] == 3
    html = markup.unescape(state_region(client, upload))
    assert "Preview: 3 rows checked, nothing changed yet" in html and "Confirm and push" in html
    assert "every 1s" not in html  # nothing changes by itself now: the polling stops
    assert [row.line for row in db.session.scalars(select(UploadRow).order_by(UploadRow.line))] == [2, 3, 4]
    assert snapshot() | {"upload_rows": []} == before  # the rows are the preview; the mirror and accounts are unchanged
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "csv upload")).one()
    assert (entry.actor, entry.target_id, entry.outcome, entry.detail["rows"]) == (
        "support@demo.test", str(upload.id), "ready", 3)


def test_confirm_marks_exactly_the_previewed_rentals_for_a_push(client, support):
    rentals = demo_rentals(3)
    before = {r.id: account_for(r.customer_id, r.site_id).generation for r in rentals}
    others = snapshot()["rentals"]
    db.session.commit()
    data = f"{HEADER}\n{rentals[0].sg_id},{SYNCED}\n{rentals[1].sg_id},\n{rentals[2].sg_id},{SYNCED}\n".encode()
    upload, _ = checked(client, support, data)
    response = confirmed(client, support, upload, run=False)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "Marking 3 rentals for a push" in html and "every 1s" in html
    assert db.session.get(Upload, upload.id).status == "applying"
    run_upload_jobs()
    upload = db.session.get(Upload, upload.id)
    assert (upload.status, upload.confirmed_by) == ("applied", "support@demo.test")
    assert "3 rentals marked for a push" in state_region(client, upload)
    assert db.session.get(Rental, rentals[0].id).pti_synced == datetime(2023, 8, 17, 19, 3, 12, 8000)
    assert db.session.get(Rental, rentals[1].id).pti_synced == rentals[1].pti_synced
    for r in rentals:
        account = account_for(r.customer_id, r.site_id)
        assert account.generation > before[r.id] and account.state == SyncState.PENDING
        assert db.session.get(Rental, r.id).sync_state == SyncState.PENDING
    trigger = f"csv:{upload.id}"
    assert sorted(pushes(BULK)) == sorted((account_for(r.customer_id, r.site_id).id, trigger) for r in rentals)
    assert queued(URGENT) == []
    marked = {r.sg_id for r in rentals}
    after = snapshot()["rentals"]
    assert [r for r in after if r[0] not in marked] == [r for r in others if r[0] not in marked]
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "csv confirm")).one()
    assert (entry.actor, entry.target_type, entry.target_id, entry.outcome) == (
        "support@demo.test", "upload", str(upload.id), "applied")
    assert entry.detail["rows"] == 3 and entry.detail["accounts"] == 3


def test_the_preview_counts_each_kind_of_row_per_site(client, support, demo_business):
    picked = demo_rentals(6)
    push, in_sync, ended, unmapped, overlock, unlock = picked
    in_sync.sync_state = SyncState.IN_SYNC
    ended.state = "ended"
    unmapped.sync_state = SyncState.UNMAPPED
    overlock.overlocked, unlock.overlocked = False, True
    db.session.commit()
    data = (f"{HEADER},customFields.pti_overlocked,unitId,notes\r\n"
            + "".join(f"{r.sg_id},,{'true' if r is overlock else 'false' if r is unlock else ''},u1,x\r\n"
                      for r in picked)).encode("utf-8-sig")
    upload, html = checked(client, support, data)
    assert upload.status == "ready"
    assert upload.preview["totals"] == {"push": 1, "in_sync": 1, "overlock": 1, "unlock": 1, "ended": 1, "unmapped": 1}
    expected: dict[int, dict[str, int]] = {}
    for action, r in zip(("push", "in_sync", "ended", "unmapped", "overlock", "unlock"), picked, strict=True):
        expected.setdefault(r.site_id, dict.fromkeys(upload.preview["totals"], 0))[action] += 1
    assert {s["id"]: s["counts"] for s in upload.preview["sites"]} == expected
    for action in ("push", "in_sync", "overlock", "unlock", "ended", "unmapped"):
        assert f'<dd data-count="{action}">1</dd>' in html
    assert html.count("<tr data-site-id=") == len(expected)
    actions = dict(db.session.execute(select(UploadRow.rental_id, UploadRow.action)).all())
    assert actions == {push.id: "push", in_sync.id: "in_sync", ended.id: "ended", unmapped.id: "unmapped",
                       overlock.id: "overlock", unlock.id: "unlock"}


def test_a_lock_change_is_pushed_on_the_urgent_queue(client, support):
    locked, same = demo_rentals(2)
    locked.overlocked = same.overlocked = False
    db.session.commit()
    data = (f"{HEADER},customFields.pti_overlocked\r\n{locked.sg_id},,TRUE\r\n{same.sg_id},,no\r\n").encode()
    upload, html = checked(client, support, data)
    assert upload.preview["totals"]["overlock"] == 1
    assert confirmed(client, support, upload).status_code == 200
    db.session.expire_all()
    assert db.session.get(Rental, locked.id).overlocked is True
    assert db.session.get(Rental, same.id).overlocked is False
    # The lock the file changed is owed to Storeganise until it accepts it; the unchanged one owes nothing.
    assert db.session.get(Rental, locked.id).overlock_owed_at is not None
    assert db.session.get(Rental, same.id).overlock_owed_at is None
    urgent_account = account_for(locked.customer_id, locked.site_id)
    assert urgent_account.urgent is True
    assert [args[0] for args in pushes(URGENT)] == [urgent_account.id]
    assert [args[0] for args in pushes(BULK)] == [account_for(same.customer_id, same.site_id).id]


def test_a_double_confirm_applies_once(client, support):
    rentals = demo_rentals(2)
    upload, _ = checked(client, support, (HEADER + "\n" + "".join(f"{r.sg_id},\n" for r in rentals)).encode())
    first = confirmed(client, support, upload, run=False)
    second = confirmed(client, support, upload, run=False)
    assert first.status_code == second.status_code == 200
    assert len(queued(DEFAULT)) == 1  # the second click found it applying: no second job
    from dashboard.uploads.apply import apply_upload

    assert apply_upload(upload.id) .endswith("2 accounts marked, 0 urgent")
    generations = {r.id: account_for(r.customer_id, r.site_id).generation for r in rentals}
    assert apply_upload(upload.id) == f"upload {upload.id}: nothing to apply"  # the queued job, run after all
    run_upload_jobs()
    assert {r.id: account_for(r.customer_id, r.site_id).generation for r in rentals} == generations
    assert len(db.session.scalars(select(AuditEntry).where(AuditEntry.action == "csv confirm")).all()) == 1
    page = confirmed(client, support, upload).get_data(as_text=True)
    assert "2 rentals marked for a push" in page


def test_a_confirm_that_dies_half_way_applies_nothing_and_can_be_retried(client, support, monkeypatch):
    rentals = demo_rentals(2)
    upload, _ = checked(client, support, (HEADER + "\n" + "".join(f"{r.sg_id},{SYNCED}\n" for r in rentals)).encode())
    before = snapshot()

    def dies(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr("dashboard.uploads.apply.mark_site_dirty", dies)
    confirmed(client, support, upload)
    upload = db.session.get(Upload, upload.id)
    assert upload.status == "applying" and "The marking stopped (RuntimeError)" in upload.problem
    assert {k: v for k, v in snapshot().items() if k != "queued"} == {k: v for k, v in before.items() if k != "queued"}
    html = markup.unescape(state_region(client, upload))
    assert "The marking stopped" in html and "Start the marking again" in html and "every 1s" not in html
    monkeypatch.undo()
    token = support.csrf_token(f"/uploads/{upload.id}")
    response = client.post(f"/uploads/{upload.id}/retry", data={"csrf_token": token}, headers={"HX-Request": "true"})
    assert response.status_code == 200 and "every 1s" in response.get_data(as_text=True)
    run_upload_jobs()
    assert db.session.get(Upload, upload.id).status == "applied"
    assert db.session.get(Rental, rentals[0].id).pti_synced == datetime(2023, 8, 17, 19, 3, 12, 8000)


def test_a_check_whose_job_is_gone_shows_as_stopped_and_a_retry_starts_over(client, support):
    (rental,) = demo_rentals(1)
    post_csv(client, support, f"{HEADER}\n{rental.sg_id},\n".encode())
    upload = db.session.scalars(select(Upload)).one()
    assert "Checking" in state_region(client, upload) and "stopped" not in state_region(client, upload)
    upload.progress_at = datetime(2020, 1, 1)
    db.session.commit()
    assert "The check stopped" not in state_region(client, upload)  # its job still waits in the queue: not stopped
    Queue(DEFAULT, connection=get_redis()).empty()  # the worker took it and was killed
    html = markup.unescape(state_region(client, upload))
    assert "The check stopped: its job is gone" in html and "Start the check again" in html
    token = support.csrf_token(f"/uploads/{upload.id}")
    client.post(f"/uploads/{upload.id}/retry", data={"csrf_token": token})
    db.session.expire_all()
    assert (upload.attempt, queued(DEFAULT)) == (2, [(upload.id, 2)])
    from dashboard.uploads.check import check_upload

    assert check_upload(upload.id, 1).endswith("nothing to check (attempt 1)")  # the first attempt, late: stops
    run_upload_jobs()
    assert db.session.get(Upload, upload.id).status == "ready"
    assert len(db.session.scalars(select(UploadRow)).all()) == 1


def test_the_check_writes_its_progress_after_every_chunk(client, support, monkeypatch):
    from dashboard.uploads import check, parse

    rentals = demo_rentals(5)
    monkeypatch.setattr(parse, "CHUNK_ROWS", 2)
    seen = []
    real_beat = check._beat

    def beat(upload_id, attempt, **values):
        seen.append(values.get("checked"))
        real_beat(upload_id, attempt, **values)

    monkeypatch.setattr(check, "_beat", beat)
    upload, _ = checked(client, support, (HEADER + "\n" + "".join(f"{r.sg_id},\n" for r in rentals)).encode())
    assert seen == [0, 2, 4, 5, 5] and upload.status == "ready"


def test_a_bom_and_crlf_file_from_excel_is_checked(client, support):
    (rental,) = demo_rentals(1)
    data = f"\ufeff{HEADER}\r\n{rental.sg_id},{SYNCED}\r\n".encode()
    upload, _ = checked(client, support, data)
    assert upload.status == "ready"


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
    upload, html = checked(client, support, data)
    assert "<html" not in html and "every 1s" not in html
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
    _, html = checked(client, support, data)
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
    text = markup.unescape(checked(client, support, data)[1])
    assert f"rental {ended.sg_id} is ended; only a reserved or occupied rental can be suspended" in text
    assert snapshot() == before


def test_the_size_limit_takes_a_hundred_thousand_row_export(app):
    row = "64de6eebdd7adb0014825d1a,2023-08-17T19:03:12.008Z,false," + "x" * 200 + "\r\n"  # 250 bytes a row
    assert app.config["MAX_CONTENT_LENGTH"] >= 100_000 * len(row)


def test_a_file_over_the_size_limit_gets_a_clear_413_and_nothing_is_recorded(app, client, support):
    limit = app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
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
    assert "Checking pushes.csv" in client.get(response.headers["Location"]).get_data(as_text=True)
    run_upload_jobs()
    html = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Nothing was applied: 1 error" in html and '<tr data-line="3"><td>3</td>' in html


def test_managers_see_past_uploads_and_previews_but_cannot_upload_or_confirm(client, auth, demo_business):
    (rental,) = demo_rentals(1)
    auth.login("support")
    first, _ = checked(client, auth, f"{HEADER}\n{rental.sg_id},\n".encode(), filename="first.csv")
    checked(client, auth, b"", filename="second.csv")
    auth.logout()
    auth.login("manager")
    page = client.get("/uploads/").get_data(as_text=True)
    assert 'type="file"' not in page and "Uploading is for support and admins" in page
    assert page.index("second.csv") < page.index("first.csv")  # newest first
    assert "Ready to confirm" in page and "Rejected: 1 error" in page
    preview = client.get(f"/uploads/{first.id}").get_data(as_text=True)
    assert "Preview: 1 row checked" in preview and "Confirm and push" not in preview
    assert "Support or an admin confirms the preview." in preview
    before = snapshot()
    response = post_csv(client, auth, f"{HEADER}\n{rental.sg_id},\n".encode())
    assert response.status_code == 403
    token = auth.csrf_token(f"/uploads/{first.id}")
    assert client.post(f"/uploads/{first.id}/confirm", data={"csrf_token": token}).status_code == 403
    assert client.post(f"/uploads/{first.id}/retry", data={"csrf_token": token}).status_code == 403
    assert snapshot() == before and len(db.session.scalars(select(Upload)).all()) == 2
    assert db.session.get(Upload, first.id).status == "ready"


def test_the_history_region_refreshes_alone(client, support):
    html = client.get("/uploads/", headers={"HX-Request": "true", "HX-Target": "upload-history"}).get_data(
        as_text=True)
    assert "<html" not in html and 'id="upload-history"' in html and "No upload yet." in html


def test_the_progress_region_counts_states_and_stops_polling_when_done(client, support):
    rentals = demo_rentals(4)
    upload, _ = checked(client, support, (HEADER + "\n" + "".join(f"{r.sg_id},\n" for r in rentals)).encode())
    confirmed(client, support, upload)
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
    upload, _ = checked(client, support, f"{HEADER}\n{ok.sg_id},{SYNCED}\n{failing.sg_id},\n".encode())
    assert client.get(f"/uploads/{upload.id}").get_data(as_text=True).count('data-action="push"') == 2
    confirmed(client, support, upload)
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
    none_ended = client.get(f"/uploads/{upload.id}?action=ended",
                            headers={"HX-Request": "true", "HX-Target": "upload-rows"}).get_data(as_text=True)
    assert "data-rental-id=" not in none_ended and "No row in this state." in none_ended


def test_the_results_export_escapes_cells_that_would_run_as_formulas(client, support):
    ok, evil = demo_rentals(2)
    evil.customer.first_name, evil.customer.last_name = "=HYPERLINK(\"http://evil.test\")", ""
    db.session.commit()
    upload, _ = checked(client, support, f"{HEADER}\n{ok.sg_id},\n{evil.sg_id},\n".encode())
    preview = list(csv.DictReader(io.StringIO(
        client.get(f"/uploads/{upload.id}/results.csv").get_data(as_text=True).removeprefix("\ufeff"))))
    assert [(row["id"], row["action"]) for row in preview] == [(ok.sg_id, "To push"), (evil.sg_id, "To push")]
    confirmed(client, support, upload)
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
    upload, _ = checked(client, support, f'{HEADER}\n"=1+1",\n'.encode())
    rows = list(csv.reader(io.StringIO(client.get(f"/uploads/{upload.id}/results.csv").get_data(as_text=True))))
    assert rows[0] == ["\ufeffline", "error"] and rows[1][0] == "2"
    assert "starts with =" in rows[1][1] and not rows[1][1].startswith("=")

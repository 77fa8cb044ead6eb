"""CSV upload: a 100,000-row Storeganise export uploaded through the real route, checked by a real RQ worker.

The stack as in production (bench/stack.py: gunicorn, a fresh PostgreSQL database when one answers, a Redis of its
own, RQ workers), with 10 sites × 10,000 rented rentals in the mirror. The file is what Storeganise exports: a
byte-order mark, CRLF line ends, and more columns than PTI Sync reads (unitId, ownerId, state, dates, price, other
custom fields); half the rows set pti_synced, every row is valid. Logged in as support, the benchmark posts it to
/uploads/ and polls the upload's state region as the page does, until the preview is ready; then confirms it and
polls until the marking is applied. The check job reports its work horse's peak resident memory. The same bytes are
then read by the `csv` module alone (decode + every row), the floor any check stands on.

Targets: upload → preview ready ≤ 5 s; the job's peak memory ≤ 200 MB; no request (upload, poll, confirm) over 1 s.
target_ratio = max(preview_s / 5, peak_mb / 200, slowest_request_s / 1) (≤ 1: `targets=met`); `ratio` is preview_s /
csv_module_s, what checking costs over reading the file with the `csv` module alone.
Environment: BENCH_CSV_ROWS [100000] (over 10 sites), BENCH_CSV_POLL_S [0.2], BENCH_TIMEOUT_S [300].
"""

from __future__ import annotations

import csv
import io
import random
import re
import time

from rq.job import Job
from sqlalchemy import select

from bench.stack import Stack, StackConfig, env_float, env_int, report, say
from dashboard.jobqueue import get_redis
from dashboard.models import Rental

TARGET_PREVIEW_S = 5.0
TARGET_PEAK_MB = 200.0
TARGET_REQUEST_S = 1.0
SITES = 10
HEADER = ["id", "unitId", "ownerId", "siteId", "state", "startDate", "endDate", "price", "deposit",
          "customFields.pti_synced", "customFields.pti_overlocked", "customFields.pti_access_code", "notes"]
STATUS = re.compile(r'id="upload-state" data-upload-id="(\d+)" data-status="(\w+)"')
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def config(rows: int) -> StackConfig:
    """Only what an upload needs: the database, Redis, gunicorn and one RQ worker (the mirror is seeded below)."""
    per_site = -(-rows // SITES)
    return StackConfig(sites=SITES, rented=per_site, units=per_site + max(10, per_site // 10), business=False,
                       pti=False, storeganise=False, workers=1, urgent_workers=0, web_workers=2)


def seed(stack: Stack) -> list[str]:
    """The load profile's sites, units, customers and rentals, written with bulk inserts (the demo loader's row by row
    upserts take minutes for 100,000 rentals). One unit in 20 has no PTI Unit Name, one rental in 20 has ended, one in
    10 is in sync: the preview has each kind. Returns the rentals' Storeganise ids."""
    from dashboard.demo import load_business
    from dashboard.extensions import db
    from dashboard.models import Customer, Site, Unit

    started = time.monotonic()
    business = stack.business()
    units, users, rentals = business.units, business.users, business.unit_rentals
    business.units, business.users, business.unit_rentals = [], [], []
    load_business(business)  # the sites alone, with their PTI settings, as the importer lands them
    sites = dict(db.session.execute(select(Site.sg_id, Site.id)).all())
    for model, records in ((Unit, [{"sg_id": u["id"], "site_id": sites[u["siteId"]], "name": u["name"],
                                    "state": "occupied", "pti_unit_name": None if n % 20 == 0 else u["name"],
                                    "pti_switched_off": False} for n, u in enumerate(units)]),
                           (Customer, [{"sg_id": c["id"], "email": c["email"].lower(), "first_name": c["firstName"],
                                        "last_name": c["lastName"]} for c in users])):
        for start in range(0, len(records), 5000):
            db.session.execute(model.__table__.insert(), records[start:start + 5000])
    unit_ids = dict(db.session.execute(select(Unit.sg_id, Unit.id)).all())
    unmapped = set(db.session.scalars(select(Unit.id).where(Unit.pti_unit_name.is_(None))))
    customer_ids = dict(db.session.execute(select(Customer.sg_id, Customer.id)).all())
    records = []
    for n, r in enumerate(rentals):
        unit_id = unit_ids[r["unitId"]]
        ended = n % 20 == 1
        records.append({"sg_id": r["id"], "site_id": sites[r["siteId"]], "unit_id": unit_id,
                        "customer_id": customer_ids[r["ownerId"]], "state": "ended" if ended else "occupied",
                        "overlocked": False, "sync_state": "disabled" if ended else "unmapped" if unit_id in unmapped
                        else "in_sync" if n % 10 == 3 else "pending"})
    for start in range(0, len(records), 5000):
        db.session.execute(Rental.__table__.insert(), records[start:start + 5000])
    db.session.commit()
    say(f"mirror seeded in {time.monotonic() - started:.1f} s: {len(sites)} sites, {len(units)} units, "
        f"{len(users)} customers, {len(records)} rentals")
    return [r["sg_id"] for r in records]


def export(sg_ids: list[str]) -> bytes:
    """A Storeganise unit-rentals export of these rentals: BOM, CRLF, the columns PTI Sync reads among others."""
    rng = random.Random(7)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(HEADER)
    for n, sg_id in enumerate(sg_ids):
        synced = f"2023-08-{1 + n % 28:02d}T19:03:12.008Z" if n % 2 else ""
        writer.writerow([sg_id, f"{rng.getrandbits(96):024x}", f"{rng.getrandbits(96):024x}",
                         f"{rng.getrandbits(96):024x}", "occupied", "2023-01-15", "", f"{rng.randint(40, 400)}.00",
                         "50.00", synced, "", f"{rng.randint(0, 999999):06d}", "Gate code, card on file"])
    return ("\ufeff" + out.getvalue()).encode()


def csv_module_seconds(data: bytes) -> float:
    """The `csv` module alone over the same bytes: decode, and read every row."""
    started = time.perf_counter()
    rows = sum(1 for _ in csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    elapsed = time.perf_counter() - started
    assert rows > 1
    return elapsed


def main() -> str:
    rows = env_int("BENCH_CSV_ROWS", 100_000)
    poll_s = env_float("BENCH_CSV_POLL_S", 0.2)
    timeout_s = env_float("BENCH_TIMEOUT_S", 300)
    with Stack(config(rows)) as stack:
        sg_ids = seed(stack)[:rows]
        data = export(sg_ids)
        say(f"csv: {len(sg_ids)} rows, {len(data) / 1048576:.1f} MB")
        client = stack.dashboard("support")
        token = TOKEN.search(client.get("/uploads/").text).group(1)
        requests: list[float] = []
        slowest_path = [""]

        def timed(method: str, path: str, **options):
            started = time.monotonic()
            response = client.request(method, path, **options)
            requests.append(time.monotonic() - started)
            if requests[-1] >= max(requests):
                slowest_path[0] = f"{method} {path}"
            response.raise_for_status()
            return response

        started = time.monotonic()
        page = timed("POST", "/uploads/", data={"csrf_token": token}, follow_redirects=False,
                     files={"file": ("storeganise-export.csv", data, "text/csv")}, headers={"HX-Request": "true"})
        post_s = requests[-1]
        upload_id, status = STATUS.search(page.text).groups()
        status = wait(timed, upload_id, {"checking"}, started, timeout_s, poll_s)
        preview_s = time.monotonic() - started
        if status != "ready":
            raise RuntimeError(f"upload {upload_id} ended {status}, not ready: the export should be valid")
        summary = Job.fetch(f"upload-{upload_id}-check-1", connection=get_redis()).return_value() or ""
        peak = re.search(r"peak RSS (\d+) MB", summary)
        peak_mb = float(peak.group(1)) if peak else float("nan")
        say(f"csv: preview ready in {preview_s:.2f} s (upload request {post_s:.2f} s): {summary}")

        confirm_token = TOKEN.search(client.get(f"/uploads/{upload_id}").text).group(1)
        started = time.monotonic()
        timed("POST", f"/uploads/{upload_id}/confirm", data={"csrf_token": confirm_token},
              headers={"HX-Request": "true"})
        status = wait(timed, upload_id, {"applying"}, started, timeout_s, poll_s)
        apply_s = time.monotonic() - started
        say(f"csv: confirmed and {status} in {apply_s:.2f} s; {len(requests)} requests, slowest "
            f"{max(requests):.2f} s ({slowest_path[0]})")
    module_s = csv_module_seconds(data)
    slowest = max(requests)
    target_ratio = max(preview_s / TARGET_PREVIEW_S, peak_mb / TARGET_PEAK_MB, slowest / TARGET_REQUEST_S)
    say(f"csv: targets {'met' if target_ratio <= 1 else 'NOT met'}: preview ≤ {TARGET_PREVIEW_S:g} s, peak ≤ "
        f"{TARGET_PEAK_MB:g} MB, every request ≤ {TARGET_REQUEST_S:g} s")
    return report("csv", rows=str(len(sg_ids)), preview_s=f"{preview_s:.2f}", peak_mb=f"{peak_mb:.0f}",
                  csv_module_s=f"{module_s:.2f}", ratio=f"{preview_s / module_s:.1f}", post_s=f"{post_s:.2f}",
                  apply_s=f"{apply_s:.2f}", slowest_request_s=f"{slowest:.2f}", target_ratio=f"{target_ratio:.2f}",
                  targets="met" if target_ratio <= 1 else "missed")


def wait(timed, upload_id: str, working: set[str], started: float, timeout_s: float, poll_s: float) -> str:
    """Poll the state region as the page does until the upload leaves `working`; its new status."""
    while True:
        region = timed("GET", f"/uploads/{upload_id}/progress", params={"seen": "x"}).text
        status = STATUS.search(region).group(2)
        if status not in working:
            return status
        if "stopped:" in region:  # the job raised or died: the page offers Retry; waiting longer shows nothing
            raise RuntimeError(f"upload {upload_id}'s job stopped while {status}; see the worker's log")
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"upload {upload_id} still {status} after {timeout_s:.0f} s")
        time.sleep(poll_s)


if __name__ == "__main__":
    main()

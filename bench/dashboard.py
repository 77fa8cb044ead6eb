"""Dashboard pages on a large mirror: how fast the server answers each page an operator opens, and how many SQL
statements each one runs.

The mirror is seeded set-based (executemany on SQLite, COPY on PostgreSQL; never the ORM row by row, never the
webhook path) into a database migrated with `flask db upgrade`: 200 sites of 1,100 units and 1,000 rentals (750
customers and PTI accounts a site: a quarter of the customers rent two units), rentals in a realistic mix of sync
states (in sync; pending, some waiting out a retry; failed with the catalogue's reasons; not mapped; ended), a
journal of 1,000,000 sync attempts over 30 days (a few hundred in the last ten minutes), 200,000 webhook deliveries
(skewed: a few rentals have many), 20,000 audit entries and a standing problem for each failed account and unit.

Each page is requested in-process (the Flask test client, logged in as an admin through the login form) after a
warm-up; server time is the time of the whole request. Statements are counted with a `before_cursor_execute`
listener, per request. They must not grow with the mirror: each page's count on a small mirror (5 sites × 100
rentals) is compared with its count on the full one, and the rentals list's first page with its 100th.

Pages: Overview `/`, Failures `/failures/`, Work `/work/` (Redis of the stack's own, empty queues), Trends `/trends/`
(every site, 24 h) and one site's 30 days (its rollup fed from the seeded journal), a site's rentals
(`/rentals/?site=<id>`), the 100th page of the rentals in sync (`/rentals/?state=in_sync&page=100`), and a busy
rental's page.

Target: p95 ≤ 80 ms on every page, on SQLite and on PostgreSQL; ratio = worst p95 / 80 (≤ 1 passes). One BENCH line
per database. Environment: BENCH_DASHBOARD_SITES [200], BENCH_DASHBOARD_RENTALS a site [1000],
BENCH_DASHBOARD_ATTEMPTS [1000000], BENCH_DASHBOARD_REPEAT requests a page [20], BENCH_DATABASE [both] (sqlite or
postgres: one of them). A quick run: BENCH_DASHBOARD_SITES=20 BENCH_DASHBOARD_ATTEMPTS=100000.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import event, func, select, text

from bench.stack import Stack, StackConfig, env_int, percentile, postgres_available, report, say
from dashboard import create_app, trends
from dashboard.extensions import db
from dashboard.models import Role, StaffUser, SyncTrend, utcnow

TARGET_P95_MS = 80.0
WARMUP = 3  # requests a page before the measured ones
DAYS = 30  # the journal and the deliveries reach this far back
RECENT_S = 600  # a few hundred attempts fall in the last ten minutes (the Work page's throughput)
RECENT_SHARE = 0.0005
ADMIN_EMAIL = "bench-admin@example.test"
ADMIN_PASSWORD = "bench-dashboard-password"
CHUNK = 20_000  # rows per executemany
SEED = 11

# Why rentals fail and accounts park, from the catalogue (dashboard/sync/errors.py), roughly as often as seen.
FAILED_REASONS = ["unit_not_found"] * 4 + ["invalid_unit_name"] * 2 + ["duplicate_access_code", "foreign_pti_user",
                  "unit_rented_to_other", "no_access_level", "user_not_found"]
UNIT_REASONS = ("unit_not_found", "invalid_unit_name")  # a problem of the unit, not of the customer
RETRY_REASONS = ["pti_unreachable", "pti_server_error", "pti_rate_limited", "circuit_open"]
TRIGGERS = (["unitRental.updated"] * 5 + ["unitRental.markOverdue", "unitRental.unmarkOverdue",
            "job.unit_moveIn.completed", "job.unit_moveOut.completed"] + ["bulk"] * 3 + ["relay", "sweep", "pull",
            "staff:staff@example.test", "csv:7"])
OPERATIONS = [["create_user", "rent_unit"], ["update_user"], ["lock_user"], ["unlock_user"], ["vacate_unit"],
              ["update_user", "rent_unit"]]
DELIVERY_TYPES = ["unitRental.updated"] * 6 + ["unitRental.markOverdue", "unitRental.unmarkOverdue",
                  "job.unit_moveIn.completed", "invoice.updated"]
FIRST_NAMES = ["Ada", "Ben", "Chloe", "Dev", "Emma", "Femi", "Grace", "Hugo", "Ines", "Jack", "Kemi", "Liam"]
LAST_NAMES = ["Archer", "Bell", "Carter", "Dunn", "Evans", "Fox", "Green", "Hall", "Irwin", "Jones", "King", "Lee"]


@dataclass(frozen=True)
class Size:
    sites: int
    rentals: int  # a site
    attempts: int

    @property
    def units(self) -> int:  # a site: every rented unit and a tenth more
        return self.rentals + max(1, self.rentals // 10)

    @property
    def customers(self) -> int:  # a site: a quarter of them rent two units
        return max(1, self.rentals * 3 // 4)

    @property
    def deliveries(self) -> int:
        return self.attempts // 5

    @property
    def audit(self) -> int:
        return max(10, self.attempts // 50)

    def __str__(self) -> str:
        return (f"{self.sites} sites × {self.rentals} rentals ({self.sites * self.rentals:,} rentals, "
                f"{self.sites * self.customers:,} customers), {self.attempts:,} attempts")


SMALL = Size(sites=5, rentals=100, attempts=5_000)


# --- writing rows set-based ------------------------------------------------------------------------------------


class Writer:
    """Rows into a table, many at a time, bypassing the ORM: executemany on SQLite, COPY on PostgreSQL."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self.raw = engine.raw_connection()
        if not self.postgres:
            self.raw.driver_connection.execute("PRAGMA synchronous=OFF")

    def value(self, v):
        if isinstance(v, (dict, list)):
            return json.dumps(v)
        if not self.postgres and isinstance(v, datetime):  # as SQLAlchemy stores a DateTime on SQLite
            return v.strftime("%Y-%m-%d %H:%M:%S.%f")
        return v

    def insert(self, table: str, columns: tuple[str, ...], rows: Iterable[tuple]) -> int:
        n = 0
        cursor = self.raw.driver_connection.cursor()
        if self.postgres:
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row([self.value(v) for v in row])
                    n += 1
        else:
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            chunk: list[tuple] = []
            for row in rows:
                chunk.append(tuple(self.value(v) for v in row))
                if len(chunk) >= CHUNK:
                    cursor.executemany(sql, chunk)
                    n += len(chunk)
                    chunk = []
            cursor.executemany(sql, chunk)
            n += len(chunk)
        cursor.close()
        self.raw.commit()
        return n

    def finish(self, tables: list[str]) -> None:
        """PostgreSQL: the sequences past the ids written, then VACUUM ANALYZE, as autovacuum would do after a load
        this size (the planner's statistics, the visibility map index-only scans need; autovacuum may be off on a
        bench server). SQLite gathers no statistics unless asked (the product never asks), so none here."""
        if self.postgres:
            cursor = self.raw.driver_connection.cursor()
            for table in tables:
                if table not in STRING_IDS:
                    cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                   f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)")
            self.raw.commit()
            self.raw.driver_connection.autocommit = True
            for table in tables:
                cursor.execute(f"VACUUM ANALYZE {table}")
            self.raw.driver_connection.autocommit = False
            cursor.close()
        self.raw.close()


# --- the mirror ---------------------------------------------------------------------------------------------------


@dataclass
class Seeded:
    size: Size
    site_id: int  # the site whose rentals are listed
    rental_id: int  # a busy rental: many deliveries, attempts and problems
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


SEEDED_TABLES = ["audit_log", "problems", "webhook_deliveries", "sync_attempts", "pti_accounts", "rentals",
                 "customers", "units", "sites"]  # children first
STRING_IDS = {"webhook_deliveries"}  # Storeganise's ids: no sequence


def spread(rng: random.Random, count: int, now: datetime) -> Iterator[datetime]:
    """`count` moments over the last DAYS, oldest first; a small share in the last RECENT_S."""
    recent = int(count * RECENT_SHARE)
    span = DAYS * 86400
    offsets = sorted((rng.uniform(RECENT_S, span) for _ in range(count - recent)), reverse=True)
    offsets += sorted((rng.uniform(0, RECENT_S) for _ in range(recent)), reverse=True)
    for offset in offsets:
        yield now - timedelta(seconds=offset)


def seed(engine, size: Size, now: datetime, seed_value: int = SEED) -> Seeded:
    """Write the whole mirror; ids are ours (1..n per table), so the rows can refer to one another."""
    started = time.monotonic()
    rng = random.Random(seed_value)
    writer = Writer(engine)
    rows: dict[str, int] = {}
    S, R, U, C = size.sites, size.rentals, size.units, size.customers

    rows["sites"] = writer.insert("sites", (
        "id", "sg_id", "code", "title", "pti_base_url", "pti_site_code", "default_access_level", "default_zone",
        "code_length", "sync_enabled", "last_import_at", "last_sweep_at"),
        ((s, f"site{s:05d}", f"S{s:04d}", f"Site {s:04d}", "http://127.0.0.1:9", f"PTI{s}", 1, 1, 6, True,
          now - timedelta(minutes=5), now - timedelta(hours=1)) for s in range(1, S + 1)))

    # Units: a site's first R are rented; one in 33 of them has no PTI Unit Name (its rental is not mapped).
    def unit_id(s: int, u: int) -> int:
        return (s - 1) * U + u + 1

    def unmapped(u: int) -> bool:
        return u % 33 == 7

    rows["units"] = writer.insert("units", (
        "id", "sg_id", "site_id", "name", "state", "pti_unit_name", "pti_switched_off"),
        ((unit_id(s, u), f"unit{unit_id(s, u):08d}", s, f"U{u:04d}", "occupied" if u < R else "available",
          None if unmapped(u) else f"U{u:04d}", False) for s in range(1, S + 1) for u in range(U)))

    overdue = {c: rng.random() < 0.03 for c in range(1, S * C + 1)}
    rows["customers"] = writer.insert("customers", (
        "id", "sg_id", "email", "first_name", "last_name", "overdue", "pti_access_code", "overrides_owed",
        "overrides_refusals"),
        ((c, f"user{c:08d}", f"customer{c}@example.test", FIRST_NAMES[c % 12], LAST_NAMES[c // 12 % 12],
          overdue[c], 100_000 + c, False, 0) for c in range(1, S * C + 1)))

    # Rentals, and from them what each customer's account says.
    rental_rows = []
    account_state: dict[int, tuple[str, str | None]] = {}  # customer -> (worst state, its reason)
    rank = {"in_sync": 0, "disabled": 0, "unmapped": 0, "pending": 1, "syncing": 1, "failed": 2}
    for s in range(1, S + 1):
        for i in range(R):
            rid = (s - 1) * R + i + 1
            customer = (s - 1) * C + (i if i < C else (i * 7) % C) + 1
            roll = rng.random()
            state = "completed" if roll < 0.05 else "reserved" if roll < 0.15 else "occupied"
            error = None
            if state == "completed":
                sync = "disabled"
            elif unmapped(i):
                sync, error = "unmapped", "unit_unmapped"
            else:
                roll = rng.random()
                if roll < 0.04:
                    sync, error = "failed", rng.choice(FAILED_REASONS)
                elif roll < 0.08:
                    sync = "pending"
                elif roll < 0.085:
                    sync = "syncing"
                else:
                    sync = "in_sync"
            active = state != "completed"
            synced = now - timedelta(seconds=rng.uniform(60, 20 * 86400)) if sync in ("in_sync", "pending") else None
            rental_rows.append((rid, f"rent{rid:08d}", s, unit_id(s, i), customer, state, overdue[customer],
                                overdue[customer] and active, synced, now - timedelta(seconds=rng.uniform(0, 86400)),
                                sync, error))
            worst = account_state.get(customer, ("in_sync", None))
            if rank[sync] > rank[worst[0]]:
                account_state[customer] = (sync, error)
            else:
                account_state.setdefault(customer, worst)
    rows["rentals"] = writer.insert("rentals", (
        "id", "sg_id", "site_id", "unit_id", "customer_id", "state", "overdue", "overlocked", "pti_synced",
        "sg_updated", "sync_state", "last_error"), rental_rows)
    busy_rental = next(r for r in rental_rows if r[5] != "completed")

    # PTI accounts: one a customer (a customer rents at one site); a few parked with no failed rental (moved out).
    def accounts() -> Iterator[tuple]:
        for c in range(1, S * C + 1):
            site = (c - 1) // C + 1
            state, reason = account_state.get(c, ("in_sync", None))
            if state in ("disabled", "unmapped"):
                state = "in_sync"
            if state == "in_sync" and rng.random() < 0.005:
                state, reason = "failed", "user_not_found"
            gen, synced_gen, owed, retry_at, attempts = 2, 2, None, None, 0
            if state == "failed":
                synced_gen, attempts = 1, 5
            elif state in ("pending", "syncing"):
                state = "pending" if state == "pending" else "syncing"
                gen, owed = 3, now - timedelta(seconds=rng.uniform(1, 300))
                if rng.random() < 0.5:
                    reason, retry_at, attempts = rng.choice(RETRY_REASONS), now + timedelta(seconds=60), 2
            last = now - timedelta(seconds=rng.uniform(60, 20 * 86400))
            yield (c, c, site, 100_000 + c, f"pti{c}", gen, synced_gen, state, overdue[c] and state == "pending",
                   attempts, retry_at, reason, last, last if state == "in_sync" else None, owed, False,
                   rng.random() < 0.002, 0)

    rows["pti_accounts"] = writer.insert("pti_accounts", (
        "id", "customer_id", "site_id", "access_code", "pti_user_id", "generation", "synced_generation", "state",
        "urgent", "attempts", "next_attempt_at", "last_error", "last_attempt_at", "last_synced_at", "owed_since",
        "separate_from_foreign", "write_back_owed", "write_back_refusals"), accounts())
    n_accounts = S * C

    def attempts() -> Iterator[tuple]:
        for n, at in enumerate(spread(rng, size.attempts, now), start=1):
            roll = rng.random()
            if roll < 0.6:
                outcome, reason, operations = "ok", None, rng.choice(OPERATIONS)
            elif roll < 0.9:
                outcome, reason, operations = "noop", None, None
            elif roll < 0.96:
                outcome, reason, operations = "retry", rng.choice(RETRY_REASONS), None
            else:
                outcome, reason, operations = "failed", rng.choice(FAILED_REASONS), None
            gate_ms = int(rng.lognormvariate(6.5, 0.8)) if outcome == "ok" else None  # event to gate, ~0.7 s
            yield (n, rng.randint(1, n_accounts), rng.choice(TRIGGERS), f"job{n}", at, rng.randint(40, 900),
                   rng.randint(1, 3), operations, outcome, reason, gate_ms)
        # the busy rental's customer: an attempt after each of its recent changes
        for k in range(30):
            yield (size.attempts + k + 1, busy_rental[4], "unitRental.updated", None,
                   now - timedelta(hours=30 - k), 120, 2, ["update_user"], "ok", None, 800)

    rows["sync_attempts"] = writer.insert("sync_attempts", (
        "id", "account_id", "trigger", "rq_job_id", "started_at", "duration_ms", "generation", "operations",
        "outcome", "reason", "gate_ms"), attempts())

    total_rentals = S * R

    def deliveries() -> Iterator[tuple]:
        for n, at in enumerate(spread(rng, size.deliveries, now), start=1):
            rental = int(total_rentals * rng.random() ** 3) + 1  # skewed: the first rentals get most events
            kind = rng.choice(DELIVERY_TYPES)
            roll = rng.random()
            status = ("ignored" if kind == "invoice.updated" else "echo" if roll < 0.25 else "failed"
                      if roll < 0.252 else "queued" if at > now - timedelta(seconds=5) else "processed")
            sg = f"rent{rental:08d}"
            yield (f"wh{n:010d}", kind, at, status, {"id": f"wh{n:010d}", "type": kind, "data": {"unitRentalId": sg}},
                   "storeganise_not_found" if status == "failed" else None, sg,
                   at + timedelta(milliseconds=200) if status in ("processed", "echo") else None)
        for k in range(30):  # the busy rental's own recent changes
            at = now - timedelta(hours=30 - k, minutes=1)
            yield (f"whbusy{k:04d}", "unitRental.updated", at, "processed", {"id": f"whbusy{k:04d}"}, None,
                   busy_rental[1], at + timedelta(milliseconds=150))

    rows["webhook_deliveries"] = writer.insert("webhook_deliveries", (
        "id", "type", "received_at", "status", "payload", "error", "rental_sg_id", "handled_at"), deliveries())

    def problems() -> Iterator[tuple]:
        n = 0
        for r in rental_rows:
            if r[10] == "failed" and r[11] in UNIT_REASONS:
                n += 1
                unit_sg = f"unit{r[3]:08d}"
                yield (n, f"unit:{unit_sg}:{r[11]}", r[11], "unit", unit_sg, r[2], None, "unit", unit_sg,
                       f"unit U{r[3]} at Site {r[2]:04d}", None, now - timedelta(days=rng.uniform(0, DAYS)),
                       now - timedelta(days=1), f"task{n}")
        for c, (state, reason) in account_state.items():
            if state == "failed" and reason not in UNIT_REASONS:
                n += 1
                yield (n, f"account:{c}:{reason}", reason, "account", f"user{c:08d}", (c - 1) // C + 1, c, "user",
                       f"user{c:08d}", f"customer {c}", None, now - timedelta(days=rng.uniform(0, DAYS)), None, None)

    rows["problems"] = writer.insert("problems", (
        "id", "cause", "reason", "entity", "record_sg_id", "site_id", "account_id", "target_type", "target_id",
        "subject", "detail", "opened_at", "reported_at", "sg_task_id"), problems())

    def audit() -> Iterator[tuple]:
        for n, at in enumerate(spread(rng, size.audit, now), start=1):
            kind = rng.choice(["rental", "rental", "customer", "site"])
            target = {"rental": lambda: f"rent{rng.randint(1, total_rentals):08d}",
                      "customer": lambda: f"user{rng.randint(1, S * C):08d}",
                      "site": lambda: f"site{rng.randint(1, S):05d}"}[kind]()
            action = {"rental": "resync rental", "customer": "resync customer", "site": "resync site"}[kind]
            yield (n, at, None, "staff@example.test", action, kind, target, "ok", None)
        yield (size.audit + 1, now - timedelta(hours=2), None, "staff@example.test", "resync rental", "rental",
               busy_rental[1], "ok", None)

    rows["audit_log"] = writer.insert("audit_log", (
        "id", "at", "actor_id", "actor", "action", "target_type", "target_id", "outcome", "detail"), audit())
    writer.finish(SEEDED_TABLES)
    # The Trends rollup, fed from that journal as the cron's job feeds it, batch by batch (part of the seeding).
    while trends.feed(now + timedelta(seconds=trends.SETTLE_S + 1)):
        pass
    rows["sync_trends"] = db.session.scalar(select(func.count()).select_from(SyncTrend))
    db.session.commit()
    return Seeded(size, site_id=max(1, S // 2), rental_id=busy_rental[0], rows=rows,
                  seconds=time.monotonic() - started)


def clear(engine) -> None:
    with engine.begin() as conn:
        for table in ["sync_trends", *SEEDED_TABLES]:
            conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(text("DELETE FROM product_settings WHERE name = :cursor"), {"cursor": trends.CURSOR})


# --- requesting the pages -----------------------------------------------------------------------------------------


class Statements:
    """SQL statements the app runs, counted from the engine (`before_cursor_execute`)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *_args) -> None:
        self.count += 1

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


def pages(app, seeded: Seeded) -> dict[str, str]:
    """Page name -> path, in the order printed."""
    found = {
        "overview": "/",
        "failures": "/failures/",
        "work": "/work/",
        "trends": "/trends/",
        "trends_site": f"/trends/?site={seeded.site_id}&range=30d",
        "site_rentals": f"/rentals/?site={seeded.site_id}",
        "rentals_p100": "/rentals/?state=in_sync&page=100",
        "rental": f"/rentals/{seeded.rental_id}",
    }
    return found


def web_app(stack: Stack):
    """The product as a web process would build it, on the stack's database and Redis. Its requests run in app
    contexts of their own (not the stack's, which the seeding uses), as in a real server."""
    app = create_app({"SQLALCHEMY_DATABASE_URI": stack.database_url, "REDIS_URL": stack.redis_url,
                      "SECRET_KEY": "bench-secret-key", "ENCRYPTION_KEYS": stack.encryption_key,
                      "SESSION_COOKIE_SECURE": False})  # the test client speaks http
    logging.getLogger().setLevel(logging.WARNING)
    with app.app_context():
        if db.session.scalar(select(StaffUser).where(StaffUser.email == ADMIN_EMAIL)) is None:
            user = StaffUser(email=ADMIN_EMAIL, name="Bench admin", role=Role.ADMIN)
            user.set_password(ADMIN_PASSWORD)
            db.session.add(user)
            db.session.commit()
        app.extensions["bench_engine"] = db.engine
    return app


def logged_in_client(app):
    """A test client logged in as an admin through the login form (CSRF token and all)."""
    client = app.test_client()
    form = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', form)
    if token is None:
        raise RuntimeError("no CSRF token on the login page")
    answer = client.post("/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD,
                                         "csrf_token": token.group(1)})
    if answer.status_code != 302:
        raise RuntimeError(f"could not log in as {ADMIN_EMAIL}: {answer.status_code}")
    return client


def request(client, counter: Statements, path: str) -> tuple[float, int]:
    """(milliseconds, statements) of one request; an answer other than 200 is an error."""
    before = counter.count
    started = time.perf_counter()
    answer = client.get(path)
    elapsed = (time.perf_counter() - started) * 1000
    if answer.status_code != 200:
        raise RuntimeError(f"{path} answered {answer.status_code}")
    return elapsed, counter.count - before


def statement_counts(app, paths: dict[str, str]) -> dict[str, int]:
    client = logged_in_client(app)
    counter = Statements(app.extensions["bench_engine"])
    try:
        counts = {}
        for name, path in paths.items():
            request(client, counter, path)  # the first request of a process loads what it caches
            counts[name] = request(client, counter, path)[1]
        return counts
    finally:
        counter.close()


@dataclass
class PageFigures:
    p50_ms: float
    p95_ms: float
    statements: int


def measure(app, seeded: Seeded, repeat: int) -> dict[str, PageFigures]:
    client = logged_in_client(app)
    counter = Statements(app.extensions["bench_engine"])
    figures = {}
    try:
        for name, path in pages(app, seeded).items():
            for _ in range(WARMUP):
                request(client, counter, path)
            times, counts = [], set()
            for _ in range(repeat):
                ms, n = request(client, counter, path)
                times.append(ms)
                counts.add(n)
            figures[name] = PageFigures(percentile(times, 50), percentile(times, 95), max(counts))
            say(f"  {name:<13} {path:<40} p50 {figures[name].p50_ms:7.1f} ms  p95 {figures[name].p95_ms:7.1f} ms  "
                f"{figures[name].statements} statements")
    finally:
        counter.close()
    return figures


# --- one database -------------------------------------------------------------------------------------------------


def run(database: str, size: Size, repeat: int) -> str:
    config = StackConfig(web=False, business=False, pti=False, storeganise=False, workers=0, urgent_workers=0,
                         database=database, database_prefix="pti_bench_dashboard")
    with Stack(config) as stack:
        app = web_app(stack)
        db_name = "postgres" if db.engine.dialect.name == "postgresql" else "sqlite"
        now = utcnow()
        small = seed(db.engine, SMALL, now)
        small_counts = statement_counts(app, pages(app, small))
        clear(db.engine)
        say(f"dashboard on {stack.database}: seeding {size}")
        seeded = seed(db.engine, size, now)
        say(f"  seeded in {seeded.seconds:.1f} s: " + ", ".join(f"{n:,} {t}" for t, n in seeded.rows.items()))
        figures = measure(app, seeded, repeat)
        first_page = statement_counts(app, {"rentals_p1": "/rentals/?state=in_sync"})["rentals_p1"]
    grew = [f"{name}:{small_counts[name]}->{f.statements}" for name, f in figures.items()
            if small_counts.get(name) != f.statements]
    if first_page != figures["rentals_p100"].statements:
        grew.append(f"rentals_page1_vs_100:{first_page}->{figures['rentals_p100'].statements}")
    worst_name, worst = max(figures.items(), key=lambda item: item[1].p95_ms)
    line = dict(
        db=db_name, sites=str(size.sites), rentals=str(size.sites * size.rentals), attempts=str(size.attempts),
        worst_p95_ms=f"{worst.p95_ms:.1f}", worst_page=worst_name,
        **{f"{name}_p95_ms": f"{f.p95_ms:.1f}" for name, f in figures.items()},
        p50_ms=",".join(f"{name}:{f.p50_ms:.1f}" for name, f in figures.items()),
        statements=",".join(f"{name}:{f.statements}" for name, f in figures.items()),
        statements_fixed="yes" if not grew else "no:" + ",".join(grew),
        met=",".join(name for name, f in figures.items() if f.p95_ms <= TARGET_P95_MS) or "none",
        seed_s=f"{seeded.seconds:.0f}", ratio=f"{worst.p95_ms / TARGET_P95_MS:.2f}")
    return report("dashboard", **line)


def main() -> list[str]:
    size = Size(sites=env_int("BENCH_DASHBOARD_SITES", 200), rentals=env_int("BENCH_DASHBOARD_RENTALS", 1000),
                attempts=env_int("BENCH_DASHBOARD_ATTEMPTS", 1_000_000))
    repeat = env_int("BENCH_DASHBOARD_REPEAT", 20)
    chosen = (os.environ.get("BENCH_DATABASE") or "").lower()
    databases = [chosen] if chosen in ("sqlite", "postgres") else ["sqlite", "postgres"]
    lines = []
    for database in databases:
        if database == "postgres" and not postgres_available():
            say("dashboard: PostgreSQL does not answer at 127.0.0.1:5432; measured on SQLite only")
            continue
        lines.append(run(database, size, repeat))
    return lines


if __name__ == "__main__":
    main()

"""Trends: pushes, failures and event-to-gate latency per site and hour or day, from a rollup the journal feeds.

The journal (`sync_attempts`) grows by a row per push attempt; the Trends page must not read it (a million rows is a
normal month). `feed` reads the journal past a cursor (its last id read) and adds each attempt to `sync_trends`:
one row per site (and one for every site, `site_id` 0) and hour, and the same per day. The page then reads at most
30 rows per chart, whatever the journal's size, and the rows outlive the journal's pruning (`retention.prune`).

Safe to run at any time, twice at once, or to die half-way: each batch moves the cursor (a compare-and-set on its
row, so a second run that read the same rows finds the cursor moved and adds nothing) and adds its counts in one
transaction. A journal row is read only once it has settled (`SETTLE_S` after it was written), so a push still
committing with a lower id is never skipped by a cursor that moved past it.

Latency is kept as counts per fixed log-scale bucket (each a quarter of a doubling wide, from 100 ms), so hours and
days add up exactly and p50 / p95 come from the counts, within half a bucket (about 9 %).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from .extensions import db
from .models import ProductSetting, PtiAccount, Site, SyncAttempt, SyncTrend, utcnow

log = logging.getLogger(__name__)

HOUR, DAY = "hour", "day"
EVERY_SITE = 0  # the site_id of the rows for every site together
OUTCOMES = ("ok", "noop", "retry", "failed")
COLUMN_OF = {"ok": "ok", "noop": "noop", "retry": "retried", "failed": "failed"}

FEED_BATCH = 5000  # journal rows per transaction
FEED_MAX_BATCHES = 100  # per run: the first run on a big journal carries on in the next runs
SETTLE_S = 60  # a journal row is read this long after it was written (longer than any push's commit may wait)
CURSOR = "trends_fed_through"  # ProductSetting: the id of the last journal row added to the rollup
DEMO_UNTIL = "trends_demo_until"  # ProductSetting: the rollup holds made-up demo history before this hour

DEMO_OUTCOMES = (("retry", 0.03), ("failed", 0.04), ("noop", 0.2), ("ok", 1.0))  # a normal hour, cumulative shares

HOUR_ROWS_KEPT_DAYS = 7  # hourly rows (the page shows 24 hours)
DAY_ROWS_KEPT_DAYS = 400  # daily rows (the page shows 30 days)

# Latency buckets: 0 is under GATE_BASE_MS; bucket k ≥ 1 is [base·2^((k-1)/STEPS), base·2^(k/STEPS)); the last one
# also takes everything longer (about 29 hours and more).
GATE_BASE_MS = 100
GATE_STEPS = 4  # buckets per doubling
GATE_LAST = 81


def gate_bucket(ms: float) -> int:
    if ms < GATE_BASE_MS:
        return 0
    return min(GATE_LAST, int(math.floor(math.log2(ms / GATE_BASE_MS) * GATE_STEPS)) + 1)


def gate_bounds(k: int) -> tuple[float, float]:
    """A bucket's lowest and highest latency in ms."""
    high = GATE_BASE_MS * 2 ** (k / GATE_STEPS)
    return (0.0 if k == 0 else GATE_BASE_MS * 2 ** ((k - 1) / GATE_STEPS)), high


def percentile(counts: dict, q: float) -> float | None:
    """The q-quantile (0 < q ≤ 1) in ms of latencies counted per bucket, interpolated inside its bucket on the log
    scale (linearly in bucket 0); None without any."""
    counts = {int(k): n for k, n in (counts or {}).items() if n}
    total = sum(counts.values())
    if not total:
        return None
    rank, below = q * total, 0
    for k in sorted(counts):
        n = counts[k]
        if below + n >= rank:
            low, high = gate_bounds(k)
            share = (rank - below) / n
            return high * share if k == 0 else low * (high / low) ** share
        below += n
    return gate_bounds(max(counts))[1]


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def day_of(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


# --- the rollup, fed from the journal -------------------------------------------------------------------------


@dataclass
class Tally:
    ok: int = 0
    noop: int = 0
    retried: int = 0
    failed: int = 0
    gate_counts: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: str, gate_ms: int | None) -> None:
        column = COLUMN_OF[outcome]
        setattr(self, column, getattr(self, column) + 1)
        if gate_ms is not None:
            key = str(gate_bucket(gate_ms))
            self.gate_counts[key] = self.gate_counts.get(key, 0) + 1

    def add_to(self, row: SyncTrend) -> None:
        row.ok, row.noop = (row.ok or 0) + self.ok, (row.noop or 0) + self.noop
        row.retried, row.failed = (row.retried or 0) + self.retried, (row.failed or 0) + self.failed
        if self.gate_counts:
            merged = dict(row.gate_counts or {})
            for key, n in self.gate_counts.items():
                merged[key] = merged.get(key, 0) + n
            row.gate_counts = merged  # a new dict: the JSON column is written again


def _cursor() -> int | None:
    value = db.session.scalar(select(ProductSetting.value).where(ProductSetting.name == CURSOR))
    return None if value is None else int(value)


def _claim(old: int | None, new: int) -> bool:
    """Move the cursor from `old` to `new` in the open transaction; False when another run moved it first."""
    if old is None:
        db.session.add(ProductSetting(name=CURSOR, value=str(new)))
        try:
            db.session.flush()
        except IntegrityError:
            return False
        return True
    moved = db.session.execute(update(ProductSetting).where(ProductSetting.name == CURSOR,
                                                            ProductSetting.value == str(old))
                               .values(value=str(new))).rowcount
    return moved == 1


def add_up(tallies: dict[tuple[int, str, datetime], Tally]) -> None:
    """Add tallies to their rollup rows (created where missing), in the open transaction."""
    if not tallies:
        return
    keys = list(tallies)
    rows = {(r.site_id, r.span, r.start): r for r in db.session.scalars(
        select(SyncTrend).where(tuple_(SyncTrend.site_id, SyncTrend.span, SyncTrend.start).in_(keys)))}
    for key, tally in tallies.items():
        row = rows.get(key)
        if row is None:
            row = SyncTrend(site_id=key[0], span=key[1], start=key[2], ok=0, noop=0, retried=0, failed=0)
            db.session.add(row)
        tally.add_to(row)


def _feed_batch(now: datetime, batch: int) -> int:
    cursor = _cursor()
    rows = db.session.execute(
        select(SyncAttempt.id, SyncAttempt.started_at, SyncAttempt.duration_ms, SyncAttempt.outcome,
               SyncAttempt.gate_ms, PtiAccount.site_id)
        .outerjoin(PtiAccount, PtiAccount.id == SyncAttempt.account_id)
        .where(SyncAttempt.id > (cursor or 0)).order_by(SyncAttempt.id).limit(batch)).all()
    settled = now - timedelta(seconds=SETTLE_S)
    taken = []
    for row in rows:
        if row.started_at + timedelta(milliseconds=row.duration_ms or 0) > settled:
            break  # this one and every later one wait for the next run
        taken.append(row)
    if not taken or not _claim(cursor, taken[-1].id):
        db.session.rollback()
        return 0
    tallies: dict[tuple[int, str, datetime], Tally] = {}
    for row in taken:
        if row.outcome not in COLUMN_OF:
            continue
        for site_id in (EVERY_SITE, row.site_id) if row.site_id else (EVERY_SITE,):
            for span, start in ((HOUR, hour_of(row.started_at)), (DAY, day_of(row.started_at))):
                tallies.setdefault((site_id, span, start), Tally()).add(row.outcome, row.gate_ms)
    add_up(tallies)
    db.session.commit()
    return len(taken)


def feed(now: datetime | None = None, *, batch: int = FEED_BATCH, max_batches: int = FEED_MAX_BATCHES) -> int:
    """Add every settled journal row past the cursor to the rollup; returns how many were added."""
    now = now or utcnow()
    fed = 0
    for _ in range(max_batches):
        taken = _feed_batch(now, batch)
        fed += taken
        if taken < batch:
            break
    if fed:
        log.info("trends: %d journal rows added to the rollup", fed)
    return fed


def prune(now: datetime | None = None) -> int:
    """Delete hourly rows older than HOUR_ROWS_KEPT_DAYS and daily rows older than DAY_ROWS_KEPT_DAYS."""
    now = now or utcnow()
    deleted = 0
    for span, days in ((HOUR, HOUR_ROWS_KEPT_DAYS), (DAY, DAY_ROWS_KEPT_DAYS)):
        deleted += db.session.execute(delete(SyncTrend).where(
            SyncTrend.span == span, SyncTrend.start < day_of(now) - timedelta(days=days))).rowcount
    db.session.commit()
    return deleted


# --- what the page reads --------------------------------------------------------------------------------------


@dataclass
class Point:
    """One hour or day of a chart."""

    start: datetime
    ok: int = 0
    noop: int = 0
    retried: int = 0
    failed: int = 0
    gate_counts: dict = field(default_factory=dict)

    @property
    def pushes(self) -> int:
        """Attempts that left PTI right: it took the changes, or already had them."""
        return self.ok + self.noop

    @property
    def failures(self) -> int:
        """Attempts that ended in an error: retried later, or parked for a person."""
        return self.retried + self.failed

    @property
    def gate_count(self) -> int:
        return sum((self.gate_counts or {}).values())

    @property
    def p50(self) -> float | None:
        return percentile(self.gate_counts, 0.5)

    @property
    def p95(self) -> float | None:
        return percentile(self.gate_counts, 0.95)


RANGES = {"24h": (HOUR, 24), "30d": (DAY, 30)}


def starts(span: str, count: int, now: datetime) -> list[datetime]:
    """The hours (or days) of a chart, the oldest first, the current one last."""
    last, step = (hour_of(now), timedelta(hours=1)) if span == HOUR else (day_of(now), timedelta(days=1))
    return [last - step * i for i in range(count - 1, -1, -1)]


def series(site_id: int, span: str, count: int, now: datetime | None = None) -> list[Point]:
    """One query: a chart's rows, with the hours (or days) nothing happened in as zeros."""
    moments = starts(span, count, now or utcnow())
    rows = {r.start: r for r in db.session.scalars(select(SyncTrend).where(
        SyncTrend.site_id == site_id, SyncTrend.span == span, SyncTrend.start >= moments[0],
        SyncTrend.start <= moments[-1]))}
    points = []
    for moment in moments:
        row = rows.get(moment)
        points.append(Point(moment) if row is None else Point(moment, row.ok, row.noop, row.retried, row.failed,
                                                               dict(row.gate_counts or {})))
    return points


def demo_until() -> datetime | None:
    """Before this hour the rollup holds made-up demo history (`seed_demo`), or None."""
    value = db.session.scalar(select(ProductSetting.value).where(ProductSetting.name == DEMO_UNTIL))
    return datetime.fromisoformat(value) if value else None


# --- demo history ---------------------------------------------------------------------------------------------


def seed_demo(now: datetime | None = None, days: int = 30) -> bool:
    """Made-up history for the demo's sites: `days` days of hours before the current one, so Trends shows a day and a
    month on a fresh `make run`. Only in demo or test mode, only once and before any real hour is in the rollup; the
    page marks it as demo history (DEMO_UNTIL). Real pushes are added by `feed`, from the current hour on (today's
    daily row holds both). False: nothing seeded."""
    if not (current_app.config.get("DEMO_MODE") or current_app.config.get("TESTING")):
        return False
    now = now or utcnow()
    until = hour_of(now)
    cursor = _cursor()
    if not _claim(cursor, cursor or 0):  # holds off a feed adding to the same rows meanwhile
        db.session.rollback()
        return False
    sites = db.session.scalars(select(Site).order_by(Site.id)).all()
    if not sites or demo_until() is not None or db.session.scalar(
            select(SyncTrend.site_id).where(SyncTrend.span == HOUR, SyncTrend.start < until).limit(1)) is not None:
        db.session.rollback()
        return False  # no business yet, or history already there (seeded, or real)
    hour_rows_from = day_of(now) - timedelta(days=HOUR_ROWS_KEPT_DAYS)
    rng = random.Random(20261201)  # the same history every time
    tallies: dict[tuple[int, str, datetime], Tally] = {}
    for moment in _hours(until - timedelta(days=days), until):
        for site in sites:
            busy = 3.0 if 7 <= moment.hour < 19 else 0.6  # people move in, pay and fall behind in the daytime
            # The demo's Hilltop has a wrong PTI password (sim/demo_data.py): say it broke three days ago.
            outage = site.code == "hilltop" and moment >= until - timedelta(days=3)
            for _ in range(_poisson(rng, busy)):
                roll = rng.random()
                if outage:
                    outcome = "failed" if roll < 0.3 else "retry"
                else:
                    outcome = next(o for o, share in DEMO_OUTCOMES if roll < share)
                gate_ms = int(rng.lognormvariate(math.log(2500), 0.8)) if outcome == "ok" else None
                for site_id in (EVERY_SITE, site.id):
                    spans = [(DAY, day_of(moment))] + ([(HOUR, moment)] if moment >= hour_rows_from else [])
                    for span, start in spans:
                        tallies.setdefault((site_id, span, start), Tally()).add(outcome, gate_ms)
    add_up(tallies)
    db.session.merge(ProductSetting(name=DEMO_UNTIL, value=until.isoformat()))
    db.session.commit()
    return True


def _hours(first: datetime, end: datetime) -> Iterable[datetime]:
    moment = first
    while moment < end:
        yield moment
        moment += timedelta(hours=1)


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1

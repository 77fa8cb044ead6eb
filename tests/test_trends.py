"""Trends: the rollup the journal feeds (incremental, idempotent, outliving the journal's pruning), percentiles from
its latency buckets, and the page (per site and overall, 24 hours and 30 days, empty, bad input, cost)."""

from datetime import datetime, timedelta

import pytest
from sqlalchemy import event, func, select

from dashboard import trends
from dashboard.extensions import db
from dashboard.models import Customer, PtiAccount, Site, SyncAttempt, SyncTrend, utcnow
from dashboard.retention import prune

NOW = utcnow().replace(minute=30, second=0, microsecond=0)


def account_at(code: str) -> PtiAccount:
    """A PTI account at the demo site `code` (a customer of its own, so two sites never share one)."""
    taken = select(PtiAccount.customer_id)
    customer = db.session.scalar(select(Customer).where(Customer.id.not_in(taken)).order_by(Customer.id))
    account = PtiAccount(customer_id=customer.id, site_id=db.session.scalar(select(Site.id).where(Site.code == code)))
    db.session.add(account)
    db.session.commit()
    return account


def attempt(account: PtiAccount, at: datetime, outcome: str = "ok", gate_ms: int | None = None) -> None:
    db.session.add(SyncAttempt(account_id=account.id, trigger="test", started_at=at, duration_ms=50, generation=1,
                               outcome=outcome, gate_ms=gate_ms))
    db.session.commit()


def row(site_id: int, span: str, start: datetime) -> SyncTrend | None:
    db.session.expire_all()
    return db.session.get(SyncTrend, (site_id, span, start))


def counts(r: SyncTrend | None) -> tuple[int, int, int, int, int]:
    return (0, 0, 0, 0, 0) if r is None else (r.ok, r.noop, r.retried, r.failed, sum((r.gate_counts or {}).values()))


# --- percentiles from buckets ---------------------------------------------------------------------------------


def test_each_latency_falls_in_the_bucket_whose_bounds_hold_it():
    assert trends.gate_bucket(0) == 0 and trends.gate_bucket(99) == 0
    for ms in (100, 141, 250, 999, 12_345, 3_600_000):
        low, high = trends.gate_bounds(trends.gate_bucket(ms))
        assert low <= ms < high
    assert trends.gate_bucket(10**12) == trends.GATE_LAST  # days late: the last bucket takes it


@pytest.mark.parametrize("latencies", [
    list(range(200, 20_200, 100)),  # evenly spread, 0.2 s to 20 s
    [1500] * 90 + [60_000] * 10,  # most fast, a tail of a minute
])
def test_p50_and_p95_from_the_bucket_counts_are_within_ten_percent_of_the_exact_ones(latencies):
    tally = trends.Tally()
    for ms in latencies:
        tally.add("ok", ms)
    ordered = sorted(latencies)
    for q in (0.5, 0.95):
        exact = ordered[int(q * len(ordered)) - 1]
        assert trends.percentile(tally.gate_counts, q) == pytest.approx(exact, rel=0.1)


def test_no_latency_no_percentile():
    assert trends.percentile({}, 0.5) is None
    assert trends.Point(NOW).p95 is None


# --- the rollup, fed from the journal -------------------------------------------------------------------------


def test_the_feed_counts_each_attempt_per_site_and_overall_per_hour_and_day(app, demo_business):
    north, river = account_at("northgate"), account_at("riverside")
    hour = trends.hour_of(NOW - timedelta(hours=3))
    attempt(north, hour + timedelta(minutes=5), "ok", 2000)
    attempt(north, hour + timedelta(minutes=6), "ok", 4000)
    attempt(north, hour + timedelta(minutes=7), "failed")
    attempt(river, hour + timedelta(minutes=8), "retry")
    attempt(river, hour + timedelta(minutes=9), "noop")
    attempt(river, hour - timedelta(minutes=1), "ok", 800)  # the hour before
    assert trends.feed(NOW) == 6
    assert counts(row(north.site_id, "hour", hour)) == (2, 0, 0, 1, 2)
    assert counts(row(river.site_id, "hour", hour)) == (0, 1, 1, 0, 0)
    assert counts(row(trends.EVERY_SITE, "hour", hour)) == (2, 1, 1, 1, 2)
    assert counts(row(trends.EVERY_SITE, "hour", hour - timedelta(hours=1))) == (1, 0, 0, 0, 1)
    day = trends.day_of(hour)
    days = counts(row(trends.EVERY_SITE, "day", day))
    if trends.day_of(hour - timedelta(hours=1)) == day:
        assert days == (3, 1, 1, 1, 3)
    else:  # the run started just after midnight: the earlier hour is yesterday's
        assert days == (2, 1, 1, 1, 2)


def test_the_feed_is_incremental_and_a_second_run_counts_nothing_twice(app, demo_business):
    north = account_at("northgate")
    hour = trends.hour_of(NOW - timedelta(hours=2))
    attempt(north, hour + timedelta(minutes=1))
    assert trends.feed(NOW) == 1
    assert trends.feed(NOW) == 0
    attempt(north, hour + timedelta(minutes=2))
    attempt(north, hour + timedelta(minutes=3), "failed")
    assert trends.feed(NOW) == 2
    assert counts(row(north.site_id, "hour", hour)) == (2, 0, 0, 1, 0)


def test_a_row_just_written_waits_for_the_next_run(app, demo_business):
    """A push committing with a lower id must not be skipped: only rows older than SETTLE_S are read, in id order."""
    north = account_at("northgate")
    attempt(north, NOW - timedelta(hours=1))
    attempt(north, NOW - timedelta(seconds=5))
    attempt(north, NOW - timedelta(hours=1))  # older, but after the fresh one in the journal: waits with it
    assert trends.feed(NOW) == 1
    assert trends.feed(NOW + timedelta(seconds=trends.SETTLE_S)) == 2


def test_in_batches_the_first_run_on_a_big_journal_reads_it_all(app, demo_business):
    north = account_at("northgate")
    for minute in range(7):
        attempt(north, NOW - timedelta(hours=1, minutes=minute))
    assert trends.feed(NOW, batch=3) == 7
    assert trends.feed(NOW, batch=2, max_batches=1) == 0


def test_a_run_that_read_the_rows_another_run_added_adds_nothing(app, demo_business, monkeypatch):
    north = account_at("northgate")
    hour = trends.hour_of(NOW - timedelta(hours=1))
    attempt(north, hour)
    assert trends.feed(NOW) == 1
    monkeypatch.setattr(trends, "_cursor", lambda: None)  # as if it had read the cursor before the first run moved it
    assert trends.feed(NOW) == 0
    monkeypatch.setattr(trends, "_cursor", lambda: 0)
    assert trends.feed(NOW) == 0
    assert counts(row(north.site_id, "hour", hour)) == (1, 0, 0, 0, 0)


def test_a_run_that_dies_half_way_leaves_the_cursor_and_the_counts_as_they_were(app, demo_business, monkeypatch):
    north = account_at("northgate")
    hour = trends.hour_of(NOW - timedelta(hours=1))
    attempt(north, hour)
    real = trends.add_up

    def dies(tallies):
        real(tallies)
        db.session.flush()
        raise RuntimeError("worker killed")

    monkeypatch.setattr(trends, "add_up", dies)
    with pytest.raises(RuntimeError):
        trends.feed(NOW)
    db.session.rollback()
    monkeypatch.setattr(trends, "add_up", real)
    assert row(north.site_id, "hour", hour) is None
    assert trends.feed(NOW) == 1
    assert counts(row(north.site_id, "hour", hour)) == (1, 0, 0, 0, 0)


def test_the_rollup_outlives_the_journals_pruning_and_keeps_its_own_retention(app, demo_business):
    from jobs.maintenance import prune_history

    app.config["JOURNAL_RETENTION_DAYS"] = 30
    north = account_at("northgate")
    old = trends.day_of(NOW - timedelta(days=35)) + timedelta(hours=12)
    attempt(north, old, "ok", 3000)  # never fed yet: the prune job feeds before it prunes
    recent = trends.hour_of(NOW - timedelta(days=2))
    attempt(north, recent, "ok", 3000)
    assert prune_history()["attempts"] == 1
    assert db.session.scalar(select(func.count()).select_from(SyncAttempt)) == 1
    assert counts(row(north.site_id, "day", trends.day_of(old))) == (1, 0, 0, 0, 1)  # 30 days of days kept
    assert row(north.site_id, "hour", trends.hour_of(old)) is None  # hours are kept a week
    assert counts(row(north.site_id, "hour", recent)) == (1, 0, 0, 0, 1)
    db.session.add(SyncTrend(site_id=0, span="day", start=trends.day_of(NOW) - timedelta(days=500), ok=1, noop=0,
                             retried=0, failed=0))
    db.session.commit()
    prune()
    assert row(0, "day", trends.day_of(NOW) - timedelta(days=500)) is None


def test_demo_history_is_seeded_once_and_marked(app, demo_business):
    assert trends.seed_demo(NOW)
    assert trends.demo_until() == trends.hour_of(NOW)
    starts = {span: db.session.scalars(select(SyncTrend.start).where(SyncTrend.span == span,
                                                                      SyncTrend.site_id == 0)).all()
              for span in ("hour", "day")}
    first_hour = trends.day_of(NOW) - timedelta(days=trends.HOUR_ROWS_KEPT_DAYS)
    assert len(starts["hour"]) > 100  # the quiet night hours may have none
    assert all(first_hour <= start < trends.hour_of(NOW) for start in starts["hour"])  # before the real ones
    assert len(starts["day"]) in (30, 31)  # a month of days, today's first hours included
    assert not trends.seed_demo(NOW)


def test_no_demo_history_over_real_history(app, demo_business):
    attempt(account_at("northgate"), NOW - timedelta(hours=5))
    trends.feed(NOW)
    assert not trends.seed_demo(NOW)
    assert trends.demo_until() is None


# --- the page -------------------------------------------------------------------------------------------------


def figures(html: str) -> dict[str, str]:
    import re

    return dict(re.findall(r'data-total="(\w+)">([^<]*)<', html))


def test_the_page_shows_overall_and_per_site_figures_for_24_hours_and_30_days(app, client, auth, demo_business):
    north, river = account_at("northgate"), account_at("riverside")
    now = utcnow()
    attempt(north, now - timedelta(hours=2), "ok", 2000)
    attempt(north, now - timedelta(hours=2), "failed")
    attempt(river, now - timedelta(hours=3), "ok", 6000)
    attempt(river, now - timedelta(days=10), "ok", 9000)  # in the month, not the day
    trends.feed()
    auth.login("manager")
    overall = client.get("/trends/").get_data(as_text=True)
    assert figures(overall)["pushes"] == "2" and figures(overall)["failures"] == "1"
    assert 'data-table="counts"' in overall and 'data-table="latency"' in overall
    assert overall.count('<tr data-start="') == 2 * 24
    month = client.get("/trends/?range=30d").get_data(as_text=True)
    assert figures(month)["pushes"] == "3"
    assert month.count('<tr data-start="') == 2 * 30
    at_north = client.get(f"/trends/?site={north.site_id}").get_data(as_text=True)
    shown = figures(at_north)
    assert (shown["pushes"], shown["failures"]) == ("1", "1")
    for q in ("p50", "p95"):  # the one push timed, 2 s, within its bucket's 10 %
        assert shown[q].endswith(" s") and 1.8 <= float(shown[q][:-2]) <= 2.2
    assert "Northgate" in at_north and "data-demo-until" not in at_north
    river_month = client.get(f"/trends/?site={river.site_id}&range=30d").get_data(as_text=True)
    assert figures(river_month)["pushes"] == "2" and figures(river_month)["failures"] == "0"


def test_the_page_says_when_nothing_was_pushed(app, client, auth, demo_business):
    auth.login("staff")
    html = client.get("/trends/").get_data(as_text=True)
    assert 'data-trends="empty"' in html and "<svg" not in html


def test_the_page_marks_demo_history(app, client, auth, demo_business):
    trends.seed_demo()
    auth.login("support")
    html = client.get("/trends/?range=30d").get_data(as_text=True)
    assert "data-demo-until" in html and "made-up history" in html
    assert html.count("<svg") == 2


@pytest.mark.parametrize(("query", "status"), [("?range=7d", 400), ("?site=abc", 400), ("?site=9999", 404)])
def test_bad_input_gets_a_clear_answer(app, client, auth, demo_business, query, status):
    auth.login("admin")
    assert client.get(f"/trends/{query}").status_code == status


def test_the_page_costs_the_same_statements_whatever_the_journal_holds(app, client, auth, demo_business):
    auth.login("manager")
    north = account_at("northgate")

    def statements(path: str) -> int:
        seen = []
        listener = lambda conn, cursor, statement, *args: seen.append(statement)  # noqa: E731
        event.listen(db.engine, "before_cursor_execute", listener)
        try:
            assert client.get(path).status_code == 200
        finally:
            event.remove(db.engine, "before_cursor_execute", listener)
        assert not [s for s in seen if "sync_attempts" in s], "the page reads the rollup, never the journal"
        return len(seen)

    attempt(north, utcnow() - timedelta(hours=2))
    trends.feed()
    small = statements("/trends/?range=30d"), statements(f"/trends/?site={north.site_id}")
    for hours in range(1, 24 * 25, 5):
        attempt(north, utcnow() - timedelta(hours=hours), "ok", 1000 * hours)
    assert trends.feed() > 100
    assert (statements("/trends/?range=30d"), statements(f"/trends/?site={north.site_id}")) == small


def test_the_feed_is_registered_by_cron_every_minute(runner, monkeypatch):
    import dashboard.cli as cli
    from dashboard.jobqueue import DEFAULT, TRENDS

    registered = {}

    class Recorder:
        def __init__(self, **_options):
            pass

        def register(self, fn, queue, interval):
            registered[f"{fn.__module__}.{fn.__name__}"] = (queue, interval)

        def start(self):
            pass

    monkeypatch.setattr(cli, "CronScheduler", Recorder)
    assert runner.invoke(args=["cron"]).exit_code == 0
    assert registered[TRENDS] == (DEFAULT, 60)

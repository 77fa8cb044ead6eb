"""/healthz for load balancers and /metrics for Prometheus: both read live state, neither needs a log-in."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, abort, current_app, jsonify
from flask_login import current_user
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from rq import Worker
from sqlalchemy import func, select, text

from ..engine import lag
from ..extensions import db
from ..jobqueue import QUEUE_NAMES, get_queue, get_redis
from ..models import ACTIVE_RENTAL_STATES, PtiAccount, Rental, Site, SyncState, WebhookDelivery, utcnow
from ..security import public

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


def _check(name: str, probe) -> tuple[bool, object]:
    try:
        return True, probe()
    except Exception as exc:  # noqa: BLE001 - any failure of a dependency is reported, never raised
        log.warning("health check %s failed: %s", name, exc.__class__.__name__)
        if name == "db":
            db.session.rollback()
        return False, None


@bp.route("/healthz")
@public
def healthz():
    db_ok, _ = _check("db", lambda: db.session.execute(text("SELECT 1")).scalar())
    redis_ok, _ = _check("redis", lambda: get_redis().ping())
    workers = depth = None
    if redis_ok:
        _, workers = _check("workers", lambda: Worker.count(connection=get_redis()))
        _, depth = _check("queue_depth", lambda: sum(get_queue(n).count for n in QUEUE_NAMES))
    healthy = db_ok and redis_ok and bool(workers)
    body = {
        "status": "ok" if healthy else "degraded",
        "db": "ok" if db_ok else "down",
        "redis": "ok" if redis_ok else "down",
        "workers": workers or 0,
        "queue_depth": depth,
    }
    return jsonify(body), 200 if healthy else 503


class _Collector:
    """Reads the figures at scrape time, so every web process reports the same truth (no per-process counters)."""

    def collect(self):
        rentals = GaugeMetricFamily("pti_sync_rentals", "Active rentals by site and sync state",
                                    labels=["site", "state"])
        for site, state, n in db.session.execute(
            select(Site.code, Rental.sync_state, func.count()).join(Rental.site)
            .where(Rental.state.in_(ACTIVE_RENTAL_STATES)).group_by(Site.code, Rental.sync_state)
        ):
            rentals.add_metric([site, state], n)
        yield rentals
        overlocked = GaugeMetricFamily("pti_sync_overlocked_rentals", "Rentals overlocked", labels=["site"])
        for site, n in db.session.execute(
            select(Site.code, func.count()).join(Rental.site)
            .where(Rental.overlocked.is_(True), Rental.state.in_(ACTIVE_RENTAL_STATES)).group_by(Site.code)
        ):
            overlocked.add_metric([site], n)
        yield overlocked
        owed = GaugeMetricFamily("pti_sync_accounts_owed", "PTI accounts whose desired state is not yet pushed")
        owed.add_metric([], db.session.scalar(
            select(func.count()).where(PtiAccount.generation > PtiAccount.synced_generation)) or 0)
        yield owed
        failed = GaugeMetricFamily("pti_sync_accounts_failed", "PTI accounts parked as failed")
        failed.add_metric([], db.session.scalar(
            select(func.count()).where(PtiAccount.state == SyncState.FAILED)) or 0)
        yield failed
        webhooks = GaugeMetricFamily("pti_sync_webhook_deliveries", "Webhook deliveries by status",
                                     labels=["status"])
        for status, n in db.session.execute(
            select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
        ):
            webhooks.add_metric([status], n)
        yield webhooks
        behind = lag.measure(utcnow())
        ages = GaugeMetricFamily("pti_sync_lag_seconds", "How long the oldest of each kind of owed work has waited "
                                 "(0: none waits)", labels=["what"])
        for what, seconds in (("owed", behind.owed_s), ("urgent_owed", behind.urgent_owed_s),
                              ("delivery", behind.delivery_s), ("urgent_job", behind.urgent_job_s)):
            if what != "urgent_job" or behind.redis_ok:  # a Redis that does not answer is not an empty queue
                ages.add_metric([what], seconds or 0.0)
        yield ages
        stale = GaugeMetricFamily("pti_sync_stale", "1 while sync is stale (the dashboard's banner shows)")
        stale.add_metric([], 1 if lag.stale_reasons(behind) else 0)
        yield stale
        try:
            conn = get_redis()
            depth = GaugeMetricFamily("pti_sync_queue_depth", "Jobs waiting per queue", labels=["queue"])
            for name in QUEUE_NAMES:
                depth.add_metric([name], get_queue(name).count)
            yield depth
            workers = GaugeMetricFamily("pti_sync_workers", "RQ workers alive")
            workers.add_metric([], Worker.count(connection=conn))
            yield workers
        except Exception:  # noqa: BLE001 - metrics still answer with the database figures when Redis is down
            log.warning("metrics: Redis is not answering")


@bp.route("/metrics")
@public
def metrics():
    if not current_app.config["METRICS_PUBLIC"] and not current_user.is_authenticated:
        abort(401)
    registry = CollectorRegistry()
    registry.register(_Collector())
    return Response(generate_latest(registry), mimetype="text/plain; version=0.0.4; charset=utf-8")

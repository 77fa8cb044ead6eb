"""The dashboard's blueprints, one per area, and the error pages."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import redis
from flask import current_app, g, render_template
from jinja2_fragments.flask import render_block
from sqlalchemy.exc import SQLAlchemyError

from ..engine import lag
from ..extensions import db, htmx, login_manager
from ..models import RowAction, utcnow
from ..sync.errors import problem

log = logging.getLogger(__name__)

# A page, site or customer number in a query string: ASCII digits ("²" is a digit to str.isdigit, not to int),
# few enough for any database's integer.
NUMBER = re.compile(r"[0-9]{1,9}")


def masked_code(code: int | None) -> str:
    """Access codes are never listed in full (domain.md): •••456."""
    from ..sync.codes import mask

    return mask(code) if code else "—"


def page_or_block(template: str, block: str, target: str, **context) -> str:
    """The whole page, or only its `block` when htmx asks to swap the element `target` (a filter, a page turn, a
    refresh in place)."""
    if htmx and htmx.target == target:
        return render_block(template, block, **context)
    return render_template(template, **context)


def init_app(app) -> None:
    from . import (
        activity,
        auth,
        customers,
        failures,
        health,
        overview,
        rentals,
        settings,
        sites,
        trends,
        uploads,
        users,
        webhooks,
        work,
    )

    for module in (auth, overview, failures, work, trends, sites, rentals, customers, activity, uploads, users,
                   settings, health, webhooks):
        app.register_blueprint(module.bp)
    app.add_template_filter(problem, "problem")
    app.add_template_filter(lambda reason: problem(reason).message, "problem_message")
    app.add_template_filter(lambda reason: problem(reason).fix, "problem_fix")
    app.add_template_filter(masked_code, "masked_code")
    app.add_template_filter(age, "age")
    app.add_template_filter(local_time, "local_time")
    app.add_template_filter(lambda action: RowAction(action).label if action else "—", "row_action")

    @app.context_processor
    def sync_lag():
        def sync_stale() -> list[str]:
            """Why sync is stale (empty: keeping up): measured only by the pages that show it (fragments do not)."""
            return lag.stale_reasons(lag.measure(utcnow()))

        return {"sync_stale": sync_stale}

    @app.errorhandler(403)
    def forbidden(exc):
        return render_template("errors/error.html", code=403, title="Not allowed",
                               message="Your role does not allow this page or action."), 403

    @app.errorhandler(404)
    def not_found(exc):
        return render_template("errors/error.html", code=404, title="Page not found",
                               message="There is no page at this address."), 404

    @app.errorhandler(SQLAlchemyError)
    def database_down(exc):
        log.error("database error: %s", exc.__class__.__name__)
        try:
            db.session.rollback()
        except SQLAlchemyError:  # the connection is gone too: the page must still say what happened
            db.session.remove()
        # Rendering asks Flask-Login for the user, which would ask the database again: this page has no user.
        g._login_user = login_manager.anonymous_user()
        return render_template("errors/plain.html", code=503, title="The database is not answering",
                               message="PTI Sync cannot reach its database right now. Nothing was changed. "
                                       "Try again in a minute; see /healthz for details."), 503

    @app.errorhandler(redis.exceptions.RedisError)
    def redis_down(exc):
        log.error("redis error: %s", exc.__class__.__name__)
        return render_template("errors/plain.html", code=503, title="The job queue is not answering",
                               message="PTI Sync cannot reach Redis right now, so it cannot start work. "
                                       "Try again in a minute; see /healthz for details."), 503

    @app.errorhandler(500)
    def server_error(exc):
        return render_template("errors/plain.html", code=500, title="Something went wrong",
                               message="The error was logged and the change was not saved; try again."), 500


def age(moment) -> str:
    """How long ago a naive-UTC moment was (or how soon it comes), as an operator reads it: "3 min ago", "in 42 s"."""
    seconds = (utcnow() - moment).total_seconds()
    if -1 < seconds < 1:
        return "just now"
    return f"{lag.duration(seconds)} ago" if seconds > 0 else f"in {lag.duration(-seconds)}"


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_time(moment: datetime, site=None) -> str:
    """A naive-UTC moment in the site's local time (its own zone, else the business's TIME_ZONE), as staff at the
    site read it: "2026-12-01 10:32 GMT"."""
    zone = _zone((site.time_zone if site is not None else None) or current_app.config.get("TIME_ZONE") or "UTC")
    return moment.replace(tzinfo=UTC).astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")

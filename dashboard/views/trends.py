"""Trends: pushes, failures and event-to-gate latency (p50, p95) per hour over 24 hours or per day over 30 days, for
every site or one (the operations console, part 3).

The page reads only the rollup (dashboard/trends.py), at most 30 rows, so its cost does not grow with the journal.
The charts are SVG drawn here on the server (no script, nothing the page's CSP would refuse: shapes carry classes the
stylesheet colours), each with a table of its figures beneath for screen readers and anyone who wants the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from flask import Blueprint, abort, render_template, request
from sqlalchemy import select

from .. import trends
from ..extensions import db
from ..models import Site, utcnow
from ..security import EVERYONE, roles_required
from . import NUMBER

bp = Blueprint("trends", __name__, url_prefix="/trends")

# The drawing, in SVG user units (it scales to the card's width).
WIDTH, HEIGHT = 720, 230
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 14, 30
X_LABELS = {trends.HOUR: 6, trends.DAY: 5}  # one time label every so many hours or days


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 4, 6, 8 × 10ⁿ at or above `value` (an axis's top, halved for its middle tick); 1 for
    nothing."""
    if value <= 0:
        return 1
    power = 1.0
    while power * 10 <= value:
        power *= 10
    while power > value:
        power /= 10
    for step in (1, 2, 4, 6, 8, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def as_duration(ms: float | None) -> str:
    """A latency as an operator reads it: 850 ms, 2.4 s, 3.5 min, 1.2 h."""
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    if ms < 3_600_000:
        return f"{ms / 60_000:.1f} min"
    return f"{ms / 3_600_000:.1f} h"


def moment_label(start: datetime, span: str) -> str:
    return start.strftime("%H:%M") if span == trends.HOUR else f"{start.day} {start.strftime('%b')}"


def moment_name(start: datetime, span: str) -> str:
    """How a table row names its hour or day (UTC)."""
    if span == trends.HOUR:
        return f"{start.strftime('%Y-%m-%d %H:%M')}–{(start.hour + 1) % 24:02d}:00 UTC"
    return start.strftime("%a %Y-%m-%d")


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: int
    label: str


@dataclass
class Line:
    name: str
    css: str
    segments: list[list[tuple[float, float]]] = field(default_factory=list)  # a gap where nothing was timed

    @property
    def paths(self) -> list[str]:
        return ["M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in seg) for seg in self.segments if len(seg) > 1]

    @property
    def points(self) -> list[tuple[float, float]]:
        return [p for seg in self.segments for p in seg]


@dataclass
class Chart:
    """One chart's geometry: axes, ticks, time labels and either bars or lines."""

    span: str
    top: float
    ticks: list[tuple[float, str]]  # (y, label)
    labels: list[tuple[float, str]]  # (x, label)
    bars: dict[str, list[Bar]] = field(default_factory=dict)  # series name -> bars
    lines: list[Line] = field(default_factory=list)
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right_edge: int = WIDTH - RIGHT
    baseline: int = HEIGHT - BOTTOM
    plot_top: int = TOP


def _frame(points: list[trends.Point], span: str, top: float, tick_label) -> tuple[Chart, float, float]:
    plot_h = HEIGHT - BOTTOM - TOP
    slot = (WIDTH - LEFT - RIGHT) / len(points)
    ticks = [(HEIGHT - BOTTOM - plot_h * share, tick_label(top * share)) for share in (0, 0.5, 1)]
    every = X_LABELS[span]
    labels = [(LEFT + slot * (i + 0.5), moment_label(p.start, span)) for i, p in enumerate(points)
              if (len(points) - 1 - i) % every == 0]
    return Chart(span, top, ticks, labels), slot, plot_h


def counts_chart(points: list[trends.Point], span: str) -> Chart:
    """Two bars per hour or day: pushes (left), failures (right)."""
    top = max(2, nice_ceiling(max(max(p.pushes, p.failures) for p in points)))
    chart, slot, plot_h = _frame(points, span, top, lambda v: f"{v:g}")
    bar_w = slot * 0.38
    for name, value_of, offset in (("pushes", lambda p: p.pushes, 0.1), ("failures", lambda p: p.failures, 0.52)):
        bars = []
        for i, p in enumerate(points):
            value = value_of(p)
            height = plot_h * value / top
            bars.append(Bar(LEFT + slot * (i + offset), HEIGHT - BOTTOM - height, bar_w, height, value,
                            f"{moment_label(p.start, span)}: {value} {name}"))
        chart.bars[name] = bars
    return chart


def latency_chart(points: list[trends.Point], span: str) -> Chart:
    """p50 and p95 of event-to-gate latency, a line each, broken where no push was timed."""
    highest = max((p.p95 or 0) for p in points)
    top = nice_ceiling(highest / 1000) * 1000 if highest >= 1000 else nice_ceiling(highest)
    chart, slot, plot_h = _frame(points, span, top, lambda ms: as_duration(ms) if ms else "0")
    for name, css, value_of in (("p50", "line-p50", lambda p: p.p50), ("p95", "line-p95", lambda p: p.p95)):
        line, segment = Line(name, css), []
        for i, p in enumerate(points):
            value = value_of(p)
            if value is None:
                if segment:
                    line.segments.append(segment)
                segment = []
                continue
            segment.append((LEFT + slot * (i + 0.5), HEIGHT - BOTTOM - plot_h * min(value, top) / top))
        if segment:
            line.segments.append(segment)
        chart.lines.append(line)
    return chart


def _site_arg() -> Site | None:
    raw = request.args.get("site", "")
    if not raw:
        return None
    if not NUMBER.fullmatch(raw):
        abort(400, description="The site must be a site's number.")
    return db.session.get(Site, int(raw)) or abort(404)


def _range_arg() -> str:
    chosen = request.args.get("range", "24h")
    if chosen not in trends.RANGES:
        abort(400, description="The range must be 24h or 30d.")
    return chosen


@bp.route("/")
@roles_required(*EVERYONE)
def index():
    site = _site_arg()
    chosen = _range_arg()
    span, count = trends.RANGES[chosen]
    now = utcnow()
    points = trends.series(site.id if site else trends.EVERY_SITE, span, count, now)
    demo_until = trends.demo_until()
    totals = trends.Point(points[0].start)
    for p in points:
        totals.ok, totals.noop = totals.ok + p.ok, totals.noop + p.noop
        totals.retried, totals.failed = totals.retried + p.retried, totals.failed + p.failed
        for key, n in p.gate_counts.items():
            totals.gate_counts[key] = totals.gate_counts.get(key, 0) + n
    busy = any(p.pushes or p.failures for p in points)
    return render_template(
        "trends/index.html", site=site, chosen=chosen, span=span, points=points, totals=totals, busy=busy,
        counts=counts_chart(points, span) if busy else None,
        latency=latency_chart(points, span) if totals.gate_count else None,
        sites=db.session.execute(select(Site.id, Site.title).order_by(Site.title)).all(),
        demo_until=demo_until if demo_until and demo_until > points[0].start else None,
        as_duration=as_duration, moment_name=lambda p: moment_name(p.start, span), ranges=trends.RANGES)

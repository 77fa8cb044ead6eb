"""Work: is the system keeping up right now? RQ's queues, workers and registries beside the work the database says
is owed, refreshed every two seconds, and the relay on demand (the operations console, part 2)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from flask import Blueprint, current_app, render_template, url_for
from flask_login import current_user
from rq import Queue, Worker
from rq.exceptions import DeserializationError, InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.registry import DeferredJobRegistry, FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from sqlalchemy import case, func, select

from .. import audit
from ..actions import ActionError
from ..engine.intent import BATCH_JOB_TIMEOUT_S
from ..engine.lag import duration
from ..extensions import db
from ..jobqueue import FORKED_JOBS, JOBS, QUEUE_NAMES, RELAY, URGENT, enqueue, get_redis, head_enqueued_at, naive_utc
from ..models import Customer, PtiAccount, SyncAttempt, SyncState, WebhookDelivery, utcnow
from ..security import ADMINS, EVERYONE, roles_required
from . import page_or_block
from .acting import act

bp = Blueprint("work", __name__, url_prefix="/work")
log = logging.getLogger(__name__)

REFRESH_S = 2  # how often the page asks for its figures again
# One customer's push or one delivery takes seconds, PTI's time-outs and retries included: one still running after
# five minutes is stuck (a PTI that hangs every call, a lock it waits on), not slow.
ONE_EVENT_LONG_S = 300
# A whole-site job (a batch, an import, the sweep) is slow by nature: past half its own time-out (a batch's is
# BATCH_JOB_TIMEOUT_S) it is on course to be killed by RQ before it ends, and worth a look.
LONG_SHARE_OF_TIMEOUT = 0.5
FAILED_SHOWN = 5  # failed RQ jobs listed, the latest first
THROUGHPUT_MINUTES = 10  # minutes of the journal counted, one row each
ARGS_SHOWN = 3  # items of a list argument named before "… N in all"
# A job's arguments are ids and short labels ("staff:<email>", "relay"); anything else is summarised, not shown.
PLAIN_ARG = re.compile(r"[\w.:@+-]{1,64}")


bp.add_app_template_filter(duration, "duration")


def _arg(value) -> str:
    if isinstance(value, bool | int | float):
        return str(value)
    if isinstance(value, str):
        return value if PLAIN_ARG.fullmatch(value) else "text"
    if isinstance(value, list | tuple):
        shown = ", ".join(_arg(v) for v in value[:ARGS_SHOWN])
        return f"[{shown}{f', … {len(value)} in all' if len(value) > ARGS_SHOWN else ''}]"
    return type(value).__name__


def summarise_args(job: Job) -> str:
    """A job's arguments in a line: ids and short labels as they are, long lists cut, anything else by its type."""
    try:
        parts = [_arg(a) for a in job.args] + [f"{k}={_arg(v)}" for k, v in sorted(job.kwargs.items())]
    except DeserializationError:
        return "—"
    return ", ".join(parts) or "—"


def last_line(exc_string: str | None) -> str:
    """The exception's last line (its type and message), with what could be a secret masked: a run of digits (an
    access code quoted from a PTI answer) and a URL's user and password."""
    lines = [line.strip() for line in (exc_string or "").splitlines() if line.strip()]
    if not lines:
        return "—"
    line = re.sub(r"\d{4,}", "•••", lines[-1])
    line = re.sub(r"//[^/@\s]+@", "//•••@", line)
    return line[:200] + ("…" if len(line) > 200 else "")


@dataclass
class RunningJob:
    id: str
    queue: str
    func: str
    description: str
    args: str
    started_at: datetime | None
    running_s: float | None
    long_after_s: float

    @property
    def long(self) -> bool:
        return self.running_s is not None and self.running_s > self.long_after_s


def running_job(job: Job, queue: str, now: datetime) -> RunningJob:
    started = naive_utc(job.started_at)
    func_name = job.func_name or "?"
    if func_name in FORKED_JOBS:
        long_after = LONG_SHARE_OF_TIMEOUT * (job.timeout or BATCH_JOB_TIMEOUT_S)
    else:
        long_after = ONE_EVENT_LONG_S
    return RunningJob(job.id, queue, func_name.rsplit(".", 1)[-1], JOBS.get(func_name, func_name),
                      summarise_args(job), started, (now - started).total_seconds() if started else None, long_after)


@dataclass
class QueueLine:
    name: str
    depth: int = 0
    oldest_enqueued_at: datetime | None = None
    oldest_s: float | None = None
    running: int = 0
    scheduled: int = 0
    next_due: datetime | None = None
    deferred: int = 0
    failed: int = 0


@dataclass
class WorkerLine:
    name: str
    queues: list[str]
    state: str
    job: RunningJob | None
    last_heartbeat: datetime | None
    heartbeat_s: float | None


@dataclass
class FailedJob:
    id: str
    queue: str
    func: str
    ended_at: datetime | None
    error: str


@dataclass
class RqState:
    queues: list[QueueLine] = field(default_factory=list)
    workers: list[WorkerLine] = field(default_factory=list)
    running: list[RunningJob] = field(default_factory=list)
    failed: list[FailedJob] = field(default_factory=list)

    @property
    def long_running(self) -> list[RunningJob]:
        return [j for j in self.running if j.long]

    @property
    def failed_count(self) -> int:
        return sum(q.failed for q in self.queues)

    @property
    def urgent_takers(self) -> int:
        return sum(1 for w in self.workers if URGENT in w.queues)


def rq_state(conn: redis.Redis, now: datetime) -> RqState:
    """Every figure RQ keeps, read without `cleanup` (a page that looks must not move jobs between registries, which
    the workers' own maintenance does)."""
    state = RqState()
    running_by_id: dict[str, RunningJob] = {}
    failed: list[tuple[str, Job]] = []
    for name in QUEUE_NAMES:
        queue = Queue(name, connection=conn)
        line = QueueLine(name, depth=queue.count)
        line.oldest_enqueued_at = head_enqueued_at(queue) if line.depth else None
        if line.oldest_enqueued_at is not None:
            line.oldest_s = (now - line.oldest_enqueued_at).total_seconds()
        started = StartedJobRegistry(queue=queue)
        started_ids = started.get_job_ids(cleanup=False)
        line.running = len(started_ids)
        for job in Job.fetch_many(started_ids, connection=conn):
            if job is not None:
                running_by_id[job.id] = running_job(job, name, now)
        scheduled = ScheduledJobRegistry(queue=queue)
        line.scheduled = scheduled.get_job_count(cleanup=False)
        first = scheduled.get_job_ids(0, 0, cleanup=False)  # scored by when it is due: the first is next
        if first:
            try:
                line.next_due = naive_utc(scheduled.get_scheduled_time(first[0]))
            except NoSuchJobError:  # enqueued by the scheduler in between
                pass
        line.deferred = DeferredJobRegistry(queue=queue).get_job_count(cleanup=False)
        failed_registry = FailedJobRegistry(queue=queue)
        line.failed = failed_registry.get_job_count(cleanup=False)
        latest = failed_registry.get_job_ids(0, FAILED_SHOWN - 1, desc=True, cleanup=False)
        failed += [(name, job) for job in Job.fetch_many(latest, connection=conn) if job is not None]
        state.queues.append(line)
    state.running = sorted(running_by_id.values(), key=lambda j: -(j.running_s or 0))
    failed.sort(key=lambda item: naive_utc(item[1].ended_at) or datetime.min, reverse=True)
    for name, job in failed[:FAILED_SHOWN]:
        result = job.latest_result()
        state.failed.append(FailedJob(job.id, name, (job.func_name or "?").rsplit(".", 1)[-1], naive_utc(job.ended_at),
                                      last_line(result.exc_string if result else None)))
    for worker in Worker.all(connection=conn):
        job_id = worker.get_current_job_id()
        job = running_by_id.get(job_id) if job_id else None
        if job_id and job is None and (fetched := Job.fetch_many([job_id], connection=conn)[0]) is not None:
            job = running_job(fetched, fetched.origin, now)
        beat = naive_utc(worker.last_heartbeat)
        state.workers.append(WorkerLine(worker.name, worker.queue_names(), worker.get_state(), job, beat,
                                        (now - beat).total_seconds() if beat else None))
    order = {name: i for i, name in enumerate(QUEUE_NAMES)}
    state.workers.sort(key=lambda w: ([order.get(q, len(order)) for q in w.queues], w.name))
    return state


@dataclass
class Owed:
    accounts: int = 0  # owed a push and not parked: what the relay re-drives
    urgent: int = 0
    waiting_retry: int = 0  # of those, waiting out a retry's backoff
    next_retry_at: datetime | None = None
    longest_since_push: datetime | None = None  # the owed account whose last successful push is oldest
    never_pushed: int = 0
    parked: int = 0  # owed but failed: on the Failures page, not re-driven until someone retries them
    write_backs: int = 0
    overrides: int = 0
    deliveries: int = 0
    oldest_delivery_at: datetime | None = None


def owed_work(now: datetime) -> Owed:
    """What the database says is still owed: a handful of aggregate queries, whatever the backlog."""
    owed = PtiAccount.generation > PtiAccount.synced_generation
    live = (owed, PtiAccount.state != SyncState.FAILED)
    result = Owed()
    (result.accounts, result.urgent, result.waiting_retry, result.next_retry_at, result.longest_since_push,
     result.never_pushed) = db.session.execute(select(
        func.count(), func.count(case((PtiAccount.urgent, 1))),
        func.count(case((PtiAccount.next_attempt_at > now, 1))),
        func.min(case((PtiAccount.next_attempt_at > now, PtiAccount.next_attempt_at))),
        func.min(PtiAccount.last_synced_at), func.count(case((PtiAccount.last_synced_at.is_(None), 1))),
    ).where(*live)).one()
    result.parked = db.session.scalar(select(func.count()).where(owed, PtiAccount.state == SyncState.FAILED))
    result.write_backs = db.session.scalar(select(func.count()).where(PtiAccount.write_back_owed))
    result.overrides = db.session.scalar(select(func.count()).where(Customer.overrides_owed))
    result.deliveries, result.oldest_delivery_at = db.session.execute(
        select(func.count(), func.min(WebhookDelivery.received_at)).where(WebhookDelivery.status == "queued")).one()
    return result


@dataclass
class Minute:
    start: datetime
    attempts: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


def throughput(now: datetime) -> list[Minute]:
    """The journal's attempts per clock minute over the last THROUGHPUT_MINUTES, newest first (the current minute
    is still filling): one grouped query."""
    current = now.replace(second=0, microsecond=0)
    minutes = [Minute(current - timedelta(minutes=i)) for i in range(THROUGHPUT_MINUTES)]
    bucket = case(*[(SyncAttempt.started_at >= m.start, i) for i, m in enumerate(minutes)], else_=-1)
    rows = db.session.execute(select(bucket, SyncAttempt.outcome, func.count())
                              .where(SyncAttempt.started_at >= minutes[-1].start)
                              .group_by(bucket, SyncAttempt.outcome))
    for index, outcome, n in rows:
        if 0 <= index < len(minutes):
            minutes[index].attempts += n
            minutes[index].outcomes[outcome] = minutes[index].outcomes.get(outcome, 0) + n
    return minutes


def verdict(rq: RqState | None) -> tuple[str, list[str]]:
    """ok, warn or bad, and why in words: the page's answer to "is it keeping up?"."""
    if rq is None:
        return "bad", ["Redis is not answering: no job starts until it does."]
    bad, warn = [], []
    if not rq.workers:
        bad.append("No worker is running: nothing is pushed to PTI.")
    elif not rq.urgent_takers:
        bad.append("No worker takes the urgent queue: unlocks and lockouts wait.")
    urgent = next(q for q in rq.queues if q.name == URGENT)
    if urgent.oldest_s is not None and urgent.oldest_s > current_app.config["URGENT_STALE_AFTER_S"]:
        bad.append(f"The urgent queue's oldest job has waited {duration(urgent.oldest_s)}.")
    if rq.long_running:
        n = len(rq.long_running)
        warn.append(f"{n} job{'s' if n != 1 else ''} running far longer than usual.")
    if bad:
        return "bad", bad + warn
    return ("warn", warn) if warn else ("ok", ["Keeping up: every queue is moving."])


def _context() -> dict:
    now = utcnow()
    try:
        rq = rq_state(get_redis(), now)
    except redis.RedisError as exc:
        log.warning("work: Redis is not answering (%s)", exc.__class__.__name__)
        rq = None
    health, reasons = verdict(rq)
    return dict(rq=rq, redis_ok=rq is not None, owed=owed_work(now), minutes=throughput(now), health=health,
                reasons=reasons, now=now, can_act=current_user.role in ADMINS, refresh_s=REFRESH_S,
                URGENT=URGENT, urgent_wait_long_s=current_app.config["URGENT_STALE_AFTER_S"],
                one_event_long_s=ONE_EVENT_LONG_S)


@bp.route("/")
@roles_required(*EVERYONE)
def index():
    context = _context()
    return page_or_block("work/index.html", "now", "work-now", **context)


def _done_fragment():
    return render_template("sites/_done.html")


def _redis_refused(exc: redis.RedisError) -> ActionError:
    log.warning("work: Redis refused an action (%s)", exc.__class__.__name__)
    return ActionError("Redis is not answering: nothing was done. Try again once it answers.")


def run_relay(actor) -> str:
    """Enqueue the relay on the urgent queue now, as the cron does every 15 s; audited."""
    try:
        job = enqueue(RELAY, queue=URGENT)
    except redis.RedisError as exc:
        raise _redis_refused(exc) from exc
    audit.record("run relay", actor=actor, target_type="queue", target_id=URGENT, job=job.id)
    db.session.commit()
    return job.id


def _each_failed(conn: redis.Redis, handle) -> int:
    """Call `handle(registry, job_id)` on every failed RQ job of every queue; how many it handled."""
    done = 0
    for name in QUEUE_NAMES:
        registry = FailedJobRegistry(queue=Queue(name, connection=conn))
        for job_id in registry.get_job_ids(cleanup=False):
            try:
                handle(registry, job_id)
                done += 1
            except (NoSuchJobError, InvalidJobOperation):  # expired, or handled by someone else meanwhile
                registry.remove(job_id)
    return done


def _on_failed_jobs(actor, action: str, handle) -> int:
    """Do `handle` to every failed RQ job and audit it as `action`; how many it handled."""
    try:
        n = _each_failed(get_redis(), handle)
    except redis.RedisError as exc:
        raise _redis_refused(exc) from exc
    if not n:
        raise ActionError(f"No failed RQ job to {action.split()[0]}.")
    audit.record(action, actor=actor, target_type="queue", count=n)
    db.session.commit()
    return n


def requeue_failed_jobs(actor) -> int:
    """Put every failed RQ job back on its queue (e.g. after a fault in the product was fixed); audited."""
    return _on_failed_jobs(actor, "requeue failed jobs", lambda registry, job_id: registry.requeue(job_id))


def clear_failed_jobs(actor) -> int:
    """Delete every failed RQ job; audited. What they were doing is still owed in the database: the relay re-drives
    an account or a delivery whose job failed, so nothing is lost but the error text."""
    return _on_failed_jobs(actor, "clear failed jobs",
                           lambda registry, job_id: registry.remove(job_id, delete_job=True))


@bp.route("/relay", methods=["POST"])
@roles_required(*ADMINS)
def relay():
    return act(run_relay, done="Relay queued on the urgent queue: every owed account and delivery no live job holds "
                              "is queued again within seconds.",
               back=url_for("work.index"), fragment=_done_fragment)


@bp.route("/failed/requeue", methods=["POST"])
@roles_required(*ADMINS)
def requeue_failed():
    return act(requeue_failed_jobs, done="Failed RQ jobs put back on their queues.", back=url_for("work.index"),
               fragment=_done_fragment)


@bp.route("/failed/clear", methods=["POST"])
@roles_required(*ADMINS)
def clear_failed():
    return act(clear_failed_jobs, done="Failed RQ jobs cleared; the relay re-drives whatever they still owed.",
               back=url_for("work.index"), fragment=_done_fragment)

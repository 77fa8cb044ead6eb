"""Event to gate: a rental marked overdue (or paid) in Storeganise, until PTI's gate holds the unit locked (unlocked).

Each event is the Storeganise simulator's `POST /_sim/overdue {unitRentalId, overdue}`, which sends the signed
`unitRental.markOverdue` / `unmarkOverdue` webhook to the product, as Storeganise does; it is timed from that call
until the PTI simulator (20 ms latency per call) shows the unit locked / unlocked. With BENCH_DIRECT_WEBHOOKS=1
the benchmark flips the flag with webhooks delivery off and signs and posts the webhooks itself instead.

Two phases after the initial push has converged: idle (nothing else running), then bulk (push_site for every site
of 10 × 1,000 rentals is running; if it converges before the events are done it is started again, so every bulk
event overlaps a push). Targets: p95 ≤ 250 ms idle, p95 ≤ 1 s during the bulk push; ratio = max(p95_idle / 0.25,
p95_bulk / 1). The floor printed beside them is PTI's own share: the simulator's latency × the one call a lock or
unlock needs.

Each phase also prints where its events' time went (p50 / p95), from what the product recorded of each delivery:
Storeganise to our receiver, the receiver to the handler done, the handler done to the gate.

Environment (defaults in brackets): BENCH_SITES [10], BENCH_RENTALS per site [1000], BENCH_EVENTS per phase [200],
BENCH_EVENT_CONCURRENCY events in flight [4], BENCH_LATENCY_MS [20], BENCH_SITE_CONCURRENCY [4], BENCH_WORKERS
[sites + 2], BENCH_URGENT_WORKERS [as many as events in flight, at least 2], BENCH_EVENT_TIMEOUT_S [30], BENCH_CRON [0],
BENCH_SG_LATENCY_MS [0]: the Storeganise simulator's latency per API call during both phases, as a Storeganise across
the internet would answer (a guess at the real one, 30-100 ms; docs/storeganise.md). Off by default, so the figures
stay comparable with the earlier ones; an event's own path makes one call to Storeganise (its re-read of the rental)
and its write-back one more.
"""

from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from rq.job import Job
from sqlalchemy import select

from bench.stack import (
    Stack,
    business_config,
    calls_by_operation,
    env_flag,
    env_float,
    env_int,
    percentile,
    report,
    say,
    signed_webhook,
)
from dashboard.extensions import db
from dashboard.jobqueue import get_redis
from dashboard.mirror.deliveries import job_id
from dashboard.models import Rental, Site, SyncState, Unit, WebhookDelivery, utcnow
from dashboard.storeganise import SIGNATURE_HEADER

TARGET_P95_IDLE_S = 0.25
TARGET_P95_BULK_S = 1.0
CALLS_A_CHANGE_NEEDS = 1  # lock_unit or unlock_unit
# The initial push is set-up (every customer into PTI before the events), not a figure: at full size on a 2-core
# machine it takes about as long as `bulk_push` measures (7 to 8 minutes), so it gets room beyond that.
INITIAL_PUSH_TIMEOUT_S = 900.0
WRITEBACK_DRAIN_TIMEOUT_S = 300.0  # after the initial push: its write-backs to Storeganise
IDLE_DRAIN_TIMEOUT_S = 120.0  # after the idle phase
GATE_WAIT_S = 5.0  # one wait at the PTI simulator for the unit's lock (within EVENT_HTTP_TIMEOUT_S); then again
RETRY_WAIT_S = 0.05  # after a wait lost to the network
MAX_PUSH_ROUNDS = 6
BULK_CHECK_EVERY_S = 1.0  # how often the event threads ask whether the bulk push has converged
TARGETS_SEED = 5
EVENT_HTTP_TIMEOUT_S = 10.0
EVENT_HTTP_CONNECTIONS = 32


@dataclass(frozen=True)
class Target:
    rental_id: str  # Storeganise id
    site_code: str  # PTI site code
    unit_name: str  # PTI unit name


def targets(stack: Stack, count: int) -> list[Target]:
    """`count` distinct rentals, spread over the sites, in sync, not overdue, on a unit PTI knows."""
    rows = db.session.execute(
        select(Rental.sg_id, Site.pti_site_code, Unit.pti_unit_name)
        .join(Site, Rental.site_id == Site.id).join(Unit, Rental.unit_id == Unit.id)
        .where(Rental.overlocked.is_(False), Rental.sync_state == SyncState.IN_SYNC, Unit.pti_unit_name.is_not(None))
        .order_by(Rental.id)
    ).all()
    db.session.rollback()
    by_site: dict[str, list[Target]] = {}
    for sg_id, site_code, unit_name in rows:
        by_site.setdefault(site_code, []).append(Target(sg_id, site_code, unit_name))
    rng = random.Random(TARGETS_SEED)
    for items in by_site.values():
        rng.shuffle(items)
    chosen: list[Target] = []
    while len(chosen) < count and any(by_site.values()):
        for items in by_site.values():
            if items and len(chosen) < count:
                chosen.append(items.pop())
    if len(chosen) < count:
        raise RuntimeError(f"only {len(chosen)} rentals can be locked and unlocked, {count} wanted")
    return chosen


@dataclass(frozen=True)
class Sent:
    rental_id: str
    overdue: bool
    at: datetime  # naive UTC, as the database keeps times
    took_s: float


def stages(sent: list[Sent]) -> tuple[dict[str, tuple[float, float]], tuple[int, int, float]]:
    """Where an event's time went, p50 and p95 of each stage, from what the product recorded of each delivery:
    Storeganise (the simulator) to our receiver (split where the simulator made the webhook: `to_emitted` is the
    control call's own time, `emitted_to_receiver` the delivery's way to the receiver's row), the receiver to the
    handler done (its job queued, run, and the lock or unlock pushed by the handler itself), and the handler done to
    the gate seen by the simulator. The second is also split at the moment a worker started the delivery's job (RQ's
    `started_at`): `to_started` is the wait for a free worker (itself split at RQ's `enqueued_at`: `to_enqueued`, the
    receiver's commit and enqueue, and `enqueued_to_started`, the queue's wait), `in_handler` the handler's own time,
    itself split into each worker process's first event of the phase and the rest; and `busy_after_gate`, how long
    the job kept its worker after the gate was seen (the push's finish and the write-back). Also: how many events were a
    worker's first, how many of those were at or over the phase's p95, and the p95 of the other events (what the
    tail would be if a worker's first event cost no more than its next)."""
    names = {True: "unitRental.markOverdue", False: "unitRental.unmarkOverdue"}
    found = {(d.rental_sg_id, d.type): d for d in db.session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.rental_sg_id.in_({e.rental_id for e in sent}),
                                      WebhookDelivery.type.in_(names.values()))
        .order_by(WebhookDelivery.received_at))}
    db.session.rollback()
    ids = sorted(d.id for d in found.values())
    jobs = {i: job for i, job in zip(ids, Job.fetch_many([job_id(i) for i in ids], connection=get_redis()),
                                     strict=True) if job is not None and job.started_at is not None}
    firsts = first_of_each_worker(jobs)
    first_took: list[float] = []
    later_took: list[float] = []
    spans: dict[str, list[float]] = {"to_receiver": [], "to_emitted": [], "emitted_to_receiver": [],
                                     "to_handled": [], "to_started": [], "to_enqueued": [],
                                     "enqueued_to_started": [], "in_handler": [],
                                     "in_handler_first": [], "in_handler_later": [], "to_gate": [],
                                     "busy_after_gate": []}
    for event in sent:
        delivery = found.get((event.rental_id, names[event.overdue]))
        if delivery is None or delivery.handled_at is None or delivery.received_at < event.at - timedelta(seconds=1):
            continue
        received = (delivery.received_at - event.at).total_seconds()
        handled = (delivery.handled_at - delivery.received_at).total_seconds()
        spans["to_receiver"].append(received)
        if (emitted := _emitted(delivery)) is not None:  # split where Storeganise made the webhook (ms precision)
            spans["to_emitted"].append((emitted - event.at).total_seconds())
            spans["emitted_to_receiver"].append((delivery.received_at - emitted).total_seconds())
        spans["to_handled"].append(handled)
        if (job := jobs.get(delivery.id)) is not None:
            began = job.started_at
            began = began.astimezone(UTC).replace(tzinfo=None) if began.tzinfo else began  # naive UTC, as the rows
            spans["to_started"].append((began - delivery.received_at).total_seconds())
            if (queued := job.enqueued_at) is not None:  # the receiver's commit and enqueue, then the queue's wait
                queued = queued.astimezone(UTC).replace(tzinfo=None) if queued.tzinfo else queued
                spans["to_enqueued"].append((queued - delivery.received_at).total_seconds())
                spans["enqueued_to_started"].append((began - queued).total_seconds())
            in_handler = (delivery.handled_at - began).total_seconds()
            spans["in_handler"].append(in_handler)
            spans["in_handler_first" if delivery.id in firsts else "in_handler_later"].append(in_handler)
        spans["to_gate"].append(event.took_s - received - handled)
        if job is not None and job.ended_at is not None:  # the job's worker still busy after the gate: write-back
            ended = job.ended_at.astimezone(UTC).replace(tzinfo=None) if job.ended_at.tzinfo else job.ended_at
            spans["busy_after_gate"].append((ended - event.at).total_seconds() - event.took_s)
        (first_took if delivery.id in firsts else later_took).append(event.took_s)
    tail = percentile([event.took_s for event in sent], 95) if sent else 0.0
    return ({name: (percentile(v, 50), percentile(v, 95)) for name, v in spans.items() if v},
            (len(first_took), sum(took >= tail for took in first_took), percentile(later_took, 95)))


def _emitted(delivery: WebhookDelivery) -> datetime | None:
    """When Storeganise made the webhook (its `created`), naive UTC as the rows keep times; None if unreadable."""
    created = (delivery.payload or {}).get("created")
    try:
        return datetime.fromisoformat(created.replace("Z", "+00:00")).astimezone(UTC).replace(tzinfo=None)
    except (AttributeError, ValueError):
        return None


def say_calls(phase: str, before: dict, after: dict) -> None:
    """The PTI calls a phase made, by operation (a lock or unlock needs one; the rest is what else the events cost)."""
    by_op = calls_by_operation(before, after)
    say(f"{phase}: PTI calls by operation: " + ", ".join(f"{op} {n}" for op, n in sorted(by_op.items()) if n))


def first_of_each_worker(jobs: dict[str, Job]) -> set[str]:
    """The deliveries that were the first of the phase's events each worker process ran: a process's first event
    has paid for what the process had not done yet (the split shows whether those first events make the tail)."""
    first: dict[str, tuple] = {}
    for delivery_id, job in jobs.items():
        if job.worker_name and (job.worker_name not in first or job.started_at < first[job.worker_name][0]):
            first[job.worker_name] = (job.started_at, delivery_id)
    return {delivery_id for _, delivery_id in first.values()}


def say_stages(phase: str, sent: list[Sent]) -> None:
    found, (firsts, firsts_in_tail, p95_later) = stages(sent)
    if found:
        say(f"{phase} stages (p50 / p95, {len(sent)} events): " + ", ".join(
            f"{name} {p50:.3f} / {p95:.3f} s" for name, (p50, p95) in found.items())
            + f"; {firsts} events were a worker's first of the phase, {firsts_in_tail} of them at or over the p95;"
            f" the p95 of the other events {p95_later:.3f} s")


class Events:
    """Fire overdue events and time each until the gate agrees."""

    def __init__(self, stack: Stack, direct: bool, timeout_s: float) -> None:
        self.stack, self.direct, self.timeout_s = stack, direct, timeout_s
        self.http = httpx.Client(timeout=EVENT_HTTP_TIMEOUT_S,
                                 limits=httpx.Limits(max_connections=EVENT_HTTP_CONNECTIONS))
        self.failures = 0
        self.sent: list[Sent] = []  # the events that reached the gate, for the stages
        self._lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    def _send(self, target: Target, overdue: bool) -> None:
        self.http.post(f"{self.stack.sg_url}/_sim/overdue",
                       json={"unitRentalId": target.rental_id, "overdue": overdue}).raise_for_status()
        if self.direct:
            body, signature = signed_webhook("unitRental." + ("markOverdue" if overdue else "unmarkOverdue"),
                                             {"unitRentalId": target.rental_id}, f"{self.stack.sg_url}/api/v1/admin")
            self.http.post(self.stack.webhook_url, content=body, headers={
                "Content-Type": "application/json", SIGNATURE_HEADER: signature}).raise_for_status()

    def one(self, target: Target, overdue: bool) -> float | None:
        """Seconds from the event until the PTI simulator shows the unit locked == overdue; None on time-out."""
        url = f"{self.stack.pti_url}/_sim/units/{target.site_code}/{target.unit_name}"
        sent_at = utcnow()
        started = time.monotonic()
        self._send(target, overdue)
        deadline = started + self.timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:  # the simulator answers the moment the lock lands (no polling: polls loaded the machine measured)
                answer = self.http.get(url, params={"locked": "true" if overdue else "false",
                                                    "wait_s": f"{min(left, GATE_WAIT_S):.3f}"})
                if answer.json().get("locked") is overdue:
                    took = time.monotonic() - started
                    with self._lock:
                        self.sent.append(Sent(target.rental_id, overdue, sent_at, took))
                    return took
            except httpx.TransportError:  # one lost wait on a machine under load: wait again, the clock runs on
                time.sleep(RETRY_WAIT_S)
        with self._lock:
            self.failures += 1
        say(f"  {target.site_code}/{target.unit_name}: still {'unlocked' if overdue else 'locked'} after "
            f"{self.timeout_s:.0f} s")
        return None

    def run(self, chosen: list[Target], count: int, concurrency: int, keep_going=None) -> list[float]:
        """`count` events: each target is marked overdue, then (a later event) paid, in flight `concurrency` at
        a time; each worker thread runs its targets' events in order. `keep_going()` is called between events."""
        lanes = [[(t, flag) for t in chosen[i::concurrency] for flag in (True, False)] for i in range(concurrency)]
        for i in range(len(lanes)):  # `count` events in all; a target's two events stay in its lane, in order
            lanes[i] = lanes[i][:count // concurrency + (i < count % concurrency)]
        times: list[float] = []

        def lane(items):
            for target, flag in items:
                if keep_going is not None:
                    keep_going()
                took = self.one(target, flag)
                with self._lock:  # an event that never reached the gate counts as the time-out (a lower bound)
                    times.append(self.timeout_s if took is None else took)

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for future in [pool.submit(lane, items) for items in lanes if items]:
                future.result()
        return times


class BulkPush:
    """Keeps a bulk push of every site running while the events of the bulk phase are fired."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.rounds = 0
        self._lock = threading.Lock()
        self._last_check = 0.0

    def start(self) -> None:
        self.rounds += 1
        marked = self.stack.push_all(f"bench-bulk-{self.rounds}")
        say(f"  bulk push round {self.rounds}: {marked} accounts marked")

    def keep_going(self) -> None:
        """Start the push again if it has converged (bounded rounds); called from the event threads."""
        with self._lock:
            now = time.monotonic()
            if now - self._last_check < BULK_CHECK_EVERY_S or self.rounds >= MAX_PUSH_ROUNDS:
                return
            self._last_check = now
            with self.stack.app.app_context():
                owed, _ = self.stack.owed()
                if owed == 0:
                    self.start()


def main() -> str:
    events = env_int("BENCH_EVENTS", 200)
    concurrency = env_int("BENCH_EVENT_CONCURRENCY", 4)
    latency_ms = env_float("BENCH_LATENCY_MS", 20)
    direct = env_flag("BENCH_DIRECT_WEBHOOKS", False)
    # The urgent lane sized for the events in flight, as README says to run it: one urgent process answers one event
    # at a time, so fewer processes than events at once measure a queue, not the lane.
    with Stack(business_config(storeganise=True, urgent_workers=max(2, concurrency))) as stack:
        # The initial push is set-up, not measured: PTI without latency, and the webhooks our own write-backs
        # cause (10,000 echoes) recorded but not sent, so it converges in minutes on a small machine.
        stack.http.post(f"{stack.sg_url}/_sim/config", json={"deliver": False}).raise_for_status()
        say("initial push (PTI latency 0, no webhook echoes) until every customer is in sync ...")
        stack.push_all("bench-initial")
        took = stack.wait_converged(INITIAL_PUSH_TIMEOUT_S)
        say(f"initial push converged in {took:.1f} s; draining the write-backs ...")
        stack.wait_idle(WRITEBACK_DRAIN_TIMEOUT_S)
        if not direct:  # from now on Storeganise sends every webhook, the echoes of our write-backs included
            stack.http.post(f"{stack.sg_url}/_sim/config",
                            json={"deliver": True, "drop_pending": True}).raise_for_status()
        stack.pti_faults(latency_ms=latency_ms)
        if sg_latency_ms := env_int("BENCH_SG_LATENCY_MS", 0):
            stack.sg_config(faults={"latency_ms": sg_latency_ms})
            say(f"the Storeganise simulator answers each API call after {sg_latency_ms} ms from now on")
        half = (events + 1) // 2  # each target makes two events: overdue, then paid
        chosen = targets(stack, 2 * half)  # idle and bulk use different rentals
        idle_targets, bulk_targets = chosen[:half], chosen[half:]
        runner = Events(stack, direct, env_float("BENCH_EVENT_TIMEOUT_S", 30))
        try:
            say(f"idle: {events} events, {concurrency} in flight ...")
            before, cpu, began = stack.pti_calls(), stack.cpu_seconds(), time.monotonic()
            idle = runner.run(idle_targets, events, concurrency)
            say(f"idle: {events} events in {time.monotonic() - began:.1f} s; the machine's CPU is "
                f"{os.cpu_count()} cores a second, PostgreSQL's not counted below")
            stack.report_cpu(cpu)  # how much of the machine the events took, and whose: contention shows here
            say_stages("idle", runner.sent)
            runner.sent = []
            stack.wait_idle(IDLE_DRAIN_TIMEOUT_S)
            # Counted once the jobs are done: the simulator answers the gate's wait as a lock lands, a moment before
            # it records the call, so the last events' calls could be missed if counted at once.
            say_calls("idle", before, stack.pti_calls())
            say(f"bulk: push_site for every site, then {events} events, {concurrency} in flight ...")
            bulk, cpu, began = BulkPush(stack), stack.cpu_seconds(), time.monotonic()
            bulk.start()
            busy = runner.run(bulk_targets, events, concurrency, keep_going=bulk.keep_going)
            say(f"bulk: {events} events in {time.monotonic() - began:.1f} s")
            stack.report_cpu(cpu)  # whose CPU the urgent lane competes with
            say_stages("bulk", runner.sent)
            owed, _ = stack.owed()
            say(f"bulk: {bulk.rounds} push rounds; {owed} accounts still owed when the last event landed")
        finally:
            runner.close()
        failures = runner.failures
    p95_idle, p95_bulk = percentile(idle, 95), percentile(busy, 95)
    p50_idle, p50_bulk = percentile(idle, 50), percentile(busy, 50)
    if failures:
        say(f"{failures} events never reached the gate within the time-out (counted as the time-out)")
    ratio = max(p95_idle / TARGET_P95_IDLE_S, p95_bulk / TARGET_P95_BULK_S)
    say(f"idle: max {max(idle, default=0):.3f} s; bulk: max {max(busy, default=0):.3f} s")
    return report("event_to_gate", p95_idle_s=f"{p95_idle:.3f}", p95_bulk_s=f"{p95_bulk:.3f}",
                  p50_idle_s=f"{p50_idle:.3f}", p50_bulk_s=f"{p50_bulk:.3f}",
                  floor_s=f"{CALLS_A_CHANGE_NEEDS * latency_ms / 1000:.3f}", ratio=f"{ratio:.2f}")


if __name__ == "__main__":
    main()

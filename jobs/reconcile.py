"""Reconcile jobs: one account, or a batch of a site's accounts with bounded parallel PTI calls."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from flask import current_app
from rq import get_current_job

from dashboard.clients import storeganise_client
from dashboard.engine import writeback
from dashboard.engine.finishes import Pushed, finish_many
from dashboard.engine.intent import holding, release
from dashboard.engine.pti_reads import BatchReads
from dashboard.engine.reconcile import LOCK_BEAT_S, extend_locks, give_codes, let_go, reconcile
from dashboard.extensions import db
from dashboard.jobqueue import WRITE_BACK, beating, get_redis, hint

log = logging.getLogger(__name__)

WRITE_BACK_CHUNK = 25  # the most accounts the batch's writer writes back together
WRITE_BACK_GATHER_S = 0.5  # how long it gathers the accounts pushed after the first, before writing them back
WRITER_JOIN_S = 120.0  # how long a batch waits for its last write-backs before leaving them to their own jobs
FINISH_CHUNK = 25  # the most pushes the batch's finishing thread records together
FINISH_GATHER_S = 0.2  # how long it gathers the pushes handed over after the first (their locks held meanwhile)
FINISHER_JOIN_S = 60.0  # how long a batch waits for its last finishes (what is not recorded stays owed)


def reconcile_account(account_id: int, trigger: str = "relay", write_back: Callable[[int], None] | None = None) -> str:
    """Make PTI match Storeganise for one customer at one site (every trigger maps to this). The push's write-back
    is a job of its own, or handed to `write_back` (a delivery's job has its process write it back, jobs/events.py)."""
    # First: from now on any newer intent enqueues a new job, which waits for this one's lock.
    job = get_current_job()
    release(get_redis(), account_id, job.id if job else None)
    return reconcile(account_id, trigger, job.id if job else None, write_back=write_back).outcome


def reconcile_batch(account_ids: list[int], trigger: str = "bulk") -> dict[str, int]:
    """Reconcile many accounts of one site, PTI_SITE_CONCURRENCY at a time (the site guard still caps the
    calls across all workers). A bulk push goes through this: one forked job, many PTI calls in flight, and one
    listing of the site's PTI users and units that every account of the batch is planned against (pti_reads)."""
    app = current_app._get_current_object()
    conn = get_redis()
    job = get_current_job()

    listing = BatchReads(account_ids)  # the site's PTI users and units, listed once for the batch (or its site)
    owed: queue.SimpleQueue[int | None] = queue.SimpleQueue()  # accounts pushed, to write back to Storeganise
    writer = threading.Thread(target=write_back_all, args=(app, owed), name="batch-write-back", daemon=True)
    writer.start()
    finishes = Finishes(app, owed.put)

    def one(account_id: int) -> str:
        # Only now is this account in hand: until here the relay must see it as held (push_site set the key).
        release(conn, account_id, job.id if job else None)
        with app.app_context():
            return reconcile(account_id, trigger, job.id if job else None, write_back=owed.put,
                             batch=listing, finished_by=finishes.put).outcome

    outcomes: dict[str, int] = {}
    try:
        # The heartbeat tells the relay this batch is alive: killed, its accounts not reached yet are re-driven.
        with holding(conn, job.id if job else None), \
                ThreadPoolExecutor(max_workers=app.config["PTI_SITE_CONCURRENCY"]) as pool:
            _give_codes(account_ids)
            for outcome in pool.map(one, account_ids):
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
    finally:
        finishes.close(FINISHER_JOIN_S)  # its write-backs are handed over before the writer's end
        owed.put(None)
        writer.join(WRITER_JOIN_S)
        if writer.is_alive():  # Storeganise is slow: what the writer has not reached gets its own job
            with app.app_context():
                while (account_id := _next(owed)) is not None:
                    hint(WRITE_BACK, account_id)
    return outcomes


def _give_codes(account_ids: list[int]) -> None:
    """The batch's new customers' access codes, chosen and stored together before the pushes (`give_codes`). Only a
    saving: should it fail, each push chooses its customer's code itself, as a single push does."""
    try:
        give_codes(account_ids)
    except Exception as exc:  # noqa: BLE001 - a database error here costs only the saving
        db.session.rollback()
        log.warning("the batch's access codes could not be chosen together (%s): each push chooses its own",
                    exc.__class__.__name__)


def _next(owed: queue.SimpleQueue) -> int | None:
    try:
        return owed.get_nowait()
    except queue.Empty:
        return None


def _waiting(owed: queue.SimpleQueue, most: int, gather_s: float) -> tuple[list, bool]:
    """The next items to handle together: blocking for the first, then what the pushes add within `gather_s`, at
    most `most`; and whether the batch has ended (its None read)."""
    first = owed.get()
    if first is None:
        return [], True
    chunk = [first]
    until = time.monotonic() + gather_s
    while len(chunk) < most and (left := until - time.monotonic()) > 0:
        try:
            item = owed.get(timeout=left)
        except queue.Empty:
            break
        if item is None:
            return chunk, True
        chunk.append(item)
    return chunk, False


class Finishes:
    """The batch's finishing thread: the pushes that ended plainly, recorded several at a time (engine/finishes.py)
    and then handed to the batch's writer, and their accounts' locks let go.

    A push handed over holds its account's lock until recorded: no other push of the account starts meanwhile, and
    a lock that lapsed (the wait outgrew LOCK_TTL_S) means another push may have recorded since, so that push's
    record is left alone; the account stays owed and the relay pushes it again. If the batch's process dies
    first, the same: nothing of those pushes is recorded, their intent is owed, and the relay re-drives them (PTI
    holds the changes already; the push again finds nothing to do). If a group cannot be recorded together, each
    is tried alone."""

    def __init__(self, app, write_back: Callable[[int], None]) -> None:
        self.app, self.write_back = app, write_back
        self.handed: queue.SimpleQueue[Pushed | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="batch-finish", daemon=True)
        self.thread.start()

    def put(self, pushed: Pushed) -> None:
        self.handed.put(pushed)

    def close(self, timeout_s: float) -> None:
        self.handed.put(None)
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            log.warning("the batch's finishes did not end within %.0f s: what they hold stays owed", timeout_s)

    def _run(self) -> None:
        with self.app.app_context():
            try:
                ended = False
                while not ended:
                    chunk, ended = _waiting(self.handed, FINISH_CHUNK, FINISH_GATHER_S)
                    if chunk:
                        try:
                            self._record(chunk)
                        except Exception:  # a bug: these stay owed (the relay pushes them again), the next go on
                            db.session.rollback()
                            log.exception("the batch could not record %d pushes: they stay owed", len(chunk))
            finally:
                db.session.remove()

    def _record(self, chunk: list[Pushed]) -> None:
        try:
            held = []
            for pushed, kept in zip(chunk, extend_locks([p.lock for p in chunk])):
                if kept:
                    held.append(pushed)
                else:
                    log.warning("the lock of account %s lapsed before its push was recorded: it stays owed",
                                pushed.account_id)
            with beating(LOCK_BEAT_S, lambda: all(extend_locks([p.lock for p in held])), "batch-finish-locks"):
                done = self._finish(held)
            for pushed in done:
                self.write_back(pushed.account_id)
        finally:
            for pushed in chunk:
                let_go(pushed.account_id, pushed.lock)

    @staticmethod
    def _finish(held: list[Pushed]) -> list[Pushed]:
        try:
            return finish_many(held) if held else []
        except Exception as exc:  # noqa: BLE001 - recorded one by one instead
            if len(held) == 1:
                log.warning("the push of account %s could not be recorded (%s): it stays owed",
                            held[0].account_id, exc.__class__.__name__)
                return []
            log.warning("%d pushes could not be recorded together (%s): recording each alone", len(held),
                        exc.__class__.__name__)
        done = []
        for pushed in held:
            done += Finishes._finish([pushed])
        return done


def write_back_all(app, owed: queue.SimpleQueue) -> None:
    """The batch's write-backs, as its accounts are pushed, in this process with one Storeganise client, several at
    a time: the first account handed over and those pushed within WRITE_BACK_GATHER_S after it are written back
    together, with the database work of one (`_waiting`, `writeback.write_back_many`).

    One job per account would fork a work horse each, and those default-queue jobs come before the bulk queue:
    a 10,000-rental push then starves its own batches of workers. When Storeganise fails (or is not configured),
    the accounts not written back yet and every later one get their own job instead, which retries and reports as
    before. Each account is owed in the database (`write_back_owed`) until Storeganise accepted it, so nothing is
    lost when Redis fails too.
    """
    with app.app_context():
        client = None
        failed = False
        try:
            ended = False
            while not ended:
                chunk, ended = _waiting(owed, WRITE_BACK_CHUNK, WRITE_BACK_GATHER_S)
                if not failed and chunk:
                    try:
                        client = client or storeganise_client()
                        result = writeback.write_back_many(chunk, client)
                        chunk = result.not_done
                        if result.error is not None:
                            raise result.error
                    except Exception as exc:  # noqa: BLE001 - any failure: the per-account job takes over
                        db.session.rollback()
                        failed = True
                        log.warning("batch write-back stopped (%s): the rest go to their own jobs",
                                    exc.__class__.__name__)
                for account_id in chunk:
                    hint(WRITE_BACK, account_id)  # owed in the database already: a Redis error leaves it to the relay
        finally:
            if client is not None:
                client.close()
            db.session.remove()

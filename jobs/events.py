"""Storeganise deliveries in the worker: handle one, enqueued by the webhook receiver or the relay.

A delivery that owes a lock or an unlock (an overdue flag, a payment, a manual suspend) is pushed to PTI by this
same job, in its warm process, right after the change is committed, and the push's results are written back to
Storeganise by the same process: no second or third job, and no wait for a free worker between the webhook and the
gate. The write-back runs on the process's write-back thread (jobs/after_gate.py), so the job ends at the gate and
the process takes the next payment while its last one is still being written back.
While it pushes, the job beats a heartbeat (as a bulk batch does), so the relay leaves those accounts to it; killed,
the relay takes them over like any dead job's, and a write-back still owed (`write_back_owed`) like any other.
"""

from __future__ import annotations

import logging
from functools import partial

from rq import get_current_job

from dashboard.clients import kept_storeganise_client
from dashboard.engine import writeback
from dashboard.engine.intent import holding
from dashboard.extensions import db
from dashboard.jobqueue import WRITE_BACK, get_redis, hint
from dashboard.mirror.events import flips_not_written, process_delivery
from dashboard.storeganise import StoreganiseClient, StoreganiseError
from jobs.after_gate import hand_over
from jobs.reconcile import reconcile_account

log = logging.getLogger(__name__)


class PushHere:
    """Pushes the urgent accounts a delivery marked, in the delivery's job (their pending keys name it), then writes
    each pushed account's results back with the delivery's Storeganise client: on the worker process's write-back
    thread when it has one (jobs/after_gate.py), so the process is free for the next event once PTI holds this one;
    in the job itself otherwise (a test's `job.perform()`, the rehearsal) or when that thread is behind."""

    def __init__(self, job_id: str, client: StoreganiseClient, delivery_id: str | None = None) -> None:
        self.job_id, self.client, self.delivery_id = job_id, client, delivery_id

    def __call__(self, account_ids: list[int], trigger: str, overlocks: dict[str, bool]) -> None:
        pushed: list[int] = []
        with holding(get_redis(), self.job_id):
            for account_id in account_ids:
                # as a reconcile job would, under this (current) job's id
                reconcile_account(account_id, trigger, write_back=pushed.append)
        if not pushed:
            return
        if self.delivery_id is not None and hand_over(partial(self.after_gate, pushed, dict(overlocks))):
            overlocks.clear()  # the thread PUTs each flip with its account's write-back, or on its own after them
            return
        self.write_back(pushed, overlocks)

    def write_back(self, pushed: list[int], overlocks: dict[str, bool]) -> None:
        """The pushed accounts' results to Storeganise; a flip in `overlocks` that an account's PUT carried is taken
        out. A failure stays owed in the database and is hinted to its own job."""
        for account_id in pushed:
            try:
                writeback.write_back(account_id, self.client, overlocks)
            except Exception as exc:  # noqa: BLE001 - owed in the database: its own job retries it
                db.session.rollback()
                log.warning("writing back account %s after the delivery's push failed (%s): its own job retries",
                            account_id, exc.__class__.__name__)
                hint(WRITE_BACK, account_id)

    def after_gate(self, pushed: list[int], overlocks: dict[str, bool]) -> None:
        """On the write-back thread: what the job would have written after its push, then the flips no account's
        PUT carried; a flip Storeganise refused runs the delivery again, as the job's own failure would have."""
        self.write_back(pushed, overlocks)
        try:
            writeback.write_overlocks(self.client, overlocks)
        except StoreganiseError as exc:
            flips_not_written(self.delivery_id, exc)


def handle_delivery(delivery_id: str) -> str:
    """Act on a recorded delivery; returns its final status (processed, ignored, failed)."""
    job = get_current_job()
    client = kept_storeganise_client()  # its connection kept open for the process's next job
    return process_delivery(delivery_id, client,
                            push_here=PushHere(job.id, client, delivery_id) if job else None)

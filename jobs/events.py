"""Storeganise deliveries in the worker: handle one, enqueued by the webhook receiver or the relay.

A delivery that owes a lock or an unlock (an overdue flag, a payment, a manual suspend) is pushed to PTI by this
same job, in its warm process, right after the change is committed, and the push's results are written back to
Storeganise by it too: no second or third job, and no wait for a free worker between the webhook and the gate.
While it pushes, the job beats a heartbeat (as a bulk batch does), so the relay leaves those accounts to it; killed,
the relay takes them over like any dead job's, and a write-back still owed (`write_back_owed`) like any other.
"""

from __future__ import annotations

import logging

from rq import get_current_job

from dashboard.clients import kept_storeganise_client
from dashboard.engine import writeback
from dashboard.engine.intent import holding
from dashboard.extensions import db
from dashboard.jobqueue import WRITE_BACK, get_redis, hint
from dashboard.mirror.events import process_delivery
from dashboard.storeganise import StoreganiseClient
from jobs.reconcile import reconcile_account

log = logging.getLogger(__name__)


class PushHere:
    """Pushes the urgent accounts a delivery marked, in the delivery's job (their pending keys name it), then writes
    each pushed account's results back with the delivery's Storeganise client."""

    def __init__(self, job_id: str, client: StoreganiseClient) -> None:
        self.job_id, self.client = job_id, client

    def __call__(self, account_ids: list[int], trigger: str, overlocks: dict[str, bool]) -> None:
        pushed: list[int] = []
        with holding(get_redis(), self.job_id):
            for account_id in account_ids:
                # as a reconcile job would, under this (current) job's id
                reconcile_account(account_id, trigger, write_back=pushed.append)
        for account_id in pushed:
            try:
                writeback.write_back(account_id, self.client, overlocks)
            except Exception as exc:  # noqa: BLE001 - owed in the database: its own job retries it
                db.session.rollback()
                log.warning("writing back account %s in the delivery's job failed (%s): its own job retries",
                            account_id, exc.__class__.__name__)
                hint(WRITE_BACK, account_id)


def handle_delivery(delivery_id: str) -> str:
    """Act on a recorded delivery; returns its final status (processed, ignored, failed)."""
    job = get_current_job()
    client = kept_storeganise_client()  # its connection kept open for the process's next job
    return process_delivery(delivery_id, client, push_here=PushHere(job.id, client) if job else None)

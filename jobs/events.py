"""Storeganise deliveries in the worker: handle one, enqueued by the webhook receiver or the relay.

A delivery that owes a lock or an unlock (an overdue flag, a payment, a manual suspend) is pushed to PTI by this
same job, in its warm process, right after the change is committed: no second job, and no wait for a free worker
between the webhook and the gate. While it pushes, the job beats a heartbeat (as a bulk batch does), so the relay
leaves those accounts to it; killed, the relay takes them over like any dead job's.
"""

from __future__ import annotations

from rq import get_current_job

from dashboard.clients import storeganise_client
from dashboard.engine.intent import holding
from dashboard.jobqueue import get_redis
from dashboard.mirror.events import process_delivery
from jobs.reconcile import reconcile_account


class PushHere:
    """Pushes the urgent accounts a delivery marked, in the delivery's job (their pending keys name it)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id

    def __call__(self, account_ids: list[int], trigger: str) -> None:
        with holding(get_redis(), self.job_id):
            for account_id in account_ids:
                reconcile_account(account_id, trigger)  # as a reconcile job would, under this (current) job's id


def handle_delivery(delivery_id: str) -> str:
    """Act on a recorded delivery; returns its final status (processed, ignored, failed)."""
    job = get_current_job()
    with storeganise_client() as client:
        return process_delivery(delivery_id, client, push_here=PushHere(job.id) if job else None)

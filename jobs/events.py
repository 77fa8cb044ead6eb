"""Storeganise deliveries in the worker: handle one (enqueued by the webhook receiver), re-enqueue lost ones (relay)."""

from __future__ import annotations

from dashboard import deliveries
from dashboard.events import process_delivery
from dashboard.sg import storeganise_client


def handle_delivery(delivery_id: str) -> str:
    """Act on a recorded delivery; returns its final status (processed, ignored, failed)."""
    with storeganise_client() as client:
        return process_delivery(delivery_id, client)


def requeue_stale_deliveries(older_than_s: float = 30) -> int:
    """Enqueue again the deliveries still queued after `older_than_s` whose job Redis lost or gave up on."""
    return deliveries.requeue_stale_deliveries(older_than_s)

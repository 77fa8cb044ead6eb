"""Storeganise deliveries in the worker: handle one, enqueued by the webhook receiver or the relay."""

from __future__ import annotations

from dashboard.clients import storeganise_client
from dashboard.mirror.events import process_delivery


def handle_delivery(delivery_id: str) -> str:
    """Act on a recorded delivery; returns its final status (processed, ignored, failed)."""
    with storeganise_client() as client:
        return process_delivery(delivery_id, client)

"""Mirror refresh jobs: the incremental pull (scheduled) and the full import (on demand)."""

from __future__ import annotations

from dashboard.clients import storeganise_client
from dashboard.mirror import importer


def pull_changes() -> str:
    """Read the rentals Storeganise changed since the last pull and mark their customers for a push."""
    with storeganise_client() as client:
        try:
            return importer.pull_changes(client).summary()
        except importer.ImportBusy as exc:
            return f"Skipped: {exc}"


def import_all() -> str:
    """Import every site, unit, rental and renting customer; mark changed customers for a push."""
    with storeganise_client() as client:
        return importer.import_business(client).summary()

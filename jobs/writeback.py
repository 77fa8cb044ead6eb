"""Write-back jobs the sync engine enqueues: PTI results to Storeganise custom fields, failures as staff tasks.

A transient Storeganise error is raised, so RQ records it and retries.
"""

from __future__ import annotations

from dashboard.clients import kept_storeganise_client, storeganise_client
from dashboard.engine import writeback


def write_back_account(account_id: int) -> None:
    """After a successful push: pti_synced, pti_overlocked on its rentals; pti_access_code, pti_user_id on the user."""
    writeback.write_back(account_id, kept_storeganise_client())


def report_problems() -> int:
    """Raise a Storeganise task for each standing problem not reported yet (enqueued when one is found; the relay
    asks again while any are left)."""
    return writeback.report_problems(kept_storeganise_client())


def write_back_overrides(customer_id: int) -> dict:
    """After staff set a customer's access level or zone: pti_access_level and pti_zone on the Storeganise user."""
    return writeback.write_back_overrides(customer_id, kept_storeganise_client())


def write_back_owed() -> int:
    """Everything the database says is owed to Storeganise (push results, staff overrides), asked by the relay when
    the job enqueued after a commit was lost."""
    with storeganise_client() as client:
        return writeback.write_back_owed(client)

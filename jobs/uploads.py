"""CSV upload jobs (dashboard/uploads): the check that builds an upload's preview, and the marking Confirm asks for."""

from __future__ import annotations

from dashboard.uploads import apply, check


def check_upload(upload_id: int, attempt: int) -> str:
    """Read and check a stored CSV chunk by chunk; the upload ends ready (with its preview) or rejected."""
    return check.check_upload(upload_id, attempt)


def apply_upload(upload_id: int, attempt: int) -> str:
    """Mark a confirmed upload's rentals for a push, all or nothing."""
    return apply.apply_upload(upload_id, attempt)

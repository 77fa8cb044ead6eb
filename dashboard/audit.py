"""The append-only audit log: one call records who did what to which target, and the outcome."""

from __future__ import annotations

from flask import has_request_context
from flask_login import current_user

from .extensions import db
from .models import AuditEntry, StaffUser


def record(action: str, *, actor: StaffUser | str | None = None, target_type: str | None = None,
           target_id: str | int | None = None, outcome: str = "ok", **detail) -> AuditEntry:
    """Add an audit entry to the session (the caller commits with the change it describes)."""
    if actor is None and has_request_context() and current_user.is_authenticated:
        actor = current_user._get_current_object()
    entry = AuditEntry(
        actor_id=actor.id if isinstance(actor, StaffUser) else None,
        actor=actor.email if isinstance(actor, StaffUser) else (actor or "system"),
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        outcome=outcome,
        detail=detail or None,
    )
    db.session.add(entry)
    return entry

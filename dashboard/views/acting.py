"""What every staff action view shares: run the action, say what happened, refresh the page's sync regions."""

from __future__ import annotations

from flask import abort, flash, make_response, redirect, request
from flask_login import current_user

from ..actions import ActionError
from ..extensions import db, htmx


def act_on(model, record_id: int, action, *, done: str, fragment, back: str, **kwargs):
    """`act` on the record of `model` with this id (404 when there is none)."""
    record = db.session.get(model, record_id) or abort(404)
    return act(action, record, done=done, fragment=fragment, back=back, **kwargs)


def act(action, *args, done: str, fragment, back: str, **kwargs):
    """Run `action(*args, actor=current_user)`; answer htmx with `fragment()` and an HX-Trigger, else redirect."""
    try:
        action(*args, actor=current_user._get_current_object(), **kwargs)
        flash(done, "info")
        status = 200
    except ActionError as exc:
        flash(str(exc), "error")
        status = 422
    if htmx:
        response = make_response(fragment(), status)
        response.headers["HX-Trigger"] = "syncChanged"
        return response
    return redirect(request.referrer if (request.referrer or "").startswith(request.host_url) else back)

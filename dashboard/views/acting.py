"""What a record's page and every staff action on it share: the page and its polled sync region, running the action,
saying what happened and refreshing that region."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Blueprint, abort, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user
from jinja2_fragments.flask import render_block

from ..actions import ActionError
from ..extensions import db, htmx
from ..security import ACTORS, EVERYONE, roles_required


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


@dataclass(frozen=True)
class RecordActions:
    """The staff actions on one kind of record: each a POST route `/<id_arg>/<slug>` for the roles that act, named
    after its slug (`resync`, `regenerate_code`), run by `act_on`. A plain form post returns to the record's page
    (`show`); an htmx post gets the page's sync region back (`fragment(record_id)`)."""

    bp: Blueprint
    model: type
    id_arg: str
    show: str
    fragment: Callable[[int], str]

    def add(self, slug: str, action, done: str, **kwargs) -> None:
        def view(**ids):
            return self.run(ids[self.id_arg], action, done, **kwargs)

        self.bp.add_url_rule(f"/<int:{self.id_arg}>/{slug}", slug.replace("-", "_"), roles_required(*ACTORS)(view),
                             methods=["POST"])

    def run(self, record_id: int, action, done: str, **kwargs):
        return act_on(self.model, record_id, action, done=done, back=url_for(self.show, **{self.id_arg: record_id}),
                      fragment=lambda: self.fragment(record_id), **kwargs)


def record_page(bp: Blueprint, id_arg: str, template: str, block: str, region: tuple[str, str],
                page: Callable[[int], dict], settled: Callable[[dict], bool]) -> Callable[[int], str]:
    """Route a record's page (endpoint `show`, `/<id_arg>`) and its sync region alone (`region`: the endpoint and the
    path after the id), both for every role. The region is polled while a push is pending; it answers 286 once
    `settled(context)`, which stops htmx polling. Returns the region's renderer, for the record's actions."""

    def show(**ids):
        return render_template(template, **page(ids[id_arg]))

    def polled(**ids):
        context = page(ids[id_arg])
        return render_block(template, block, **context), 286 if settled(context) and htmx else 200

    endpoint, path = region
    bp.add_url_rule(f"/<int:{id_arg}>", "show", roles_required(*EVERYONE)(show))
    bp.add_url_rule(f"/<int:{id_arg}>/{path}", endpoint, roles_required(*EVERYONE)(polled))
    return lambda record_id: render_block(template, block, **page(record_id))

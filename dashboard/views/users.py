"""Users: admins create staff accounts, change their role, disable or re-enable them and set a new password.

Every change goes through dashboard/staff.py (the same rules as `flask users create`) and is audited there. A plain
form post that succeeds returns to the page; one refused or not valid answers the page with 422 saying why. An htmx
post gets the accounts region back.
"""

from __future__ import annotations

from functools import partial

from flask import Blueprint, abort, flash, make_response, redirect, render_template, url_for
from flask_login import current_user, login_user
from flask_wtf import FlaskForm
from jinja2_fragments.flask import render_block
from sqlalchemy import select
from wtforms import EmailField, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional, Regexp

from .. import staff
from ..actions import ActionError
from ..extensions import db, htmx
from ..models import StaffUser
from ..security import ADMINS, roles_required

bp = Blueprint("users", __name__, url_prefix="/users")

TEMPLATE = "users/index.html"
EMAIL = Regexp(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", message="Not an e-mail address.")
PASSWORD = Length(min=staff.PASSWORD_MIN, max=200,
                  message=f"At least {staff.PASSWORD_MIN} characters (at most 200).")
ROLE_CHOICES = [SelectChoice(r, r.capitalize()) for r in staff.ROLES]


class CreateForm(FlaskForm):
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=320), EMAIL],
                       filters=[lambda value: value.strip() if value else value])
    name = StringField("Name", validators=[Optional(), Length(max=200)])
    role = SelectField("Role", choices=ROLE_CHOICES, default="staff")
    password = PasswordField("Initial password (blank: generate one)", validators=[Optional(), PASSWORD])


class RoleForm(FlaskForm):
    role = SelectField("Role", choices=ROLE_CHOICES)


class PasswordForm(FlaskForm):
    password = PasswordField("New password", validators=[DataRequired(), PASSWORD])


def _context(**extra) -> dict:
    users = db.session.scalars(select(StaffUser).order_by(StaffUser.email)).all()
    return dict(users=users, create_form=extra.pop("create_form", None) or CreateForm(formdata=None),
                roles=staff.ROLES, password_min=staff.PASSWORD_MIN, **extra)


def _page(status: int = 200, **extra):
    """The page (or, for htmx, its accounts region) with the flashes of this request."""
    context = _context(**extra)
    if htmx:
        return render_block(TEMPLATE, "accounts", **context), status
    return render_template(TEMPLATE, **context), status


def _errors(form: FlaskForm) -> str:
    return "; ".join(f"{form[name].label.text}: {' '.join(errors)}" for name, errors in form.errors.items())


def _refused(message: str, **extra):
    db.session.rollback()
    flash(message, "error")
    return _page(422, **extra)


def _done(message: str):
    flash(message, "info")
    if htmx:
        return _page()
    return redirect(url_for("users.index"))


def _leave(message: str, where: str):
    """Done, and the admin's own account changed so that this page is no longer theirs: go `where`."""
    flash(message, "info")
    if htmx:
        response = make_response("", 200)
        response.headers["HX-Redirect"] = where
        return response
    return redirect(where)


def _account(user_id: int) -> StaffUser:
    return db.session.get(StaffUser, user_id) or abort(404)


@bp.route("/")
@roles_required(*ADMINS)
def index():
    return _page()


@bp.route("/", methods=["POST"])
@roles_required(*ADMINS)
def create():
    form = CreateForm()
    if not form.validate_on_submit():
        return _refused("The account was not created: correct the form below.", create_form=form)
    password = form.password.data or staff.generate_password()
    try:
        user = staff.create_account(form.email.data, name=form.name.data or "", role=form.role.data,
                                    password=password, actor=current_user._get_current_object())
    except ActionError as exc:
        return _refused(str(exc), create_form=form)
    if form.password.data:
        return _done(f"Account {user.email} created ({user.role}).")
    # The generated password is in this answer only: never in a flash (the session cookie) nor in the log.
    flash(f"Account {user.email} created ({user.role}).", "info")
    return _page(created=user, generated_password=password)


def _change(user_id: int, form_class, apply):
    """Validate the form posted about the account, then `apply(user, form)`: a form that does not validate and a
    change staff.py refuses are both said on the page (422), nothing changed."""
    user, form = _account(user_id), form_class()
    if not form.validate_on_submit():
        return _refused(f"{user.email}: {_errors(form) or 'the form was not valid.'}")
    try:
        return apply(user, form)
    except ActionError as exc:
        return _refused(str(exc))


@bp.route("/<int:user_id>/role", methods=["POST"])
@roles_required(*ADMINS)
def set_role(user_id: int):
    return _change(user_id, RoleForm, _set_role)


def _set_role(user: StaffUser, form: RoleForm):
    if not staff.set_role(user, form.role.data, actor=current_user._get_current_object()):
        return _done(f"{user.email} already has the role {user.role}.")
    if user.id == current_user.id:  # no longer an admin: this page is not theirs any more
        return _leave(f"You are now {user.role}.", url_for("overview.index"))
    return _done(f"{user.email} is now {user.role}, from their next page on.")


def set_active(user_id: int, active: bool):
    """Disable an account (its sessions end at once, for good) or enable it again: `/disable` and `/enable`."""
    user = _account(user_id)
    try:
        staff.set_active(user, active, actor=current_user._get_current_object())
    except ActionError as exc:
        return _refused(str(exc))
    if active:
        return _done(f"{user.email} is enabled again and can log in.")
    if user.id == current_user.id:  # their own sessions ended with it, this one too
        return _leave(f"{user.email} is disabled: you are logged out.", url_for("auth.login"))
    return _done(f"{user.email} is disabled: logged out everywhere and cannot log in.")


for _slug, _active in (("disable", False), ("enable", True)):
    bp.add_url_rule(f"/<int:user_id>/{_slug}", _slug, roles_required(*ADMINS)(partial(set_active, active=_active)),
                    methods=["POST"])


@bp.route("/<int:user_id>/password", methods=["POST"])
@roles_required(*ADMINS)
def set_password(user_id: int):
    return _change(user_id, PasswordForm, _set_password)


def _set_password(user: StaffUser, form: PasswordForm):
    own = user.id == current_user.id
    staff.set_password(user, form.password.data, actor=current_user._get_current_object())
    if own:  # this session goes on under the new password; the others end
        login_user(user)
    return _done(f"New password set for {user.email}: their other sessions are logged out.")

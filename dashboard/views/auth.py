"""Log in and log out. Repeated failures for one e-mail from one address are slowed down (Redis counter)."""

from __future__ import annotations

import logging

import redis
from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from ..audit import record
from ..extensions import db
from ..jobqueue import get_redis
from ..models import StaffUser
from ..security import EVERYONE, public, roles_required

bp = Blueprint("auth", __name__)
log = logging.getLogger(__name__)


class LoginForm(FlaskForm):
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])


def _failure_key(email: str) -> str:
    return f"pti-sync:login-failures:{request.remote_addr}:{email}"


def _failures(email: str) -> int:
    try:
        return int(get_redis().get(_failure_key(email)) or 0)
    except redis.RedisError:
        log.warning("login rate limit unavailable: Redis is not answering")
        return 0


def _note_failure(email: str) -> None:
    try:
        pipe = get_redis().pipeline()
        pipe.incr(_failure_key(email))
        pipe.expire(_failure_key(email), current_app.config["LOGIN_LOCKOUT_SECONDS"])
        pipe.execute()
    except redis.RedisError:
        log.warning("login rate limit unavailable: Redis is not answering")


@bp.route("/login", methods=["GET", "POST"])
@public
def login():
    if current_user.is_authenticated:
        return redirect(url_for("overview.index"))
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        email = form.email.data.strip().lower()
        if _failures(email) >= current_app.config["LOGIN_MAX_FAILURES"]:
            minutes = max(1, current_app.config["LOGIN_LOCKOUT_SECONDS"] // 60)
            flash(f"Too many failed attempts. Wait {minutes} minutes and try again.", "error")
            return render_template("auth/login.html", form=form), 429
        user = db.session.scalar(select(StaffUser).where(func.lower(StaffUser.email) == email))
        if user and user.active and user.check_password(form.password.data):
            login_user(user)
            record("login", actor=user)
            db.session.commit()
            return redirect(_safe_next() or url_for("overview.index"))
        _note_failure(email)
        flash("Wrong e-mail or password.", "error")
        status = 401
    elif request.method == "POST":
        status = 400
    return render_template("auth/login.html", form=form), status


@bp.route("/logout", methods=["POST"])
@roles_required(*EVERYONE)
def logout():
    logout_user()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))


def _safe_next() -> str | None:
    target = request.args.get("next", "")
    return target if target.startswith("/") and not target.startswith("//") else None

"""Staff accounts: create one, change its role, disable or re-enable it, set its password.

Shared by `flask users create` and the Users page. Each change is written to the audit log in the same transaction
and committed. PTI Sync never loses its last active admin: a change that would leave none is refused.

A session names its account and a short digest of its password hash and session generation (StaffUser.get_id):
disabling an account (which moves its generation on) or a new password ends the sessions opened before, on their
next request (`session_user`, the log-in's user loader), for good.
"""

from __future__ import annotations

import secrets

from sqlalchemy import func, select

from .actions import ActionError
from .audit import record
from .extensions import db
from .models import Role, StaffUser

ROLES = tuple(r.value for r in Role)
PASSWORD_MIN = 8  # for passwords set on the Users page; the command line takes the operator's choice


def normal_email(email: str) -> str:
    return email.strip().lower()


def by_email(email: str) -> StaffUser | None:
    return db.session.scalar(select(StaffUser).where(func.lower(StaffUser.email) == normal_email(email)))


def generate_password() -> str:
    """A password for a new account, shown once to the admin who created it."""
    return secrets.token_urlsafe(12)


def session_user(value: str) -> StaffUser | None:
    """The account a session names, while it is active and its password unchanged; else None (logged out)."""
    user_id, _, digest = value.partition(":")
    if not (user_id.isascii() and user_id.isdigit() and len(user_id) <= 9 and digest):
        return None
    user = db.session.get(StaffUser, int(user_id))
    if user is None or not user.active or not secrets.compare_digest(user.get_id(), value):
        return None
    return user


def create_account(email: str, *, role: str, password: str, actor: StaffUser | str, name: str = "") -> StaffUser:
    email = normal_email(email)
    if not email or "@" not in email:
        raise ActionError("Give the account's e-mail address.")
    _check_role(role)
    _check_password(password)
    if by_email(email) is not None:
        raise ActionError(f"An account with the e-mail {email} already exists.")
    user = StaffUser(email=email, name=name.strip(), role=role, active=True)
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    record("create account", actor=actor, target_type="staff_user", target_id=user.id, email=email, role=role)
    db.session.commit()
    return user


def set_role(user: StaffUser, role: str, *, actor: StaffUser | str) -> bool:
    """Give the account another role (from its next request on). False: it already had this role."""
    _check_role(role)
    if user.role == role:
        return False
    if user.role == Role.ADMIN and user.active:
        _keep_an_admin(user, "take the admin role from")
    before, user.role = user.role, role
    record("change role", actor=actor, target_type="staff_user", target_id=user.id, email=user.email,
           before=before, after=role)
    db.session.commit()
    return True


def set_active(user: StaffUser, active: bool, *, actor: StaffUser | str) -> bool:
    """Disable (its sessions end on their next request; it cannot log in) or re-enable the account. False: it already
    was."""
    if user.active == active:
        return False
    if not active and user.role == Role.ADMIN:
        _keep_an_admin(user, "disable")
    user.active = active
    if not active:
        user.session_generation += 1
    record("enable account" if active else "disable account", actor=actor, target_type="staff_user",
           target_id=user.id, email=user.email)
    db.session.commit()
    return True


def set_password(user: StaffUser, password: str, *, actor: StaffUser | str) -> None:
    """A new password for the account: its sessions opened before end on their next request."""
    _check_password(password)
    user.set_password(password)
    record("reset password", actor=actor, target_type="staff_user", target_id=user.id, email=user.email)
    db.session.commit()


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ActionError(f"There is no role {role!r}: choose one of {', '.join(ROLES)}.")


def _check_password(password: str) -> None:
    if not password:
        raise ActionError("Give a password.")


def _keep_an_admin(user: StaffUser, verb: str) -> None:
    """Refuse a change that leaves no active admin. The active admins' rows are locked (PostgreSQL) so two admins
    demoting each other at once cannot both pass."""
    admins = db.session.scalars(select(StaffUser.id).where(StaffUser.role == Role.ADMIN, StaffUser.active.is_(True))
                                .with_for_update()).all()
    if set(admins) <= {user.id}:
        raise ActionError(f"You cannot {verb} {user.email}: it is the last active admin account. Make another "
                          f"account admin first.")

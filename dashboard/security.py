"""Who may do what, and the headers every answer carries.

Roles (reliability.md): admin configures; manager reads; staff act on rentals and customers; support uploads
CSVs and acts. Every view declares its roles with @roles_required; tests check every route of app.url_map.
"""

from __future__ import annotations

from functools import wraps

from flask import abort, current_app, request
from flask_login import current_user

from .extensions import login_manager
from .models import Role
from .staff import session_user

EVERYONE = (Role.ADMIN, Role.MANAGER, Role.STAFF, Role.SUPPORT)
ACTORS = (Role.ADMIN, Role.STAFF, Role.SUPPORT)  # may act on rentals and customers
UPLOADERS = (Role.ADMIN, Role.SUPPORT)
ADMINS = (Role.ADMIN,)  # run the product's own machinery (the relay on demand, RQ's failed jobs) and staff accounts

CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'self'",
    "object-src 'none'",
])


def roles_required(*roles: str):
    """Log-in required, and one of `roles`; the roles are kept on the view for the route × role test."""

    def decorate(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if current_user.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        wrapped.allowed_roles = tuple(roles)
        return wrapped

    return decorate


def public(view):
    """Marks a view as open without log-in (health, metrics, webhook, login)."""
    view.allowed_roles = None
    return view


def init_app(app) -> None:
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please log in to see this page."
    login_manager.session_protection = "strong"

    @login_manager.user_loader
    def load_user(user_id: str):
        # None (logged out) once the account is disabled or its password changed: checked on every request.
        return session_user(user_id)

    @app.after_request
    def headers(response):
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        if current_app.config.get("SESSION_COOKIE_SECURE"):
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        if request.endpoint and not request.endpoint.startswith("static"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

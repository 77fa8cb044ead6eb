"""Configuration read from the environment, with the defaults `make run` needs and the checks production needs."""

from __future__ import annotations

import os
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .storeganise.fields import EMPTY_UNIT_NOT_SYNCED, EMPTY_UNIT_RULES, FieldCodes

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEMO_SECRET_KEY = "demo-secret-key-not-for-production"
# A fixed Fernet key, only ever used in demo and test mode: production must set ENCRYPTION_KEYS.
DEMO_ENCRYPTION_KEY = "ZGVtby1vbmx5LWtleS1kZW1vLW9ubHkta2V5LWRlbW8="
DEMO_STOREGANISE_API_KEY = "demo-api-key"
DEMO_WEBHOOK_SECRET = "demo-webhook-secret"

DEFAULT_PTI_SITE_CONCURRENCY = 4  # PTI calls in flight per site, across every worker

WEB_PORT = 5000
PTI_SIM_PORT = 5001
SG_SIM_PORT = 5002


class ConfigError(RuntimeError):
    """Start-up stops with this when a setting production needs is missing."""


def _bool(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _number(name: str, default, kind, what: str):
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return kind(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be {what}, got {raw!r}") from exc


def _int(name: str, default: int) -> int:
    return _number(name, default, int, "a whole number")


def _float(name: str, default: float) -> float:
    return _number(name, default, float, "a number")


def _field_codes() -> FieldCodes:
    try:
        return FieldCodes.parse(os.environ.get("STOREGANISE_FIELD_CODES"))
    except ValueError as exc:
        raise ConfigError(f"STOREGANISE_FIELD_CODES: {exc}") from exc


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (os.environ.get(name) or default).strip()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _time_zone(name: str, default: str) -> str:
    value = (os.environ.get(name) or default).strip()
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"{name} must be an IANA time zone such as Europe/London, got {value!r}") from exc
    return value


def from_env(instance_path: str) -> dict:
    """Build the settings mapping from environment variables; see README's configuration table."""
    demo = _bool(os.environ.get("PTI_SYNC_DEMO"))
    sqlite_path = Path(instance_path) / "pti-sync.sqlite3"
    sg_sim_port = _int("SG_SIM_PORT", SG_SIM_PORT)
    pti_sim_port = _int("PTI_SIM_PORT", PTI_SIM_PORT)
    return {
        "DEMO_MODE": demo,
        "SECRET_KEY": os.environ.get("SECRET_KEY") or (DEMO_SECRET_KEY if demo else None),
        "ENCRYPTION_KEYS": os.environ.get("ENCRYPTION_KEYS") or (DEMO_ENCRYPTION_KEY if demo else None),
        "SQLALCHEMY_DATABASE_URI": os.environ.get("DATABASE_URL") or f"sqlite:///{sqlite_path}",
        "REDIS_URL": os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL,
        "STOREGANISE_API_URL": os.environ.get("STOREGANISE_API_URL")
        or (f"http://127.0.0.1:{sg_sim_port}/api/v1/admin" if demo else None),
        "STOREGANISE_API_KEY": os.environ.get("STOREGANISE_API_KEY") or (DEMO_STOREGANISE_API_KEY if demo else None),
        "STOREGANISE_WEBHOOK_SECRET": os.environ.get("STOREGANISE_WEBHOOK_SECRET")
        or (DEMO_WEBHOOK_SECRET if demo else None),
        # A delivery created longer ago than this (or this far ahead of our clock) is refused as stale.
        "STOREGANISE_WEBHOOK_MAX_AGE_S": _int("STOREGANISE_WEBHOOK_MAX_AGE_S", 24 * 3600),
        "STOREGANISE_WEBHOOK_MAX_SKEW_S": _int("STOREGANISE_WEBHOOK_MAX_SKEW_S", 300),
        # The PTI add-on's id in Storeganise, when the business has it (its settings hold the PTI connection).
        "STOREGANISE_ADDON_ID": os.environ.get("STOREGANISE_ADDON_ID") or None,
        # How long the journal and the recorded webhook deliveries are kept (dashboard/retention.py); 0 keeps all.
        "JOURNAL_RETENTION_DAYS": _int("JOURNAL_RETENTION_DAYS", 90),
        "DELIVERY_RETENTION_DAYS": _int("DELIVERY_RETENTION_DAYS", 30),
        # Sync is stale (a banner on every page, `pti_sync_stale` in /metrics: dashboard/engine/lag.py) when a change
        # owed to PTI or a webhook not handled is older than SYNC_STALE_AFTER_S, or a lock or unlock (owed, or an
        # urgent job waiting) older than URGENT_STALE_AFTER_S: a customer may be at the gate.
        "SYNC_STALE_AFTER_S": _int("SYNC_STALE_AFTER_S", 900),
        "URGENT_STALE_AFTER_S": _int("URGENT_STALE_AFTER_S", 60),
        # The business's local time, for every timestamp on the pages; a site's own (set on its page) wins there.
        "TIME_ZONE": _time_zone("TIME_ZONE", "UTC"),
        # Custom-field codes (dashboard/storeganise/fields.py) and what an empty unit field means.
        "STOREGANISE_FIELDS": _field_codes(),
        "PTI_EMPTY_UNIT_NAME": _choice("PTI_EMPTY_UNIT_NAME", EMPTY_UNIT_NOT_SYNCED, EMPTY_UNIT_RULES),
        "PTI_SIM_URL": os.environ.get("PTI_SIM_URL") or f"http://127.0.0.1:{pti_sim_port}",
        "METRICS_PUBLIC": _bool(os.environ.get("METRICS_PUBLIC"), default=True),
        "SESSION_COOKIE_SECURE": _bool(os.environ.get("SESSION_COOKIE_SECURE"), default=not demo),
        "LOGIN_MAX_FAILURES": _int("LOGIN_MAX_FAILURES", 5),
        "LOGIN_LOCKOUT_SECONDS": _int("LOGIN_LOCKOUT_SECONDS", 900),
        "MAX_CONTENT_LENGTH": _int("MAX_UPLOAD_BYTES", 64 * 1024 * 1024),  # a 100,000-row export with every column
        "PTI_CONNECT_TIMEOUT_S": _float("PTI_CONNECT_TIMEOUT_S", 3.0),
        "PTI_READ_TIMEOUT_S": _float("PTI_READ_TIMEOUT_S", 10.0),
        "PTI_SITE_CONCURRENCY": _int("PTI_SITE_CONCURRENCY", DEFAULT_PTI_SITE_CONCURRENCY),
        # One PTI session a site shared by every process through Redis (sealed), rather than a login a process and
        # site. A guess that PTI accepts a token from any of our hosts: off where PTI ties a session to its address.
        "PTI_SHARED_SESSIONS": _bool(os.environ.get("PTI_SHARED_SESSIONS"), default=True),
        # A worker takes a made-up customer through a lockout and a payment before its first job (jobs/rehearsal.py).
        "WORKER_REHEARSAL": _bool(os.environ.get("WORKER_REHEARSAL"), default=True),
        # How far a worker's forked work horse (a bulk batch, an import, the sweep) steps back in CPU priority (nice),
        # so payments, lockouts and pages come first on a busy machine; 0 keeps it level with everything else.
        "HORSE_NICENESS": _int("HORSE_NICENESS", 10),
        # One call's whole exchange (per attempt), however slowly the other side trickles its answer.
        "PTI_CALL_DEADLINE_S": _float("PTI_CALL_DEADLINE_S", 30.0),
        "STOREGANISE_CALL_DEADLINE_S": _float("STOREGANISE_CALL_DEADLINE_S", 30.0),
        # PostgreSQL only: how long a statement may wait for a row lock, and run at all, before it is cancelled.
        "DATABASE_LOCK_TIMEOUT_S": _float("DATABASE_LOCK_TIMEOUT_S", 10.0),
        "DATABASE_STATEMENT_TIMEOUT_S": _float("DATABASE_STATEMENT_TIMEOUT_S", 60.0),
    }


BASE = {
    "SQLALCHEMY_ENGINE_OPTIONS": {},  # a rested pooled connection is pinged before use (extensions.ping_when_rested)
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "WTF_CSRF_TIME_LIMIT": None,
    "TESTING": False,
}


def postgres_timeouts(config) -> None:
    """On PostgreSQL, every connection gets `lock_timeout` and `statement_timeout`: a lock held by a stuck process or
    a runaway query costs seconds, then an error the engine journals, instead of a hang."""
    uri = config.get("SQLALCHEMY_DATABASE_URI") or ""
    if not uri.startswith(("postgresql", "postgres")):
        return
    timeouts = (f"-c lock_timeout={int(config['DATABASE_LOCK_TIMEOUT_S'] * 1000)} "
                f"-c statement_timeout={int(config['DATABASE_STATEMENT_TIMEOUT_S'] * 1000)}")
    options = config["SQLALCHEMY_ENGINE_OPTIONS"] = dict(config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    connect_args = options["connect_args"] = dict(options.get("connect_args") or {})
    connect_args["options"] = f"{connect_args['options']} {timeouts}" if connect_args.get("options") else timeouts


def check(config) -> None:
    """Refuse to start outside demo and test mode without the secrets production needs."""
    if config.get("DEMO_MODE") or config.get("TESTING"):
        return
    missing = [name for name in ("SECRET_KEY", "ENCRYPTION_KEYS") if not config.get(name)]
    if missing:
        raise ConfigError(
            "PTI Sync cannot start: " + ", ".join(missing) + " must be set (see README, Configuration). "
            "For a local trial, run `make run`, which starts the demo."
        )

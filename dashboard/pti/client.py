"""The PTI Storlogix client: the one module that knows PTI's wire format (docs/pti-contract.md).

One `PtiClient` per site holds one httpx connection pool and one session token, and is safe to share between
threads. It makes one attempt per call: retries, backoff and the circuit breaker belong to the job layer.
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from dashboard.pti.errors import PtiPermanentError, PtiRetryableError
from dashboard.sync.desired import is_valid_unit_name  # noqa: F401 - PTI's naming rule, re-exported
from dashboard.sync.model import (
    NEW_USER,
    AccessLevel,
    CreateUser,
    LockUnit,
    Operation,
    PtiUnit,
    PtiUser,
    RemoveUser,
    RentUnit,
    TimeZone,
    UnitStatus,
    UnlockUnit,
    UpdateUser,
    VacateUnit,
)

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT = 3.0  # seconds
DEFAULT_READ_TIMEOUT = 10.0  # seconds
DEFAULT_MAX_CONNECTIONS = 10  # per site: the job layer's per-site concurrency limit should not exceed it
DEFAULT_PAGE_SIZE = 100  # PTI's largest page (contract)
TOKEN_RENEW_MARGIN = 30.0  # seconds: renew a token this long before PTI says it expires (at most a tenth of its life)
SITE_HEADER = "X-PTI-Site"  # the site code travels in a header, not the URL: URLs end up in logs
DEFAULT_RETRY_AFTER = 1.0  # seconds, when a 429 carries no usable Retry-After

MIN_ACCESS_CODE, MAX_ACCESS_CODE = 1, 4294967295

# Result codes (contract): the PTI-known ones keep PTI's numbers, the others are our assumption.
OK = 0
INVALID_CREDENTIALS = -1
TOKEN_EXPIRED = -2
INVALID_UNIT_NAME = -3
INVALID_VALUE = -4
DUPLICATE_ACCESS_CODE = -5
RENTED_TO_OTHER = -6
ALREADY_VACANT = -22
NO_USER_WITH_CODE = -24
NOT_FOUND = -404

RESULT_REASONS = {
    INVALID_CREDENTIALS: "invalid_credentials",
    INVALID_UNIT_NAME: "invalid_unit_name",
    DUPLICATE_ACCESS_CODE: "duplicate_access_code",
    RENTED_TO_OTHER: "unit_rented_to_other",
    ALREADY_VACANT: "already_vacant",
    NO_USER_WITH_CODE: "user_not_found",
}

UPDATABLE_USER_FIELDS = frozenset({"access_code", "access_level", "time_zone", "first_name", "last_name", "email",
                                   "marker"})
WRITE_OPERATIONS = frozenset({"create_user", "update_user", "remove_user", "rent_unit", "vacate_unit", "lock_unit",
                              "unlock_unit"})
UNIT_OPERATIONS = frozenset({"get_unit", "rent_unit", "vacate_unit", "lock_unit", "unlock_unit"})

class _Secret:
    """A credential that stays out of reprs, tracebacks with locals and debug pages."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


def parse_retry_after(value: str | None, *, now: float | None = None) -> float:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; a missing or bad value waits 1s."""
    if value:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None and when.tzinfo is not None:
            return max(0.0, when.timestamp() - (time.time() if now is None else now))
    return DEFAULT_RETRY_AFTER


def _unit(data: dict) -> PtiUnit:
    return PtiUnit(name=data["name"], status=UnitStatus(data["status"]), locked=bool(data.get("locked")),
                   user_id=_opt_str(data.get("user_id")))


def _user(data: dict) -> PtiUser:
    return PtiUser(
        id=str(data["id"]),
        email=data.get("email") or None,
        access_code=_opt_int(data.get("access_code")),
        access_level=_opt_int(data.get("access_level")),
        time_zone=_opt_int(data.get("time_zone")),
        first_name=data.get("first_name") or "",
        last_name=data.get("last_name") or "",
        marker=data.get("marker") or None,
        units=tuple(data.get("units") or ()),
    )


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


class PtiClient:
    """The PTI Storlogix API of one site. Thread-safe; close() (or `with`) releases its connection pool."""

    def __init__(self, base_url: str, site_code: str, site_key: str, username: str, password: str, *,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT, read_timeout: float = DEFAULT_READ_TIMEOUT,
                 transport: httpx.BaseTransport | None = None, page_size: int = DEFAULT_PAGE_SIZE,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, label: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base_url = base_url.rstrip("/")
        self.label = label  # how logs name the site (e.g. the Storeganise site code); credentials never appear
        self.page_size = page_size
        self._site_code = _Secret(site_code)
        self._site_key = _Secret(site_key)
        self._username = _Secret(username)
        self._password = _Secret(password)
        self._clock = clock
        self._http = httpx.Client(
            base_url=f"{self.base_url}/api/v1",
            timeout=httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout,
                                  pool=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
            headers={"Accept": "application/json"},
        )
        self._token_lock = threading.Lock()
        self._token: _Secret | None = None
        self._token_expires = 0.0
        self._rate_lock = threading.Lock()
        self._blocked_until = 0.0

    def __repr__(self) -> str:
        return f"PtiClient(base_url={self.base_url!r}, label={self.label!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PtiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- session -----------------------------------------------------------------------------------------

    def login(self) -> None:
        """Open a session now (normally lazy); raises PtiPermanentError("invalid_credentials") on bad credentials."""
        with self._token_lock:
            self._login_locked()

    def _login_locked(self) -> None:
        body = {"site_key": self._site_key.reveal(), "username": self._username.reveal(),
                "password": self._password.reveal()}
        data = self._send("login", "POST", "/login", json=body, token=None)
        self._token = _Secret(str(data["token"]))
        lifetime = float(data.get("expires_in") or 0)
        self._token_expires = self._clock() + lifetime - min(TOKEN_RENEW_MARGIN, lifetime / 10)

    def _current_token(self) -> _Secret:
        with self._token_lock:
            if self._token is None or self._clock() >= self._token_expires:
                self._login_locked()
            assert self._token is not None
            return self._token

    def _drop_token(self, used: _Secret) -> None:
        with self._token_lock:
            if self._token is used:  # another thread may already have renewed it
                self._token = None

    # --- requests ----------------------------------------------------------------------------------------

    def _call(self, operation: str, method: str, path: str, *, json: Any = None, params: dict | None = None,
              target: str | None = None, accept: frozenset[int] = frozenset()) -> Any:
        """One authenticated call; re-logs in once when PTI says the token expired."""
        token = self._current_token()
        try:
            return self._send(operation, method, path, json=json, params=params, token=token, target=target,
                              accept=accept)
        except PtiPermanentError as exc:
            if exc.result_code != TOKEN_EXPIRED:
                raise
        self._drop_token(token)
        token = self._current_token()
        try:
            return self._send(operation, method, path, json=json, params=params, token=token, target=target,
                              accept=accept)
        except PtiPermanentError as exc:
            if exc.result_code == TOKEN_EXPIRED:
                raise PtiPermanentError("pti_rejected", operation=operation, result_code=TOKEN_EXPIRED,
                                        http_status=exc.http_status, target=target) from None
            raise

    def _send(self, operation: str, method: str, path: str, *, json: Any = None, params: dict | None = None,
              token: _Secret | None, target: str | None = None, accept: frozenset[int] = frozenset()) -> Any:
        write = operation in WRITE_OPERATIONS
        self._check_rate_limit(operation, target)
        headers = {SITE_HEADER: self._site_code.reveal()}
        if token is not None:
            headers["Authorization"] = f"Bearer {token.reveal()}"
        started = time.monotonic()
        try:
            response = self._http.request(method, path, json=json, params=params, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            self._log(operation, target, started, type(exc).__name__)
            raise PtiRetryableError("pti_unreachable", operation=operation, target=target) from exc
        except httpx.TransportError as exc:  # sent, then no (complete) answer: PTI may have applied it
            self._log(operation, target, started, type(exc).__name__)
            raise PtiRetryableError("pti_unreachable", operation=operation, target=target,
                                    uncertain=write) from exc
        self._log(operation, target, started, str(response.status_code))
        status = response.status_code
        if status == 429:
            wait = parse_retry_after(response.headers.get("Retry-After"))
            self._block_for(wait)
            raise PtiRetryableError("pti_rate_limited", operation=operation, target=target, http_status=status,
                                    retry_after=wait)
        if status >= 500:
            raise PtiRetryableError("pti_server_error", operation=operation, target=target, http_status=status,
                                    uncertain=write)
        try:
            envelope = response.json()
            result = int(envelope["result"])
        except (ValueError, KeyError, TypeError):
            raise PtiPermanentError("pti_rejected", operation=operation, target=target,
                                    http_status=status) from None
        if result == OK and status == 200:
            return envelope.get("data")
        if result in accept:
            return None
        raise PtiPermanentError(self._reason(operation, result, envelope), operation=operation,
                                result_code=result, http_status=status, target=target)

    @staticmethod
    def _reason(operation: str, result: int, envelope: dict) -> str:
        if result == NOT_FOUND:
            item = envelope.get("item")
            if item not in ("unit", "user"):
                item = "unit" if operation in UNIT_OPERATIONS else "user"
            return f"{item}_not_found"
        return RESULT_REASONS.get(result, "pti_rejected")

    def _check_rate_limit(self, operation: str, target: str | None) -> None:
        with self._rate_lock:
            remaining = self._blocked_until - self._clock()
        if remaining > 0:
            raise PtiRetryableError("pti_rate_limited", operation=operation, target=target, retry_after=remaining)

    def _block_for(self, seconds: float) -> None:
        with self._rate_lock:
            self._blocked_until = max(self._blocked_until, self._clock() + seconds)

    def _log(self, operation: str, target: str | None, started: float, outcome: str) -> None:
        log.info("PTI %s %s %s -> %s in %.0f ms", self.label or self.base_url, operation, target or "", outcome,
                 (time.monotonic() - started) * 1000)

    # --- units -------------------------------------------------------------------------------------------

    def list_units(self) -> list[PtiUnit]:
        return [_unit(u) for u in self._call("list_units", "GET", "/units")]

    def get_unit(self, name: str) -> PtiUnit:
        """The unit called `name`; raises PtiPermanentError ("unit_not_found", "invalid_unit_name")."""
        return _unit(self._call("get_unit", "GET", _unit_path(name), target=name))

    def rent_unit(self, name: str, user_id: str) -> None:
        self._call("rent_unit", "POST", _unit_path(name, "rent"), json={"user_id": user_id}, target=name)

    def vacate_unit(self, name: str) -> None:
        """Vacate the unit; "already vacant" (-22) counts as success."""
        self._call("vacate_unit", "POST", _unit_path(name, "vacate"), target=name, accept=frozenset({ALREADY_VACANT}))

    def lock_unit(self, name: str) -> None:
        """Overlock the unit: its keypad shows ACCESS SUSPENDED."""
        self._call("lock_unit", "POST", _unit_path(name, "lock"), target=name)

    def unlock_unit(self, name: str) -> None:
        """Remove the overlock; "already vacant" (-22) counts as success."""
        self._call("unlock_unit", "POST", _unit_path(name, "unlock"), target=name, accept=frozenset({ALREADY_VACANT}))

    # --- catalogues --------------------------------------------------------------------------------------

    def list_access_levels(self) -> list[AccessLevel]:
        return [AccessLevel(int(a["id"]), a["name"]) for a in self._call("list_access_levels", "GET",
                                                                            "/access-levels")]

    def list_time_zones(self) -> list[TimeZone]:
        return [TimeZone(int(z["id"]), z["name"]) for z in self._call("list_time_zones", "GET", "/time-zones")]

    # --- users -------------------------------------------------------------------------------------------

    def list_users(self) -> list[PtiUser]:
        """Every user of the site, all pages (for the drift sweep)."""
        users: list[PtiUser] = []
        while True:
            page = self._call("list_users", "GET", "/users", params={"offset": len(users), "limit": self.page_size})
            batch = page.get("users") or []
            users.extend(_user(u) for u in batch)
            if len(batch) < self.page_size or len(users) >= int(page.get("total", len(users))):
                return users

    def find_users_by_email(self, email: str) -> list[PtiUser]:
        """Every PTI user with this e-mail (case-insensitive), maybe none: PTI does not keep e-mails unique."""
        found = self._call("find_users_by_email", "POST", "/users/find", json={"email": email})
        return [_user(u) for u in found or ()]

    def find_user_by_access_code(self, code: int) -> PtiUser | None:
        data = self._call("find_user_by_access_code", "POST", "/users/find", json={"access_code": code},
                          accept=frozenset({NO_USER_WITH_CODE}))
        return _user(data) if data else None

    def get_user(self, user_id: str) -> PtiUser | None:
        try:
            return _user(self._call("get_user", "GET", _user_path(user_id), target=user_id))
        except PtiPermanentError as exc:
            if exc.result_code == NOT_FOUND:
                return None
            raise

    def create_user(self, *, email: str, first_name: str, last_name: str, access_code: int, access_level: int,
                    time_zone: int, marker: str) -> PtiUser:
        body = {"email": email, "first_name": first_name, "last_name": last_name, "access_code": access_code,
                "access_level": access_level, "time_zone": time_zone, "marker": marker}
        return _user(self._call("create_user", "POST", "/users", json=body))

    def update_user(self, user_id: str, **changes: Any) -> PtiUser:
        """Change some of: access_code, access_level, time_zone, first_name, last_name, email."""
        unknown = set(changes) - UPDATABLE_USER_FIELDS
        if unknown:
            raise ValueError(f"PTI users have no updatable field(s) {sorted(unknown)}")
        return _user(self._call("update_user", "PATCH", _user_path(user_id), json=changes, target=user_id))

    def remove_user(self, user_id: str) -> None:
        """Remove the user and its code; PTI vacates the units still rented to it."""
        self._call("remove_user", "DELETE", _user_path(user_id), target=user_id)

    # --- operations from the sync core -------------------------------------------------------------------

    def apply(self, op: Operation, *, new_user_id: str | None = None) -> PtiUser | None:
        """Run one operation of a plan. `new_user_id` stands in for NEW_USER (the user an earlier CreateUser made)."""
        match op:
            case CreateUser():
                return self.create_user(email=op.email, first_name=op.first_name, last_name=op.last_name,
                                        access_code=op.access_code, access_level=op.access_level,
                                        time_zone=op.time_zone, marker=op.marker)
            case UpdateUser():
                return self.update_user(_resolve(op.user_id, new_user_id), **dict(op.changes))
            case RemoveUser():
                self.remove_user(_resolve(op.user_id, new_user_id))
            case RentUnit():
                self.rent_unit(op.unit_name, _resolve(op.user_id, new_user_id))
            case VacateUnit():
                self.vacate_unit(op.unit_name)
            case LockUnit():
                self.lock_unit(op.unit_name)
            case UnlockUnit():
                self.unlock_unit(op.unit_name)
            case _:
                raise TypeError(f"not a PTI operation: {type(op).__name__}")
        return None


def _resolve(user_id: str, new_user_id: str | None) -> str:
    if user_id != NEW_USER:
        return user_id
    if new_user_id is None:
        raise ValueError("the operation refers to the user created earlier in the plan: pass new_user_id")
    return new_user_id


def _unit_path(name: str, action: str | None = None) -> str:
    path = f"/units/{quote(name, safe='')}"
    return f"{path}/{action}" if action else path


def _user_path(user_id: str) -> str:
    return f"/users/{quote(str(user_id), safe='')}"

"""The PTI Storlogix client: the one module that knows PTI's wire format (docs/pti-contract.md).

One `PtiClient` per site holds one httpx connection pool and one session token, and is safe to share between
threads. Given a `SessionStore`, it shares that token with the site's clients in other processes too. It makes one
attempt per call: retries, backoff and the circuit breaker belong to the job layer.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import httpx

from dashboard.httpclient import PooledClient, request_within, retry_after_seconds, tls_context
from dashboard.pti.errors import PtiBadResponse, PtiPermanentError, PtiRetryableError
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

T = TypeVar("T", AccessLevel, TimeZone)

DEFAULT_CONNECT_TIMEOUT = 3.0  # seconds
DEFAULT_READ_TIMEOUT = 10.0  # seconds
DEFAULT_DEADLINE = 30.0  # seconds: one call's whole exchange, however slowly PTI trickles its answer
DEFAULT_MAX_CONNECTIONS = 10  # per site: the job layer's per-site concurrency limit should not exceed it
DEFAULT_PAGE_SIZE = 100  # PTI's largest page (contract)
TOKEN_RENEW_MARGIN = 30.0  # seconds: renew a token this long before PTI says it expires (at most a tenth of its life)
SITE_HEADER = "X-PTI-Site"  # the site code travels in a header, not the URL: URLs end up in logs
DEFAULT_RETRY_AFTER = 1.0  # seconds, when a 429 carries no usable Retry-After
MAX_RETRY_AFTER = 3600.0  # seconds: a longer (or infinite) Retry-After is read as an hour, then PTI is asked again

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
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; a missing or bad value waits 1s.

    Never more than MAX_RETRY_AFTER: an absurd value (1e999, a date years ahead) must not pause a site for ever.
    """
    seconds = retry_after_seconds(value, now=now)
    return DEFAULT_RETRY_AFTER if seconds is None else min(seconds, MAX_RETRY_AFTER)


# --- reading PTI's answers (contract: docs/pti-contract.md) -----------------------------------------------------
# Every answer is checked against the shape the contract gives it; one that departs is a PtiBadResponse naming
# *where* it departs (a path such as data.users[2].access_code), never the value found: it may be an access code.

_DIGITS = re.compile(r"[+-]?[0-9]+", re.ASCII)
MAX_PAGES = 10_000  # list_users gives up on a paging that never ends (a PTI answering full pages for ever)


class _Malformed(Exception):
    """Internal: where a PTI answer departs from the contract."""


def _object(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise _Malformed(f"{where} is not an object")
    return value


def _array(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise _Malformed(f"{where} is not a list")
    return value


def _id(value: Any, where: str) -> str:
    """An id or a name: text or a whole number, never empty."""
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise _Malformed(f"{where} is missing or not an id")
    return str(value)


def _opt_id(value: Any, where: str) -> str | None:
    return None if value is None or value == "" else _id(value, where)


def _int(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()) and len(value) < 40:
        return int(value)
    raise _Malformed(f"{where} is missing or not a whole number")


def _opt_int(value: Any, where: str = "value") -> int | None:
    return None if value is None else _int(value, where)


def _opt_text(value: Any, where: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _Malformed(f"{where} is not text")
    return value


def _unit(data: Any, where: str = "data") -> PtiUnit:
    data = _object(data, where)
    try:
        status = UnitStatus(data.get("status"))
    except ValueError:
        raise _Malformed(f"{where}.status is not one of {', '.join(s.value for s in UnitStatus)}") from None
    locked = data.get("locked")
    if locked not in (None, True, False):  # 0 and 1 compare equal to False and True
        raise _Malformed(f"{where}.locked is not true or false")
    return PtiUnit(name=_id(data.get("name"), f"{where}.name"), status=status, locked=bool(locked),
                   user_id=_opt_id(data.get("user_id"), f"{where}.user_id"))


def _answered_unit(data: Any) -> PtiUnit | None:
    """The unit a lock or unlock answers, or None when the answer is not one: the write was applied either way, so
    an answer we cannot read is no error, only no news (a push that relies on it reads the unit instead)."""
    try:
        return _unit(data)
    except _Malformed:
        return None


def _user(data: Any, where: str = "data") -> PtiUser:
    data = _object(data, where)
    units = data.get("units") or []
    return PtiUser(
        id=_id(data.get("id"), f"{where}.id"),
        email=_opt_text(data.get("email"), f"{where}.email"),
        access_code=_opt_int(data.get("access_code"), f"{where}.access_code"),
        access_level=_opt_int(data.get("access_level"), f"{where}.access_level"),
        time_zone=_opt_int(data.get("time_zone"), f"{where}.time_zone"),
        first_name=_opt_text(data.get("first_name"), f"{where}.first_name") or "",
        last_name=_opt_text(data.get("last_name"), f"{where}.last_name") or "",
        marker=_opt_text(data.get("marker"), f"{where}.marker"),
        units=tuple(_id(u, f"{where}.units[{i}]") for i, u in enumerate(_array(units, f"{where}.units"))),
    )


def _catalogue(data: Any, kind: Callable[[int, str], T], *, operation: str, noun: str) -> list[T]:
    """Read PTI's list of access levels or time zones; anything else is a PtiBadResponse saying what is wrong
    (catalogues hold no secrets, so the detail may quote what it found)."""

    def unreadable(problem: str) -> PtiBadResponse:
        return PtiBadResponse(operation=operation, http_status=200,
                              detail=f"PTI's list of {noun}s could not be read: {problem}.")

    if data is None:
        raise unreadable("the answer holds no data")
    if not isinstance(data, list):
        raise unreadable(f"it is {_shown(data)}, not a list")
    items: list[T] = []
    seen: set[int] = set()
    for position, entry in enumerate(data, 1):
        if not isinstance(entry, dict):
            raise unreadable(f"entry {position} is {_shown(entry)}, not an object")
        ident, name = entry.get("id"), entry.get("name")
        if ident is None:
            raise unreadable(f"entry {position} has no id")
        if isinstance(ident, bool) or not isinstance(ident, int):
            raise unreadable(f"entry {position} has the id {_shown(ident)}, not a whole number")
        if name is None:
            raise unreadable(f"{noun} {ident} has no name")
        if not isinstance(name, str):
            raise unreadable(f"{noun} {ident} has the name {_shown(name)}, not text")
        if ident in seen:
            raise unreadable(f"{noun} {ident} is listed twice")
        seen.add(ident)
        items.append(kind(ident, name))
    return items


def _shown(value: Any, limit: int = 40) -> str:
    """A value from a catalogue answer, short enough for an error line (catalogues hold no secrets)."""
    text = "null" if value is None else repr(value)
    return text if len(text) <= limit else f"{text[:limit - 1]}…"


def _token(data: Any) -> tuple[str, float]:
    data = _object(data, "data")
    token = data.get("token")
    if not isinstance(token, str) or not token:
        raise _Malformed("data.token is missing or not text")
    lifetime = data.get("expires_in")
    if lifetime is None:
        return token, 0.0
    if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or not 0 <= lifetime < math.inf:
        raise _Malformed("data.expires_in is not a number of seconds")
    return token, float(lifetime)


class SessionStore(Protocol):
    """Where a site's PTI session token is shared between processes, so a process that has none yet (a worker's
    first event at a site, a bulk batch's forked work horse) takes the one another process opened instead of logging
    in again. Only a saving: a store that cannot answer answers None and drops or keeps nothing, never raises."""

    def get(self) -> tuple[str, float] | None:
        """The shared token and how many seconds it stays usable, or None."""

    def put(self, token: str, usable_s: float) -> None:
        """Share a token this process just opened, usable for `usable_s` seconds."""

    def drop(self, token: str) -> None:
        """PTI refused this token (expired or unknown): forget it, unless another token has replaced it already."""


class PtiClient(PooledClient):
    """The PTI Storlogix API of one site. Thread-safe; close() (or `with`) releases its connection pool."""

    def __init__(self, base_url: str, site_code: str, site_key: str, username: str, password: str, *,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT, read_timeout: float = DEFAULT_READ_TIMEOUT,
                 transport: httpx.BaseTransport | None = None, page_size: int = DEFAULT_PAGE_SIZE,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, label: str | None = None,
                 clock: Callable[[], float] = time.monotonic, deadline: float = DEFAULT_DEADLINE,
                 sessions: SessionStore | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.deadline = deadline
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
            verify=tls_context(),
        )
        self._token_lock = threading.Lock()
        self._token: _Secret | None = None
        self._token_expires = 0.0
        self._sessions = sessions
        self._rate_lock = threading.Lock()
        self._blocked_until = 0.0

    def __repr__(self) -> str:
        return f"PtiClient(base_url={self.base_url!r}, label={self.label!r})"

    # --- session -----------------------------------------------------------------------------------------

    def login(self) -> None:
        """Open a session now (normally lazy), never a shared one: it proves the credentials. Raises
        PtiPermanentError("invalid_credentials") on bad credentials."""
        with self._token_lock:
            self._login_locked()

    def _login_locked(self) -> None:
        body = {"site_key": self._site_key.reveal(), "username": self._username.reveal(),
                "password": self._password.reveal()}
        data = self._send("login", "POST", "/login", json=body, token=None)
        token, lifetime = self._read("login", None, _token, data)
        usable = lifetime - min(TOKEN_RENEW_MARGIN, lifetime / 10)
        self._token = _Secret(token)
        self._token_expires = self._clock() + usable
        if self._sessions is not None and usable > 0:
            self._sessions.put(token, usable)

    def _current_token(self, shared: bool = True) -> _Secret:
        """This client's token, else (when `shared`) the one another process shares, else a new session."""
        with self._token_lock:
            if self._token is None or self._clock() >= self._token_expires:
                if not (shared and self._take_shared_locked()):
                    self._login_locked()
            assert self._token is not None
            return self._token

    def _take_shared_locked(self) -> bool:
        """Take the token another process opened for this site, while it stays usable; False when there is none."""
        shared = self._sessions.get() if self._sessions is not None else None
        if shared is None or shared[1] <= 0:
            return False
        self._token = _Secret(shared[0])
        self._token_expires = self._clock() + shared[1]
        return True

    def _drop_token(self, used: _Secret) -> None:
        with self._token_lock:
            if self._token is used:  # another thread may already have renewed it
                self._token = None
                if self._sessions is not None:  # and no other process takes it again
                    self._sessions.drop(used.reveal())

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
        token = self._current_token(shared=False)  # the retry on a session of its own, whatever others share
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
            response = request_within(self._http, self.deadline, method, path, json=json, params=params,
                                      headers=headers)
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
        except (ValueError, RecursionError):  # not JSON (a proxy's HTML page), not UTF-8, nested too deeply
            envelope = None
        result = _result_code(envelope)
        if result is None:
            if 200 <= status < 300:  # PTI said yes in a form we cannot read: a write may have been applied
                raise PtiBadResponse(operation=operation, target=target, http_status=status, uncertain=write,
                                     detail="the answer is not PTI's envelope {result, data}")
            raise PtiPermanentError("pti_rejected", operation=operation, target=target,
                                    http_status=status) from None
        if result == OK and status == 200:
            return envelope.get("data")
        if result in accept:
            return None
        raise PtiPermanentError(self._reason(operation, result, envelope), operation=operation,
                                result_code=result, http_status=status, target=target)

    @staticmethod
    def _read(operation: str, target: str | None, reader: Callable[[Any], Any], data: Any) -> Any:
        """`reader(data)`, or a PtiBadResponse saying where PTI's answer departs from the contract."""
        try:
            return reader(data)
        except _Malformed as exc:
            raise PtiBadResponse(operation=operation, target=target, http_status=200,
                                 uncertain=operation in WRITE_OPERATIONS, detail=str(exc)) from None

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
        data = self._call("list_units", "GET", "/units")
        return self._read("list_units", None, lambda d: [_unit(u, f"data[{i}]") for i, u in
                                                         enumerate(_array(d, "data"))], data)

    def get_unit(self, name: str) -> PtiUnit:
        """The unit called `name`; raises PtiPermanentError ("unit_not_found", "invalid_unit_name")."""
        return self._read("get_unit", name, _unit, self._call("get_unit", "GET", _unit_path(name), target=name))

    def rent_unit(self, name: str, user_id: str) -> None:
        self._call("rent_unit", "POST", _unit_path(name, "rent"), json={"user_id": user_id}, target=name)

    def vacate_unit(self, name: str) -> None:
        """Vacate the unit; "already vacant" (-22) counts as success."""
        self._call("vacate_unit", "POST", _unit_path(name, "vacate"), target=name, accept=frozenset({ALREADY_VACANT}))

    def lock_unit(self, name: str) -> PtiUnit | None:
        """Overlock the unit: its keypad shows ACCESS SUSPENDED. Answers the unit as PTI holds it now (None when
        the answer does not say: the lock is applied all the same)."""
        return _answered_unit(self._call("lock_unit", "POST", _unit_path(name, "lock"), target=name))

    def unlock_unit(self, name: str) -> PtiUnit | None:
        """Remove the overlock; "already vacant" (-22) counts as success. Answers the unit as PTI holds it now, None
        when the answer does not say (and always after a -22: the unit is vacant, rented to nobody)."""
        return _answered_unit(self._call("unlock_unit", "POST", _unit_path(name, "unlock"), target=name,
                                         accept=frozenset({ALREADY_VACANT})))

    # --- catalogues --------------------------------------------------------------------------------------

    def list_access_levels(self) -> list[AccessLevel]:
        """The site's access levels (area × schedule), in PTI's order. An answer that is not a list of
        `{"id": int, "name": str}` with distinct ids raises PtiPermanentError("pti_rejected") with a `detail`."""
        data = self._call("list_access_levels", "GET", "/access-levels")
        return _catalogue(data, AccessLevel, operation="list_access_levels", noun="access level")

    def list_time_zones(self) -> list[TimeZone]:
        """The site's time zones (numbered access-hours profiles, e.g. 1 "24 hours"), in PTI's order; a malformed
        answer raises like list_access_levels."""
        data = self._call("list_time_zones", "GET", "/time-zones")
        return _catalogue(data, TimeZone, operation="list_time_zones", noun="time zone")

    # --- users -------------------------------------------------------------------------------------------

    def list_users(self) -> list[PtiUser]:
        """Every user of the site, all pages (for the drift sweep)."""
        users: list[PtiUser] = []
        previous: list[PtiUser] | None = None
        for _ in range(MAX_PAGES):
            page = self._call("list_users", "GET", "/users", params={"offset": len(users), "limit": self.page_size})
            batch, total = self._read("list_users", None, _users_page, page)
            if batch and batch == previous:  # the offset is ignored: the same page would come back for ever
                raise PtiBadResponse(operation="list_users", http_status=200,
                                     detail=f"the same page of users came back at offset {len(users)}")
            users.extend(batch)
            if len(batch) < self.page_size or (total is not None and len(users) >= total):
                return users
            previous = batch
        raise PtiBadResponse(operation="list_users", http_status=200,
                             detail=f"the user list did not end after {MAX_PAGES:,} full pages")

    def find_users_by_email(self, email: str) -> list[PtiUser]:
        """Every PTI user with this e-mail (case-insensitive), maybe none: PTI does not keep e-mails unique."""
        found = self._call("find_users_by_email", "POST", "/users/find", json={"email": email})
        return self._read("find_users_by_email", None,
                          lambda d: [_user(u, f"data[{i}]") for i, u in enumerate(_array(d or [], "data"))], found)

    def find_user_by_access_code(self, code: int) -> PtiUser | None:
        data = self._call("find_user_by_access_code", "POST", "/users/find", json={"access_code": code},
                          accept=frozenset({NO_USER_WITH_CODE}))
        return None if data is None else self._read("find_user_by_access_code", None, _user, data)

    def get_user(self, user_id: str) -> PtiUser | None:
        try:
            data = self._call("get_user", "GET", _user_path(user_id), target=user_id)
        except PtiPermanentError as exc:
            if exc.result_code == NOT_FOUND:
                return None
            raise
        return self._read("get_user", user_id, _user, data)

    def create_user(self, *, email: str, first_name: str, last_name: str, access_code: int, access_level: int,
                    time_zone: int, marker: str) -> PtiUser:
        body = {"email": email, "first_name": first_name, "last_name": last_name, "access_code": access_code,
                "access_level": access_level, "time_zone": time_zone, "marker": marker}
        return self._read("create_user", None, _user, self._call("create_user", "POST", "/users", json=body))

    def update_user(self, user_id: str, **changes: Any) -> PtiUser:
        """Change some of: access_code, access_level, time_zone, first_name, last_name, email."""
        unknown = set(changes) - UPDATABLE_USER_FIELDS
        if unknown:
            raise ValueError(f"PTI users have no updatable field(s) {sorted(unknown)}")
        data = self._call("update_user", "PATCH", _user_path(user_id), json=changes, target=user_id)
        return self._read("update_user", user_id, _user, data)

    def remove_user(self, user_id: str) -> None:
        """Remove the user and its code; PTI vacates the units still rented to it."""
        self._call("remove_user", "DELETE", _user_path(user_id), target=user_id)

    # --- operations from the sync core -------------------------------------------------------------------

    def apply(self, op: Operation, *, new_user_id: str | None = None) -> PtiUser | PtiUnit | None:
        """Run one operation of a plan. `new_user_id` stands in for NEW_USER (the user an earlier CreateUser made).
        Answers the user a create makes, and the unit a lock or unlock leaves (see `lock_unit`)."""
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
                return self.lock_unit(op.unit_name)
            case UnlockUnit():
                return self.unlock_unit(op.unit_name)
            case _:
                raise TypeError(f"not a PTI operation: {type(op).__name__}")
        return None


def _result_code(envelope: Any) -> int | None:
    """The envelope's result code, or None when the answer is not the envelope."""
    if not isinstance(envelope, dict):
        return None
    try:
        return _int(envelope.get("result"), "result")
    except _Malformed:
        return None


def _users_page(page: Any) -> tuple[list[PtiUser], int | None]:
    page = _object(page, "data")
    users = [_user(u, f"data.users[{i}]") for i, u in enumerate(_array(page.get("users") or [], "data.users"))]
    return users, _opt_int(page.get("total"), "data.total")


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

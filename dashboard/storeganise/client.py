"""Storeganise Admin API client: the subset the product reads and writes, with retries for transient failures.

Storeganise is the source of truth; this module only fetches its records (in the API's own shape: camelCase
dicts with `customFields`) and writes our `pti_*` custom fields and staff-facing tasks back. It never logs,
raises or reprs the API key.

Some list filters we send are not in Storeganise's public documentation (docs/storeganise.md, "Assumptions"): the
client never trusts one. Every record a filtered list returns is checked against what was asked (`siteId`, `id`,
`updated`...); when records outside the filter come back, the filter was ignored: the outsiders are dropped, a
warning is logged once, and for `users?ids=` the missing users are read one by one.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from dashboard.httpclient import PooledClient, request_within, retry_after_seconds, tls_context

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
DEFAULT_DEADLINE_S = 30.0  # one attempt's whole exchange, however slowly Storeganise trickles its answer
DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_PAGE_SIZE = 100
MAX_PAGES = 10_000  # a list longer than this many full pages is a paging that never ends, not a business
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 8.0
# A Retry-After longer than this is not slept through inside a job: the caller is told to come back later.
MAX_RETRY_AFTER_S = 60.0
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# Errors raised before the request left this machine: safe to retry even for a non-idempotent POST.
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

REASON_UNREACHABLE = "storeganise_unreachable"
REASON_AUTH_FAILED = "storeganise_auth_failed"
REASON_NOT_FOUND = "storeganise_not_found"
REASON_REJECTED = "storeganise_rejected"
REASON_BAD_RESPONSE = "storeganise_bad_response"

# "site" is our guess, used only for a settings problem when the business has no PTI add-on (docs/storeganise.md).
TASK_TARGET_TYPES = ("unit", "user", "addon", "site")

# (api_url, path, filter) already warned about: an ignored filter is logged once per process, not once per call.
_WARNED_IGNORED: set[tuple[str, str, str]] = set()


class StoreganiseError(Exception):
    """A Storeganise call failed. `reason` is a stable key; `retryable` says whether trying later may help."""

    def __init__(self, message: str, *, reason: str, status: int | None = None, endpoint: str | None = None,
                 retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.status = status
        self.endpoint = endpoint
        self.retryable = retryable
        self.retry_after = retry_after


def format_timestamp(value: datetime | str) -> str:
    """ISO-8601 in UTC with milliseconds and a Z, the way Storeganise writes timestamps."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError("timestamps sent to Storeganise must be timezone-aware")
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StoreganiseClient(PooledClient):
    """A synchronous client for one Storeganise business's Admin API (`https://<biz>.storeganise.com/api/v1/admin`).

    Authenticate with an API key (`ApiKey <key>`) or as an add-on (`Addon <addonId>|<key>`). Transient failures
    (429, 5xx, timeouts, connection errors) are retried with capped exponential backoff and jitter, honouring
    Retry-After; `sleep` is injectable so tests need not wait.
    """

    def __init__(self, api_url: str, *, api_key: str | None = None, addon_id: str | None = None,
                 addon_key: str | None = None, timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, page_size: int = DEFAULT_PAGE_SIZE,
                 transport: httpx.BaseTransport | None = None, sleep: Callable[[float], None] = time.sleep,
                 jitter: Callable[[], float] = random.random, deadline: float = DEFAULT_DEADLINE_S) -> None:
        if api_key and (addon_id or addon_key):
            raise ValueError("give either api_key or addon_id + addon_key, not both")
        if api_key:
            self._auth_scheme = "ApiKey"
            authorization = f"ApiKey {api_key}"
        elif addon_id and addon_key:
            self._auth_scheme = "Addon"
            authorization = f"Addon {addon_id}|{addon_key}"
        else:
            raise ValueError("Storeganise needs an api_key, or an addon_id and addon_key")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.api_url = api_url.rstrip("/")
        self.max_attempts = max_attempts
        self.page_size = page_size
        self.deadline = deadline
        self.ignored_filters: set[tuple[str, str]] = set()  # (path, filter) Storeganise proved to ignore
        self._sleep = sleep
        self._jitter = jitter
        self._http = httpx.Client(
            base_url=self.api_url + "/",
            headers={"Authorization": authorization, "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
            verify=tls_context(),
        )

    def __repr__(self) -> str:
        return f"StoreganiseClient(api_url={self.api_url!r}, auth={self._auth_scheme!r})"

    # --- reads ---------------------------------------------------------------------------------------------

    def list_sites(self) -> list[dict]:
        return self._list("sites", {})

    def list_units(self, site_id: str | None = None, updated_after: datetime | str | None = None) -> list[dict]:
        """Units, optionally of one site and/or changed after a moment (both filters checked, see the module doc)."""
        checks = [_field_check("siteId", site_id), _after_check(updated_after)]
        return self._checked_list("units", checks)

    def list_users(self, ids: Iterable[str] | None = None, updated_after: datetime | str | None = None, *,
                   search: str | None = None) -> list[dict]:
        """Customers, optionally only those with the given ids, changed after a moment, or matching `search`.

        `ids` are checked: users outside them are dropped, and ids the list did not return are read one by one
        (`GET users/{id}`; one Storeganise no longer has is left out).
        """
        wanted: list[str] | None = None
        if ids is not None:
            wanted = list(dict.fromkeys(ids))
            if not wanted:
                return []
        checks = [_after_check(updated_after)]
        if wanted is not None:
            checks.append(("ids", _join(wanted), lambda record, keep=frozenset(wanted): record.get("id") in keep))
        if wanted is not None and ("users", "ids") in self.ignored_filters:
            records = []  # known to be ignored: a listing would page through every customer
        else:
            records = self._checked_list("users", checks, {"search": search}, stop_when_ignored="ids")
        if wanted is None:
            return records
        found, recent = {r["id"] for r in records}, _after_check(updated_after)[2]
        for user_id in wanted:
            if user_id in found:
                continue
            try:
                user = self.get_user(user_id)
            except StoreganiseError as exc:
                if exc.reason != REASON_NOT_FOUND:
                    raise
                continue
            if recent(user):
                records.append(user)
        order = {user_id: i for i, user_id in enumerate(wanted)}
        return sorted(records, key=lambda r: order[r["id"]])

    def list_unit_rentals(self, site_id: str | None = None, state: str | Iterable[str] | None = None,
                          updated_after: datetime | str | None = None, *, owner_id: str | None = None) -> list[dict]:
        """Unit rentals; `state` is one state or several (e.g. ("reserved", "occupied") for the active ones)."""
        states = None if state is None else ({state} if isinstance(state, str) else set(state))
        checks = [
            _field_check("siteId", site_id),
            ("state", state if isinstance(state, str) else _join(state),
             lambda r: isinstance(r.get("state"), str) and r["state"] in states),
            _after_check(updated_after),
            _field_check("ownerId", owner_id),
        ]
        return self._checked_list("unit-rentals", checks)

    def get_addon(self, addon_id: str) -> dict:
        """An add-on and its settings: `{"id", "customFields": {...}}` (the newer PTI add-on keeps per-site PTI
        settings there; their layout is our guess, see docs/storeganise.md)."""
        return self._get(f"addons/{_seg(addon_id)}", {})

    def get_site(self, site_id: str) -> dict:
        return self._get(f"sites/{_seg(site_id)}", {"include": "customFields"})

    def get_unit(self, unit_id: str) -> dict:
        return self._get(f"units/{_seg(unit_id)}", {"include": "customFields"})

    def get_user(self, user_id: str) -> dict:
        return self._get(f"users/{_seg(user_id)}", {"include": "customFields"})

    def get_unit_rental(self, rental_id: str, include: Iterable[str] = ("unit", "owner", "customFields")) -> dict:
        """One rental; `include` embeds related records (`unit`, `owner`) and custom fields."""
        return self._get(f"unit-rentals/{_seg(rental_id)}", {"include": _join(include)})

    def get_job(self, job_id: str) -> dict:
        return self._get(f"jobs/{_seg(job_id)}", {})

    # --- writes --------------------------------------------------------------------------------------------

    def update_unit_rental_custom_fields(self, rental_id: str, fields: dict[str, Any], *,
                                         still_wanted: Callable[[], bool] | None = None) -> dict | None:
        """Set only the given custom fields of a rental (Storeganise leaves the others untouched). `still_wanted`,
        when given, is asked before each try after the first (a retry comes after a back-off, in which a newer write
        of the rental may have landed): when it answers False the PUT is given up and None returned."""
        return self._request("PUT", f"unit-rentals/{_seg(rental_id)}", json={"customFields": dict(fields)},
                             still_wanted=still_wanted)

    def update_user_custom_fields(self, user_id: str, fields: dict[str, Any]) -> dict:
        """Set only the given custom fields of a customer."""
        return self._request("PUT", f"users/{_seg(user_id)}", json={"customFields": dict(fields)})

    def create_task(self, target_type: str, target_id: str | None, title: str, desc: str) -> dict:
        """Raise a task for staff inside Storeganise (how an add-on shows a problem on a unit or customer).

        Creating a job is not idempotent, so it is retried only when the request cannot have reached Storeganise
        (connection refused, 429): a duplicate task is noise staff have to clear.
        """
        if target_type not in TASK_TARGET_TYPES:
            raise ValueError(f"target_type must be one of {', '.join(TASK_TARGET_TYPES)}")
        body = {
            "type": "task",
            "ownerId": None,
            "data": {"targetType": target_type, "targetId": target_id, "title": title, "desc": desc},
        }
        return self._request("POST", "jobs", json=body, idempotent=False)

    # --- plumbing ------------------------------------------------------------------------------------------

    def _checked_list(self, path: str, checks: list[tuple[str, str | None, Callable[[dict], bool]]],
                      extra: dict[str, Any] | None = None, stop_when_ignored: str | None = None) -> list[dict]:
        """A filtered list whose every record is checked against each filter sent (see the module doc).

        `checks` are (query parameter, value or None when not filtering, predicate a record must meet). With
        `stop_when_ignored`, paging stops as soon as that filter proves ignored (the caller has another way).
        """
        active = [(name, value, keep) for name, value, keep in checks if value is not None]
        params = {**(extra or {}), **{name: value for name, value, _ in active}}
        kept: list[dict] = []

        def on_page(page: list) -> bool:
            ignored = set()
            for record in page:
                outside = [name for name, _, keep in active if not keep(record)] if isinstance(record, dict) else []
                if outside:
                    ignored.update(outside)
                else:
                    kept.append(record)
            for name in sorted(ignored):
                self._filter_ignored(path, name)
            return stop_when_ignored not in ignored

        self._list(path, params, on_page)
        return kept

    def _filter_ignored(self, path: str, name: str) -> None:
        self.ignored_filters.add((path, name))
        key = (self.api_url, path, name)
        if key not in _WARNED_IGNORED:
            _WARNED_IGNORED.add(key)
            log.warning("Storeganise ignored the %s filter of GET %s (records outside it came back): they are "
                        "dropped and checked one by one; see docs/storeganise.md, Assumptions", name, path)

    def _list(self, path: str, filters: dict[str, Any],
              on_page: Callable[[list], bool] | None = None) -> list[dict]:
        """Every record of a list endpoint: page with limit/offset until a page comes back short.

        With `on_page`, each page is handed to it instead of collected, and a False answer stops the paging.
        """
        records: list[dict] = []
        offset = 0
        previous: list | None = None
        for _ in range(MAX_PAGES):
            params = {**filters, "include": "customFields", "limit": self.page_size, "offset": offset}
            page = self._request("GET", path, params=params)
            if not isinstance(page, list):
                raise _bad_response(f"GET {path}", "something other than a list")
            if not all(isinstance(record, dict) and isinstance(record.get("id"), str) for record in page):
                raise _bad_response(f"GET {path}", "a list holding something other than records with an id")
            if page and page == previous:  # the offset is ignored: the same page would come back for ever
                raise _bad_response(f"GET {path}", f"the same page again at offset {offset}")
            if on_page is None:
                records.extend(page)
            elif not on_page(page):
                return records
            if len(page) < self.page_size:
                return records
            offset += len(page)
            previous = page
        raise _bad_response(f"GET {path}", f"more than {MAX_PAGES:,} full pages")

    def _get(self, path: str, params: dict[str, Any]) -> dict:
        record = self._request("GET", path, params=params)
        if not isinstance(record, dict):
            raise _bad_response(f"GET {path}", "something other than a record")
        return record

    def _request(self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None,
                 idempotent: bool = True, still_wanted: Callable[[], bool] | None = None) -> Any:
        endpoint = f"{method} {path}"
        clean_params = {k: v for k, v in (params or {}).items() if v is not None}
        attempt = 0
        while True:
            attempt += 1
            if attempt > 1 and still_wanted is not None and not still_wanted():
                log.info("Storeganise %s given up before try %d: a newer write has it", endpoint, attempt)
                return None
            last = attempt >= self.max_attempts
            try:
                response = request_within(self._http, self.deadline, method, path, params=clean_params, json=json)
            except httpx.TransportError as exc:
                retry = idempotent or isinstance(exc, NOT_SENT_ERRORS)
                what = "timed out" if isinstance(exc, httpx.TimeoutException) else "could not be reached"
                if last or not retry:
                    raise StoreganiseError(
                        f"Storeganise {what} ({endpoint}, {type(exc).__name__}) after {attempt} attempt(s).",
                        reason=REASON_UNREACHABLE, endpoint=endpoint, retryable=True) from None
                self._back_off(endpoint, attempt, type(exc).__name__, None)
                continue

            status = response.status_code
            if status < 400:
                return _decode(response, endpoint)
            if status in RETRYABLE_STATUS:
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                retry = idempotent or status == 429
                too_long = retry_after is not None and retry_after > MAX_RETRY_AFTER_S
                if last or not retry or too_long:
                    raise StoreganiseError(
                        f"Storeganise answered {endpoint} with HTTP {status} after {attempt} attempt(s).",
                        reason=REASON_UNREACHABLE, status=status, endpoint=endpoint, retryable=True,
                        retry_after=retry_after)
                self._back_off(endpoint, attempt, f"HTTP {status}", retry_after)
                continue
            raise _permanent_error(response, endpoint)

    def _back_off(self, endpoint: str, attempt: int, cause: str, retry_after: float | None) -> None:
        if retry_after is not None:
            delay = retry_after
        else:
            ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
            delay = ceiling / 2 + self._jitter() * ceiling / 2
        log.warning("Storeganise %s failed (%s), attempt %d of %d; retrying in %.2fs",
                    endpoint, cause, attempt, self.max_attempts, delay)
        self._sleep(delay)


def _permanent_error(response: httpx.Response, endpoint: str) -> StoreganiseError:
    status = response.status_code
    detail = _error_detail(response)
    suffix = f": {detail}" if detail else ""
    if status in (401, 403):
        message = f"Storeganise refused the API key for {endpoint} (HTTP {status}){suffix}."
        reason = REASON_AUTH_FAILED
    elif status == 404:
        message = f"Storeganise has no such record: {endpoint} (HTTP 404){suffix}."
        reason = REASON_NOT_FOUND
    else:
        message = f"Storeganise rejected {endpoint} (HTTP {status}){suffix}."
        reason = REASON_REJECTED
    return StoreganiseError(message, reason=reason, status=status, endpoint=endpoint)


def _error_detail(response: httpx.Response) -> str:
    """The message of a Storeganise error body, shortened; never echoes request headers."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return response.text.strip()[:200]
    if isinstance(body, dict):
        for key in ("message", "error", "detail"):
            if isinstance(body.get(key), str):
                return body[key][:200]
    return ""


def _decode(response: httpx.Response, endpoint: str) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except (ValueError, RecursionError):  # not JSON, not UTF-8, a number too long to convert, nested too deeply
        raise StoreganiseError(f"Storeganise answered {endpoint} with a body that is not JSON.",
                               reason=REASON_BAD_RESPONSE, status=response.status_code, endpoint=endpoint) from None


def _field_check(field: str, value: str | None) -> tuple[str, str | None, Callable[[dict], bool]]:
    return field, value, lambda record: record.get(field) == value


def _after_check(after: datetime | str | None) -> tuple[str, str | None, Callable[[dict], bool]]:
    """`updatedAfter`: a record is outside it only when its `updated` is readable and older than asked; an equal
    or unreadable one is kept (reading a record twice is harmless, missing a change is not)."""
    if after is None:
        return "updatedAfter", None, lambda record: True
    text = format_timestamp(after)
    moment = _parse_instant(text)

    def keep(record: dict) -> bool:
        updated = _parse_instant(record.get("updated"))
        return moment is None or updated is None or updated >= moment
    return "updatedAfter", text, keep


def _parse_instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _bad_response(endpoint: str, what: str) -> StoreganiseError:
    return StoreganiseError(f"Storeganise answered {endpoint} with {what}.", reason=REASON_BAD_RESPONSE,
                            endpoint=endpoint)


def _join(values: Iterable[str] | None) -> str | None:
    if values is None:
        return None
    joined = ",".join(values)
    return joined or None


def _seg(record_id: str) -> str:
    """A record id as one path segment: an id can never step into another endpoint."""
    if not record_id:
        raise ValueError("a Storeganise record id cannot be empty")
    return quote(str(record_id), safe="")

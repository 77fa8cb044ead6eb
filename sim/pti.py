"""PTI Storlogix simulator: the contract of docs/pti-contract.md, PTI's rules, and fault injection for tests.

Run it with `python -m sim.pti --port 5001` (or PTI_SIM_PORT). Each site keeps its own state behind its own lock,
seeded by default from the demo business: units pre-exist, vacant and unlocked; no users.

Control endpoints (test-only, not PTI):
- `GET /_sim/state`: `{"sites": {code: {"users": [...], "units": [...], "access_levels": [...],
  "time_zones": [...]}}, "calls": {counts}}`
- `GET /_sim/units/<site>/<name>`: one unit as in the state (`{"name", "status", "locked", "user_id"}`), a light
  read for benchmarks that wait for one lock; with `?locked=true|false&wait_s=S` it answers as soon as the unit's
  lock is so, or after S seconds (at most 10) with the unit as it is: a benchmark waits for the gate without polling
  (its polls loaded the machine it measures)
- `GET /_sim/calls`: every recorded call (operation, site, targets, start/end monotonic times, status, fault)
- `POST /_sim/faults`: `{latency_ms, error_rate, error_status, timeout_rate, apply_then_timeout_rate,
  retry_after_s, timeout_ms, site?, seed?}`. Each post replaces the fault profile of its scope (one site with
  "site", else every site without a profile of its own); keys left out are off. `retry_after_s` opens a window
  from now during which the scope answers 429 with the remaining Retry-After to every call.
- `POST /_sim/expire-tokens` (`{site?}`): every session token is forgotten, so the next call gets -2.
- `POST /_sim/lists`: `{"site", "access_levels"?: [{"id", "name"}], "time_zones"?: [...]}` replaces the site's
  lists (a key left out keeps its list) and answers the site's lists. Entries are stored as given, so a test can
  make PTI answer a malformed list; users already holding a level or zone dropped from a list keep it.
- `POST /_sim/reset`: state back to the seed, faults off, tokens and call log cleared.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import random
import re
import secrets
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field, fields

from flask import Flask, Response, jsonify, request

from sim.demo_data import build_demo_business, sites_from_env

DEFAULT_PORT = 5001
API_PREFIX = "/api/v1"
SITE_HEADER = "X-PTI-Site"
DEFAULT_TOKEN_TTL_S = 900.0
DEFAULT_TIMEOUT_MS = 3000  # how long a simulated time-out holds the request before it answers late
DEFAULT_ERROR_STATUS = 503
MAX_PAGE = 100
MAX_UNIT_NAME = 10
MAX_UNIT_WAIT_S = 10.0  # the longest `GET /_sim/units/...?wait_s=` holds a thread of the simulator
MIN_CODE, MAX_CODE = 1, 4294967295
CALL_LOG_SIZE = 200_000
FIRST_USER_ID = 1001

# Result codes of the contract (written independently of the client, so contract tests compare two readings).
OK, BAD_CREDENTIALS, BAD_TOKEN, BAD_UNIT_NAME, BAD_VALUE, DUPLICATE_CODE, RENTED_TO_OTHER = 0, -1, -2, -3, -4, -5, -6
ALREADY_VACANT, NO_SUCH_CODE, NOT_FOUND = -22, -24, -404

WRITES = {"create_user", "update_user", "remove_user", "rent_unit", "vacate_unit", "lock_unit", "unlock_unit"}
USER_FIELDS = ("first_name", "last_name", "email", "access_code", "access_level", "time_zone")
UPDATABLE_FIELDS = (*USER_FIELDS, "marker")  # a user staff chose to adopt gets our marker written onto it


@dataclass
class Faults:
    """A fault profile; `POST /_sim/faults` sets one for every site or for one ("site"), optionally only for some
    operations ("operations": e.g. ["create_user"])."""

    latency_ms: float = 0
    error_rate: float = 0
    error_status: int = DEFAULT_ERROR_STATUS
    timeout_rate: float = 0
    apply_then_timeout_rate: float = 0
    retry_after_s: float = 0
    timeout_ms: float = DEFAULT_TIMEOUT_MS
    rate_limited_until: float = 0  # monotonic end of the 429 window opened by retry_after_s
    operations: tuple[str, ...] = ()  # only these operations suffer the faults; empty: every operation

    def public(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "rate_limited_until"}
        return {**data, "operations": list(self.operations)}


FAULT_KEYS = {f.name for f in fields(Faults)} - {"rate_limited_until", "operations"}
NO_FAULTS = Faults()


class Rejected(Exception):
    """A negative PTI result: becomes the envelope `{"result": code, "message": ...}`."""

    def __init__(self, result: int, message: str, *, item: str | None = None, http_status: int = 200) -> None:
        super().__init__(message)
        self.result, self.message, self.item, self.http_status = result, message, item, http_status


@dataclass
class Site:
    code: str
    site_key: str
    username: str
    password: str
    units: dict[str, dict]
    access_levels: list[dict]
    time_zones: list[dict]
    users: dict[str, dict] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)
    token_ttl_s: float = DEFAULT_TOKEN_TTL_S
    next_id: int = FIRST_USER_ID
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)  # on `lock`: notified after every call that reached the site

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    @classmethod
    def seeded(cls, code: str, seed: dict, token_ttl_s: float) -> Site:
        units = {name: {"name": name, "status": "vacant", "locked": False, "user_id": None} for name in seed["units"]}
        return cls(code, seed["site_key"], seed["username"], seed["password"], units,
                   copy.deepcopy(seed["access_levels"]), copy.deepcopy(seed["time_zones"]), token_ttl_s=token_ttl_s)

    def units_by_user(self) -> dict[str, list[str]]:
        held: dict[str, list[str]] = {}
        for unit in self.units.values():
            if unit["user_id"] is not None:
                held.setdefault(unit["user_id"], []).append(unit["name"])
        return held

    def user_json(self, user: dict, held: dict[str, list[str]] | None = None) -> dict:
        held = self.units_by_user() if held is None else held
        return {**user, "units": sorted(held.get(user["id"], []))}

    def unit(self, name: str) -> dict:
        if len(name) > MAX_UNIT_NAME or not name or re.search(r"\s", name):
            raise Rejected(BAD_UNIT_NAME, "invalid unit name")
        if name not in self.units:
            raise Rejected(NOT_FOUND, "unit not found", item="unit")
        return self.units[name]

    def user(self, user_id: str) -> dict:
        if user_id not in self.users:
            raise Rejected(NOT_FOUND, "user not found", item="user")
        return self.users[user_id]


class PtiSimulator:
    """The simulated PTI of every site, its faults and its call log."""

    def __init__(self, pti_sites: dict, *, token_ttl_s: float = DEFAULT_TOKEN_TTL_S, seed: int | None = None) -> None:
        self.seed_sites = copy.deepcopy(pti_sites)
        self.token_ttl_s = token_ttl_s
        self._lock = threading.Lock()  # faults, call log, rng
        self._rng = random.Random(seed)
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.sites = {code: Site.seeded(code, seed, self.token_ttl_s) for code, seed in self.seed_sites.items()}
            self.default_faults = Faults()
            self.site_faults: dict[str, Faults] = {}
            self.calls: deque[dict] = deque(maxlen=CALL_LOG_SIZE)
            self.counts: Counter = Counter()
            self.by_operation: Counter = Counter()
            self.by_site: Counter = Counter()
            self._seq = 0
            self._answered_429: set[tuple[str, float]] = set()
            self.epoch = getattr(self, "epoch", 0) + 1  # a call still held across a reset is not logged after it

    # --- faults ------------------------------------------------------------------------------------------

    def set_faults(self, config: dict) -> dict:
        unknown = set(config) - FAULT_KEYS - {"site", "seed", "operations"}
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        faults = Faults(**{k: float(v) for k, v in config.items() if k in FAULT_KEYS})
        faults.error_status = int(faults.error_status)
        faults.operations = tuple(str(op) for op in config.get("operations") or ())
        if faults.retry_after_s > 0:
            faults.rate_limited_until = time.monotonic() + faults.retry_after_s
        with self._lock:
            if config.get("seed") is not None:
                self._rng.seed(config["seed"])
            if config.get("site"):
                self.site_faults[config["site"]] = faults
            else:
                self.default_faults = faults
            return self.faults_json()

    def faults_json(self) -> dict:
        return {"default": self.default_faults.public(),
                "sites": {code: f.public() for code, f in self.site_faults.items()}}

    def _faults_for(self, site: str) -> Faults:
        with self._lock:
            return self.site_faults.get(site, self.default_faults)

    def _roll(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate

    def expire_tokens(self, site: str | None = None) -> None:
        for code, state in self.sites.items():
            if site in (None, code):
                with state.lock:
                    state.tokens.clear()

    # --- one PTI call ------------------------------------------------------------------------------------

    def run(self, site_code: str, operation: str, action, **targets) -> Response:
        """Serve one call: faults first, then `action(site, call)` under the site's lock; record it."""
        call = {"epoch": self.epoch, "operation": operation, "site": site_code, "user_id": None, "unit_name": None,
                "access_code": None,
                "email": None, "start": time.monotonic(), **targets}
        self._identify(call)
        faults = self._faults_for(site_code)
        if faults.operations and call["operation"] not in faults.operations:
            faults = NO_FAULTS
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        now = time.monotonic()
        fault = None
        applied = False
        headers: dict[str, str] = {}
        if faults.rate_limited_until > now:
            fault = "rate_limited"
            window = (site_code, faults.rate_limited_until)
            with self._lock:
                call["early"] = window in self._answered_429
                self._answered_429.add(window)
            headers["Retry-After"] = str(math.ceil(faults.rate_limited_until - now))
            status, body = 429, {"message": "too many requests"}
        elif self._roll(faults.error_rate):
            fault = "error"
            status, body = faults.error_status, {"message": "simulated server error"}
        elif self._roll(faults.timeout_rate):
            fault = "timeout"
            time.sleep(faults.timeout_ms / 1000)
            status, body = 504, {"message": "simulated time-out"}
        else:
            status, body = self._apply(site_code, action, call)
            applied = True
            if self._roll(faults.apply_then_timeout_rate):
                fault = "apply_then_timeout"
                time.sleep(faults.timeout_ms / 1000)
        call.update(end=time.monotonic(), status=status, result=body.get("result"), fault=fault, applied=applied)
        call.setdefault("early", False)
        self._record(call)
        response = jsonify(body)
        response.status_code = status
        response.headers.update(headers)
        return response

    def _identify(self, call: dict) -> None:
        """Name the call's targets before any fault, so even a failed call shows whom it was about."""
        body = request.get_json(silent=True) if request.method in ("POST", "PATCH") else None
        body = body if isinstance(body, dict) else {}
        if call["operation"] == "find_user":
            call["operation"] = "find_user_by_access_code" if "access_code" in body else "find_users_by_email"
        if call["operation"] != "login":
            for key in ("access_code", "email", "user_id"):
                if body.get(key) is not None and not isinstance(body[key], dict | list):
                    call[key] = body[key]
        site = self.sites.get(call["site"])
        if call["unit_name"] and call["user_id"] is None and site is not None:
            with site.lock:
                call["user_id"] = site.units.get(call["unit_name"], {}).get("user_id")

    def _apply(self, site_code: str, action, call: dict) -> tuple[int, dict]:
        site = self.sites.get(site_code)
        try:
            if site is None:
                raise (Rejected(BAD_CREDENTIALS, "invalid credentials", http_status=401) if call["operation"] == "login"
                       else Rejected(BAD_TOKEN, "token expired or unknown", http_status=401))
            with site.lock:
                try:
                    if call["operation"] != "login":
                        self._authenticate(site)
                    return 200, {"result": OK, "data": action(site, call)}
                finally:
                    site.changed.notify_all()  # a benchmark waiting for a unit's lock sees it the moment it lands
        except Rejected as exc:
            body = {"result": exc.result, "message": exc.message}
            if exc.item:
                body["item"] = exc.item
            return exc.http_status, body

    @staticmethod
    def _authenticate(site: Site) -> None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip()
        expires = site.tokens.get(token)
        if not token or expires is None or expires <= time.monotonic():
            site.tokens.pop(token, None)
            raise Rejected(BAD_TOKEN, "token expired or unknown", http_status=401)

    def _record(self, call: dict) -> None:
        kind = "logins" if call["operation"] == "login" else "writes" if call["operation"] in WRITES else "reads"
        with self._lock:
            if call.pop("epoch") != self.epoch:
                return  # began before the last reset: it belongs to a test that has finished
            self._seq += 1
            call["seq"] = self._seq
            self.calls.append(call)
            self.counts["total"] += 1
            self.counts[kind] += 1
            self.counts["rate_limited"] += call["fault"] == "rate_limited"
            self.counts["early"] += call["early"]
            self.by_operation[call["operation"]] += 1
            self.by_site[call["site"]] += 1

    # --- control views -----------------------------------------------------------------------------------

    def state_json(self) -> dict:
        sites = {}
        for code, site in self.sites.items():
            with site.lock:
                held = site.units_by_user()
                sites[code] = {"users": [site.user_json(u, held) for u in site.users.values()],
                               "units": [dict(u) for u in site.units.values()],
                               "access_levels": copy.deepcopy(site.access_levels),
                               "time_zones": copy.deepcopy(site.time_zones)}
        with self._lock:
            calls = {key: self.counts[key] for key in ("total", "reads", "writes", "logins", "rate_limited", "early")}
            calls.update(by_operation=dict(self.by_operation), by_site=dict(self.by_site))
        return {"sites": sites, "calls": calls}

    def set_lists(self, config: dict) -> dict:
        """Replace a site's access levels and/or time zones (test control); entries are stored as given."""
        if not isinstance(config, dict):
            raise ValueError("a JSON object is required")
        unknown = set(config) - {"site", "access_levels", "time_zones"}
        if unknown:
            raise ValueError(f"unknown keys: {sorted(unknown)}")
        code = config.get("site")
        site = self.sites.get(code) if isinstance(code, str) else None
        if site is None:
            raise LookupError(f"no site {code!r}")
        for key in ("access_levels", "time_zones"):
            if key in config and not isinstance(config[key], list):
                raise ValueError(f"{key} must be a list")
        with site.lock:
            if "access_levels" in config:
                site.access_levels = copy.deepcopy(config["access_levels"])
            if "time_zones" in config:
                site.time_zones = copy.deepcopy(config["time_zones"])
            return {"access_levels": copy.deepcopy(site.access_levels), "time_zones": copy.deepcopy(site.time_zones)}

    def calls_json(self) -> list[dict]:
        with self._lock:
            return list(self.calls)


# --- the PTI operations (run under the site's lock) --------------------------------------------------------


def _body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise Rejected(BAD_VALUE, "a JSON object body is required")
    return body


def _check_user_fields(site: Site, values: dict, user_id: str | None) -> None:
    for key in ("first_name", "last_name", "email"):
        if key in values and not isinstance(values[key], str):
            raise Rejected(BAD_VALUE, f"{key} must be text")
    if "access_code" in values:
        code = values["access_code"]
        if isinstance(code, bool) or not isinstance(code, int) or not MIN_CODE <= code <= MAX_CODE:
            raise Rejected(BAD_VALUE, "access code must be an integer from 1 to 4294967295")
        if any(u["access_code"] == code and u["id"] != user_id for u in site.users.values()):
            raise Rejected(DUPLICATE_CODE, "access code already in use")
    for key, noun, listed in (("access_level", "access level", site.access_levels),
                              ("time_zone", "time zone", site.time_zones)):
        if key in values and not _is_listed(values[key], listed):
            known = ", ".join(str(e["id"]) for e in listed if isinstance(e, dict) and "id" in e) or "none"
            raise Rejected(BAD_VALUE, f"unknown {noun} {values[key]!r} (this site has: {known})")


def _is_listed(value: object, listed: list) -> bool:
    """Whether `value` is the integer id of an entry of the site's list (never a bool or a text like "24 Hours")."""
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return any(isinstance(e, dict) and not isinstance(e.get("id"), bool) and e.get("id") == value for e in listed)


def op_login(site: Site, call: dict) -> dict:
    body = request.get_json(silent=True) or {}
    given = (body.get("site_key"), body.get("username"), body.get("password"))
    if given != (site.site_key, site.username, site.password):
        raise Rejected(BAD_CREDENTIALS, "invalid credentials", http_status=401)
    token = secrets.token_urlsafe(24)
    site.tokens[token] = time.monotonic() + site.token_ttl_s
    return {"token": token, "expires_in": site.token_ttl_s}


def op_list_units(site: Site, call: dict) -> list:
    return [dict(u) for u in site.units.values()]


def op_get_unit(site: Site, call: dict) -> dict:
    return dict(site.unit(call["unit_name"]))


def op_list_access_levels(site: Site, call: dict) -> list:
    return copy.deepcopy(site.access_levels)


def op_list_time_zones(site: Site, call: dict) -> list:
    return copy.deepcopy(site.time_zones)


def op_list_users(site: Site, call: dict) -> dict:
    try:
        offset = int(request.args.get("offset", 0))
        limit = int(request.args.get("limit", MAX_PAGE))
    except ValueError:
        raise Rejected(BAD_VALUE, "offset and limit must be integers") from None
    if offset < 0 or not 1 <= limit <= MAX_PAGE:
        raise Rejected(BAD_VALUE, f"limit must be 1..{MAX_PAGE} and offset >= 0")
    held = site.units_by_user()
    users = list(site.users.values())
    return {"users": [site.user_json(u, held) for u in users[offset:offset + limit]], "total": len(users)}


def op_find_user(site: Site, call: dict) -> dict | list:
    body = _body()
    if "access_code" in body:
        for user in site.users.values():
            if user["access_code"] == body["access_code"]:
                call["user_id"] = user["id"]
                return site.user_json(user)
        raise Rejected(NO_SUCH_CODE, "no user with this access code")
    if isinstance(body.get("email"), str):
        wanted = body["email"].strip().lower()
        held = site.units_by_user()
        return [site.user_json(u, held) for u in site.users.values() if (u["email"] or "").lower() == wanted]
    raise Rejected(BAD_VALUE, "find by email or access_code")


def op_get_user(site: Site, call: dict) -> dict:
    return site.user_json(site.user(call["user_id"]))


def op_create_user(site: Site, call: dict) -> dict:
    body = _body()
    missing = [key for key in USER_FIELDS if key not in body]
    if missing:
        raise Rejected(BAD_VALUE, f"missing {', '.join(missing)}")
    _check_user_fields(site, body, None)
    user_id = str(site.next_id)
    site.next_id += 1
    site.users[user_id] = {"id": user_id, **{key: body[key] for key in USER_FIELDS},
                           "marker": body.get("marker") or None}
    call["user_id"] = user_id
    return site.user_json(site.users[user_id])


def op_update_user(site: Site, call: dict) -> dict:
    user = site.user(call["user_id"])
    body = _body()
    unknown = set(body) - set(UPDATABLE_FIELDS)
    if unknown:
        raise Rejected(BAD_VALUE, f"cannot update {', '.join(sorted(unknown))}")
    _check_user_fields(site, body, user["id"])
    user.update(body)
    return site.user_json(user)


def op_remove_user(site: Site, call: dict) -> None:
    site.user(call["user_id"])
    del site.users[call["user_id"]]
    for unit in site.units.values():
        if unit["user_id"] == call["user_id"]:
            unit.update(status="vacant", user_id=None, locked=False)


def op_rent_unit(site: Site, call: dict) -> dict:
    unit = site.unit(call["unit_name"])
    user_id = _body().get("user_id")
    if not isinstance(user_id, str):
        raise Rejected(BAD_VALUE, "user_id is required")
    site.user(user_id)
    if unit["status"] == "rented" and unit["user_id"] != user_id:
        raise Rejected(RENTED_TO_OTHER, "unit rented to another user")
    unit.update(status="rented", user_id=user_id)
    return dict(unit)


def op_vacate_unit(site: Site, call: dict) -> dict:
    unit = site.unit(call["unit_name"])
    if unit["status"] == "vacant":
        raise Rejected(ALREADY_VACANT, "unit already vacant")
    unit.update(status="vacant", user_id=None, locked=False)
    return dict(unit)


def op_lock_unit(site: Site, call: dict) -> dict:
    unit = site.unit(call["unit_name"])
    unit["locked"] = True
    return dict(unit)


def op_unlock_unit(site: Site, call: dict) -> dict:
    unit = site.unit(call["unit_name"])
    if unit["status"] == "vacant" and not unit["locked"]:
        raise Rejected(ALREADY_VACANT, "unit already vacant")
    unit["locked"] = False
    return dict(unit)


def create_app(pti_sites: dict | None = None, *, token_ttl_s: float = DEFAULT_TOKEN_TTL_S,
               seed: int | None = None) -> Flask:
    """The simulator as a Flask app; `pti_sites` defaults to the PTI side of the demo business (or of the load
    profile SIM_SITES names, e.g. `load:10:1100:1000`), so `gunicorn 'sim.pti:create_app()'` serves it too."""
    if pti_sites is None:
        pti_sites = build_demo_business(f"http://127.0.0.1:{DEFAULT_PORT}", sites=sites_from_env()).pti_sites
    app = Flask(__name__)
    sim = PtiSimulator(pti_sites, token_ttl_s=token_ttl_s, seed=seed)
    app.extensions["pti_sim"] = sim
    def route(rule: str, operation: str, action, methods: list[str]) -> None:
        def view(**targets):
            return sim.run(request.headers.get(SITE_HEADER, ""), operation, action, **targets)

        app.add_url_rule(API_PREFIX + rule, f"{operation}_{rule}", view, methods=methods)

    route("/login", "login", op_login, ["POST"])
    route("/units", "list_units", op_list_units, ["GET"])
    route("/units/<path:unit_name>/rent", "rent_unit", op_rent_unit, ["POST"])
    route("/units/<path:unit_name>/vacate", "vacate_unit", op_vacate_unit, ["POST"])
    route("/units/<path:unit_name>/lock", "lock_unit", op_lock_unit, ["POST"])
    route("/units/<path:unit_name>/unlock", "unlock_unit", op_unlock_unit, ["POST"])
    route("/units/<path:unit_name>", "get_unit", op_get_unit, ["GET"])
    route("/access-levels", "list_access_levels", op_list_access_levels, ["GET"])
    route("/time-zones", "list_time_zones", op_list_time_zones, ["GET"])
    route("/users", "list_users", op_list_users, ["GET"])
    route("/users", "create_user", op_create_user, ["POST"])
    route("/users/find", "find_user", op_find_user, ["POST"])
    route("/users/<user_id>", "get_user", op_get_user, ["GET"])
    route("/users/<user_id>", "update_user", op_update_user, ["PATCH"])
    route("/users/<user_id>", "remove_user", op_remove_user, ["DELETE"])

    @app.get("/_sim/state")
    def sim_state():
        return jsonify(sim.state_json())

    @app.get("/_sim/units/<site>/<path:name>")
    def sim_unit(site: str, name: str):
        state = sim.sites.get(site)
        if state is None or name not in state.units:
            return jsonify({"error": "no such site or unit"}), 404
        wanted, wait_s = request.args.get("locked"), request.args.get("wait_s", "0")
        if wanted not in (None, "true", "false"):
            return jsonify({"error": "locked must be true or false"}), 400
        try:
            wait_s = min(float(wait_s), MAX_UNIT_WAIT_S)
        except ValueError:
            return jsonify({"error": "wait_s must be a number of seconds"}), 400
        unit = state.units[name]
        with state.changed:
            if wanted is not None and wait_s > 0:
                state.changed.wait_for(lambda: unit["locked"] is (wanted == "true"), timeout=wait_s)
            return jsonify(dict(unit))

    @app.get("/_sim/calls")
    def sim_calls():
        return jsonify({"calls": sim.calls_json()})

    @app.get("/_sim/faults")
    def sim_faults():
        return jsonify(sim.faults_json())

    @app.post("/_sim/faults")
    def sim_set_faults():
        try:
            return jsonify(sim.set_faults(request.get_json(force=True) or {}))
        except (ValueError, TypeError) as exc:
            return jsonify({"error": str(exc)}), 400

    @app.post("/_sim/lists")
    def sim_set_lists():
        try:
            return jsonify(sim.set_lists(request.get_json(silent=True) or {}))
        except LookupError as exc:
            return jsonify({"error": str(exc)}), 404
        except ValueError as exc:
            return jsonify({"error": str(exc)}), 400

    @app.post("/_sim/expire-tokens")
    def sim_expire_tokens():
        sim.expire_tokens((request.get_json(silent=True) or {}).get("site"))
        return jsonify({"expired": True})

    @app.post("/_sim/reset")
    def sim_reset():
        sim.reset()
        return jsonify({"reset": True})

    return app


def main(argv: list[str] | None = None) -> None:
    from werkzeug.serving import make_server

    parser = argparse.ArgumentParser(description="PTI Storlogix simulator")
    parser.add_argument("--host", default=os.environ.get("PTI_SIM_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PTI_SIM_PORT", DEFAULT_PORT)))
    args = parser.parse_args(argv)
    pti_sites = build_demo_business(f"http://{args.host}:{args.port}", sites=sites_from_env()).pti_sites
    server = make_server(args.host, args.port, create_app(pti_sites), threaded=True)
    print(f"PTI simulator on http://{args.host}:{args.port} (sites: {', '.join(pti_sites)})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

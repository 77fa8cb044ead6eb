"""A tiny PTI written from docs/pti-contract.md as respx routes: the contract suite's second backend.

It shares no code with sim/pti.py, so a suite that passes on both proves the client, the simulator and the
document tell the same story. Faults are injected as httpx sees them (ReadTimeout, 5xx, 429), synchronously.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter

import httpx
import respx

WRITES = {"create_user", "update_user", "remove_user", "rent_unit", "vacate_unit", "lock_unit", "unlock_unit"}
FIELDS = ("first_name", "last_name", "email", "access_code", "access_level", "time_zone")


def _ok(data):
    return httpx.Response(200, json={"result": 0, "data": data})


def _fail(result: int, item: str | None = None, status: int = 200):
    body = {"result": result, "message": "fake PTI says no"}
    if item:
        body["item"] = item
    return httpx.Response(status, json=body)


class FakePti:
    """Stateful respx routes for every operation of the contract, with the same fault knobs as the simulator."""

    def __init__(self, base_url: str, sites: dict) -> None:
        self.base_url = base_url
        self.seed = sites
        self.router = respx.Router(base_url=f"{base_url}/api/v1", assert_all_called=False)
        self.counts: Counter = Counter()
        self.faults: dict = {}
        self.sites: dict = {}
        self.reset()
        r = self.router
        r.post("/login").mock(side_effect=self._wrap("login", self.login))
        r.get("/units").mock(side_effect=self._wrap("list_units", self.list_units))
        for action in ("rent", "vacate", "lock", "unlock"):
            r.post(path__regex=rf"/units/(?P<name>[^/]+)/{action}$").mock(
                side_effect=self._wrap(f"{action}_unit", getattr(self, f"{action}_unit")))
        r.get(path__regex=r"/units/(?P<name>[^/]+)$").mock(side_effect=self._wrap("get_unit", self.get_unit))
        r.get("/access-levels").mock(side_effect=self._wrap("list_access_levels", lambda s, q: _ok(s["levels"])))
        r.get("/time-zones").mock(side_effect=self._wrap("list_time_zones", lambda s, q: _ok(s["zones"])))
        r.post("/users/find").mock(side_effect=self._wrap("find_user", self.find_user))
        r.get("/users").mock(side_effect=self._wrap("list_users", self.list_users))
        r.post("/users").mock(side_effect=self._wrap("create_user", self.create_user))
        r.get(path__regex=r"/users/(?P<uid>[^/]+)$").mock(side_effect=self._wrap("get_user", self.get_user))
        r.patch(path__regex=r"/users/(?P<uid>[^/]+)$").mock(side_effect=self._wrap("update_user", self.update_user))
        r.delete(path__regex=r"/users/(?P<uid>[^/]+)$").mock(side_effect=self._wrap("remove_user", self.remove_user))

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.router.handler)

    def reset(self) -> None:
        self.sites = {
            code: {"cred": (s["site_key"], s["username"], s["password"]), "tokens": set(), "next": 1,
                   "units": {n: {"name": n, "status": "vacant", "locked": False, "user_id": None} for n in s["units"]},
                   "users": {}, "levels": list(s["access_levels"]), "zones": list(s["time_zones"])}
            for code, s in self.seed.items()}
        self.faults = {}
        self.counts.clear()

    def expire_tokens(self) -> None:
        for site in self.sites.values():
            site["tokens"].clear()

    # --- the request pipeline: faults, auth, operation ---------------------------------------------------

    def _wrap(self, operation: str, handler):
        def side_effect(request: httpx.Request, **params):
            site = self.sites.get(request.headers.get("X-PTI-Site"))
            body = json.loads(request.content) if request.content else {}
            if operation == "find_user":
                name = "find_user_by_access_code" if "access_code" in body else "find_users_by_email"
            else:
                name = operation
            self.counts[name] += 1
            self.counts["total"] += 1
            f = self.faults
            if f.get("retry_after_s"):
                return httpx.Response(429, headers={"Retry-After": str(f["retry_after_s"])})
            if f.get("error_rate"):
                return httpx.Response(f.get("error_status", 503), text="fake outage")
            if f.get("timeout_rate"):
                raise httpx.ReadTimeout("fake time-out", request=request)
            if operation == "login":
                response = handler(site, body) if site else _fail(-1, status=401)
            elif site is None or request.headers.get("Authorization", "")[7:] not in site["tokens"]:
                response = _fail(-2, status=401)
            else:
                response = handler(site, {**body, **params, **dict(request.url.params)})
            if f.get("apply_then_timeout_rate"):
                raise httpx.ReadTimeout("fake time-out after applying", request=request)
            return response

        return side_effect

    # --- operations --------------------------------------------------------------------------------------

    def login(self, site, body):
        if (body.get("site_key"), body.get("username"), body.get("password")) != site["cred"]:
            return _fail(-1, status=401)
        token = secrets.token_hex(8)
        site["tokens"].add(token)
        return _ok({"token": token, "expires_in": 600})

    @staticmethod
    def _user(site, user):
        units = sorted(n for n, u in site["units"].items() if u["user_id"] == user["id"])
        return {**user, "units": units}

    @staticmethod
    def _unit(site, name):
        if len(name) > 10 or " " in name:
            return None, _fail(-3)
        if name not in site["units"]:
            return None, _fail(-404, "unit")
        return site["units"][name], None

    def list_units(self, site, q):
        return _ok(list(site["units"].values()))

    def get_unit(self, site, q):
        unit, error = self._unit(site, q["name"])
        return error or _ok(unit)

    def list_users(self, site, q):
        offset, limit = int(q["offset"]), int(q["limit"])
        if limit > 100:
            return _fail(-4)
        users = [self._user(site, u) for u in site["users"].values()]
        return _ok({"users": users[offset:offset + limit], "total": len(users)})

    def find_user(self, site, q):
        if "access_code" in q:
            found = [u for u in site["users"].values() if u["access_code"] == q["access_code"]]
            return _ok(self._user(site, found[0])) if found else _fail(-24)
        return _ok([self._user(site, u) for u in site["users"].values() if u["email"].lower() == q["email"].lower()])

    def get_user(self, site, q):
        user = site["users"].get(q["uid"])
        return _ok(self._user(site, user)) if user else _fail(-404, "user")

    @staticmethod
    def _listed(value, entries) -> bool:
        return type(value) is int and any(isinstance(e, dict) and type(e.get("id")) is int and e["id"] == value
                                          for e in entries)

    def _invalid(self, site, values, uid):
        code = values.get("access_code")
        if "access_code" in values and not (isinstance(code, int) and 1 <= code <= 4294967295):
            return _fail(-4)
        if "access_level" in values and not self._listed(values["access_level"], site["levels"]):
            return _fail(-4)
        if "time_zone" in values and not self._listed(values["time_zone"], site["zones"]):
            return _fail(-4)
        if any(u["access_code"] == code and u["id"] != uid for u in site["users"].values()):
            return _fail(-5)
        return None

    def create_user(self, site, q):
        error = self._invalid(site, q, None)
        if error:
            return error
        uid = f"u{site['next']}"
        site["next"] += 1
        site["users"][uid] = {"id": uid, **{k: q[k] for k in FIELDS}, "marker": q.get("marker")}
        return _ok(self._user(site, site["users"][uid]))

    def update_user(self, site, q):
        user = site["users"].get(q["uid"])
        if user is None:
            return _fail(-404, "user")
        changes = {k: v for k, v in q.items() if k in (*FIELDS, "marker")}
        error = self._invalid(site, changes, user["id"])
        if error:
            return error
        user.update(changes)
        return _ok(self._user(site, user))

    def remove_user(self, site, q):
        if site["users"].pop(q["uid"], None) is None:
            return _fail(-404, "user")
        for unit in site["units"].values():
            if unit["user_id"] == q["uid"]:
                unit.update(status="vacant", user_id=None, locked=False)
        return _ok(None)

    def rent_unit(self, site, q):
        unit, error = self._unit(site, q["name"])
        if error:
            return error
        if q["user_id"] not in site["users"]:
            return _fail(-404, "user")
        if unit["user_id"] not in (None, q["user_id"]):
            return _fail(-6)
        unit.update(status="rented", user_id=q["user_id"])
        return _ok(unit)

    def vacate_unit(self, site, q):
        unit, error = self._unit(site, q["name"])
        if error or unit["status"] == "vacant":
            return error or _fail(-22)
        unit.update(status="vacant", user_id=None, locked=False)
        return _ok(unit)

    def lock_unit(self, site, q):
        unit, error = self._unit(site, q["name"])
        if error:
            return error
        unit["locked"] = True
        return _ok(unit)

    def unlock_unit(self, site, q):
        unit, error = self._unit(site, q["name"])
        if error or (unit["status"] == "vacant" and not unit["locked"]):
            return error or _fail(-22)
        unit["locked"] = False
        return _ok(unit)

    # --- the simulator's view, for the shared suite ------------------------------------------------------

    def state(self) -> dict:
        return {code: {"users": [self._user(s, u) for u in s["users"].values()], "units": list(s["units"].values()),
                       "access_levels": list(s["levels"]), "time_zones": list(s["zones"])}
                for code, s in self.sites.items()}

    def set_lists(self, site: str, access_levels=None, time_zones=None) -> None:
        """Replace a site's lists as given (malformed entries too), like the simulator's POST /_sim/lists."""
        if access_levels is not None:
            self.sites[site]["levels"] = access_levels
        if time_zones is not None:
            self.sites[site]["zones"] = time_zones

"""A Storeganise Admin API on respx routes, serving the real-shape fixtures in tests/storeganise/fixtures/.

Filters behave as the simulator's do (docs/storeganise.md), and any of them can be ignored (`ignore`) to play a
Storeganise that does not support a filter we assume it does.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import respx

FIXTURES = Path(__file__).parent / "fixtures"
RECORDS = {"site": ("site.json", "site_other.json"), "unit": ("unit.json", "unit_off.json"),
           "user": ("user.json", "user_other.json"), "unitRental": ("rental.json", "rental_hand_edited.json")}
PATHS = {"sites": "site", "units": "unit", "users": "user", "unit-rentals": "unitRental"}
COLLECTIONS = {"site": "sites", "unit": "units", "user": "users", "unitRental": "unitRentals"}
EMBEDS = (("unit", "unitId", "unit"), ("owner", "ownerId", "user"))


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class FakeStoreganise:
    def __init__(self, api_url: str, api_key: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.api_key = api_key
        self.tables = {entity: {r["id"]: r for r in map(fixture, files)} for entity, files in RECORDS.items()}
        job, addon = fixture("job.json"), fixture("addon.json")
        self.jobs = {job["id"]: job}
        self.addon = addon
        self.ignore: set[str] = set()
        self.calls: list[str] = []
        self._now = datetime(2023, 9, 13, 10, tzinfo=UTC)
        r = self.router = respx.Router(base_url=self.api_url, assert_all_called=False)
        r.get(path__regex=r"/(?P<path>sites|units|users|unit-rentals)$").mock(side_effect=self._list)
        r.get(path__regex=r"/(?P<path>[a-z-]+)/(?P<rid>[^/]+)$").mock(side_effect=self._get)
        r.put(path__regex=r"/(?P<path>users|unit-rentals)/(?P<rid>[^/]+)$").mock(side_effect=self._put)
        r.post("/jobs").mock(side_effect=self._create_job)
        self.transport = httpx.MockTransport(self.router.handler)

    def tick(self) -> str:
        """Storeganise's clock: a later moment on every change."""
        self._now += timedelta(seconds=1)
        return self._now.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def edit(self, entity: str, record_id: str, fields: dict) -> None:
        record = self.tables[entity][record_id]
        record["customFields"].update(fields)
        record["updated"] = self.tick()

    # --- routes -------------------------------------------------------------------------------------------

    def _authorised(self, request: httpx.Request) -> bool:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        key = credentials if scheme == "ApiKey" else credentials.partition("|")[2]
        return key == self.api_key

    def _render(self, entity: str, record: dict, include: set[str]) -> dict:
        out = copy.deepcopy(record)
        if "customFields" not in include:
            out.pop("customFields", None)
        if entity == "unitRental":
            for name, key, related in EMBEDS:
                if name in include:
                    target = self.tables[related].get(record[key])
                    out[name] = self._render(related, target, include & {"customFields"}) if target else None
        return out

    def _list(self, request: httpx.Request, path: str) -> httpx.Response:
        if not self._authorised(request):
            return httpx.Response(401, json={"message": "Invalid API key"})
        self.calls.append(f"GET {path}")
        entity, args = PATHS[path], request.url.params

        def arg(name: str) -> str | None:
            return None if f"{COLLECTIONS[entity]}.{name}" in self.ignore else args.get(name)
        site_id, owner_id, state, ids, after = (arg("siteId"), arg("ownerId"), arg("state"), arg("ids"),
                                                arg("updatedAfter"))
        records = [r for r in self.tables[entity].values()
                   if (not site_id or r.get("siteId") == site_id) and (not owner_id or r.get("ownerId") == owner_id)
                   and (not state or r.get("state") in state.split(",")) and (not ids or r["id"] in ids.split(","))
                   and (not after or _time(r["updated"]) > _time(after))]
        offset, limit = int(args.get("offset", 0)), int(args.get("limit", 50))
        include = set(filter(None, args.get("include", "").split(",")))
        return httpx.Response(200, json=[self._render(entity, r, include) for r in records[offset:offset + limit]])

    def _get(self, request: httpx.Request, path: str, rid: str) -> httpx.Response:
        if not self._authorised(request):
            return httpx.Response(401, json={"message": "Invalid API key"})
        self.calls.append(f"GET {path}/{{id}}")
        include = set(filter(None, request.url.params.get("include", "").split(",")))
        if path == "jobs" and rid in self.jobs:
            return httpx.Response(200, json=self.jobs[rid])
        if path == "addons" and rid == self.addon["id"]:
            return httpx.Response(200, json=self.addon)
        entity = PATHS.get(path)
        if entity and rid in self.tables[entity]:
            return httpx.Response(200, json=self._render(entity, self.tables[entity][rid], include))
        return httpx.Response(404, json={"message": "Not found"})

    def _put(self, request: httpx.Request, path: str, rid: str) -> httpx.Response:
        entity = PATHS[path]
        if rid not in self.tables[entity]:
            return httpx.Response(404, json={"message": "Not found"})
        fields = json.loads(request.content)["customFields"]
        record = self.tables[entity][rid]
        for key, value in fields.items():
            if value is None:
                record["customFields"].pop(key, None)
            else:
                record["customFields"][key] = value
        record["updated"] = self.tick()
        return httpx.Response(200, json=self._render(entity, record, {"customFields"}))

    def _create_job(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        now = self.tick()
        job = {"id": f"{len(self.jobs):024x}", **body, "state": "created", "result": {}, "created": now,
               "updated": now}
        self.jobs[job["id"]] = job
        return httpx.Response(201, json=job)

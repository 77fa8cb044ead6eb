"""The traffic of `bench/load.py`, run by locust in a process of its own (`locust -f bench/traffic/locustfile.py`).

Locust patches the standard library with gevent when it starts, so this file is never imported by the benchmark
itself: it lives in a folder of its own, which `python -m bench` does not list, and which locust puts first on the
import path without a benchmark module beside it (bench/dashboard.py would stand in for the product's `dashboard`).
Everything it needs comes in the plan file (`LOAD_PLAN`, written by bench/load.py), and everything it measured goes
out to `LOAD_OUT` as JSON when locust quits: the time of every request by kind (page, partial, login, webhook, sim),
its failures, and which webhooks were delivered.

- `Operator`: a member of staff. Logs in through the real form (its CSRF token), then browses what an operator
  looks at (overview, sites, a site, customers, a customer, rentals, a rental, activity) with think time between
  pages, and sends the htmx requests those pages make: the search and filter partials, and the 1 s polls of a
  customer's access or a rental's sync region while a push is pending (until the page says it settled).
- `Storeganise`: one pacer that sends the plan's webhooks at a fixed rate (an open model: a slow answer never
  delays the next webhook), from the moment every operator has logged in; when the last is answered, locust
  quits. A move-in, move-out, overdue or payment is first made in the Storeganise simulator with `send: false`,
  which answers with the webhook Storeganise would send; this process signs it and delivers it, and the time of
  that delivery is the webhook's acknowledgement. The other types (a rental's notes changed, a customer's profile
  saved, an invoice) are signed here with fresh ids.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import time
import urllib.parse
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import gevent
import gevent.event
import gevent.pool
from locust import FastHttpUser, between, events, task
from locust.contrib.fasthttp import FastHttpSession

from dashboard.storeganise.webhooks import SIGNATURE_HEADER, compact_json, sign

PLAN = json.loads(Path(os.environ["LOAD_PLAN"]).read_text())
OUT = Path(os.environ["LOAD_OUT"])
CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
POLLING = 'hx-trigger="every 1s"'  # a page that polls while a push is pending
LOGIN_FIELD = 'name="password"'  # on the login page only: a page that shows it means the session was lost
HTMX_STOP = 286  # htmx: stop polling
POLL_EVERY_S = 1.0
MAX_POLLS = 8  # a pending push settles within seconds; the browser polls until it does, the bench a bounded time
SIM_EVENT_KINDS = {"overdue": "/_sim/overdue", "move_in": "/_sim/move-in", "move_out": "/_sim/move-out"}
MAX_IN_FLIGHT = 500  # webhooks on their way at once; beyond it the pacer waits (and falls behind, which is counted)
FAILURES_KEPT = 50
LOGINS_WAIT_S = 600.0  # the webhooks start once every operator has logged in (or tried to), or after this

accounts = itertools.cycle(PLAN["accounts"])
logins = {"done": 0}
everyone_in = gevent.event.Event()  # every operator has logged in (or tried to): the measured window starts
times: dict[str, list[float]] = defaultdict(list)
counts: dict[str, int] = defaultdict(int)
failures: dict[str, int] = defaultdict(int)
failure_samples: list[str] = []
delivered: list[dict] = []  # one per webhook sent: the plan item, the rental it touched, whether it was accepted
pacer = {"behind_max_s": 0.0, "sent": 0, "planned": len(PLAN["webhooks"]["items"])}


def kind_of(name: str) -> str:
    return name.split(" ", 1)[0]  # every request is named "<kind> <what>"


@events.request.add_listener
def record(request_type, name, response_time, response_length, exception=None, **kwargs):
    kind = kind_of(name)
    counts[kind] += 1
    times[kind].append(response_time)
    if exception is not None:
        failures[kind] += 1
        if len(failure_samples) < FAILURES_KEPT:
            failure_samples.append(f"{request_type} {name}: {str(exception)[:300]}")


@events.user_error.add_listener
def user_error(user_instance, exception, tb, **kwargs):
    """An exception inside a user (a bug here, or an answer it could not read) is an error too."""
    failures["harness"] += 1
    if len(failure_samples) < FAILURES_KEPT:
        failure_samples.append(f"{type(user_instance).__name__} raised {type(exception).__name__}: {exception}")


@events.quitting.add_listener
def write_results(environment, **kwargs):
    OUT.write_text(json.dumps({"times": times, "counts": counts, "failures": failures,
                               "failure_samples": failure_samples, "delivered": delivered, "pacer": pacer}))


class Operator(FastHttpUser):
    """One member of staff at the dashboard."""

    weight = 1
    wait_time = between(PLAN["think_min_s"], PLAN["think_max_s"])

    def on_start(self) -> None:
        self.rng = random.Random()
        self.email, self.password = next(accounts)
        try:
            self.log_in()
        finally:
            logins["done"] += 1
            if logins["done"] >= len(PLAN["accounts"]):
                everyone_in.set()
        for visit in (self.overview, self.sites, self.site, lambda: self.customers(search=False),
                      lambda: self.customers(search=True), self.customer, lambda: self.rentals(filtered=False),
                      lambda: self.rentals(filtered=True), self.rental, self.activity):
            visit()  # a first look at every page, then the pages at random
            gevent.sleep(self.wait_time())

    def log_in(self) -> None:
        with self.client.get("/login", name="login form", catch_response=True) as answer:
            match = CSRF.search(answer.text or "")
            if answer.status_code != 200 or not match:
                answer.failure(f"no login form ({answer.status_code})")
                return
        form = urllib.parse.urlencode({"email": self.email, "password": self.password, "csrf_token": match.group(1)})
        with self.client.post("/login", data=form, name="login submit", catch_response=True,
                              headers={"Content-Type": "application/x-www-form-urlencoded"}) as answer:
            if answer.status_code != 200 or LOGIN_FIELD in (answer.text or ""):
                answer.failure(f"log-in refused ({answer.status_code})")

    def page(self, path: str, name: str, htmx_target: str | None = None) -> tuple[int, str]:
        """GET a page (or, with `htmx_target`, the partial htmx asks for); a failure unless it answered 200 (or 286,
        htmx's "stop polling", to a partial) with the page itself, not the login form. Returns (status, body)."""
        headers = {}
        if htmx_target is not None:
            headers = {"HX-Request": "true", "HX-Target": htmx_target, "HX-Current-URL": self.host + path}
        kind = "partial" if htmx_target is not None else "page"
        with self.client.get(path, name=f"{kind} {name}", headers=headers, catch_response=True) as answer:
            text = answer.text or ""
            if answer.status_code not in ((200, HTMX_STOP) if htmx_target else (200,)):
                answer.failure(f"status {answer.status_code}")
            elif LOGIN_FIELD in text:
                answer.failure("the session was lost: the login form came back")
            else:
                answer.success()
            return answer.status_code, text

    def pick(self, key: str) -> int:
        """A record id; half the time one of those the webhooks are changing (what staff look at), when known."""
        hot = PLAN["ids"].get(f"hot_{key}") or []
        return self.rng.choice(hot if hot and self.rng.random() < 0.5 else PLAN["ids"][key])

    def show_and_poll(self, path: str, name: str, region: str, target: str) -> None:
        """A page, then what htmx does when its region polls every second while a push is pending: GET the region
        until it answers 286 (settled) or no longer polls."""
        status, body = self.page(path, name)
        for _ in range(MAX_POLLS):
            if status not in (200,) or POLLING not in body:
                return
            gevent.sleep(POLL_EVERY_S)
            status, body = self.page(f"{path}/{region}", f"{name}/{region}", htmx_target=target)

    @task(3)
    def overview(self) -> None:
        self.page("/", "/")

    @task(1)
    def sites(self) -> None:
        self.page("/sites/", "/sites/")

    @task(2)
    def site(self) -> None:
        self.page(f"/sites/{self.pick('sites')}", "/sites/[id]")

    @task(4)
    def customers(self, search: bool | None = None) -> None:
        """The customer list: a page of it or, half the time, a search typed into it (the results htmx asks for)."""
        if search if search is not None else self.rng.random() < 0.5:
            q = urllib.parse.quote(self.rng.choice(PLAN["ids"]["search_terms"]))
            self.page(f"/customers/?q={q}", "/customers/?q", htmx_target="customer-results")
        else:
            self.page(f"/customers/?page={self.rng.randint(1, PLAN['ids']['customer_pages'])}", "/customers/?page")

    @task(3)
    def customer(self) -> None:
        self.show_and_poll(f"/customers/{self.pick('customers')}", "/customers/[id]", "access", "customer-access")

    @task(4)
    def rentals(self, filtered: bool | None = None) -> None:
        """The rental list or, half the time, one site's rentals in one state (the results htmx asks for)."""
        if filtered if filtered is not None else self.rng.random() < 0.5:
            state = self.rng.choice(["overlocked", "pending", "in_sync", ""])
            self.page(f"/rentals/?site={self.pick('sites')}&state={state}", "/rentals/?site&state",
                      htmx_target="rental-results")
        else:
            self.page("/rentals/", "/rentals/")

    @task(3)
    def rental(self) -> None:
        self.show_and_poll(f"/rentals/{self.pick('rentals')}", "/rentals/[id]", "sync", "rental-sync")

    @task(1)
    def activity(self) -> None:
        self.page("/activity/", "/activity/")


class Storeganise(FastHttpUser):
    """Storeganise sending the plan's webhooks at a fixed rate, for the whole run."""

    fixed_count = 1
    concurrency = MAX_IN_FLIGHT  # connections at once: a webhook never waits for another one's connection
    wait_time = between(3600, 3600)  # one pass of `send_all`, then nothing

    def on_start(self) -> None:
        self.sim = FastHttpSession(base_url=PLAN["sg_url"], request_event=self.environment.events.request, user=self,
                                   concurrency=MAX_IN_FLIGHT)

    @task
    def send_all(self) -> None:
        """The whole run: from the moment every operator is in, the webhooks at their rate; then locust quits."""
        hooks = PLAN["webhooks"]
        rate, items = hooks["rate"], hooks["items"]
        pool = gevent.pool.Pool(MAX_IN_FLIGHT)
        everyone_in.wait(LOGINS_WAIT_S)
        start = time.monotonic()
        for index, item in enumerate(items):
            due = start + index / rate
            late = time.monotonic() - due
            if late < 0:
                gevent.sleep(-late)
            else:
                pacer["behind_max_s"] = max(pacer["behind_max_s"], late)
            pool.wait_available()
            pool.spawn(self.deliver, item)
            pacer["sent"] += 1
        pool.join()
        gevent.spawn(self.environment.runner.quit)

    def event_from_simulator(self, item: dict) -> dict | None:
        """Make the change in Storeganise (the simulator) and take the webhook it would send."""
        path = SIM_EVENT_KINDS[item["kind"]]
        with self.sim.post(path, json={**item["body"], "send": False}, name=f"sim {path}",
                           catch_response=True) as answer:
            if answer.status_code != 200:
                answer.failure(f"status {answer.status_code}: {(answer.text or '')[:200]}")
                return None
            return answer.json()["webhook"]

    def deliver(self, item: dict) -> None:
        if item["kind"] in SIM_EVENT_KINDS:
            event = self.event_from_simulator(item)
            if event is None:
                delivered.append({**item, "ok": False, "rental": None})
                return
        else:
            now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            event = {"id": uuid.uuid4().hex[:24], "type": item["type"], "created": now, "data": item["data"]}
        body = compact_json(event)
        expected = "ignored" if item.get("ignored") else "queued"
        with self.client.post(PLAN["webhooks"]["path"], data=body, name=f"webhook {event['type']}",
                              catch_response=True,
                              headers={"Content-Type": "application/json",
                                       SIGNATURE_HEADER: sign(PLAN["webhooks"]["secret"], body)}) as answer:
            ok = answer.status_code == 200 and (answer.text or "").find(f'"{expected}"') >= 0
            if not ok:
                answer.failure(f"status {answer.status_code}: {(answer.text or '')[:200]}")
        delivered.append({"kind": item["kind"], "type": event["type"], "ok": ok,
                          "rental": event["data"].get("unitRentalId") if item["kind"] in SIM_EVENT_KINDS else None})

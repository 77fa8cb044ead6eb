"""Load: 50 operators at the dashboard plus 100 signed webhooks a second for 2 minutes, against the whole stack.

The stack is the production one (bench/stack.py): gunicorn (4 sync workers, access log on, as in the Procfile), RQ
workers, the cron (relay every 15 s), Redis, PostgreSQL when it answers (else SQLite), the PTI simulator (20 ms a
call) and the Storeganise simulator with webhook delivery on, so the echoes of our write-backs come back as they do
in production. Set-up, not measured: the business (LOAD_SITES × LOAD_RENTALS) is pushed to PTI until every customer
is in sync, and one staff account per operator is created.

The traffic is locust's (bench/traffic/locustfile.py, in a process of its own):
- operators log in through the real form, look at every page once, then browse overview, sites, a site,
  customers (pages and the search partial), a customer, rentals (the filter partial), a rental and activity at
  random, with 1–4 s of think time, and poll a customer's access or a rental's sync region every second while a
  push is pending, as htmx does;
- once every operator is in, Storeganise sends webhooks at a fixed rate for LOAD_DURATION_S, the mix of
  bench/webhook_ack.py: overdue and payment (unitRental.markOverdue / unmarkOverdue, 25 %), move-in (10 %),
  move-out (8 %), a rental's notes changed (unitRental.updated, 40 %), a customer saved (user.updated, 7 %), an
  invoice (ignored, 10 %). Overdue, payment, move-in and move-out are made in the Storeganise simulator first, so
  their webhooks mean what they say.

After the load, until everything has converged (or LOAD_CONVERGE_TIMEOUT_S): every rental an overdue, payment,
move-in or move-out webhook touched must be, at the PTI simulator, what Storeganise now holds (an active rental's
unit held by a PTI user with the customer's e-mail, locked exactly when the rental is overdue; an ended rental's
unit vacant).

Targets: zero errors (failed requests of any kind, and deliveries the product failed to process), page p95
≤ 300 ms (every dashboard page and htmx partial; the log-in is reported apart), webhook acknowledgement p99 ≤ 50 ms,
and every effect reached. ratio = max(page_p95 / 300, webhook_p99 / 50). `webhooks_sent` says how many of the planned
webhooks left: the pacer holds at most 500 unanswered, so a server that falls behind gets fewer.

Environment (defaults in brackets): LOAD_USERS [50], LOAD_WEBHOOKS_PER_S [100], LOAD_DURATION_S [120],
LOAD_SITES [2], LOAD_RENTALS per site [600], LOAD_WORKERS RQ workers [4], LOAD_WEB_WORKERS [4], LOAD_THINK_MIN_S [1],
LOAD_THINK_MAX_S [4], LOAD_SPAWN_RATE operators a second [10], LOAD_LATENCY_MS PTI's [20],
LOAD_CONVERGE_TIMEOUT_S [900], LOAD_SETUP_TIMEOUT_S for the initial push [1200], LOAD_SEED [10];
BENCH_DATABASE=sqlite, BENCH_KEEP_LOGS=1 as for every benchmark.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import subprocess
import time
from dataclasses import dataclass

from sqlalchemy import func, select

from bench.stack import (
    BIN,
    ROOT,
    WEBHOOK_PATH,
    WEBHOOK_SECRET,
    Stack,
    StackConfig,
    env_float,
    env_int,
    percentile,
    report,
    say,
)
from dashboard.extensions import db
from dashboard.mirror import deliveries
from dashboard.models import (
    ACTIVE_RENTAL_STATES,
    Customer,
    Rental,
    Role,
    Site,
    StaffUser,
    SyncState,
    Unit,
    WebhookDelivery,
)

TARGET_PAGE_P95_MS = 300.0
TARGET_WEBHOOK_P99_MS = 50.0
WRITEBACK_DRAIN_TIMEOUT_S = 300.0
LOCUST_STOP_TIMEOUT_S = 15  # when the pacer is done, operators finish the page (and its polls) they are on
LOCUST_GRACE_S = 900.0  # beyond the run (log-ins, then the webhooks) before the locust process is killed
CHECK_EVERY_S = 5.0
SPARE_UNITS = 10
PASSWORD = "load-bench-password"
ROLES = [Role.MANAGER, Role.STAFF, Role.SUPPORT, Role.ADMIN]
# (kind, weight): the mix of bench/webhook_ack.py, with overdue and payment as one kind that flips the flag
WEBHOOK_MIX = [("overdue", 25), ("move_in", 10), ("move_out", 8), ("rental_notes", 40), ("user_saved", 7),
               ("invoice", 10)]
EFFECT_KINDS = frozenset({"overdue", "move_in", "move_out"})
PAGE_KINDS = ("page", "partial")
SAMPLE_IDS = 500  # record ids handed to the operators, of each kind
CUSTOMER_PAGES = 10
SEARCH_TERMS = 30
LOCUST_SUMMARY_CHARS = 4000


@dataclass(frozen=True)
class Settings:
    users: int
    rate: float
    duration_s: int
    sites: int
    rentals: int
    workers: int
    web_workers: int
    think_min_s: float
    think_max_s: float
    spawn_rate: float
    latency_ms: float
    converge_timeout_s: float
    seed: int

    @property
    def webhooks(self) -> int:
        return int(self.rate * self.duration_s)

    def planned(self, kind: str) -> int:
        """Webhooks of `kind` the plan holds, at the most (for sizing the business)."""
        weight = dict(WEBHOOK_MIX)[kind] / sum(w for _, w in WEBHOOK_MIX)
        return math.ceil(self.webhooks * weight * 1.2) + 5


def settings() -> Settings:
    return Settings(users=env_int("LOAD_USERS", 50), rate=env_float("LOAD_WEBHOOKS_PER_S", 100),
                    duration_s=env_int("LOAD_DURATION_S", 120), sites=env_int("LOAD_SITES", 2),
                    rentals=env_int("LOAD_RENTALS", 600), workers=env_int("LOAD_WORKERS", 4),
                    web_workers=env_int("LOAD_WEB_WORKERS", 4), think_min_s=env_float("LOAD_THINK_MIN_S", 1),
                    think_max_s=env_float("LOAD_THINK_MAX_S", 4), spawn_rate=env_float("LOAD_SPAWN_RATE", 10),
                    latency_ms=env_float("LOAD_LATENCY_MS", 20),
                    converge_timeout_s=env_float("LOAD_CONVERGE_TIMEOUT_S", 900), seed=env_int("LOAD_SEED", 10))


def config(s: Settings) -> StackConfig:
    """The production stack; each site has room for its share of the move-ins."""
    units = s.rentals + math.ceil(s.planned("move_in") / s.sites) + max(SPARE_UNITS, s.rentals // 10)
    return StackConfig(sites=s.sites, units=units, rented=s.rentals, storeganise=True, cron=True, access_log=True,
                       web_workers=s.web_workers, workers=s.workers)


# --- set-up ------------------------------------------------------------------------------------------------------


def push_business(stack: Stack) -> None:
    """Every customer in sync at PTI, the write-backs drained; then Storeganise delivers webhooks again."""
    stack.http.post(f"{stack.sg_url}/_sim/config", json={"deliver": False}).raise_for_status()
    say("initial push (PTI latency 0, no webhook echoes) until every customer is in sync ...")
    stack.push_all("bench-initial")
    took = stack.wait_converged(env_float("LOAD_SETUP_TIMEOUT_S", 1200))
    say(f"initial push converged in {took:.1f} s; draining the write-backs ...")
    stack.wait_idle(WRITEBACK_DRAIN_TIMEOUT_S)
    stack.http.post(f"{stack.sg_url}/_sim/config", json={"deliver": True, "drop_pending": True}).raise_for_status()


def staff_accounts(count: int) -> list[tuple[str, str]]:
    """One staff account per operator, of every role in turn (one password hash: hashing is slow on purpose)."""
    template = StaffUser(email="template@bench.test")
    template.set_password(PASSWORD)
    accounts = []
    for i in range(count):
        email = f"operator{i + 1}@bench.test"
        db.session.add(StaffUser(email=email, name=f"Operator {i + 1}", role=ROLES[i % len(ROLES)],
                                 password_hash=template.password_hash))
        accounts.append((email, PASSWORD))
    db.session.commit()
    return accounts


def plan_webhooks(s: Settings, stack: Stack, rng: random.Random) -> tuple[list[dict], set[str]]:
    """The webhooks to send, in order, and the Storeganise ids of the rentals whose flag they flip."""
    rentals = db.session.execute(
        select(Rental.sg_id, Rental.overdue, Customer.sg_id).join(Unit, Rental.unit_id == Unit.id)
        .join(Customer, Rental.customer_id == Customer.id)
        .where(Rental.state.in_(ACTIVE_RENTAL_STATES), Rental.sync_state == SyncState.IN_SYNC,
               Unit.pti_unit_name.is_not(None)).order_by(Rental.id)
    ).all()
    rented_units = select(Rental.unit_id).where(Rental.state.in_(ACTIVE_RENTAL_STATES))
    pti_units = {(code, unit["name"]) for code, site in stack.http.get(f"{stack.pti_url}/_sim/state").json()["sites"]
                 .items() for unit in site["units"]}
    free_units = [sg_id for sg_id, code, name in db.session.execute(
        select(Unit.sg_id, Site.pti_site_code, Unit.pti_unit_name).join(Site, Unit.site_id == Site.id)
        .where(Unit.pti_unit_name.is_not(None), Unit.pti_switched_off.is_(False), Unit.id.not_in(rented_units))
        .order_by(Unit.id)) if (code, name) in pti_units]
    db.session.rollback()
    rng.shuffle(rentals)
    rng.shuffle(free_units)
    kinds = rng.choices([k for k, _ in WEBHOOK_MIX], weights=[w for _, w in WEBHOOK_MIX], k=s.webhooks)
    moving_out = kinds.count("move_out")
    if moving_out >= len(rentals) or kinds.count("move_in") > len(free_units):
        raise RuntimeError(f"the business is too small for {s.webhooks} webhooks: {len(rentals)} rentals in sync, "
                           f"{len(free_units)} free units")
    leaving, flipping = iter(rentals[:moving_out]), rentals[moving_out:]
    overdue = {sg_id: flag for sg_id, flag, _ in flipping}
    arriving = iter(free_units)
    items, flipped = [], set()
    for n, kind in enumerate(kinds):
        if kind == "overdue":
            sg_id = flipping[len(flipped) % len(flipping)][0] if len(flipped) < len(flipping) else \
                rng.choice(flipping)[0]
            flipped.add(sg_id)
            overdue[sg_id] = not overdue[sg_id]
            items.append({"kind": kind, "body": {"unitRentalId": sg_id, "overdue": overdue[sg_id]}})
        elif kind == "move_in":
            items.append({"kind": kind, "body": {"unitId": next(arriving), "email": f"tenant{n}@load.bench.test",
                                                 "firstName": "Load", "lastName": f"Tenant {n}"}})
        elif kind == "move_out":
            items.append({"kind": kind, "body": {"unitRentalId": next(leaving)[0]}})
        elif kind == "rental_notes":
            items.append({"kind": kind, "type": "unitRental.updated",
                          "data": {"unitRentalId": rng.choice(rentals)[0], "changedKeys": ["notes"]}})
        elif kind == "user_saved":
            items.append({"kind": kind, "type": "user.updated",
                          "data": {"userId": rng.choice(rentals)[2], "changedKeys": ["phone"]}})
        else:
            items.append({"kind": kind, "type": "invoice.updated", "ignored": True,
                          "data": {"invoiceId": f"{rng.getrandbits(96):024x}", "ownerId": rng.choice(rentals)[2]}})
    return items, flipped


def page_ids(rng: random.Random, hot_rentals: set[str]) -> dict:
    """Record ids the operators open: a sample of each kind, and the rentals (and customers) the webhooks change."""
    site_ids = list(db.session.scalars(select(Site.id).order_by(Site.id)))
    customer_ids = list(db.session.scalars(select(Customer.id).order_by(Customer.id)))
    rental_ids = list(db.session.scalars(select(Rental.id).order_by(Rental.id)))
    hot = db.session.execute(select(Rental.id, Rental.customer_id, Rental.sg_id)).all()
    names = list(db.session.scalars(select(Customer.last_name).distinct().order_by(Customer.last_name)))
    customers = db.session.scalar(select(func.count()).select_from(Customer))
    db.session.rollback()
    hot = [(rid, cid) for rid, cid, sg_id in hot if sg_id in hot_rentals]
    rng.shuffle(hot)
    return {"sites": site_ids,
            "customers": rng.sample(customer_ids, min(SAMPLE_IDS, len(customer_ids))),
            "rentals": rng.sample(rental_ids, min(SAMPLE_IDS, len(rental_ids))),
            "hot_rentals": [rid for rid, _ in hot[:SAMPLE_IDS]], "hot_customers": [cid for _, cid in hot[:SAMPLE_IDS]],
            "customer_pages": max(1, min(CUSTOMER_PAGES, math.ceil(customers / 50))),
            "search_terms": rng.sample(names, min(SEARCH_TERMS, len(names))) or ["a"]}


# --- the load ----------------------------------------------------------------------------------------------------


def run_locust(s: Settings, stack: Stack, plan: dict) -> tuple[dict, float]:
    """Run the traffic in a locust process; its measurements, and the CPU seconds locust itself used."""
    plan_path, out_path = stack.tmp / "load-plan.json", stack.tmp / "load-out.json"
    plan_path.write_text(json.dumps(plan))
    argv = [str(BIN / "locust"), "-f", str(ROOT / "bench" / "traffic" / "locustfile.py"), "--headless",
            "--host", stack.web_url,
            "--users", str(s.users + 1), "--spawn-rate", str(s.spawn_rate),
            "--stop-timeout", str(LOCUST_STOP_TIMEOUT_S), "--only-summary", "--loglevel", "WARNING",
            "--csv", str(stack.tmp / "locust")]
    env = {**stack.env, "LOAD_PLAN": str(plan_path), "LOAD_OUT": str(out_path),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    log = stack.tmp / "locust.log"
    with open(log, "wb") as out:
        done = subprocess.run(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              timeout=s.duration_s + LOCUST_STOP_TIMEOUT_S + LOCUST_GRACE_S)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if not out_path.exists():
        raise RuntimeError(f"locust exited with {done.returncode} and measured nothing:\n"
                           f"{log.read_text(errors='replace')[-LOCUST_SUMMARY_CHARS:]}")
    return json.loads(out_path.read_text()), cpu


# --- after the load ----------------------------------------------------------------------------------------------


def effects(stack: Stack, rentals: set[str]) -> tuple[int, list[str]]:
    """How many of `rentals` PTI holds as Storeganise does now, and what is wrong with the others."""
    sg = stack.http.get(f"{stack.sg_url}/_sim/state").json()
    pti = stack.http.get(f"{stack.pti_url}/_sim/state").json()["sites"]
    sites = {site["id"]: site["customFields"]["pti_site_code"] for site in sg["sites"]}
    units = {unit["id"]: unit for unit in sg["units"]}
    emails = {user["id"]: user["email"].lower() for user in sg["users"]}
    by_id = {rental["id"]: rental for rental in sg["unitRentals"]}
    pti_units = {code: {unit["name"]: unit for unit in site["units"]} for code, site in pti.items()}
    pti_users = {code: {user["id"]: user for user in site["users"]} for code, site in pti.items()}
    reached, wrong = 0, []
    for sg_id in sorted(rentals):
        rental = by_id[sg_id]
        code, name = sites[rental["siteId"]], units[rental["unitId"]]["customFields"]["pti_id"]
        unit = pti_units[code][name]
        if rental["state"] in ACTIVE_RENTAL_STATES:
            holder = pti_users[code].get(unit["user_id"] or "", {})
            ok = (holder.get("email", "").lower() == emails[rental["ownerId"]]
                  and unit["locked"] is bool(rental["overdue"]))
            want = f"held by {emails[rental['ownerId']]}, {'locked' if rental['overdue'] else 'unlocked'}"
        else:
            ok, want = unit["user_id"] is None, "vacant"
        if ok:
            reached += 1
        else:
            wrong.append(f"{code}/{name} (rental {sg_id}): PTI has user {unit['user_id']}, "
                         f"{'locked' if unit['locked'] else 'unlocked'}; Storeganise wants it {want}")
    return reached, wrong


def converge(s: Settings, stack: Stack, rentals: set[str]) -> tuple[int, list[str], float]:
    """Wait until nothing is owed to PTI, no job is queued or running and every effect is there (or the time-out)."""
    started = time.monotonic()
    deadline = started + s.converge_timeout_s
    reached, wrong = 0, ["not checked"]
    last_say = started
    while True:
        owed, failed = stack.owed()
        queued = sum(stack.queue_depths().values())
        if owed == 0 and queued == 0:
            reached, wrong = effects(stack, rentals)
            if not wrong:
                break
        now = time.monotonic()
        if now > deadline:
            if owed or queued:
                reached, wrong = effects(stack, rentals)
            break
        if now - last_say > 30:
            say(f"  after {now - started:.0f} s: {owed} accounts owed ({failed} failed), {queued} jobs queued")
            last_say = now
        time.sleep(CHECK_EVERY_S if owed == 0 and queued == 0 else 1.0)
    return reached, wrong, time.monotonic() - started


def delivery_counts() -> dict[str, int]:
    db.session.rollback()
    rows = db.session.execute(select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)).all()
    db.session.rollback()
    return dict(rows)


@dataclass
class Result:
    settings: Settings
    errors: int
    page_p95_ms: float
    webhook_p99_ms: float
    reached: int
    touched: int
    sent: int
    planned: int
    counts: dict
    failures: dict

    @property
    def ratio(self) -> float:
        return max(self.page_p95_ms / TARGET_PAGE_P95_MS, self.webhook_p99_ms / TARGET_WEBHOOK_P99_MS)


def run(s: Settings) -> Result:
    rng = random.Random(s.seed)
    with Stack(config(s)) as stack:
        push_business(stack)
        stack.pti_faults(latency_ms=s.latency_ms)
        items, flipping = plan_webhooks(s, stack, rng)
        plan = {"accounts": staff_accounts(s.users), "ids": page_ids(rng, flipping),
                "think_min_s": s.think_min_s, "think_max_s": s.think_max_s, "sg_url": stack.sg_url,
                "webhooks": {"rate": s.rate, "path": WEBHOOK_PATH, "secret": WEBHOOK_SECRET, "items": items}}
        say(f"load: {s.users} operators, {s.rate:g} webhooks/s for {s.duration_s} s ({len(items)} webhooks), "
            f"{s.sites} sites × {s.rentals} rentals, {s.workers} RQ workers, {s.web_workers} web workers, "
            f"{stack.database}")
        cpu = stack.cpu_seconds()
        started = time.monotonic()
        out, locust_cpu = run_locust(s, stack, plan)
        say(f"load done in {time.monotonic() - started:.1f} s; locust used {locust_cpu:.1f} CPU s")
        stack.report_cpu(cpu)
        touched = {d["rental"] for d in out["delivered"] if d["ok"] and d["kind"] in EFFECT_KINDS}
        say(f"waiting for the webhooks of {len(touched)} rentals to reach PTI ...")
        reached, wrong, drained = converge(s, stack, touched)
        statuses = delivery_counts()
        stack.report_cpu(cpu)
    times, failures, counts = out["times"], out["failures"], out["counts"]
    pages = [t for kind in PAGE_KINDS for t in times.get(kind, [])]
    hooks = times.get("webhook", [])
    failed_deliveries = statuses.get(deliveries.FAILED, 0)
    pacer = out["pacer"]
    say(f"requests: {dict(counts)}; failed: {dict(failures) or 'none'}; deliveries: {statuses}")
    for sample in out["failure_samples"][:10]:
        say(f"  failed: {sample}")
    for line in wrong[:10]:
        say(f"  not reached: {line}")
    say(f"webhooks sent {pacer['sent']} of {pacer['planned']}, the pacer at most {pacer['behind_max_s']:.2f} s late; "
        f"pages p50 {percentile(pages, 50):.0f} ms, p99 {percentile(pages, 99):.0f} ms; webhook ack p50 "
        f"{percentile(hooks, 50):.1f} ms, p95 {percentile(hooks, 95):.1f} ms; log-in p95 "
        f"{percentile(times.get('login', []), 95):.0f} ms; converged {drained:.0f} s after the load")
    return Result(settings=s, errors=sum(failures.values()) + failed_deliveries, page_p95_ms=percentile(pages, 95),
                  webhook_p99_ms=percentile(hooks, 99), reached=reached, touched=len(touched), sent=pacer["sent"],
                  planned=pacer["planned"], counts=dict(counts), failures={**failures, "deliveries": failed_deliveries})


def yes(flag: bool) -> str:
    return "yes" if flag else "no"


def main() -> str:
    r = run(settings())
    s = r.settings
    return report("load", users=str(s.users), webhooks_per_s=f"{s.rate:g}", duration_s=str(s.duration_s),
                  errors=str(r.errors), page_p95_ms=f"{r.page_p95_ms:.0f}", webhook_p99_ms=f"{r.webhook_p99_ms:.1f}",
                  effects_reached=f"{r.reached}/{r.touched}", webhooks_sent=f"{r.sent}/{r.planned}",
                  errors_met=yes(r.errors == 0),
                  page_met=yes(r.page_p95_ms <= TARGET_PAGE_P95_MS),
                  webhook_met=yes(r.webhook_p99_ms <= TARGET_WEBHOOK_P99_MS),
                  effects_met=yes(r.reached == r.touched), ratio=f"{r.ratio:.2f}")


if __name__ == "__main__":
    main()

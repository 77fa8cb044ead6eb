"""`flask` commands for operators: users, the demo, the worker and the key rotation."""

from __future__ import annotations

import logging
import time

import click
import redis
from flask import current_app
from flask.cli import AppGroup
from rq.cron import CronScheduler
from rq.utils import import_attribute
from sqlalchemy import func, or_, select

from jobs.worker import LANES, run_worker

from . import actions, staff, trends
from .clients import StoreganiseNotConfigured, site_credentials, storeganise_client
from .crypto import rotate
from .demo import ensure_demo_accounts, import_demo_business
from .extensions import db
from .jobqueue import BULK, DEFAULT, PRUNE, PULL, RELAY, SWEEP, TRENDS, URGENT, get_redis
from .mirror.importer import ImportBusy, import_business, pull_changes
from .models import ACTIVE_RENTAL_STATES, Customer, PtiAccount, Rental, Role, Site
from .pti import PtiClient, check_site
from .storeganise import StoreganiseError
from .sync.errors import CATALOGUE, problem

log = logging.getLogger(__name__)

users = AppGroup("users", help="Staff accounts.")
demo = AppGroup("demo", help="The demo business and accounts (demo mode only).")
keys = AppGroup("keys", help="Encryption keys for PTI credentials.")
pti = AppGroup("pti", help="PTI Storlogix connections.")
sg = AppGroup("sg", help="Storeganise: fill and refresh the mirror.")


@users.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.STAFF.value, show_default=True)
@click.option("--name", default="")
@click.password_option(help="Prompted for when not given.")
def create_user(email: str, role: str, name: str, password: str) -> None:
    """Create a staff account (or reset its password and role). Admins also manage accounts on the Users page."""
    try:
        user = staff.by_email(email)
        if user is None:
            user = staff.create_account(email, role=role, password=password, name=name, actor="cli")
            verb = "Created"
        else:
            staff.set_role(user, role, actor="cli")
            if name:
                user.name = name
            staff.set_password(user, password, actor="cli")
            verb = "Updated"
    except actions.ActionError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{verb} {user.email} ({user.role}).")


@demo.command("seed")
def seed() -> None:
    """Create the demo accounts, load the demo business and 30 days of made-up Trends history (idempotent)."""
    if not current_app.config.get("DEMO_MODE"):
        raise click.ClickException("Demo data is only loaded in demo mode: set PTI_SYNC_DEMO=1.")
    created = ensure_demo_accounts()
    click.echo(f"Demo ready: {created} new accounts. {import_demo_business()}")
    if trends.seed_demo():
        click.echo("Trends: 30 days of made-up history for the demo sites (the page marks it as demo history).")


@keys.command("rotate")
def rotate_keys() -> None:
    """Re-encrypt every site's PTI credentials under the first key of ENCRYPTION_KEYS."""
    sites = db.session.scalars(select(Site).where(Site.pti_credentials.is_not(None))).all()
    for site in sites:
        site.pti_credentials = rotate(current_app.config["ENCRYPTION_KEYS"], site.pti_credentials)
    db.session.commit()
    click.echo(f"Re-encrypted the PTI credentials of {len(sites)} sites.")


@pti.command("check")
@click.argument("site")
def check_pti(site: str) -> None:
    """Check SITE's PTI connection (site code or Storeganise id): reachable, credentials, unit names, access levels
    and zones (and whether the site's defaults are among them)."""
    record = db.session.scalar(select(Site).where(or_(Site.code == site, Site.sg_id == site)))
    if record is None:
        raise click.ClickException(f"No site {site!r}.")
    creds = site_credentials(record)
    if not (record.pti_base_url and record.pti_site_code and creds):
        entry = problem("site_not_configured")
        raise click.ClickException(f"{entry.message} {entry.fix}")
    with PtiClient(record.pti_base_url, record.pti_site_code, creds.site_key, creds.username, creds.password,
                   label=record.code) as client:
        result = check_site(client, [unit.pti_unit_name for unit in record.units],
                            default_access_level=record.default_access_level, default_zone=record.default_zone)
    for line in result.lines:
        click.echo(line)
    if not result.ok:
        raise SystemExit(1)


def _storeganise(read):
    """Run `read(client)` against the configured Storeganise; failures become one plain line, not a traceback."""
    try:
        with storeganise_client() as client:
            return read(client)
    except (StoreganiseNotConfigured, StoreganiseError, LookupError, ImportBusy) as exc:
        raise click.ClickException(str(exc)) from None


@sg.command("import")
@click.option("--site", "site_code", default=None, help="Only this site (its code or Storeganise id).")
def sg_import(site_code: str | None) -> None:
    """Import sites, units, rentals and customers from Storeganise; mark changed customers for a push."""
    report = _storeganise(lambda client: import_business(client, site_code, progress=click.echo))
    click.echo(report.summary())


@sg.command("pull")
def sg_pull() -> None:
    """Read only the rentals Storeganise changed since the last pull (what the scheduler runs every 5 minutes)."""
    click.echo(_storeganise(lambda client: pull_changes(client, progress=click.echo)).summary())


@click.command("worker")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option("--lane", type=click.Choice(sorted(LANES)), default="all", show_default=True,
              help="all: the urgent, default and bulk queues in that order, a fork per job; urgent: only the urgent "
                   "queue, in a warm process (payments and lockouts never wait behind a bulk push).")
def worker(burst: bool, lane: str) -> None:
    """Run an RQ worker (with the scheduler)."""
    run_worker(burst=burst, lane=lane)


sync = AppGroup("sync", help="Staff actions and sync status (each asks for a push; the worker applies it).")


def _find(model, key: str):
    """A record by our id or its Storeganise id (customers also by e-mail, sites by code)."""
    clauses = [model.sg_id == key]
    if key.isascii() and key.isdigit() and len(key) <= 9:  # "²" is a digit to isdigit, not to int
        clauses.append(model.id == int(key))
    if model is Customer:
        clauses.append(Customer.email == key.lower())
    if model is Site:
        clauses.append(Site.code == key)
    found = db.session.scalar(select(model).where(or_(*clauses)))
    if found is None:
        raise click.ClickException(f"No {model.__name__.lower()} matches {key!r}.")
    return found


def _act(fn, *args, **kwargs) -> None:
    try:
        queued = fn(*args, actor="cli", **kwargs)
    except actions.ActionError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Done: {queued} push(es) queued. Follow them with `flask sync status`.")


@sync.command("resync")
@click.argument("kind", type=click.Choice(["rental", "customer", "site"]))
@click.argument("key")
def resync(kind: str, key: str) -> None:
    """Push a rental, a customer or a whole site to PTI again."""
    model = {"rental": Rental, "customer": Customer, "site": Site}[kind]
    _act(getattr(actions, f"resync_{kind}"), _find(model, key))


@sync.command("suspend")
@click.argument("rental")
def suspend(rental: str) -> None:
    """Overlock a rental's unit by hand (kept until unsuspended)."""
    _act(actions.set_suspended, _find(Rental, rental), True)


@sync.command("unsuspend")
@click.argument("rental")
def unsuspend(rental: str) -> None:
    """Lift a rental's overlock."""
    _act(actions.set_suspended, _find(Rental, rental), False)


@sync.command("regenerate-code")
@click.argument("customer")
def regenerate(customer: str) -> None:
    """Give a customer a new access code at every site (the old one stops working)."""
    _act(actions.regenerate_code, _find(Customer, customer))


@sync.command("set-access")
@click.argument("customer")
@click.option("--level", type=int, help="PTI access level number; leave out to use the site's default.")
@click.option("--zone", type=int, help="PTI zone (time-zone number); leave out to use the site's default.")
def set_access_command(customer: str, level: int | None, zone: int | None) -> None:
    """Override a customer's access level and PTI zone (or clear the overrides)."""
    _act(actions.set_access, _find(Customer, customer), level=level, zone=zone)


@sync.command("requeue-failed")
@click.option("--site", "site_key", help="Only this site (code or id).")
@click.option("--cause", type=click.Choice(sorted(CATALOGUE)), help="Only this cause (a reason of docs/errors.md).")
def requeue(site_key: str | None, cause: str | None) -> None:
    """Put every failed customer back in line (after fixing what failed), as Retry all on the Failures page."""
    _act(actions.requeue_failed, site=_find(Site, site_key) if site_key else None, cause=cause)


@sync.command("status")
def status() -> None:
    """Sync health per site: rentals by state, accounts owed a push, failures by reason."""
    for site in db.session.scalars(select(Site).order_by(Site.code)):
        states = dict(db.session.execute(
            select(Rental.sync_state, func.count()).where(Rental.site_id == site.id,
                                                          Rental.state.in_(ACTIVE_RENTAL_STATES))
            .group_by(Rental.sync_state)).all())
        owed = db.session.scalar(select(func.count()).where(
            PtiAccount.site_id == site.id, PtiAccount.generation > PtiAccount.synced_generation))
        click.echo(f"{site.code}: " + ", ".join(f"{n} {k}" for k, n in sorted(states.items())) + f"; {owed} owed")
        for reason, n in db.session.execute(
            select(Rental.last_error, func.count()).where(Rental.site_id == site.id, Rental.last_error.is_not(None),
                                                          Rental.state.in_(ACTIVE_RENTAL_STATES))
            .group_by(Rental.last_error)):
            click.echo(f"  {n} × {problem(reason).message} Fix: {problem(reason).fix}")


RELAY_EVERY_S = 15  # how soon a job Redis lost is re-enqueued
PULL_EVERY_S = 300  # the incremental pull that catches a webhook Storeganise never delivered
SWEEP_EVERY_S = 3600  # the drift sweep of every site's PTI users and units
PRUNE_EVERY_S = 3600  # old journal rows and handled webhook deliveries (bounded batches per run)
TRENDS_EVERY_S = 60  # the journal's new rows into the Trends rollup


@click.command("cron")
def cron() -> None:
    """Run the periodic jobs: relay every 15 s, Trends rollup every minute, Storeganise pull every 5 min, PTI drift
    sweep and pruning hourly."""
    scheduler = CronScheduler(connection=get_redis(), name="pti-sync-cron")
    # By name from the job table, as every enqueue does: only the cron process imports the job code.
    # The relay on the urgent queue: it is cheap (bounded, set-based) and a default-queue backlog must not delay it.
    scheduler.register(import_attribute(RELAY), URGENT, interval=RELAY_EVERY_S)
    scheduler.register(import_attribute(PULL), DEFAULT, interval=PULL_EVERY_S)
    scheduler.register(import_attribute(TRENDS), DEFAULT, interval=TRENDS_EVERY_S)
    scheduler.register(import_attribute(SWEEP), BULK, interval=SWEEP_EVERY_S)
    scheduler.register(import_attribute(PRUNE), BULK, interval=PRUNE_EVERY_S)
    run_until_stopped(scheduler)


CRON_REDIS_RETRY_S = 2.0  # after Redis failed the scheduler's loop, before it starts again


def run_until_stopped(scheduler: CronScheduler, sleep=time.sleep) -> None:
    """RQ's scheduler loop ends on the first Redis error (a Redis that hangs past the time-out, a restart): the one
    process that drives the relay must not die of an outage it exists to recover from. Start it again until it is
    asked to stop (its loop then returns)."""
    while True:
        try:
            scheduler.start()
            return
        except redis.RedisError as exc:
            log.warning("cron: Redis failed the scheduler (%s: %s); starting again in %.0f s",
                        exc.__class__.__name__, exc, CRON_REDIS_RETRY_S)
            sleep(CRON_REDIS_RETRY_S)


def init_app(app) -> None:
    for command in (users, demo, keys, pti, sg, sync, worker, cron):
        app.cli.add_command(command)

"""Writing PTI results back to Storeganise: the pti_* custom fields, and tasks for staff when a push fails.

Every value is stored in the mirror (and committed) BEFORE the PUT: the `unitRental.updated` / `user.updated`
echo Storeganise sends for our own write then re-reads a record equal to the mirror, finds no change and asks
for nothing. A problem is raised as a Storeganise task once per cause, and forgotten when the account syncs again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC

import redis
from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError

from .extensions import db
from .models import ACTIVE_RENTAL_STATES, Customer, PtiAccount, Rental, ReportedProblem, SyncState, to_ms
from .queue import get_redis
from .storeganise import StoreganiseClient, StoreganiseError, format_timestamp
from .sync.errors import problem

log = logging.getLogger(__name__)

# Problems with one unit (shown on the unit) and problems with the whole site's connection (shown to the add-on).
UNIT_REASONS = frozenset({"unit_unmapped", "invalid_unit_name", "unit_not_found", "unit_rented_to_other"})
SITE_REASONS = frozenset({"invalid_credentials", "site_not_configured"})
DEFAULT_REASON = "pti_rejected"
WRITTEN_KEY = "pti-sync:sg-written:{rental}"  # the pti_synced|pti_overlocked we last wrote to a rental
WRITTEN_TTL_S = 7 * 24 * 3600


@dataclass
class WriteBack:
    rentals: int = 0
    user_fields: tuple[str, ...] = ()


def write_back(account_id: int, client: StoreganiseClient) -> WriteBack:
    """PUT pti_synced and pti_overlocked on the account's in-sync active rentals, and pti_access_code /
    pti_user_id on the customer, where Storeganise does not hold them yet.

    pti_synced is the rental's own push time, which the engine stores (in milliseconds) before it asks for this;
    a rental whose values were already written (remembered in Redis) is not written again, so a reconcile that
    changed nothing costs Storeganise nothing.
    """
    account = db.session.get(PtiAccount, account_id)
    if account is None:
        return WriteBack()
    customer = account.customer
    rentals = db.session.scalars(
        select(Rental).where(Rental.customer_id == account.customer_id, Rental.site_id == account.site_id,
                             Rental.state.in_(ACTIVE_RENTAL_STATES), Rental.sync_state == SyncState.IN_SYNC)
        .order_by(Rental.id)
    ).all()
    puts: list[tuple[str, dict]] = []
    for rental in rentals:
        fields: dict = {"pti_overlocked": rental.overlocked}
        if rental.pti_synced is not None:
            rental.pti_synced = to_ms(rental.pti_synced)
            fields["pti_synced"] = format_timestamp(rental.pti_synced.replace(tzinfo=UTC))
        puts.append((rental.sg_id, fields))
    puts = [put for put, known in zip(puts, _written([sg_id for sg_id, _ in puts]), strict=True)
            if known != _fingerprint(put[1])]

    previous = (customer.pti_access_code, customer.pti_user_id)
    user_fields: dict = {}
    if account.access_code is not None and customer.pti_access_code != account.access_code:
        customer.pti_access_code = account.access_code
        user_fields["pti_access_code"] = str(account.access_code)
    if account.pti_user_id and customer.pti_user_id != account.pti_user_id:
        customer.pti_user_id = account.pti_user_id
        user_fields["pti_user_id"] = account.pti_user_id
    forget_problems(account)
    db.session.commit()

    try:
        for rental_sg_id, fields in puts:
            client.update_unit_rental_custom_fields(rental_sg_id, fields)
            _remember(rental_sg_id, fields)
        if user_fields:
            client.update_user_custom_fields(customer.sg_id, user_fields)
    except StoreganiseError:
        if user_fields:  # Storeganise still holds the old values: so must the mirror, or the retry sends nothing
            customer.pti_access_code, customer.pti_user_id = previous
            db.session.commit()
        raise
    return WriteBack(rentals=len(puts), user_fields=tuple(sorted(user_fields)))


def _fingerprint(fields: dict) -> str:
    return f"{fields.get('pti_synced')}|{fields['pti_overlocked']}"


def _written(rental_sg_ids: list[str]) -> list[str | None]:
    """What we last wrote to each rental, as far as Redis remembers (None: unknown, so write)."""
    if not rental_sg_ids:
        return []
    try:
        values = get_redis().mget([WRITTEN_KEY.format(rental=r) for r in rental_sg_ids])
    except redis.RedisError:
        return [None] * len(rental_sg_ids)
    return [v.decode() if v is not None else None for v in values]


def _remember(rental_sg_id: str, fields: dict) -> None:
    try:
        get_redis().set(WRITTEN_KEY.format(rental=rental_sg_id), _fingerprint(fields), ex=WRITTEN_TTL_S)
    except redis.RedisError:
        pass  # only an optimisation: the next write-back writes again


def forget_problems(account: PtiAccount) -> None:
    """The account synced: its problems (and its site's connection problems) are over; report them anew if back."""
    db.session.execute(delete(ReportedProblem).where(or_(
        ReportedProblem.account_id == account.id,
        ReportedProblem.cause.like(f"site:{account.site.sg_id}:%"),
    )))


@dataclass(frozen=True)
class Target:
    cause: str  # what makes two reports the same
    target_type: str  # Storeganise task target: unit, user or addon
    target_id: str | None
    subject: str  # how staff recognise it


def _targets(account: PtiAccount, reason: str) -> list[Target]:
    site, customer = account.site, account.customer
    if reason in SITE_REASONS:
        return [Target(f"site:{site.sg_id}:{reason}", "addon", None, f"site {site.title}")]
    if reason in UNIT_REASONS:
        rentals = db.session.scalars(
            select(Rental).where(Rental.customer_id == account.customer_id, Rental.site_id == account.site_id,
                                 Rental.state.in_(ACTIVE_RENTAL_STATES), Rental.last_error == reason)
            .order_by(Rental.id)
        ).all()
        if rentals:
            return [Target(f"unit:{r.unit.sg_id}:{reason}", "unit", r.unit.sg_id,
                           f"unit {r.unit.name} at {site.title}") for r in rentals]
    return [Target(f"user:{customer.sg_id}:{site.sg_id}:{reason}", "user", customer.sg_id,
                   f"customer {customer.name} ({customer.email}) at {site.title}")]


def report_failure(account_id: int, client: StoreganiseClient) -> int:
    """Raise a Storeganise task for each cause of the account's failure not reported yet; returns how many."""
    account = db.session.get(PtiAccount, account_id)
    if account is None or account.state != SyncState.FAILED:
        return 0  # it recovered (or vanished) before this job ran
    reason = account.last_error or DEFAULT_REASON
    entry = problem(reason)
    created = 0
    for target in _targets(account, reason):
        claim = ReportedProblem(cause=target.cause, account_id=account.id, reason=reason)
        db.session.add(claim)
        try:
            db.session.commit()  # claim the cause first: two jobs never raise the same task twice
        except IntegrityError:
            db.session.rollback()
            continue
        try:
            task = client.create_task(target.target_type, target.target_id, f"PTI sync: {entry.message}",
                                      f"{entry.message}\n\nWhat to do: {entry.fix}\n\nAffects {target.subject}.")
        except StoreganiseError:
            db.session.delete(claim)  # not reported after all: the retry must try again
            db.session.commit()
            raise
        claim.sg_task_id = str(task.get("id")) if isinstance(task, dict) and task.get("id") else None
        db.session.commit()
        created += 1
        log.info("reported %s to Storeganise as a task on %s", reason, target.subject)
    return created


def write_back_overrides(customer_id: int, client: StoreganiseClient) -> dict:
    """Staff changed a customer's access level or zone in the dashboard: Storeganise, the source of truth, gets
    it too. The mirror already holds the values, so the `user.updated` echo changes nothing."""
    customer = db.session.get(Customer, customer_id)
    if customer is None:
        return {}
    fields = {"pti_access_level": customer.access_level_override, "pti_zone": customer.zone_override}
    client.update_user_custom_fields(customer.sg_id, fields)
    return fields

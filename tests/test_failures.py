"""The Failures page: every failure of every site grouped by cause, with the catalogue's words, and Retry all."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import redis as redis_lib
from markupsafe import escape
from sqlalchemy import select

from dashboard import actions
from dashboard.engine.intent import PENDING_KEY, account_for
from dashboard.extensions import db
from dashboard.models import ACTIVE_RENTAL_STATES, AuditEntry, PtiAccount, Rental, Site, SyncState, utcnow
from dashboard.sync.errors import CATALOGUE

HTMX = {"HX-Request": "true"}


def park(site_code: str, reason: str, *, limit: int | None = None) -> list[PtiAccount]:
    """Park the customers of a site as the engine does when a push gives up: the account failed with the reason,
    its active rentals of units with a PTI name failed with it too (the others are not synced anyway)."""
    site = db.session.scalars(select(Site).where(Site.code == site_code)).one()
    rentals = db.session.scalars(select(Rental).where(Rental.site_id == site.id,
                                                      Rental.state.in_(ACTIVE_RENTAL_STATES))
                                 .order_by(Rental.id)).all()
    customers = list(dict.fromkeys(r.customer_id for r in rentals))[:limit]
    accounts = []
    for customer_id in customers:
        account = account_for(customer_id, site.id)
        account.state, account.last_error, account.next_attempt_at = SyncState.FAILED, reason, None
        accounts.append(account)
    for rental in rentals:
        if rental.customer_id in customers and rental.unit.pti_unit_name and not rental.unit.pti_switched_off:
            rental.sync_state, rental.last_error = SyncState.FAILED, reason
    db.session.commit()
    return accounts


def fail_unit(site_code: str, reason: str = "invalid_unit_name") -> Rental:
    """A unit PTI refuses fails its rental while its customer's account is in sync."""
    rental = db.session.scalars(select(Rental).join(Rental.site).where(
        Site.code == site_code, Rental.state == "occupied", Rental.sync_state != SyncState.FAILED)
        .order_by(Rental.id)).first()
    account = account_for(rental.customer_id, rental.site_id)
    account.state = SyncState.IN_SYNC
    rental.sync_state, rental.last_error = SyncState.FAILED, reason
    db.session.commit()
    return rental


def failed_rentals(**where) -> int:
    stmt = select(Rental).where(Rental.state.in_(ACTIVE_RENTAL_STATES), Rental.sync_state == SyncState.FAILED)
    for name, value in where.items():
        stmt = stmt.where(getattr(Rental, name) == value)
    return len(db.session.scalars(stmt).all())


def groups(html: str) -> dict[str, int]:
    return {cause: int(n) for cause, n in re.findall(r'data-cause="([^"]+)" data-count="(\d+)"', html)}


def site_id(code: str) -> int:
    return db.session.scalars(select(Site.id).where(Site.code == code)).one()


def test_failures_are_grouped_by_cause_with_what_happened_and_what_to_do(client, auth, demo_business):
    park("hilltop", "invalid_credentials")
    rental = fail_unit("northgate")
    auth.login("manager")
    html = client.get("/failures/").get_data(as_text=True)
    assert groups(html) == {"invalid_credentials": failed_rentals(last_error="invalid_credentials"),
                            "invalid_unit_name": 1}
    for cause in ("invalid_credentials", "invalid_unit_name"):
        assert escape(CATALOGUE[cause].message) in html and escape(CATALOGUE[cause].fix) in html
    assert f'data-rental-id="{rental.id}" data-sync-state="failed"' in html
    assert f'<li data-site-id="{site_id("hilltop")}">' in html
    assert "sorted by site, then unit" in html


def test_the_counts_agree_with_the_overview(client, auth, demo_business):
    park("hilltop", "invalid_credentials")
    park("riverside", "foreign_pti_user", limit=2)
    fail_unit("northgate")
    auth.login("manager")
    overview = client.get("/").get_data(as_text=True)
    total = int(re.search(r'<span class="figure">(\d+)</span> <a href="/failures/">failed</a>', overview).group(1))
    assert sum(groups(client.get("/failures/").get_data(as_text=True)).values()) == total == failed_rentals()
    for code in ("hilltop", "riverside", "northgate"):
        assert f'href="/failures/?site={site_id(code)}">{failed_rentals(site_id=site_id(code))}</a>' in overview


def test_a_site_filter_shows_only_that_sites_failures(client, auth, demo_business):
    park("hilltop", "invalid_credentials")
    fail_unit("northgate")
    auth.login("staff")
    html = client.get(f"/failures/?site={site_id('northgate')}").get_data(as_text=True)
    assert groups(html) == {"invalid_unit_name": 1}
    assert "Retry all 1 at Northgate Self Storage" in html


def test_blocking_retried_and_warning_causes_stand_apart(client, auth, demo_business):
    park("hilltop", "invalid_credentials", limit=1)
    park("riverside", "pti_unreachable", limit=1)
    park("northgate", "already_vacant", limit=1)
    auth.login("staff")
    html = client.get("/failures/").get_data(as_text=True)
    needs, retried, warnings = (html.index(h) for h in (
        "Needs a person", "Parked after the product’s own retries", "Warnings: nothing to do"))
    assert needs < html.index('data-cause="invalid_credentials"') < retried
    assert retried < html.index('data-cause="pti_unreachable"') < warnings < html.index('data-cause="already_vacant"')
    warning = html[html.index('data-cause="already_vacant"'):]
    assert "Retry all" not in warning  # nothing to do: no button inviting anyone to act
    assert re.search(r'failure-retried" id="cause-pti_unreachable"', html)


def test_customers_the_product_is_retrying_are_not_shown_as_failures(client, auth, demo_business):
    account = account_for(db.session.scalars(select(Rental)).first().customer_id,
                          db.session.scalars(select(Rental)).first().site_id)
    account.state, account.last_error = SyncState.PENDING, "pti_unreachable"
    account.next_attempt_at = utcnow() + timedelta(seconds=30)
    db.session.commit()
    auth.login("manager")
    html = client.get("/failures/").get_data(as_text=True)
    assert groups(html) == {}
    assert "Being retried by PTI Sync" in html and 'data-retrying-cause="pti_unreachable"' in html
    assert "Nothing has failed" in html


def requeues() -> list[AuditEntry]:
    return db.session.scalars(select(AuditEntry).where(AuditEntry.action == "requeue failed")).all()


def owed(account_ids) -> dict[int, int]:
    db.session.expire_all()
    return {a.id: a.generation for a in db.session.scalars(select(PtiAccount).where(PtiAccount.id.in_(account_ids)))}


def test_retry_all_queues_and_audits_exactly_the_causes_accounts(client, auth, demo_business, redis_url):
    hilltop = park("hilltop", "invalid_credentials")
    other = park("riverside", "foreign_pti_user", limit=2)
    unit = fail_unit("northgate")
    bystander = account_for(unit.customer_id, unit.site_id)
    before = owed([a.id for a in [*hilltop, *other, bystander]])
    auth.login("staff")
    token = auth.csrf_token("/failures/")
    response = client.post("/failures/retry", data={"csrf_token": token, "cause": "invalid_credentials"},
                           headers=HTMX)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and response.headers["HX-Trigger"] == "syncChanged"
    assert f"{len(hilltop)} customers queued again" in html and "<html" not in html
    after = owed(before)
    retried = {a.id for a in hilltop}
    assert {i for i in before if after[i] != before[i]} == retried
    assert {a.state for a in db.session.scalars(select(PtiAccount).where(PtiAccount.id.in_(retried)))} == {"pending"}
    assert failed_rentals(last_error="invalid_credentials") == 0 and failed_rentals() == 3
    with redis_lib.Redis.from_url(redis_url) as conn:
        queued = {i for i in before if conn.exists(PENDING_KEY.format(account_id=i))}
    assert queued == retried
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "requeue failed")).one()
    assert (entry.actor, entry.detail) == ("staff@demo.test", {"count": len(hilltop), "cause": "invalid_credentials"})


def test_retry_all_at_one_site_leaves_the_same_cause_at_other_sites(client, auth, demo_business):
    hilltop = park("hilltop", "invalid_credentials", limit=3)
    riverside = park("riverside", "invalid_credentials", limit=2)
    before = owed([a.id for a in [*hilltop, *riverside]])
    auth.login("support")
    token = auth.csrf_token("/failures/")
    response = client.post("/failures/retry", data={"csrf_token": token, "cause": "invalid_credentials",
                                                    "site": site_id("riverside")})
    assert response.status_code == 302 and response.headers["Location"] == f"/failures/?site={site_id('riverside')}"
    after = owed(before)
    assert {i for i in before if after[i] != before[i]} == {a.id for a in riverside}
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "requeue failed")).one()
    assert (entry.target_type, entry.detail["count"]) == ("site", 2)


def test_a_parked_customer_without_a_failed_rental_is_listed_and_retried(client, auth, demo_business):
    """A move-out PTI has not taken parks the customer, and no active rental of theirs shows it."""
    (account,) = park("riverside", "unit_not_found", limit=1)
    for rental in db.session.scalars(select(Rental).where(Rental.customer_id == account.customer_id,
                                                          Rental.site_id == account.site_id)):
        rental.state, rental.sync_state, rental.last_error = "ended", SyncState.DISABLED, None
    db.session.commit()
    auth.login("staff")
    html = client.get("/failures/").get_data(as_text=True)
    assert groups(html) == {"unit_not_found": 0}  # no rental the Overview counts
    assert "1 customer is parked with this cause without an active rental failed by it" in html
    assert "Retry 1 parked customer</button>" in html
    assert account.customer.name in html
    assert [a.id for a in db.session.scalars(actions.failed_accounts(cause="unit_not_found"))] == [account.id]


def test_the_site_pages_retry_still_retries_every_cause_of_the_site(client, auth, demo_business):
    parked = park("hilltop", "invalid_credentials", limit=2)
    unit = fail_unit("hilltop")
    account = account_for(unit.customer_id, unit.site_id)
    db.session.commit()
    site = db.session.get(Site, site_id("hilltop"))
    assert {a.id for a in db.session.scalars(actions.failed_accounts(site))} == {*(a.id for a in parked), account.id}
    assert actions.requeue_failed("staff@demo.test", site=site) >= 0
    assert failed_rentals(site_id=site.id) == 0


def test_a_cause_of_more_than_fifty_rentals_shows_ten_then_pages_fifty_at_a_time(client, auth, demo_business):
    for code in ("northgate", "riverside", "hilltop"):
        park(code, "invalid_credentials")
    total = failed_rentals()
    assert total > 100
    auth.login("manager")
    html = client.get("/failures/").get_data(as_text=True)
    assert html.count("data-rental-id=") == 10 and f"See all {total}, 50 a page" in html  # a glance at the cause
    page2 = client.get("/failures/?cause=invalid_credentials&page=2",
                       headers={**HTMX, "HX-Target": "failure-groups"})
    fragment = page2.get_data(as_text=True)
    assert "<html" not in fragment and fragment.count("data-rental-id=") == 50
    assert f"{total} failed rentals, sorted by site, then unit; showing 51–100" in fragment
    assert "Page 2 of" in fragment


def test_managers_read_the_failures_but_cannot_retry_them(client, auth, demo_business):
    park("hilltop", "invalid_credentials")
    auth.login("manager")
    html = client.get("/failures/").get_data(as_text=True)
    assert 'data-cause="invalid_credentials"' in html and 'action="/failures/retry"' not in html  # no Retry all
    token = auth.csrf_token("/failures/")
    response = client.post("/failures/retry", data={"csrf_token": token, "cause": "invalid_credentials"})
    assert response.status_code == 403
    assert requeues() == []


@pytest.mark.parametrize(("path", "status"), [
    ("/failures/?cause=no_such_cause", 404),
    ("/failures/?site=999", 404),
    ("/failures/?site=hilltop", 400),
    ("/failures/?cause=invalid_credentials&page=0", 400),
    ("/failures/?cause=invalid_credentials&page=two", 400),
    ("/failures/?cause=invalid_credentials&page=%C2%B2", 400),  # "²": a digit to str.isdigit, not to int
    ("/failures/?site=%C2%B2", 400),
    ("/failures/?cause=invalid_credentials&page=99999999999999999999", 400),
])
def test_a_bad_address_is_refused_clearly(client, auth, demo_business, path, status):
    auth.login("staff")
    assert client.get(path).status_code == status


@pytest.mark.parametrize(("form", "status"), [
    ({}, 400),
    ({"cause": "no_such_cause"}, 404),
    ({"cause": "invalid_credentials", "site": "999"}, 404),
    ({"cause": "invalid_credentials", "site": "x"}, 400),
])
def test_a_bad_retry_is_refused_and_changes_nothing(client, auth, demo_business, form, status):
    accounts = park("hilltop", "invalid_credentials")
    before = owed([a.id for a in accounts])
    auth.login("staff")
    token = auth.csrf_token("/failures/")
    assert client.post("/failures/retry", data={"csrf_token": token, **form}).status_code == status
    assert owed(before) == before and requeues() == []


def test_retrying_a_cause_with_nothing_failed_says_so(client, auth, demo_business):
    auth.login("staff")
    token = auth.csrf_token("/failures/")
    response = client.post("/failures/retry", data={"csrf_token": token, "cause": "invalid_credentials"},
                           headers=HTMX)
    assert response.status_code == 422 and "Nothing to retry" in response.get_data(as_text=True)
    assert requeues() == []
    html = client.get("/failures/?cause=invalid_credentials").get_data(as_text=True)
    assert groups(html) == {"invalid_credentials": 0} and "Nothing has failed with this cause" in html


def test_failures_is_in_the_navigation(client, auth, demo_business):
    auth.login("support")
    html = client.get("/failures/").get_data(as_text=True)
    assert '<a href="/failures/" aria-current="page">Failures</a>' in html


def test_the_cli_retries_one_cause_as_the_page_does(runner, demo_business):
    hilltop = park("hilltop", "invalid_credentials", limit=2)
    other = park("riverside", "foreign_pti_user", limit=1)
    before = owed([a.id for a in [*hilltop, *other]])
    result = runner.invoke(args=["sync", "requeue-failed", "--cause", "invalid_credentials"])
    assert result.exit_code == 0, result.output
    after = owed(before)
    assert {i for i in before if after[i] != before[i]} == {a.id for a in hilltop}
    assert runner.invoke(args=["sync", "requeue-failed", "--cause", "no_such_cause"]).exit_code == 2


def test_each_cause_lists_its_own_rentals_in_as_many_statements_however_many_causes(client, auth, demo_business):
    from sqlalchemy import event

    def statements() -> int:
        seen = []
        listener = lambda *args: seen.append(1)  # noqa: E731 - counts every statement the page runs
        event.listen(db.engine, "before_cursor_execute", listener)
        try:
            assert client.get("/failures/").status_code == 200
        finally:
            event.remove(db.engine, "before_cursor_execute", listener)
        return len(seen)

    park("hilltop", "invalid_credentials")
    auth.login("staff")
    one_cause = statements()
    units = [fail_unit("northgate", reason) for reason in ("invalid_unit_name", "unit_not_found")]
    park("riverside", "foreign_pti_user", limit=2)

    assert statements() == one_cause
    html = client.get("/failures/").get_data(as_text=True)
    for rental in units:  # under its own cause, not another's
        assert re.findall(r'data-rental-id="(\d+)"', section(html, rental.last_error)) == [str(rental.id)]
    hilltop = re.findall(r'data-rental-id="(\d+)"', section(html, "invalid_credentials"))
    assert len(hilltop) == min(10, failed_rentals(last_error="invalid_credentials"))


def section(html: str, cause: str) -> str:
    """The page from this cause's group to the next group."""
    start = html.index(f'data-cause="{cause}"')
    end = html.find('data-cause="', start + 1)
    return html[start:end if end != -1 else len(html)]

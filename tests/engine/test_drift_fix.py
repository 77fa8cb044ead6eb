"""Fixing the drift report's stray PTI users from the site's page: removed only while PTI and the mirror still say it
is safe, audited, and the report says what happened."""

from __future__ import annotations

from sqlalchemy import select

from dashboard.engine.drift_fix import remove_stray
from dashboard.extensions import db
from dashboard.models import AuditEntry, Customer
from tests.engine.conftest import account_of, by_hand, customer_with, pushed, site, sweep_northgate
from tests.engine.test_actions import run_jobs

HTMX = {"HX-Request": "true"}


def _orphan(pti, marker="sg-user-gone", code=917263):
    with by_hand(pti) as in_pti:
        return in_pti.create_user(email="left@example.com", first_name="Long", last_name="Gone", access_code=code,
                                  access_level=1, time_zone=1, marker=marker)


def _in_pti(pti, user_id: str) -> bool:
    return any(u["id"] == user_id for u in pti.site("NG01")["users"])


def _fix(client, auth, kind: str, user_id: str):
    northgate = site("northgate")
    token = auth.csrf_token(f"/sites/{northgate.id}")
    return client.post(f"/sites/{northgate.id}/fix-drift", data={"csrf_token": token, "kind": kind,
                                                                 "pti_user_id": user_id}, headers=HTMX)


def test_staff_remove_an_orphan_from_the_site_page_and_the_report_strikes_it(business, pti, auth, client):
    orphan = _orphan(pti)
    sweep_northgate()
    auth.login("staff")
    page = client.get(f"/sites/{site('northgate').id}").get_data(as_text=True)
    assert 'data-fix="orphan"' in page and f"Remove PTI user {orphan.id}" in page

    response = _fix(client, auth, "orphan", orphan.id)
    assert response.status_code == 200 and "Queued" in response.get_data(as_text=True)
    assert _in_pti(pti, orphan.id)  # the request only queues: PTI is changed by the job
    run_jobs()

    assert not _in_pti(pti, orphan.id)
    db.session.expire_all()
    report = site("northgate").drift_report
    assert report["orphans"] == 0 and report["orphan_users"] == []
    assert report["last_fix"]["removed"] is True
    actions = [(a.action, a.actor, a.outcome) for a in db.session.scalars(
        select(AuditEntry).where(AuditEntry.action.like("remove orphan%")).order_by(AuditEntry.id))]
    assert actions == [("remove orphan PTI user requested", "staff@demo.test", "ok"),
                       ("remove orphan PTI user", "staff@demo.test", "ok")]
    page = client.get(f"/sites/{site('northgate').id}").get_data(as_text=True)
    assert 'data-drift-fix="removed"' in page and 'data-drift="orphans"' not in page


def test_an_orphan_whose_customer_now_rents_here_is_left_in_pti(business, pti):
    orphan = _orphan(pti, marker="sg-moved-in-late")
    sweep_northgate()  # the sweep saw it before Storeganise's move-in reached the mirror
    customer = customer_with(1, overdue=False)
    customer.sg_id = "sg-moved-in-late"  # now the mirror knows the customer, renting here
    db.session.commit()
    site_id = site("northgate").id

    outcome = remove_stray(site_id, "orphan", orphan.id, "staff@demo.test")

    assert not outcome.removed and "rents here now" in outcome.message
    assert _in_pti(pti, orphan.id)
    db.session.expire_all()
    row = site("northgate").drift_report["orphan_users"][0]
    assert row["id"] == orphan.id and row["fix"] == outcome.message
    assert db.session.scalar(select(AuditEntry.outcome).where(AuditEntry.action == "remove orphan PTI user")) \
        == "refused"


def test_a_user_without_our_mark_is_never_removed(business, pti):
    with by_hand(pti) as in_pti:  # a PTI user staff made by hand, never ours
        theirs = in_pti.create_user(email="gate@example.com", first_name="Gate", last_name="Keeper",
                                    access_code=917265, access_level=1, time_zone=1, marker=None)
    northgate = site("northgate")
    northgate.drift_report = {"orphans": 1, "orphan_users": [{"id": theirs.id, "name": "Gate Keeper"}]}
    db.session.commit()  # a report that names it, however it came to

    outcome = remove_stray(northgate.id, "orphan", theirs.id, "staff@demo.test")

    assert not outcome.removed and "mark" in outcome.message
    assert _in_pti(pti, theirs.id)


def test_removing_a_duplicate_keeps_the_user_we_push_to_and_pushes_the_customer(business, pti, auth, client):
    account = pushed(customer_with(2))
    with by_hand(pti) as in_pti:
        copy = in_pti.create_user(email="copy@example.com", first_name="A", last_name="Copy", access_code=917264,
                                  access_level=1, time_zone=1, marker=account.customer.sg_id)
    sweep_northgate()
    auth.login("staff")
    page = client.get(f"/sites/{site('northgate').id}").get_data(as_text=True)
    assert f"Remove PTI user {copy.id}" in page and f"Remove PTI user {account.pti_user_id}" not in page

    # The one PTI Sync pushes to is never offered, and refused if asked for anyway.
    kept = remove_stray(site("northgate").id, "duplicate", account.pti_user_id, "staff@demo.test")
    assert not kept.removed and _in_pti(pti, account.pti_user_id)

    assert _fix(client, auth, "duplicate", copy.id).status_code == 200
    run_jobs()

    assert not _in_pti(pti, copy.id) and _in_pti(pti, account.pti_user_id)
    db.session.expire_all()
    report = site("northgate").drift_report
    assert report["duplicates"] == 0 and report["duplicate_users"] == []
    after = account_of(db.session.get(Customer, account.customer_id))
    assert after.synced_generation == after.generation  # pushed again after the removal
    user = pti.user_with_marker("NG01", account.customer.sg_id)
    assert user["id"] == account.pti_user_id and len(user["units"]) == 2


def test_a_fix_for_a_row_the_report_does_not_list_is_refused_and_queues_nothing(business, pti, auth, client):
    sweep_northgate()
    auth.login("staff")
    response = _fix(client, auth, "orphan", "424242")
    assert response.status_code == 422 and "not in this site&#39;s drift report" in response.get_data(as_text=True)
    assert db.session.scalar(select(AuditEntry).where(AuditEntry.action.like("remove orphan%"))) is None


def test_managers_read_the_report_without_fix_buttons(business, pti, auth, client):
    _orphan(pti)
    sweep_northgate()
    auth.login("manager")
    page = client.get(f"/sites/{site('northgate').id}").get_data(as_text=True)
    assert 'data-drift="orphans"' in page and 'data-fix="orphan"' not in page

"""The Activity page: the sync journal 50 a page with its count, narrowed by site, customer, trigger, outcome and
UTC days, exported as CSV with the same filters (streamed, formula-safe, no access code); the audit log beneath."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import delete, event, insert, select

from dashboard.engine.intent import account_for
from dashboard.extensions import db
from dashboard.models import AuditEntry, Customer, PtiAccount, Rental, Site, SyncAttempt
from dashboard.views import activity

HTMX = {"HX-Request": "true", "HX-Target": "activity-results"}
DAY = datetime(2025, 3, 10)  # the journal rows below start on this UTC day
CODE = 918273  # an access code that must never reach the page or the export


def ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'data-attempt-id="(\d+)"', html)]


def total(html: str) -> int:
    match = re.search(r'data-total="(\d+)"', html)
    assert match, "the page does not say how many pushes the list holds"
    return int(match.group(1))


def account(site_code: str, nth: int = 0) -> PtiAccount:
    """The PTI account of the nth customer renting at the site."""
    site = db.session.scalars(select(Site).where(Site.code == site_code)).one()
    customers = db.session.scalars(select(Rental.customer_id).where(Rental.site_id == site.id)
                                   .order_by(Rental.customer_id).distinct()).all()
    return account_for(customers[nth], site.id)


def attempt(acct: PtiAccount, started_at: datetime, trigger: str = "relay", outcome: str = "ok",
            **columns) -> SyncAttempt:
    row = SyncAttempt(account_id=acct.id, trigger=trigger, started_at=started_at, generation=1, outcome=outcome,
                      duration_ms=columns.pop("duration_ms", 40), **columns)
    db.session.add(row)
    db.session.flush()
    return row


def empty_journal() -> None:
    db.session.execute(delete(SyncAttempt))
    db.session.commit()


@pytest.fixture
def journal(demo_business):
    """One push of each kind of trigger, at two sites, over three days; named by what sets it apart."""
    empty_journal()
    north, north2, river = account("northgate"), account("northgate", 1), account("riverside")
    rows = {
        "staff": attempt(north, DAY + timedelta(hours=9), "staff:staff@demo.test", "ok",
                         operations=["create_user", "assign_unit A12"]),
        "csv": attempt(river, DAY + timedelta(hours=10), "csv:7", "failed", reason="invalid_unit_name"),
        "event": attempt(north2, DAY + timedelta(days=1, hours=8), "unitRental.markOverdue", "retry",
                         reason="pti_unavailable"),
        "relay": attempt(river, DAY + timedelta(days=1, hours=23, minutes=59, seconds=59), "relay", "noop"),
        "bulk": attempt(north, DAY + timedelta(days=2), "bulk", "ok"),
        "sweep": attempt(north2, DAY + timedelta(days=2, hours=1), "sweep", "running", duration_ms=None),
        "import": attempt(river, DAY + timedelta(days=2, hours=2), "import", "noop"),
        "pull": attempt(river, DAY + timedelta(days=2, hours=3), "pull", "ok"),
    }
    db.session.commit()
    return {name: row.id for name, row in rows.items()}


def test_the_journal_says_how_many_pushes_it_holds_and_pages_them_newest_first(client, auth, demo_business):
    empty_journal()
    acct = account("northgate")
    db.session.execute(insert(SyncAttempt), [
        dict(account_id=acct.id, trigger="relay", started_at=DAY + timedelta(minutes=i), generation=1, outcome="ok")
        for i in range(1234)])
    db.session.commit()
    newest_first = db.session.scalars(select(SyncAttempt.id).order_by(SyncAttempt.started_at.desc())).all()
    auth.login("staff")
    html = client.get("/activity/").get_data(as_text=True)
    assert "1,234 pushes, newest first" in html and total(html) == 1234
    assert ids(html) == newest_first[:50]
    assert "Page 1 of 25" in html and "page=2" in html
    second = client.get("/activity/?page=2").get_data(as_text=True)
    assert ids(second) == newest_first[50:100]
    last = client.get("/activity/?page=25").get_data(as_text=True)
    assert ids(last) == newest_first[1200:]
    past = client.get("/activity/?page=26")
    assert past.status_code == 200 and "Page 26 is past the end: the list has 25 pages." in past.get_data(as_text=True)


def test_the_journal_costs_one_count_and_one_page_query(app, client, auth, journal):
    auth.login("manager")
    statements = []

    def seen(conn, cursor, statement, *args):
        if "sync_attempts" in statement:
            statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        response = client.get("/activity/?outcome=ok&from=2025-03-10", headers=HTMX)
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert response.status_code == 200 and total(response.get_data(as_text=True)) == 3
    assert len(statements) == 2 and "count(" in statements[0].lower()


NARROWED = [  # query, the pushes of the `journal` fixture it keeps
    ("trigger=staff", {"staff"}),
    ("trigger=csv", {"csv"}),
    ("trigger=webhook", {"event"}),
    ("trigger=relay", {"relay"}),
    ("trigger=bulk", {"bulk"}),
    ("trigger=sweep", {"sweep"}),
    ("trigger=import", {"import", "pull"}),
    ("outcome=ok", {"staff", "bulk", "pull"}),
    ("outcome=failed", {"csv"}),
    ("outcome=retry", {"event"}),
    ("outcome=running", {"sweep"}),
    ("outcome=noop", {"relay", "import"}),
    ("from=2025-03-11", {"event", "relay", "bulk", "sweep", "import", "pull"}),
    ("to=2025-03-11", {"staff", "csv", "event", "relay"}),  # the "to" day is included to its last second
    ("from=2025-03-11&to=2025-03-11", {"event", "relay"}),
    ("from=2025-03-11&outcome=noop", {"relay", "import"}),
    ("trigger=import&outcome=noop", {"import"}),
]


def test_each_filter_narrows_the_journal(client, auth, journal):
    auth.login("staff")
    for query, expected in NARROWED:
        html = client.get(f"/activity/?{query}").get_data(as_text=True)
        assert set(ids(html)) == {journal[name] for name in expected}, query
        assert total(html) == len(expected), query
        assert f"{len(expected)} push{'es' if len(expected) != 1 else ''} matching the filters, newest first" in html


def test_the_site_and_customer_filters_narrow_the_journal(client, auth, journal):
    river = db.session.scalars(select(Site).where(Site.code == "riverside")).one()
    north = account("northgate")
    customer = db.session.get(Customer, north.customer_id)
    auth.login("staff")
    html = client.get(f"/activity/?site={river.id}").get_data(as_text=True)
    assert set(ids(html)) == {journal[n] for n in ("csv", "relay", "import", "pull")}
    assert f'<option value="{river.id}" selected>' in html
    mine = {journal["staff"], journal["bulk"]}
    for typed in (str(customer.id), customer.email.upper(), customer.last_name, customer.name, customer.sg_id):
        html = client.get("/activity/", query_string={"customer": typed}).get_data(as_text=True)
        assert set(ids(html)) == mine, typed
    page = client.get(f"/customers/{customer.id}").get_data(as_text=True)
    assert f'href="/activity/?customer={customer.id}"' in page  # the customer's page links to their pushes
    html = client.get("/activity/", query_string={"customer": customer.last_name, "site": river.id})
    assert ids(html.get_data(as_text=True)) == []
    assert "No push matches these filters." in html.get_data(as_text=True)


def test_a_filter_answers_htmx_with_both_lists_only(client, auth, journal):
    auth.login("staff")
    response = client.get("/activity/?outcome=failed", headers=HTMX)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "<html" not in html and 'id="activity-filters"' not in html
    assert ids(html) == [journal["csv"]] and "Audit log" in html
    assert "PTI does not accept this unit name" in html  # the reason in words


UNREADABLE = [  # query, what the page says
    ("page=abc", "The page must be a number of 1 or more, not “abc”."),
    ("page=0", "The page must be a number of 1 or more, not “0”."),
    ("page=²", "The page must be a number of 1 or more, not “²”."),
    ("page=99999999999999999999", "The page must be a number of 1 or more, not “99999999999999999999”."),
    ("audit_page=-1", "The page must be a number of 1 or more, not “-1”."),
    ("outcome=exploded", "“exploded” is not an outcome: choose one of OK, No change needed"),
    ("trigger=carrier-pigeon", "“carrier-pigeon” is not a kind of trigger: choose one of Staff action"),
    ("site=north", "“north” is not a site: choose one from the list."),
    ("site=9999", "There is no site number 9999: choose one from the list."),
    ("site=99999999999999999999", "“99999999999999999999” is not a site: choose one from the list."),
    ("from=2025-13-01", "The “from” day “2025-13-01” is not a date: give it as YYYY-MM-DD"),
    ("to=yesterday", "The “to” day “yesterday” is not a date"),
    ("from=2025-03-12&to=2025-03-10", "The “from” day (2025-03-12) is after the “to” day (2025-03-10): swap them."),
]


def test_a_filter_the_page_cannot_read_is_said_on_the_page_never_a_500(client, auth, journal):
    auth.login("staff")
    for query, said in UNREADABLE:
        for headers in ({}, HTMX):
            response = client.get(f"/activity/?{query}", headers=headers)
            html = response.get_data(as_text=True)
            assert response.status_code == 422, query  # base.html's htmx-config swaps a 422 in: the message shows
            assert said in html and 'role="alert"' in html, query
            if "audit_page" not in query:
                assert ids(html) == [] and "Export these" not in html, query
        if "page" not in query:
            export = client.get(f"/activity/export.csv?{query}")
            assert export.status_code == 422 and said in export.get_data(as_text=True), query
    last_day = client.get("/activity/?to=9999-12-31")  # the last day there is: no upper bound, no overflow
    assert last_day.status_code == 200 and total(last_day.get_data(as_text=True)) == len(journal)
    for customer in ("99999999999999999999", "%", "'; drop table sync_attempts; --"):  # read as text, harmlessly
        response = client.get("/activity/", query_string={"customer": customer})
        assert response.status_code == 200, customer


def test_the_export_link_carries_the_filters(client, auth, journal):
    river = db.session.scalars(select(Site).where(Site.code == "riverside")).one()
    auth.login("support")
    html = client.get(f"/activity/?site={river.id}&outcome=noop&from=2025-03-11&to=&page=1&audit_page=1")
    link = re.search(r'<a href="([^"]+)" data-export>Export these 2 rows as CSV</a>', html.get_data(as_text=True))
    assert link, "no export link with the count"
    assert link.group(1).replace("&amp;", "&") == f"/activity/export.csv?site={river.id}&outcome=noop&from=2025-03-11"


def export_rows(client, query: str = "") -> list[dict[str, str]]:
    response = client.get(f"/activity/export.csv{query}")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    assert response.headers["Content-Disposition"].startswith('attachment; filename="sync-journal-')
    body = response.get_data(as_text=True)
    assert body.startswith("\ufeff")
    lines = list(csv.reader(io.StringIO(body.removeprefix("\ufeff"))))
    assert tuple(lines[0]) == activity.EXPORT_COLUMNS
    return [dict(zip(lines[0], line, strict=True)) for line in lines[1:]]


def test_the_export_holds_the_filtered_journal_newest_first(client, auth, journal):
    staff = db.session.get(SyncAttempt, journal["staff"])
    customer = staff.account.customer
    auth.login("manager")
    rows = export_rows(client)
    assert len(rows) == len(journal)
    assert [r["trigger"] for r in rows] == ["pull", "import", "sweep", "bulk", "relay", "unitRental.markOverdue",
                                            "csv:7", "staff:staff@demo.test"]
    assert rows[-1] == {"started_at": "2025-03-10T09:00:00Z", "site_code": "northgate",
                        "customer_sg_id": customer.sg_id, "customer_name": customer.name,
                        "trigger": "staff:staff@demo.test", "operations": "create_user; assign_unit A12",
                        "outcome": "ok", "reason": "", "duration_ms": "40"}
    assert export_rows(client, "?outcome=failed") == [{
        "started_at": "2025-03-10T10:00:00Z", "site_code": "riverside",
        "customer_sg_id": db.session.get(SyncAttempt, journal["csv"]).account.customer.sg_id,
        "customer_name": db.session.get(SyncAttempt, journal["csv"]).account.customer.name,
        "trigger": "csv:7", "operations": "", "outcome": "failed", "reason": "invalid_unit_name",
        "duration_ms": "40"}]
    assert [r["trigger"] for r in export_rows(client, "?from=2025-03-11&to=2025-03-11")] == [
        "relay", "unitRental.markOverdue"]
    assert [r["trigger"] for r in export_rows(client, f"?customer={customer.id}&trigger=bulk")] == ["bulk"]
    assert export_rows(client, "?outcome=failed&site=" + str(staff.account.site_id)) == []


def test_the_export_escapes_formulas_and_never_holds_an_access_code(client, auth, journal):
    staff = db.session.get(SyncAttempt, journal["staff"])
    customer, acct = staff.account.customer, staff.account
    customer.first_name, customer.last_name = "=HYPERLINK(\"http://evil.example\")", ""
    customer.pti_access_code, acct.access_code = CODE, CODE
    staff.trigger, staff.operations = "@SUM(A1)", ["+cmd", "set_code"]
    db.session.commit()
    auth.login("staff")
    response = client.get("/activity/export.csv")
    body = response.get_data(as_text=True)
    assert str(CODE) not in body
    row = next(r for r in export_rows(client) if r["customer_sg_id"] == customer.sg_id and r["outcome"] == "ok"
               and r["started_at"].startswith("2025-03-10"))
    assert row["customer_name"] == "'=HYPERLINK(\"http://evil.example\")"
    assert row["trigger"] == "'@SUM(A1)" and row["operations"] == "'+cmd; set_code"
    assert str(CODE) not in client.get("/activity/").get_data(as_text=True)


def test_the_export_streams_the_journal_in_chunks_each_row_once(client, auth, journal, monkeypatch):
    acct = account("riverside")
    same_instant = DAY + timedelta(days=5)
    for _ in range(5):  # ties on started_at: the id keeps the order, and the chunk boundary splits them
        attempt(acct, same_instant, "sweep", "ok")
    db.session.commit()
    monkeypatch.setattr(activity, "EXPORT_CHUNK", 3)
    auth.login("staff")
    response = client.get("/activity/export.csv")
    assert response.is_streamed
    newest_first = db.session.scalars(select(SyncAttempt.started_at).order_by(SyncAttempt.started_at.desc(),
                                                                             SyncAttempt.id.desc())).all()
    assert [r["started_at"] for r in export_rows(client)] == [t.isoformat() + "Z" for t in newest_first]
    assert len(newest_first) == len(journal) + 5


def test_the_audit_log_says_its_count_and_pages_on_its_own(client, auth, journal):
    auth.login("manager")  # logging in is audited too: the log is emptied after
    db.session.execute(delete(AuditEntry))
    db.session.execute(insert(AuditEntry), [dict(actor="staff@demo.test", action=f"resync {i}", at=DAY)
                                            for i in range(60)])
    db.session.commit()
    newest_first = db.session.scalars(select(AuditEntry.id).order_by(AuditEntry.id.desc())).all()
    html = client.get("/activity/?outcome=noop").get_data(as_text=True)
    assert "60 entries, newest first" in html and "Page 1 of 2" in html
    assert re.findall(r'data-audit-id="(\d+)"', html) == [str(i) for i in newest_first[:50]]
    assert "audit_page=2" in html and "outcome=noop" in html
    second = client.get("/activity/?outcome=noop&audit_page=2").get_data(as_text=True)
    assert re.findall(r'data-audit-id="(\d+)"', second) == [str(i) for i in newest_first[50:]]
    assert total(second) == 2  # the journal keeps its filter while the audit log turns its page


@pytest.mark.parametrize("role", ["admin", "manager", "staff", "support"])
def test_every_role_reads_and_exports_the_activity(client, auth, journal, role):
    auth.login(role)
    assert client.get("/activity/").status_code == 200
    assert len(export_rows(client)) == len(journal)

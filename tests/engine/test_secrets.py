"""R14: a full run in-process, every log line and every page scanned for PTI credentials and full access codes;
`flask keys rotate` end to end.

The stack: the product, the Storeganise simulator (in-process, as in tests/storeganise) and the PTI simulator (a live
thread, as in tests/engine). Secret: each site's PTI password (also the wrong one the operator typed for Hilltop),
its site key and the ENCRYPTION_KEYS themselves. Not secret, so not scanned: PTI usernames (an account name, like an
e-mail address: it opens nothing without the password, and an operator may need to see which login is used).
"""

from __future__ import annotations

import logging
import re

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from dashboard.clients import TRANSPORT_EXTENSION
from dashboard.crypto import CredentialError, unseal
from dashboard.extensions import db
from dashboard.models import Customer, PtiAccount, Rental, Site, Upload
from dashboard.storeganise import StoreganiseClient
from jobs.reconcile import reconcile_batch
from sim.demo_data import DEMO_SITES
from sim.storeganise import DEMO_API_KEY
from sim.storeganise import create_app as create_sg_sim
from tests.conftest import Auth
from tests.test_security import ACCESS, PUBLIC

SG_API_URL = "http://sg.test/api/v1/admin"


def secrets_of(app) -> dict[str, str]:
    found = {}
    for site in DEMO_SITES:
        found[f"{site.code} password"] = site.pti_password
        found[f"{site.code} password typed in Storeganise"] = site.storeganise_password
        found[f"{site.code} site key"] = site.pti_site_key
    for i, key in enumerate(app.config["ENCRYPTION_KEYS"].split(",")):
        found[f"encryption key {i}"] = key.strip()
    return found


def codes_ever(sim) -> set[int]:
    """Every access code the product ever held or sent: the accounts' and every code in PTI's call log and users."""
    codes = {a.access_code for a in db.session.scalars(select(PtiAccount)) if a.access_code}
    codes |= {c["access_code"] for c in sim.calls() if isinstance(c.get("access_code"), int)}
    codes |= {u["access_code"] for s in sim.state()["sites"].values() for u in s["users"]}
    return codes


def push_everything(site_ids=None) -> dict:
    """Push every account owed a push, site by site, as the bulk batches would; their outcomes."""
    db.session.expire_all()
    owed = db.session.scalars(select(PtiAccount).where(PtiAccount.generation > PtiAccount.synced_generation)).all()
    outcomes: dict = {}
    for site_id in sorted({a.site_id for a in owed}):
        for outcome, n in reconcile_batch([a.id for a in owed if a.site_id == site_id], "r14").items():
            outcomes[outcome] = outcomes.get(outcome, 0) + n
    return outcomes


@pytest.fixture
def storeganise(app, pti):
    """The Storeganise simulator in-process, its sites pointing at the live PTI simulator."""
    sg_app = create_sg_sim(webhook_url=None, deliver_webhooks=False, pti_base_url=pti.url)
    app.config.update(STOREGANISE_API_URL=SG_API_URL, STOREGANISE_API_KEY=DEMO_API_KEY)
    app.extensions[TRANSPORT_EXTENSION] = httpx.WSGITransport(app=sg_app)
    yield sg_app
    app.extensions.pop(TRANSPORT_EXTENSION, None)
    sg_app.extensions["storeganise_sim"].close()


def pages(app, client) -> dict[str, str]:
    """Every page the logged-in user may GET, for every object it can be about."""
    ids = {"customer_id": db.session.scalars(select(Customer.id)).all(),
           "rental_id": db.session.scalars(select(Rental.id)).all(),
           "site_id": db.session.scalars(select(Site.id)).all(),
           "upload_id": db.session.scalars(select(Upload.id)).all()}
    seen = {}
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.endpoint == "static":
            continue
        (arg,) = rule.arguments or {None}
        for value in ids[arg] if arg else [None]:
            url = rule.rule.replace(f"<int:{arg}>", str(value)) if arg else rule.rule
            response = client.get(url)
            if ACCESS[rule.endpoint] is not PUBLIC:
                assert response.status_code in (200, 403), (url, response.status_code)
            seen[url] = response.get_data(as_text=True)
    return seen


def leaks(text: str, secrets: dict[str, str], codes: set[int]) -> list[str]:
    found = [name for name, value in secrets.items() if value and value in text]
    for code in codes:
        match = re.search(rf"\b{code}\b", text)  # as a word: not inside a hex id or a longer number
        if match:
            found.append(f"code {code}: ...{text[max(0, match.start() - 80):match.end() + 40]}...")
    return found


def test_r14_no_log_line_or_page_of_a_full_run_shows_a_pti_credential_or_an_access_code(
        app, client, demo_users, storeganise, pti, caplog):
    from dashboard.mirror.importer import import_business

    caplog.set_level(logging.DEBUG)  # every logger, every level
    with StoreganiseClient(SG_API_URL, api_key=DEMO_API_KEY, transport=app.extensions[TRANSPORT_EXTENSION],
                           sleep=lambda s: None) as sg:
        import_business(sg)
    from dashboard.engine.intent import mark_site_dirty

    by_site: dict[int, set[int]] = {}
    for r in db.session.scalars(select(Rental)):
        if r.active:
            by_site.setdefault(r.site_id, set()).add(r.customer_id)
    for site_id, customers in by_site.items():
        mark_site_dirty(site_id, customers)
    db.session.commit()
    first = push_everything()
    assert first.get("ok", 0) >= 80, first  # Hilltop's wrong password parks its customers: that is logged too

    staff = Auth(client)
    staff.login("staff")
    token = staff.csrf_token("/")
    account = db.session.scalars(select(PtiAccount).where(PtiAccount.pti_user_id.is_not(None))
                                 .order_by(PtiAccount.id)).first()
    customer = account.customer
    # A rental of theirs whose unit PTI has: the demo rents out units PTI refuses the name of ("LOCKER 12") too, and a
    # customer's rentals come in no set order (on PostgreSQL, the order their rows were last written in).
    in_pti = {unit["name"] for unit in pti.site(account.site.pti_site_code)["units"]}
    rental = min((r for r in customer.rentals if r.active and r.unit.pti_unit_name in in_pti), key=lambda r: r.id)
    revealed = f"/customers/{customer.id}/reveal-code/{account.id}"
    actions = [f"/rentals/{rental.id}/resync", f"/rentals/{rental.id}/suspend", f"/rentals/{rental.id}/unsuspend",
               f"/customers/{customer.id}/resync", f"/customers/{customer.id}/regenerate-code",
               f"/customers/{customer.id}/access", f"/sites/{account.site_id}/resync",
               f"/sites/{account.site_id}/requeue-failed"]
    answers = {}
    for url in actions:
        response = client.post(url, data={"csrf_token": token})
        assert response.status_code == 302, url
        answers[url] = response.get_data(as_text=True)
        push_everything()
    response = client.post(revealed, data={"csrf_token": token})
    assert response.status_code == 200 and str(db.session.get(PtiAccount, account.id).access_code) in \
        response.get_data(as_text=True)  # the one answer allowed to show a code: to its actor, not scanned
    suspended = pti.unit(account.site.pti_site_code, rental.unit.pti_unit_name)
    assert suspended["locked"] is rental.overlocked  # the actions reached PTI

    seen = {f"staff {url}": html for url, html in pages(app, client).items()}
    staff.logout()
    Auth(client).login("admin")
    seen.update({f"admin {url}": html for url, html in pages(app, client).items()})
    seen.update(answers)

    secrets, codes = secrets_of(app), codes_ever(pti)
    assert len(codes) >= 80 and len(seen) >= 300
    log = "\n".join(caplog.text.splitlines())
    assert [r for r in caplog.records if r.levelno >= logging.WARNING], "the run logged no warning: too quiet to prove"
    assert leaks(log, secrets, codes) == []
    assert {url: found for url, html in seen.items() if (found := leaks(html, secrets, codes))} == {}


def test_keys_rotate_re_encrypts_every_site_so_only_the_new_key_reads_it_and_pushes_still_work(
        app, business, pti, runner):
    from dashboard.engine.intent import mark_dirty
    from dashboard.engine.reconcile import reconcile

    old = app.config["ENCRYPTION_KEYS"]
    new = Fernet.generate_key().decode()
    sites = db.session.scalars(select(Site).where(Site.pti_credentials.is_not(None))).all()
    assert len(sites) == 3
    before = {s.id: s.pti_credentials for s in sites}
    plain = {s.id: unseal(old, s.sg_id, s.pti_credentials) for s in sites}

    app.config["ENCRYPTION_KEYS"] = f"{new},{old}"
    result = runner.invoke(args=["keys", "rotate"])
    assert result.exit_code == 0 and "Re-encrypted the PTI credentials of 3 sites." in result.output
    db.session.expire_all()
    for site in db.session.scalars(select(Site).where(Site.id.in_(before))):
        assert site.pti_credentials != before[site.id]
        assert unseal(new, site.sg_id, site.pti_credentials) == plain[site.id]
        with pytest.raises(CredentialError):
            unseal(old, site.sg_id, site.pti_credentials)

    app.config["ENCRYPTION_KEYS"] = new  # the old key retired: the product pushes with the rotated credentials
    customer = next(c for c in db.session.scalars(select(Customer).order_by(Customer.id))
                    if any(r.active and r.site.code == "northgate" and r.unit.pti_unit_name
                           and " " not in r.unit.pti_unit_name for r in c.rentals))
    northgate = db.session.scalar(select(Site).where(Site.code == "northgate"))
    account = mark_dirty(customer, northgate.id)
    db.session.commit()
    assert reconcile(account.id, "after-rotate").outcome == "ok"
    assert pti.user_with_marker("NG01", customer.sg_id)["access_code"] == account.access_code

    app.config["ENCRYPTION_KEYS"] = old  # and the old key alone can no longer push
    account = mark_dirty(customer, northgate.id)
    db.session.commit()
    result = reconcile(account.id, "old-key-only")
    assert (result.outcome, result.reason) == ("failed", "credentials_unreadable"), result

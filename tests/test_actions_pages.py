"""Staff actions from the dashboard: htmx fragments, audit entries, codes revealed only on purpose."""

from sqlalchemy import select

from dashboard.engine.intent import account_for
from dashboard.extensions import db
from dashboard.models import AuditEntry, Customer, PtiAccount, Rental

HTMX = {"HX-Request": "true"}


def occupied_rental() -> Rental:
    return db.session.scalars(select(Rental).where(Rental.state == "occupied").order_by(Rental.id)).first()


def test_staff_suspend_a_rental_from_its_page(client, auth, demo_business):
    auth.login("staff")
    rental = occupied_rental()
    rental.overlocked = False
    db.session.commit()
    token = auth.csrf_token(f"/rentals/{rental.id}")
    response = client.post(f"/rentals/{rental.id}/suspend", data={"csrf_token": token}, headers=HTMX)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and response.headers["HX-Trigger"] == "syncChanged"
    assert "<html" not in html and 'id="rental-sync"' in html and "Suspension queued" in html
    assert 'data-sync-state="pending"' in html and 'hx-trigger="every 1s"' in html  # polls until PTI has it
    db.session.expire_all()
    assert db.session.get(Rental, rental.id).overlocked is True
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "suspend")).one()
    assert (entry.actor, entry.target_id) == ("staff@demo.test", rental.sg_id)


def test_the_sync_region_stops_polling_once_settled(client, auth, demo_business):
    auth.login("manager")
    rental = occupied_rental()
    rental.sync_state = "in_sync"
    db.session.commit()
    response = client.get(f"/rentals/{rental.id}/sync", headers=HTMX)
    assert response.status_code == 286 and "every 1s" not in response.get_data(as_text=True)


def test_without_htmx_an_action_redirects_back_with_a_message(client, auth, demo_business):
    auth.login("support")
    rental = occupied_rental()
    token = auth.csrf_token(f"/rentals/{rental.id}")
    response = client.post(f"/rentals/{rental.id}/resync", data={"csrf_token": token})
    assert response.status_code == 302
    assert "Push to PTI queued." in client.get(response.headers["Location"]).get_data(as_text=True)


def test_codes_are_masked_and_revealing_one_is_audited(client, auth, demo_business):
    customer = db.session.scalars(select(Customer).order_by(Customer.id)).first()
    account = account_for(customer, customer.rentals[0].site_id)
    account.access_code = 583920
    db.session.commit()
    auth.login("staff")
    page = client.get(f"/customers/{customer.id}").get_data(as_text=True)
    assert "583920" not in page and "•••920" in page
    token = auth.csrf_token(f"/customers/{customer.id}")
    revealed = client.post(f"/customers/{customer.id}/reveal-code/{account.id}", data={"csrf_token": token},
                           headers=HTMX)
    assert "583920" in revealed.get_data(as_text=True)
    assert revealed.headers["Cache-Control"] == "no-store"
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "reveal code")).one()
    assert (entry.actor, entry.target_id) == ("staff@demo.test", customer.sg_id)


def test_managers_cannot_reveal_codes(client, auth, demo_business):
    customer = db.session.scalars(select(Customer)).first()
    account = account_for(customer, customer.rentals[0].site_id)
    account.access_code = 583920
    db.session.commit()
    auth.login("manager")
    token = auth.csrf_token("/")
    response = client.post(f"/customers/{customer.id}/reveal-code/{account.id}", data={"csrf_token": token})
    assert response.status_code == 403 and "583920" not in response.get_data(as_text=True)


def test_a_bad_access_level_is_refused_with_the_reason_and_nothing_changes(client, auth, demo_business):
    customer = db.session.scalars(select(Customer)).first()
    auth.login("staff")
    token = auth.csrf_token(f"/customers/{customer.id}")
    response = client.post(f"/customers/{customer.id}/access", data={"csrf_token": token, "level": "0"},
                           headers=HTMX)
    assert response.status_code == 422
    assert "Access level: Number must be at least 1." in response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Customer, customer.id).access_level_override is None
    assert db.session.scalar(select(PtiAccount).where(PtiAccount.customer_id == customer.id)) is None


def test_regenerate_code_from_the_page_queues_a_new_code(client, auth, demo_business):
    customer = db.session.scalars(select(Customer)).first()
    account = account_for(customer, customer.rentals[0].site_id)
    account.access_code = 583920
    db.session.commit()
    auth.login("admin")
    token = auth.csrf_token(f"/customers/{customer.id}")
    response = client.post(f"/customers/{customer.id}/regenerate-code", data={"csrf_token": token}, headers=HTMX)
    assert response.status_code == 200 and "New access code queued" in response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(PtiAccount, account.id).access_code not in (None, 583920)

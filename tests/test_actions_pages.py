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


FOREIGN = [
    {"id": "1001", "first_name": "By", "last_name": "Hand", "email": "same@example.com", "code": "•••920",
     "access_level": 1, "time_zone": 1, "units": ["Z901"], "matched_by": ["e-mail"]},
    {"id": "1002", "first_name": "Also", "last_name": "Hand", "email": "same@example.com", "code": "•••921",
     "access_level": 2, "time_zone": 3, "units": [], "matched_by": ["e-mail", "access code"]},
]


def in_conflict() -> PtiAccount:
    """A customer parked because PTI has users with their e-mail that PTI Sync did not create."""
    customer = db.session.scalars(select(Customer).order_by(Customer.id)).first()
    account = account_for(customer, customer.rentals[0].site_id)
    account.access_code, account.state, account.generation = 583456, "failed", 2
    account.last_error, account.foreign_pti_users = "foreign_pti_user", FOREIGN
    db.session.commit()
    return account


def test_a_conflict_shows_the_customer_and_each_foreign_pti_user_side_by_side_codes_masked(client, auth,
                                                                                           demo_business):
    account = in_conflict()
    auth.login("manager")
    page = client.get(f"/customers/{account.customer_id}").get_data(as_text=True)
    assert 'id="conflict-' in page and "PTI user 1001" in page and "PTI user 1002" in page
    assert "•••456" in page and "•••920" in page and "•••921" in page and "583456" not in page
    assert "Z901" in page and "e-mail and access code" in page
    assert "/adopt" not in page and "/separate" not in page  # managers only read


def test_staff_adopt_the_pti_user_they_chose_and_the_decision_is_audited_and_pushed(client, auth, demo_business):
    account = in_conflict()
    auth.login("staff")
    page = client.get(f"/customers/{account.customer_id}").get_data(as_text=True)
    assert page.count("Adopt this PTI user") == 2 and "hx-confirm=\"Adopt PTI user 1002" in page
    token = auth.csrf_token(f"/customers/{account.customer_id}")
    response = client.post(f"/customers/{account.customer_id}/accounts/{account.id}/adopt",
                           data={"csrf_token": token, "pti_user_id": "1002"}, headers=HTMX)
    assert response.status_code == 200 and "Adoption queued" in response.get_data(as_text=True)
    db.session.expire_all()
    account = db.session.get(PtiAccount, account.id)
    assert (account.adopt_pti_user_id, account.separate_from_foreign) == ("1002", False)
    assert account.state == "pending" and account.generation == 3
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "adopt pti user")).one()
    assert (entry.actor, entry.target_id, entry.detail["pti_user_id"]) == (
        "staff@demo.test", account.customer.sg_id, "1002")


def test_support_create_a_separate_user_and_the_decision_is_audited_and_pushed(client, auth, demo_business):
    account = in_conflict()
    auth.login("support")
    token = auth.csrf_token(f"/customers/{account.customer_id}")
    response = client.post(f"/customers/{account.customer_id}/accounts/{account.id}/separate",
                           data={"csrf_token": token}, headers=HTMX)
    assert response.status_code == 200 and "Separate PTI user queued" in response.get_data(as_text=True)
    db.session.expire_all()
    account = db.session.get(PtiAccount, account.id)
    assert (account.adopt_pti_user_id, account.separate_from_foreign, account.state) == (None, True, "pending")
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "create separate pti user")).one()
    assert (entry.actor, entry.detail["pti_user_ids"]) == ("support@demo.test", ["1001", "1002"])


def test_adopting_a_pti_user_that_was_not_shown_is_refused_and_nothing_changes(client, auth, demo_business):
    account = in_conflict()
    auth.login("admin")
    token = auth.csrf_token(f"/customers/{account.customer_id}")
    response = client.post(f"/customers/{account.customer_id}/accounts/{account.id}/adopt",
                           data={"csrf_token": token, "pti_user_id": "4242"}, headers=HTMX)
    assert response.status_code == 422 and "Choose one of the PTI users shown" in response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(PtiAccount, account.id).adopt_pti_user_id is None
    assert db.session.scalars(select(AuditEntry).where(AuditEntry.action == "adopt pti user")).first() is None


def test_a_decision_needs_a_conflict_to_decide(client, auth, demo_business):
    account = in_conflict()
    account.last_error, account.foreign_pti_users = None, None
    db.session.commit()
    auth.login("staff")
    token = auth.csrf_token(f"/customers/{account.customer_id}")
    response = client.post(f"/customers/{account.customer_id}/accounts/{account.id}/separate",
                           data={"csrf_token": token}, headers=HTMX)
    assert response.status_code == 422
    db.session.expire_all()
    assert db.session.get(PtiAccount, account.id).separate_from_foreign is False


def test_managers_cannot_decide_a_conflict(client, auth, demo_business):
    account = in_conflict()
    auth.login("manager")
    token = auth.csrf_token("/")
    for action, data in (("adopt", {"pti_user_id": "1001"}), ("separate", {})):
        response = client.post(f"/customers/{account.customer_id}/accounts/{account.id}/{action}",
                               data={"csrf_token": token, **data})
        assert response.status_code == 403
    db.session.expire_all()
    assert (db.session.get(PtiAccount, account.id).adopt_pti_user_id,
            db.session.get(PtiAccount, account.id).separate_from_foreign) == (None, False)


def test_a_decision_without_a_csrf_token_is_refused(client, auth, demo_business):
    account = in_conflict()
    auth.login("staff")
    response = client.post(f"/customers/{account.customer_id}/accounts/{account.id}/adopt",
                           data={"pti_user_id": "1001"})
    assert response.status_code == 400
    db.session.expire_all()
    assert db.session.get(PtiAccount, account.id).adopt_pti_user_id is None


def test_a_decision_about_another_customers_account_is_not_found(client, auth, demo_business):
    account = in_conflict()
    other = db.session.scalars(select(Customer).where(Customer.id != account.customer_id)).first()
    auth.login("staff")
    token = auth.csrf_token(f"/customers/{other.id}")
    response = client.post(f"/customers/{other.id}/accounts/{account.id}/separate", data={"csrf_token": token})
    assert response.status_code == 404


def known_lists(customer: Customer) -> None:
    """As the engine leaves a site once it has read PTI's lists there."""
    site = next(r.site for r in customer.rentals if r.state == "occupied")
    site.pti_access_levels = [{"id": 1, "name": "All Hours Access"}, {"id": 2, "name": "Business Hours Access"}]
    site.pti_time_zones = [{"id": 1, "name": "24 hours"}, {"id": 3, "name": "Weekdays 7am-7pm"}]
    account_for(customer, site.id)
    db.session.commit()


def test_the_override_form_offers_pti_s_own_lists_once_they_are_known(client, auth, demo_business):
    customer = occupied_rental().customer
    known_lists(customer)
    auth.login("staff")
    html = client.get(f"/customers/{customer.id}").get_data(as_text=True)
    assert '<select id="level"' in html and "2 · Business Hours Access" in html and "3 · Weekdays 7am-7pm" in html
    assert 'inputmode="numeric"' not in html


def set_access_as_staff(client, auth, customer: Customer, level: str, zone: str):
    auth.login("staff")
    token = auth.csrf_token(f"/customers/{customer.id}")
    return client.post(f"/customers/{customer.id}/access", data={"csrf_token": token, "level": level, "zone": zone},
                       headers=HTMX)


def test_a_level_pti_does_not_list_is_refused_naming_the_ones_it_has(client, auth, demo_business):
    customer = occupied_rental().customer
    known_lists(customer)
    response = set_access_as_staff(client, auth, customer, "7", "")
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "PTI has no access level 7" in html and "2 (Business Hours Access)" in html
    db.session.expire_all()
    assert db.session.get(Customer, customer.id).access_level_override is None


def test_a_level_from_pti_s_list_is_saved(client, auth, demo_business):
    customer = occupied_rental().customer
    known_lists(customer)
    response = set_access_as_staff(client, auth, customer, "2", "3")
    assert response.status_code == 200
    db.session.expire_all()
    saved = db.session.get(Customer, customer.id)
    assert (saved.access_level_override, saved.zone_override) == (2, 3)

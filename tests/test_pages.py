"""The pages staff and managers read: every site on the Overview, rentals with their sync state."""

import re

from dashboard.extensions import db
from dashboard.models import Rental, Site, SyncState


def test_overview_lists_every_site_as_a_tile(client, auth, demo_business):
    auth.login("manager")
    html = client.get("/").get_data(as_text=True)
    for site in db.session.query(Site):
        assert f'data-site-id="{site.id}"' in html
        assert site.title in html


def test_overview_counts_failed_rentals_per_site(client, auth, demo_business):
    rental = db.session.query(Rental).filter(Rental.state == "occupied").first()
    rental.sync_state, rental.last_error = SyncState.FAILED, "invalid_unit_name"
    db.session.commit()
    auth.login("manager")
    html = client.get("/").get_data(as_text=True)
    assert "Needs attention" in html


def test_rentals_carry_the_html_hooks_tests_rely_on(client, auth, demo_business):
    auth.login("staff")
    html = client.get("/rentals/").get_data(as_text=True)
    rental = db.session.query(Rental).order_by(Rental.site_id).first()
    assert html.count("data-rental-id=") == 50
    assert 'data-sync-state="pending"' in html
    page = client.get(f"/rentals/{rental.id}").get_data(as_text=True)
    assert f'data-rental-id="{rental.id}"' in page and f'data-sync-state="{rental.sync_state}"' in page


def test_rental_search_answers_htmx_with_the_results_fragment_only(client, auth, demo_business):
    auth.login("staff")
    rental = db.session.query(Rental).first()
    response = client.get(f"/rentals/?q={rental.unit.name}", headers={"HX-Request": "true",
                                                                        "HX-Target": "rental-results"})
    html = response.get_data(as_text=True)
    assert "<html" not in html and "<table" in html
    assert f'data-rental-id="{rental.id}"' in html


def test_failed_rental_shows_the_problem_and_its_fix(client, auth, demo_business):
    rental = db.session.query(Rental).first()
    rental.sync_state, rental.last_error = SyncState.FAILED, "invalid_unit_name"
    db.session.commit()
    auth.login("staff")
    html = client.get(f"/rentals/{rental.id}").get_data(as_text=True)
    assert "PTI does not accept this unit name" in html and "at most 10 characters" in html


def test_site_page_never_shows_credentials(client, auth, demo_business):
    auth.login("admin")
    site = db.session.query(Site).filter_by(code="northgate").one()
    html = client.get(f"/sites/{site.id}").get_data(as_text=True)
    assert "ng-pass-41" not in html and "ng-site-key-7c1e" not in html
    assert "stored (encrypted, never shown)" in html


def test_every_list_says_how_many_it_holds_and_how_it_is_sorted(client, auth, demo_business):
    from dashboard.models import Customer

    auth.login("admin")
    rentals, customers, sites = (db.session.query(m).count() for m in (Rental, Customer, Site))
    assert f"{rentals:,} rentals, sorted by site, then unit" in client.get("/rentals/").get_data(as_text=True)
    assert f"{customers:,} customers, sorted by last name, then first name" in client.get(
        "/customers/").get_data(as_text=True)
    assert f"{sites} sites, sorted by name." in client.get("/sites/").get_data(as_text=True)
    assert "The latest 0 uploads, newest first." in client.get("/uploads/").get_data(as_text=True)
    unit = db.session.query(Rental).first().unit.name
    searched = client.get(f"/rentals/?q={unit}").get_data(as_text=True)
    assert re.search(r"\b[1-9][\d,]* rentals? matching, sorted by site, then unit", searched)


def test_a_moment_shows_how_long_ago_it_was(app):
    from datetime import timedelta

    from dashboard.models import utcnow
    from dashboard.views import age

    now = utcnow()
    assert age(now) == "just now"
    assert age(now - timedelta(minutes=3, seconds=5)) in ("3 min 5 s ago", "3 min 6 s ago")
    assert age(now - timedelta(hours=2, minutes=10, seconds=30)) == "2 h 10 min ago"
    assert age(now + timedelta(seconds=42, milliseconds=500)) in ("in 42 s", "in 41 s")


def test_times_show_in_the_sites_own_zone_once_an_admin_sets_it(client, auth, demo_business):
    from datetime import datetime

    from dashboard.models import AuditEntry

    site = db.session.query(Site).filter_by(code="northgate").one()
    rental = db.session.query(Rental).filter_by(site_id=site.id).first()
    rental.pti_synced = datetime(2026, 7, 1, 12, 30)  # naive UTC, as the mirror keeps it
    db.session.commit()
    auth.login("admin")
    assert "2026-07-01 12:30 UTC" in client.get(f"/rentals/{rental.id}").get_data(as_text=True)

    token = auth.csrf_token(f"/sites/{site.id}")
    refused = client.post(f"/sites/{site.id}/time-zone", data={"csrf_token": token, "zone": "Mars/Olympus"},
                          headers={"HX-Request": "true"})
    assert refused.status_code == 422 and "is not a time zone" in refused.get_data(as_text=True)
    saved = client.post(f"/sites/{site.id}/time-zone", data={"csrf_token": token, "zone": "Europe/London"},
                        headers={"HX-Request": "true"})
    assert saved.status_code == 200

    page = client.get(f"/rentals/{rental.id}").get_data(as_text=True)
    assert "2026-07-01 13:30 BST" in page  # London in summer
    assert 'datetime="2026-07-01T12:30:00Z"' in page and 'title="2026-07-01 12:30:00 UTC"' in page
    assert 'data-time-zone="Europe/London"' in client.get(f"/sites/{site.id}").get_data(as_text=True)
    entry = db.session.query(AuditEntry).filter_by(action="set site time zone").one()
    assert entry.actor == "admin@demo.test" and entry.detail == {"zone": "Europe/London"}


def test_without_a_site_zone_times_show_in_the_business_zone(app, client, auth, demo_business):
    from datetime import datetime

    site = db.session.query(Site).filter_by(code="northgate").one()
    rental = db.session.query(Rental).filter_by(site_id=site.id).first()
    rental.pti_synced = datetime(2026, 1, 15, 23, 10)
    db.session.commit()
    app.config["TIME_ZONE"] = "America/New_York"
    auth.login("manager")
    page = client.get(f"/rentals/{rental.id}").get_data(as_text=True)
    assert "2026-01-15 18:10 EST" in page
    assert 'id="site-zone"' not in client.get(f"/sites/{site.id}").get_data(as_text=True)  # admins set it

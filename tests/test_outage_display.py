"""The dashboard shows an outage while it lasts: a site whose PTI breaker is open (or half-open, or paused by a 429)
on the Overview tile and the site's page, and a Redis that does not answer as a banner on both."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from dashboard.engine.site_guard import SiteGuard
from dashboard.extensions import db
from dashboard.jobqueue import get_redis
from dashboard.models import Site
from dashboard.pti import PtiRetryableError
from sim.server import free_port


def northgate() -> Site:
    return db.session.scalar(select(Site).where(Site.code == "northgate"))


def trip(site: Site, cooldown: float = 30.0) -> SiteGuard:
    guard = SiteGuard(get_redis(), site.id, threshold=2, cooldown=cooldown)

    def down():
        raise PtiRetryableError("pti_unreachable", operation="get_user")

    for _ in range(2):
        with pytest.raises(PtiRetryableError):
            guard.call("get_user", down)
    return guard


def tile(html: str, site_id: int) -> str:
    match = re.search(rf'<article class="tile tile-(\w+)" data-site-id="{site_id}">(.*?)</article>', html, re.S)
    assert match, f"no tile for site {site_id}"
    return match.group(1) + match.group(2)


def test_a_site_whose_pti_breaker_is_open_says_so_on_the_overview_and_its_page(client, auth, demo_business):
    auth.login("manager")
    site = northgate()
    assert 'data-outage="circuit_open"' not in client.get("/").get_data(as_text=True)

    trip(site)
    overview = client.get("/").get_data(as_text=True)
    assert tile(overview, site.id).startswith("bad")
    assert 'data-outage="circuit_open"' in tile(overview, site.id)
    assert overview.count('data-outage="circuit_open"') == 1, "only the site that is down shows it"
    assert 'data-outage="circuit_open"' in client.get(f"/sites/{site.id}").get_data(as_text=True)


def test_a_half_open_site_shows_until_a_call_succeeds(client, auth, demo_business):
    auth.login("manager")
    site = northgate()
    guard = trip(site, cooldown=0.05)
    get_redis().delete(f"pti-sync:site:{site.id}:breaker-open")  # the pause is over
    assert 'data-outage="half_open"' in client.get(f"/sites/{site.id}").get_data(as_text=True)
    assert guard.call("get_user", lambda: "up") == "up"  # the probe succeeds
    assert "data-outage" not in client.get(f"/sites/{site.id}").get_data(as_text=True)


def test_a_redis_that_does_not_answer_is_a_banner_and_the_pages_still_answer(app, client, auth, demo_business):
    auth.login("manager")
    site = northgate()
    assert 'data-outage="redis"' not in client.get("/").get_data(as_text=True)
    app.config["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    app.extensions.pop("pti_sync_redis", None)
    for path in ("/", f"/sites/{site.id}"):
        page = client.get(path)
        assert page.status_code == 200
        assert 'data-outage="redis"' in page.get_data(as_text=True), path

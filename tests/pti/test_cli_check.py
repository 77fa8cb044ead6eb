"""`flask pti check SITE`: the site check, reading the site's PTI settings from the database."""

from __future__ import annotations

from dashboard.crypto import PtiCredentials, seal
from dashboard.extensions import db
from dashboard.models import Site, Unit
from tests.pti.conftest import SITES


def add_site(app, base_url: str, password: str, unit_names: list[str | None], level: int | None = 1,
             zone: int | None = 1) -> Site:
    seed = SITES["NG01"]
    site = Site(sg_id="sg-northgate", code="northgate", title="Northgate", pti_base_url=base_url, pti_site_code="NG01",
                default_access_level=level, default_zone=zone)
    site.pti_credentials = seal(app.config["ENCRYPTION_KEYS"], site.sg_id,
                                PtiCredentials(seed["site_key"], seed["username"], password))
    db.session.add(site)
    db.session.flush()
    for i, name in enumerate(unit_names):
        db.session.add(Unit(sg_id=f"sg-unit-{i}", site_id=site.id, name=f"U{i}", pti_unit_name=name))
    db.session.commit()
    return site


def test_check_reports_a_healthy_site_and_exits_0(app, runner, sim):
    add_site(app, sim.base_url, SITES["NG01"]["password"], ["A101", "A102", None])
    result = runner.invoke(args=["pti", "check", "northgate"])
    assert result.exit_code == 0, result.output
    assert "it has 5 units" in result.output and "2 of our 3 units match a PTI unit." in result.output
    assert "1 of our units have no PTI Unit Name" in result.output
    assert 'PTI has 2 access levels: 1 "All Hours Access", 2 "Business Hours Access".' in result.output
    assert 'The site\'s PTI zone 1 is PTI\'s "24 hours".' in result.output


def test_check_of_a_site_whose_default_zone_pti_lacks_exits_1_naming_pti_zones(app, runner, sim):
    add_site(app, sim.base_url, SITES["NG01"]["password"], ["A101"], zone=2)
    result = runner.invoke(args=["pti", "check", "northgate"])
    assert result.exit_code == 1
    assert ("The site's PTI zone is 2, but PTI has no time zone 2. Set the site's PTI zone in Storeganise to one of "
            'PTI\'s: 1 "24 hours", 3 "Weekdays 7am-7pm".') in result.output
    assert "Everything needed" not in result.output


def test_check_of_a_site_with_a_wrong_password_exits_1_without_echoing_it(app, runner, sim):
    add_site(app, sim.base_url, "wrong-SECRET", ["A101"])
    result = runner.invoke(args=["pti", "check", "sg-northgate"])
    assert result.exit_code == 1
    assert "PTI refused the site's credentials" in result.output and "wrong-SECRET" not in result.output


def test_check_of_an_unconfigured_or_unknown_site_says_so(app, runner):
    db.session.add(Site(sg_id="sg-bare", code="bare", title="Bare"))
    db.session.commit()
    assert "The site has no PTI connection settings." in runner.invoke(args=["pti", "check", "bare"]).output
    unknown = runner.invoke(args=["pti", "check", "nowhere"])
    assert unknown.exit_code != 0 and "No site 'nowhere'." in unknown.output

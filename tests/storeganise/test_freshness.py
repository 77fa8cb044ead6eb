"""Nothing goes stale: what staff change in Storeganise reaches the mirror (and so PTI) within one pull cycle,
without a manual import, and a value they typed wrong is a visible problem and a task while the rest syncs on."""

from __future__ import annotations

from sqlalchemy import select

from dashboard.clients import site_credentials
from dashboard.extensions import db
from dashboard.mirror.importer import import_business, pull_changes
from dashboard.models import OpenProblem, Rental, Site, Unit
from jobs.events import handle_delivery
from jobs.writeback import report_problems
from tests.conftest import flush_redis

from .conftest import reconcile_requests


def fresh(model, sg_id):
    db.session.expire_all()
    return db.session.scalar(select(model).where(model.sg_id == sg_id))


def imported(sg, redis_url):
    import_business(sg)
    flush_redis(redis_url)


def rented_unit(sim) -> tuple[dict, dict]:
    rental = next(r for r in sim.rentals.values() if r["state"] == "occupied"
                  and sim.units[r["unitId"]]["customFields"].get("pti_id") not in (None, "NONE")
                  and " " not in sim.units[r["unitId"]]["customFields"]["pti_id"])
    return sim.units[rental["unitId"]], rental


def test_a_site_password_edited_in_storeganise_is_picked_up_by_the_next_pull(app, sg, sim, redis_url):
    imported(sg, redis_url)
    site = next(s for s in sim.sites.values() if s["code"] == "hilltop")
    sim.edit("site", site["id"], {"pti_password": "corrected-password"})  # Storeganise sends no webhook for a site
    assert site_credentials(fresh(Site, site["id"])).password != "corrected-password"
    pull_changes(sg)
    site_row = fresh(Site, site["id"])
    assert site_credentials(site_row).password == "corrected-password"
    pushed = {account_id for _, account_id, _ in reconcile_requests()}
    assert pushed and pushed == {a.id for a in site_accounts(site_row)}


def site_accounts(site: Site):
    from dashboard.models import PtiAccount

    return db.session.scalars(select(PtiAccount).where(PtiAccount.site_id == site.id)).all()


def test_a_unit_switched_off_and_renamed_in_storeganise_follows_within_a_pull(app, sg, sim, redis_url):
    imported(sg, redis_url)
    unit, rental = rented_unit(sim)
    sim.edit("unit", unit["id"], {"pti_id": "NONE"})  # its unit.updated webhook is recorded, never delivered
    pull_changes(sg)
    assert (fresh(Unit, unit["id"]).pti_unit_name, fresh(Unit, unit["id"]).pti_switched_off) == (None, True)
    assert len(reconcile_requests()) == 1  # the renter is pushed: the unit leaves their PTI user
    sim.edit("unit", unit["id"], {"pti_id": "Z99"})
    pull_changes(sg)
    assert (fresh(Unit, unit["id"]).pti_unit_name, fresh(Unit, unit["id"]).pti_switched_off) == ("Z99", False)


def test_a_customer_override_whose_webhook_was_lost_arrives_with_the_pull(app, sg, sim, redis_url):
    imported(sg, redis_url)
    _, rental = rented_unit(sim)
    sim.edit("user", rental["ownerId"], {"pti_zone": 3})
    pull_changes(sg)
    assert fresh(Rental, rental["id"]).customer.zone_override == 3
    assert reconcile_requests()


def test_a_hand_typed_pti_synced_is_a_problem_and_one_task_while_other_rentals_sync(app, sg, sim, hooks, redis_url):
    imported(sg, redis_url)
    _, bad = rented_unit(sim)
    other = next(r for r in sim.rentals.values() if r["state"] == "occupied" and r["ownerId"] != bad["ownerId"])
    hooks.skip_new()
    sim.edit("unitRental", bad["id"], {"pti_synced": "13/09/2023"})
    sim.edit("unitRental", other["id"], {"pti_synced": "2023-09-13"})
    assert [handle_delivery(record["id"]) for record in hooks.deliver_new()] == ["processed", "processed"]
    [problem] = db.session.scalars(select(OpenProblem)).all()
    assert (problem.entity, problem.record_sg_id, problem.reason) == ("rental", bad["id"], "bad_value")
    assert "13/09/2023" in problem.detail
    assert fresh(Rental, other["id"]).pti_synced is not None  # the other rental's edit landed and asks for a push
    assert report_problems() == 1 and report_problems() == 0
    [task] = sim.snapshot()["tasks"]
    assert (task["data"]["targetType"], task["data"]["targetId"]) == ("unit", bad["unitId"])
    sim.edit("unitRental", bad["id"], {"pti_synced": "2023-09-13"})
    assert [handle_delivery(record["id"]) for record in hooks.deliver_new()] == ["processed"]
    assert db.session.scalars(select(OpenProblem)).all() == []


def test_the_pull_goes_on_past_a_value_it_cannot_read(app, sg, sim, redis_url):
    imported(sg, redis_url)
    _, bad = rented_unit(sim)
    sim.edit("unitRental", bad["id"], {"pti_synced": "yesterday"})
    moved = next(r for r in sim.rentals.values() if r["state"] == "occupied" and r["id"] != bad["id"])
    sim.move_out(moved["id"])
    pull_changes(sg)
    assert fresh(Rental, moved["id"]).state == "ended"
    assert [p.record_sg_id for p in db.session.scalars(select(OpenProblem))] == [bad["id"]]


# --- where the PTI connection comes from ------------------------------------------------------------------------


def test_the_pti_connection_comes_from_the_add_on_when_the_business_has_it(app, sg, sim):
    site = next(iter(sim.sites.values()))
    sim.addon["customFields"][site["id"]]["pti_password"] = "from-the-add-on"
    app.config["STOREGANISE_ADDON_ID"] = sim.addon["id"]
    import_business(sg)
    assert site_credentials(fresh(Site, site["id"])).password == "from-the-add-on"


def test_without_the_add_on_the_sites_own_fields_hold_the_connection(app, sg, sim):
    site = next(iter(sim.sites.values()))
    sim.addon["customFields"][site["id"]]["pti_password"] = "from-the-add-on"
    import_business(sg)
    assert site_credentials(fresh(Site, site["id"])).password == site["customFields"]["pti_password"]


def test_the_add_on_id_webhooks_carry_is_remembered_and_used(app, sg, sim, hooks):
    from dashboard.clients import addon_id

    import_business(sg)
    sim.configure(addon_id="64de6a00dd7adb0014825f99")
    hooks.skip_new()
    rental = next(r for r in sim.rentals.values() if r["state"] == "occupied")
    sim.set_overdue(rental["id"], not rental["overdue"])
    [record] = hooks.deliver_new()
    handle_delivery(record["id"])
    assert addon_id() == "64de6a00dd7adb0014825f99"
    site = next(iter(sim.sites.values()))
    sim.addon["customFields"][site["id"]]["pti_password"] = "learned-add-on"
    pull_changes(sg)
    assert site_credentials(fresh(Site, site["id"])).password == "learned-add-on"


def test_an_add_on_storeganise_cannot_find_falls_back_to_the_sites_own_fields(app, sg, sim):
    app.config["STOREGANISE_ADDON_ID"] = "64de6a00dd7adb0014825f00"  # not the simulator's add-on: 404
    report = import_business(sg)
    assert report.sites == len(sim.sites)
    site = next(iter(sim.sites.values()))
    assert site_credentials(fresh(Site, site["id"])).password == site["customFields"]["pti_password"]

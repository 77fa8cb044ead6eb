"""The import fills the mirror with exactly what Storeganise holds; the pull brings only what changed since."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from dashboard.clients import site_credentials
from dashboard.crypto import PtiCredentials
from dashboard.extensions import db
from dashboard.jobqueue import get_redis
from dashboard.mirror.importer import IMPORT_LOCK, PULL_CURSOR, ImportBusy, import_business, pull_changes
from dashboard.mirror.records import parse_time
from dashboard.models import (
    ACTIVE_RENTAL_STATES,
    Customer,
    PtiAccount,
    Rental,
    Site,
    SyncCursor,
    Unit,
    WebhookDelivery,
    utcnow,
)
from jobs.pull import import_all
from jobs.pull import pull_changes as pull_job
from tests.conftest import flush_redis

from .conftest import reconcile_requests


def by_sg_id(model) -> dict:
    db.session.expire_all()
    return {row.sg_id: row for row in db.session.scalars(select(model))}


def int_or_none(value):
    return None if value in (None, "") else int(value)


def test_an_import_of_the_demo_business_matches_the_simulator_exactly(app, sg, sim):
    report = import_business(sg)
    state = sim.snapshot()
    sites, units, customers, rentals = by_sg_id(Site), by_sg_id(Unit), by_sg_id(Customer), by_sg_id(Rental)
    assert (report.sites, report.units, report.customers, report.rentals) == (
        len(state["sites"]), len(state["units"]), len(state["users"]), len(state["unitRentals"]))
    assert (len(sites), len(units), len(customers), len(rentals)) == (
        len(state["sites"]), len(state["units"]), len(state["users"]), len(state["unitRentals"]))

    for data in state["sites"]:
        site, fields = sites[data["id"]], data["customFields"]
        assert (site.code, site.title, site.pti_base_url, site.pti_site_code) == (
            data["code"], data["title"]["en"], fields["pti_base_url"], fields["pti_site_code"])
        assert (site.default_access_level, site.default_zone) == (fields["pti_access_level"], fields["pti_zone"])
        assert site_credentials(site) == PtiCredentials(
            fields["pti_site_key"], fields["pti_username"], fields["pti_password"])
        assert fields["pti_password"] not in site.pti_credentials  # sealed on arrival
    for data in state["units"]:
        unit = units[data["id"]]
        assert (unit.site.sg_id, unit.name, unit.state, unit.pti_unit_name) == (
            data["siteId"], data["name"], data["state"],
            None if data["customFields"].get("pti_id") in (None, "NONE") else data["customFields"]["pti_id"])
    for data in state["users"]:
        customer, fields = customers[data["id"]], data["customFields"]
        assert (customer.email, customer.first_name, customer.last_name, customer.overdue) == (
            data["email"].lower(), data["firstName"], data["lastName"], data["overdue"] is not None)
        assert (customer.access_level_override, customer.zone_override) == (
            int_or_none(fields.get("pti_access_level")), int_or_none(fields.get("pti_zone")))
        assert (customer.pti_access_code, customer.pti_user_id) == (None, None)
    for data in state["unitRentals"]:
        rental, fields = rentals[data["id"]], data["customFields"]
        assert (rental.site.sg_id, rental.unit.sg_id, rental.customer.sg_id) == (
            data["siteId"], data["unitId"], data["ownerId"])
        assert (rental.state, rental.overdue, rental.overlocked, rental.pti_synced, rental.sg_updated) == (
            data["state"], data["overdue"], fields["pti_overlocked"], None, parse_time(data["updated"]))
    assert state["writes"] == []  # an import only reads


def test_an_import_marks_every_renting_customer_for_a_bulk_push_once(app, sg, sim):
    report = import_business(sg)
    pairs = db.session.execute(select(Rental.customer_id, Rental.site_id)
                               .where(Rental.state.in_(ACTIVE_RENTAL_STATES)).distinct()).all()
    assert report.marked == len(pairs) == db.session.scalar(select(func.count(PtiAccount.id)))
    requests = reconcile_requests()
    assert len(requests) == report.enqueued == report.marked
    assert {queue for queue, *_ in requests} <= {"bulk", "urgent"}
    assert {trigger for *_, trigger in requests} == {"import"}


def test_importing_again_changes_nothing_and_asks_for_nothing(app, sg, sim, redis_url):
    import_business(sg)
    generations = dict(db.session.execute(select(PtiAccount.id, PtiAccount.generation)).all())
    flush_redis(redis_url)
    report = import_business(sg)
    assert report.marked == 0 and reconcile_requests() == []
    assert dict(db.session.execute(select(PtiAccount.id, PtiAccount.generation)).all()) == generations


def test_a_re_import_marks_only_customers_whose_inputs_changed(app, sg, sim, redis_url):
    import_business(sg)
    flush_redis(redis_url)
    rentals = [r for r in sim.rentals.values() if r["state"] == "occupied"]
    renamed, overridden = rentals[0], next(r for r in rentals if r["ownerId"] != rentals[0]["ownerId"])
    sim.edit("unit", renamed["unitId"], {"pti_id": "Q101"})
    zone = sim.users[overridden["ownerId"]]["customFields"].get("pti_zone")
    sim.edit("user", overridden["ownerId"], {"pti_zone": 2 if zone == 3 else 3})
    sim.edit("user", renamed["ownerId"], {"pti_access_code": "424242"})  # an output of ours: not an input
    report = import_business(sg)
    owners = {db.session.scalar(select(Customer.id).where(Customer.sg_id == sg_id))
              for sg_id in (renamed["ownerId"], overridden["ownerId"])}
    marked = {db.session.get(PtiAccount, account_id).customer_id for _, account_id, _ in reconcile_requests()}
    assert report.marked == 2 and marked == owners


def test_an_import_of_one_site_reads_only_that_site(app, sg, sim):
    report = import_business(sg, site_code="riverside")
    assert report.sites == 1
    assert {site.code for site in by_sg_id(Site).values()} == {"riverside"}
    assert db.session.get(SyncCursor, PULL_CURSOR) is None  # the other sites' changes were not read
    with pytest.raises(LookupError, match="no site"):
        import_business(sg, site_code="nowhere")


def test_the_pull_reads_only_what_changed_and_marks_those_customers(app, sg, sim, redis_url):
    import_business(sg)
    flush_redis(redis_url)
    overdue = next(r for r in sim.rentals.values() if r["state"] == "occupied" and not r["overdue"])
    sim.set_overdue(overdue["id"], True)  # its webhook never reaches us
    unit = next(u for u in sim.units.values() if u["state"] == "available")
    ids = sim.move_in(unit["id"], "pulled@example.com", "Pulled", "In")
    report = pull_changes(sg)
    assert not report.full and report.marked == 2 and report.overlocks_written == 1
    locked = by_sg_id(Rental)[overdue["id"]]
    assert locked.overdue and locked.overlocked  # the missed overdue still drives the lock
    assert sim.rentals[overdue["id"]]["customFields"]["pti_overlocked"] is True
    new = by_sg_id(Rental)[ids["unitRentalId"]]
    assert new.customer.email == "pulled@example.com"
    queues = {account_id: queue for queue, account_id, _ in reconcile_requests()}
    assert queues == {account_of(locked).id: "urgent", account_of(new).id: "bulk"}


def test_the_pull_asks_storeganise_only_for_rentals_updated_since_the_last_pull(app, sg, sim):
    import_business(sg)
    db.session.get(SyncCursor, PULL_CURSOR).at = utcnow()  # as if the last pull read up to now
    db.session.commit()
    target = next(r for r in sim.rentals.values() if r["state"] == "occupied")
    sim.move_out(target["id"])
    report = pull_changes(sg)
    assert report.rentals == 1 and report.marked == 1
    assert db.session.get(SyncCursor, PULL_CURSOR).at == parse_time(sim.rentals[target["id"]]["updated"])


def test_a_pull_with_nothing_new_asks_for_nothing(app, sg, sim, redis_url):
    import_business(sg)
    flush_redis(redis_url)
    report = pull_changes(sg)
    assert report.marked == 0 and reconcile_requests() == []


def test_the_first_pull_is_a_full_import(app, sg, sim):
    report = pull_changes(sg)
    assert report.full and report.rentals == len(sim.rentals)
    assert db.session.get(SyncCursor, PULL_CURSOR).at == max(parse_time(r["updated"]) for r in sim.rentals.values())


def test_the_job_functions_build_the_client_from_config(app, sg, sim):
    assert import_all().startswith("Imported 3 sites")
    assert pull_job().endswith("0 customers marked for a push to PTI.")


def test_flask_sg_import_prints_progress_counts_and_the_customers_marked(app, sg, runner):
    result = runner.invoke(args=["sg", "import"])
    assert result.exit_code == 0, result.output
    assert "[1/3] northgate:" in result.output and "[3/3] hilltop:" in result.output
    assert "Imported 3 sites, 320 units," in result.output and "customers marked for a push to PTI." in result.output
    one = runner.invoke(args=["sg", "import", "--site", "hilltop"])
    assert "Imported 1 sites" in one.output and "0 customers marked" in one.output


def test_flask_sg_import_explains_a_missing_configuration_in_one_line(app, runner):
    app.config["STOREGANISE_API_URL"] = None
    result = runner.invoke(args=["sg", "import"])
    assert result.exit_code != 0 and "Storeganise is not configured" in result.output
    assert "Traceback" not in result.output


def test_flask_sg_import_reports_a_refused_api_key_plainly(app, sg, runner):
    app.config["STOREGANISE_API_KEY"] = "wrong-key"
    result = runner.invoke(args=["sg", "import"])
    assert result.exit_code != 0 and "refused the API key" in result.output and "wrong-key" not in result.output


def test_flask_demo_seed_imports_the_business_from_the_simulator(app, sg, runner):
    app.config["DEMO_MODE"] = True
    result = runner.invoke(args=["demo", "seed"])
    assert result.exit_code == 0, result.output
    assert "4 new accounts" in result.output and "From the Storeganise simulator at" in result.output
    assert db.session.scalar(select(func.count(Rental.id))) > 150


def test_flask_demo_seed_falls_back_to_a_direct_load_and_says_so(app, runner):
    app.config.update(DEMO_MODE=True, STOREGANISE_API_URL="http://127.0.0.1:9/api/v1/admin",
                      STOREGANISE_API_KEY="demo-api-key")
    result = runner.invoke(args=["demo", "seed"])
    assert result.exit_code == 0, result.output
    assert "does not answer" in result.output and "loaded directly instead (fallback)" in result.output
    assert db.session.scalar(select(func.count(Rental.id))) > 150


def account_of(rental: Rental) -> PtiAccount:
    return db.session.scalar(select(PtiAccount).where(PtiAccount.customer_id == rental.customer_id,
                                                      PtiAccount.site_id == rental.site_id))


def test_a_pull_does_not_run_beside_an_import_and_an_import_waits_for_its_turn(app, sg, sim):
    lock = get_redis().lock(IMPORT_LOCK, timeout=30)
    assert lock.acquire()
    try:
        assert pull_job().startswith("Skipped: Another import or pull")
        with pytest.raises(ImportBusy):
            import_business(sg, wait_s=0.2)
    finally:
        lock.release()
    assert import_business(sg).sites == 3


def test_a_delivery_that_meets_a_concurrent_insert_is_retried(app, sg, sim, hooks, monkeypatch):
    from sqlalchemy.exc import IntegrityError

    import dashboard.mirror.events as events
    from jobs.events import handle_delivery

    unit = next(u for u in sim.units.values() if u["state"] == "available")
    sim.move_in(unit["id"], "race@example.com", "Race", "Condition")
    [record] = hooks.deliver_new()

    def collide(*args, **kwargs):
        raise IntegrityError("INSERT INTO sites", {}, Exception("UNIQUE constraint failed: sites.sg_id"))

    with monkeypatch.context() as patch:
        patch.setitem(events.HANDLERS, "job.unit_moveIn.completed", collide)
        with pytest.raises(IntegrityError):
            handle_delivery(record["id"])
    assert db.session.get(WebhookDelivery, record["id"]).status == "queued"
    assert handle_delivery(record["id"]) == "processed"

"""Landing Storeganise records in the mirror: real shapes, configured field codes, values read leniently, and a
value that cannot be read shown as a problem on its record while everything around it goes on."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import select

from dashboard.extensions import db
from dashboard.mirror.records import Effects, apply_customer, apply_rental, apply_site, apply_unit
from dashboard.models import OpenProblem, PtiAccount
from dashboard.storeganise.fields import FieldCodes

SITE = {"id": "5f0000000000000000000001", "code": "northgate", "title": {"en": "Northgate", "fr": "Porte Nord"},
        "customFields": {"pti_base_url": "http://pti.test", "pti_site_code": "NG01", "pti_site_key": "k",
                         "pti_username": "u", "pti_password": "p", "pti_access_level": 1, "pti_zone": "2"}}


def unit_data(pti_id, unit_id="5f00000000000000000000a1", name="A12"):
    return {"id": unit_id, "siteId": SITE["id"], "name": name, "state": "occupied",
            "customFields": {} if pti_id is None else {"pti_id": pti_id}}


USER = {"id": "5f00000000000000000000c1", "email": "Ada@Example.com ", "firstName": "Ada", "lastName": "Lovelace",
        "overdue": None, "customFields": {"pti_zone": 3}}


def rental_data(**fields):
    return {"id": "5f00000000000000000000e1", "siteId": SITE["id"], "unitId": "5f00000000000000000000a1",
            "ownerId": USER["id"], "state": "occupied", "overdue": False, "updated": "2026-11-30T10:00:00.000Z",
            "customFields": fields}


def land(rental_fields: dict, fx: Effects | None = None):
    fx = fx or Effects()
    site = apply_site(SITE, fx)
    unit = apply_unit(unit_data("A12"), site, fx)
    customer = apply_customer(USER, fx)
    rental = apply_rental(rental_data(**rental_fields), site, unit, customer, fx)
    db.session.commit()
    return rental, fx


def problems() -> list[OpenProblem]:
    return list(db.session.scalars(select(OpenProblem).order_by(OpenProblem.cause)))


def test_a_localised_site_title_lands_in_the_preferred_language(app):
    site = apply_site(SITE, Effects())
    assert site.title == "Northgate"
    assert (site.default_access_level, site.default_zone) == (1, 2)  # "2" typed as text reads as 2


@pytest.mark.parametrize("typed, expected", [
    ("2023-09-13", datetime(2023, 9, 13)),
    ("2023-09-13T10:00:00.123Z", datetime(2023, 9, 13, 10, 0, 0, 123000)),
    ("2023-09-13T10:00", datetime(2023, 9, 13, 10, 0)),
    ("", None),
])
def test_pti_synced_is_read_with_or_without_time_or_zone(app, typed, expected):
    rental, _ = land({"pti_synced": typed})
    assert rental.pti_synced == expected
    assert problems() == []


@pytest.mark.parametrize("typed, expected", [("false", False), ("true", True), ("no", False), (1, True), ("", False)])
def test_pti_overlocked_reads_flags_as_staff_type_them(app, typed, expected):
    rental, _ = land({"pti_overlocked": typed})
    assert rental.overlocked is expected


@pytest.mark.parametrize("typed", ["13/09/2023", "yesterday"])
def test_an_unreadable_pti_synced_keeps_the_last_good_value_and_becomes_a_problem_on_the_rental(app, typed):
    rental, _ = land({"pti_synced": "2023-09-13"})
    rental, fx = land({"pti_synced": typed})
    assert rental.pti_synced == datetime(2023, 9, 13)
    [problem] = problems()
    assert (problem.reason, problem.entity, problem.record_sg_id) == ("bad_value", "rental", rental.sg_id)
    assert (problem.target_type, problem.target_id) == ("unit", rental.unit.sg_id)
    assert "pti_synced" in problem.detail and typed in problem.detail and "2023-09-13" in problem.detail
    assert problem.reported_at is None and fx.new_problems == 1


def test_a_corrected_value_closes_its_problem(app):
    land({"pti_synced": "13/09/2023"})
    assert len(problems()) == 1
    land({"pti_synced": "2023-09-13"})
    assert problems() == []


def test_the_same_bad_value_seen_again_is_one_problem(app):
    land({"pti_synced": "yesterday"})
    _, fx = land({"pti_synced": "yesterday"})
    assert len(problems()) == 1 and fx.new_problems == 0


def test_a_customer_zone_typed_as_words_is_a_problem_on_the_customer_not_no_zone(app):
    apply_customer(USER, Effects())
    customer = apply_customer({**USER, "customFields": {"pti_zone": "24 Hours"}}, Effects())
    db.session.commit()
    assert customer.zone_override == 3  # the last value that could be read
    [problem] = problems()
    assert (problem.entity, problem.target_type, problem.target_id) == ("customer", "user", USER["id"])
    assert "24 Hours" in problem.detail


def test_a_bad_credential_is_reported_without_echoing_it(app):
    apply_site({**SITE, "customFields": {**SITE["customFields"], "pti_password": ["s3cret-pass"]}}, Effects())
    db.session.commit()
    [problem] = problems()
    assert problem.entity == "site" and "s3cret" not in problem.detail


def test_a_unit_whose_pti_id_is_none_is_switched_off(app):
    site = apply_site(SITE, Effects())
    unit = apply_unit(unit_data("none"), site, Effects())
    assert (unit.pti_unit_name, unit.pti_switched_off) == (None, True)
    unit = apply_unit(unit_data("A12B"), site, Effects())
    assert (unit.pti_unit_name, unit.pti_switched_off) == ("A12B", False)


def test_an_empty_unit_field_means_not_synced_by_default(app):
    unit = apply_unit(unit_data(None), apply_site(SITE, Effects()), Effects())
    assert (unit.pti_unit_name, unit.pti_switched_off) == (None, False)


def test_an_empty_unit_field_can_mean_the_storeganise_unit_name(app):
    app.config["PTI_EMPTY_UNIT_NAME"] = "unit_name"
    unit = apply_unit(unit_data(""), apply_site(SITE, Effects()), Effects())
    assert unit.pti_unit_name == "A12"


def test_field_codes_are_a_setting(app):
    app.config["STOREGANISE_FIELDS"] = FieldCodes.parse("unit_name=ptiUnit,rental_synced=lastPush")
    site = apply_site(SITE, Effects())
    unit = apply_unit({**unit_data(None), "customFields": {"ptiUnit": "B7"}}, site, Effects())
    customer = apply_customer(USER, Effects())
    rental = apply_rental(rental_data(lastPush="2024-01-02"), site, unit, customer, Effects())
    assert (unit.pti_unit_name, rental.pti_synced) == ("B7", datetime(2024, 1, 2))


def test_a_switched_off_unit_change_marks_its_renter_for_a_push(app):
    rental, _ = land({})
    fx = Effects()
    apply_unit(unit_data("NONE"), rental.site, fx)
    assert list(fx.accounts) == [(rental.customer_id, rental.site_id)]
    assert isinstance(fx.accounts[(rental.customer_id, rental.site_id)], PtiAccount)

"""The mirror reads Storeganise's real shapes (tests/storeganise/fixtures/): localised titles, the add-on's `pti_id`,
overdue timestamps, and values staff typed by hand."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import select

from dashboard.extensions import db
from dashboard.mirror.records import Effects, apply_customer, apply_rental, apply_site, apply_unit
from dashboard.models import OpenProblem
from tests.storeganise.fake_storeganise import fixture


def _site(name="site.json"):
    return apply_site(fixture(name), Effects())


def test_a_localised_title_reads_english(app):
    assert _site().title == "Northgate Self Storage"


def test_a_title_without_english_reads_the_first_non_empty_language(app):
    assert _site("site_other.json").title == "Flussufer Lager"


def test_a_title_as_a_plain_string_still_reads(app):
    assert apply_site({**fixture("site.json"), "title": "Northgate"}, Effects()).title == "Northgate"


@pytest.mark.parametrize(("value", "expected", "off"), [("A101", "A101", False), ("NONE", None, True),
                                                        ("none", None, True), ("", None, False),
                                                        (None, None, False), (" B7 ", "B7", False)])
def test_the_unit_pti_id_is_the_pti_unit_name_unless_none_or_empty(app, value, expected, off):
    data = fixture("unit.json")
    data["customFields"] = {} if value is None else {"pti_id": value}
    unit = apply_unit(data, _site(), Effects())
    assert (unit.pti_unit_name, unit.pti_switched_off) == (expected, off)


def test_an_overdue_timestamp_marks_the_customer_overdue(app):
    assert apply_customer(fixture("user.json"), Effects()).overdue is True
    assert apply_customer(fixture("user_other.json"), Effects()).overdue is False


def _hand_edited_rental(**fields):
    site = _site("site_other.json")
    unit = apply_unit(fixture("unit_off.json"), site, Effects())
    customer = apply_customer(fixture("user_other.json"), Effects())
    data = fixture("rental_hand_edited.json")
    data["customFields"].update(fields)
    rental = apply_rental(data, site, unit, customer, Effects())
    db.session.commit()
    return rental


def test_a_typed_false_overlock_reads_as_unlocked(app):
    rental = _hand_edited_rental(pti_synced="2023-09-13T08:00:00.000Z")
    assert rental.overlocked is False
    assert rental.pti_synced == datetime(2023, 9, 13, 8)


def test_a_hand_typed_pti_synced_date_is_a_problem_on_the_rental_not_a_stop(app):
    rental = _hand_edited_rental(pti_overlocked=False)
    [problem] = db.session.scalars(select(OpenProblem)).all()
    assert (problem.entity, problem.record_sg_id, problem.reason) == ("rental", rental.sg_id, "bad_value")
    assert "13/09/2023" in problem.detail

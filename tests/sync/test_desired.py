"""Deriving one customer's desired PTI state from the Storeganise mirror."""

from __future__ import annotations

import pytest

from dashboard.sync import DesiredUnit, DesiredUser, Issue, RentalStatus, SiteSettings, derive_desired
from dashboard.sync.desired import is_valid_unit_name
from tests.sync.factories import CODE, CUSTOMER_ID, LEVEL, SITE, ZONE, customer, rental


@pytest.mark.parametrize(("snapshot", "status"), [
    (rental("A101", state="occupied"), RentalStatus.SYNCABLE),
    (rental("A101", state="reserved"), RentalStatus.SYNCABLE),
    (rental("A101", state="submitted"), RentalStatus.INACTIVE),
    (rental("A101", state="cancelled"), RentalStatus.INACTIVE),
    (rental("A101", state="abandoned"), RentalStatus.INACTIVE),
    (rental("A101", state="ended"), RentalStatus.INACTIVE),
    (rental(None), RentalStatus.UNIT_UNMAPPED),
    (rental("  "), RentalStatus.UNIT_UNMAPPED),
    (rental("BAY 12"), RentalStatus.INVALID_UNIT_NAME),
    (rental("ABCDEFGHIJK"), RentalStatus.INVALID_UNIT_NAME),
    (rental(None, state="ended"), RentalStatus.INACTIVE),
])
def test_each_rental_gets_a_sync_status(snapshot, status):
    assert derive_desired(SITE, customer(), [snapshot]).rentals[0].status is status


@pytest.mark.parametrize(("name", "valid"), [
    ("A101", True), ("ABCDEFGHIJ", True), ("ABCDEFGHIJK", False), ("A 101", False), ("A\t1", False), ("", False),
])
def test_unit_names_follow_ptis_rule_of_ten_characters_and_no_spaces(name, valid):
    assert is_valid_unit_name(name) is valid


def test_active_rentals_at_mapped_units_make_one_user_renting_each_unit_locked_as_overlocked():
    desired = derive_desired(SITE, customer(), [rental("B7", overlocked=True), rental("A101"), rental("C1", "ended")])
    assert desired.user == DesiredUser(CUSTOMER_ID, "ann@example.com", "Ann", "Lee", CODE, LEVEL, ZONE)
    assert desired.units == (DesiredUnit("A101", False, ("r-A101",)), DesiredUnit("B7", True, ("r-B7",)))
    assert desired.issues == ()


def test_customer_without_an_active_syncable_rental_desires_no_user():
    desired = derive_desired(SITE, customer(), [rental("A101", "ended"), rental(None), rental("BAY 1")])
    assert (desired.user, desired.units) == (None, ())
    assert [i.reason for i in desired.issues] == ["unit_unmapped", "invalid_unit_name"]


@pytest.mark.parametrize(("site_level", "site_zone", "overrides", "level", "zone"), [
    (3, 1, {}, 3, 1),
    (3, 1, {"access_level_override": 8}, 8, 1),
    (3, 1, {"zone_override": 2}, 3, 2),
    (None, None, {"access_level_override": 0, "zone_override": 0}, 0, 0),
])
def test_customer_overrides_replace_the_sites_access_level_and_zone(site_level, site_zone, overrides, level, zone):
    site = SiteSettings("site-1", site_level, site_zone)
    user = derive_desired(site, customer(**overrides), [rental("A101")]).user
    assert (user.access_level, user.time_zone) == (level, zone)


def test_missing_access_level_and_zone_are_reported_only_when_a_user_is_desired():
    site = SiteSettings("site-1", None, None)
    assert derive_desired(site, customer(), [rental("A101")]).issues == (Issue("no_access_level"), Issue("no_zone"))
    assert derive_desired(site, customer(), [rental("A101", "ended")]).issues == ()


def test_two_active_rentals_of_one_unit_make_one_unit_locked_if_either_is_overlocked():
    rentals = [rental("A101", rental_id="r-1"), rental("A101", overlocked=True, rental_id="r-2")]
    assert derive_desired(SITE, customer(), rentals).units == (DesiredUnit("A101", True, ("r-1", "r-2")),)

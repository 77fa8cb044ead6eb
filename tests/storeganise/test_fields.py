"""Custom-field codes are one setting, defaulting to the official PTI add-on's codes."""

from __future__ import annotations

import pytest

from dashboard.config import ConfigError, from_env
from dashboard.storeganise.fields import FieldCodes


def test_the_defaults_are_the_official_add_ons_codes():
    codes = FieldCodes()
    assert (codes.unit_name, codes.rental_synced, codes.rental_overlocked, codes.user_access_code) == (
        "pti_id", "pti_synced", "pti_overlocked", "pti_access_code")


def test_overrides_replace_only_the_codes_named():
    codes = FieldCodes.parse(" unit_name = pti_unit_name , user_zone=zone ")
    assert (codes.unit_name, codes.user_zone, codes.site_zone) == ("pti_unit_name", "zone", "pti_zone")


@pytest.mark.parametrize("text, words", [("unit=pti_unit_name", "not a field"), ("unit_name", "not name=code"),
                                          ("unit_name=", "not name=code")])
def test_a_bad_override_is_refused_with_what_is_wrong(text, words):
    with pytest.raises(ValueError, match=words):
        FieldCodes.parse(text)


def test_a_bad_setting_stops_start_up_with_its_name(monkeypatch, tmp_path):
    monkeypatch.setenv("STOREGANISE_FIELD_CODES", "nonsense=1")
    with pytest.raises(ConfigError, match="STOREGANISE_FIELD_CODES"):
        from_env(str(tmp_path))


def test_the_empty_unit_rule_is_one_of_two(monkeypatch, tmp_path):
    monkeypatch.setenv("PTI_EMPTY_UNIT_NAME", "guess")
    with pytest.raises(ConfigError, match="PTI_EMPTY_UNIT_NAME"):
        from_env(str(tmp_path))

"""Reading values from Storeganise leniently: what staff type by hand and what CSV edits turn into text."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard.storeganise.values import (
    ECHO_CHARS,
    ValueProblem,
    localised,
    read_bool,
    read_datetime,
    read_int,
    read_text,
)

# --- read_bool -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, "true", "TRUE", " True ", "yes", "Yes", "on", "ON", 1, "1", 1.0])
def test_a_flag_reads_true_from_every_way_of_saying_yes(value):
    assert read_bool(value) is True


@pytest.mark.parametrize("value", [False, "false", "False", " no ", "NO", "off", 0, "0", 0.0])
def test_a_flag_reads_false_from_every_way_of_saying_no(value):
    assert read_bool(value) is False


@pytest.mark.parametrize("value", [None, "", "   "])
def test_an_empty_flag_is_not_set(value):
    assert read_bool(value) is None


@pytest.mark.parametrize("value", ["maybe", "2", 2, -1, 0.5, "y", [], {}, "truee"])
def test_a_flag_that_is_neither_yes_nor_no_is_a_problem(value):
    with pytest.raises(ValueProblem) as caught:
        read_bool(value)
    assert "true or false" in caught.value.fix


# --- read_int --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [(7, 7), (7.0, 7), ("7", 7), (" 7 ", 7), ("7.0", 7), ("-3", -3),
                                             ("+12", 12), (0, 0)])
def test_a_number_reads_from_a_number_or_its_digits(value, expected):
    assert read_int(value) == expected


@pytest.mark.parametrize("value", [None, "", "  "])
def test_an_empty_number_is_not_set(value):
    assert read_int(value) is None


@pytest.mark.parametrize("value", [True, False, "true"])
def test_a_flag_is_not_a_number(value):
    with pytest.raises(ValueProblem):
        read_int(value)


@pytest.mark.parametrize("value", ["24 Hours", "7.5", 7.5, "1e3", "1_000", "٧", float("nan"), float("inf"), "0x10"])
def test_words_fractions_and_other_notations_are_not_whole_numbers(value):
    with pytest.raises(ValueProblem) as caught:
        read_int(value)
    assert "whole number" in caught.value.fix


def test_a_number_too_long_to_convert_is_a_problem_not_a_crash():
    with pytest.raises(ValueProblem):
        read_int("9" * 5000)


# --- read_datetime ---------------------------------------------------------------------------------------------


def test_a_date_alone_means_midnight_utc():
    assert read_datetime("2023-09-13") == datetime(2023, 9, 13, 0, 0)


def test_storeganise_s_own_timestamps_read_to_the_millisecond():
    assert read_datetime("2023-08-17T19:03:12.008Z") == datetime(2023, 8, 17, 19, 3, 12, 8000)


def test_an_offset_is_converted_to_utc():
    assert read_datetime("2023-08-17T21:03:12+02:00") == datetime(2023, 8, 17, 19, 3, 12)
    assert read_datetime("2023-08-17T14:03-0500") == datetime(2023, 8, 17, 19, 3)


def test_a_time_without_a_zone_is_read_as_utc():
    assert read_datetime("2023-09-13T10:00") == datetime(2023, 9, 13, 10, 0)
    assert read_datetime("2023-09-13T10:00:30") == datetime(2023, 9, 13, 10, 0, 30)


def test_a_space_may_stand_for_the_t_and_spaces_around_are_ignored():
    assert read_datetime(" 2023-09-13 10:00:00Z ") == datetime(2023, 9, 13, 10, 0)


def test_fractions_beyond_microseconds_are_cut_not_refused():
    assert read_datetime("2023-09-13T10:00:00.123456789Z") == datetime(2023, 9, 13, 10, 0, 0, 123456)


def test_a_datetime_object_comes_back_as_naive_utc():
    aware = datetime(2023, 9, 13, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert read_datetime(aware) == datetime(2023, 9, 13, 10, 0)
    assert read_datetime(datetime(2023, 9, 13, 10, 0)) == datetime(2023, 9, 13, 10, 0)
    assert read_datetime(date(2023, 9, 13)) == datetime(2023, 9, 13)


def test_the_result_is_always_naive():
    assert read_datetime("2023-09-13T10:00:00+01:00").tzinfo is None


@pytest.mark.parametrize("value", [None, "", "  "])
def test_an_empty_date_is_not_set(value):
    assert read_datetime(value) is None


@pytest.mark.parametrize("value", ["13/09/2023", "09/13/2023", "13.09.2023", "1-2-2023"])
def test_day_month_order_is_never_guessed(value):
    with pytest.raises(ValueProblem) as caught:
        read_datetime(value)
    assert "day/month" in caught.value.message
    assert "2023-09-13" in caught.value.fix


@pytest.mark.parametrize("value", ["yesterday", "2023-02-30", "2023-13-01", "2023-09-13T25:00Z", "20230913",
                                   "2023-09-13Z", "2023-09-13T10", "2023-09-13T10:00+25:00", 1694599200, True])
def test_what_is_not_an_iso_date_is_a_problem_that_says_which_formats_work(value):
    with pytest.raises(ValueProblem) as caught:
        read_datetime(value)
    assert "2023-09-13T10:00:00Z" in caught.value.fix


def test_a_date_pushed_off_the_calendar_by_its_zone_is_a_problem():
    with pytest.raises(ValueProblem):
        read_datetime("0001-01-01T00:00+01:00")
    with pytest.raises(ValueProblem):
        read_datetime(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))))


# --- read_text and localised -----------------------------------------------------------------------------------


def test_text_is_stripped():
    assert read_text("  Northgate ") == "Northgate"


@pytest.mark.parametrize("value", [None, "", "   "])
def test_empty_text_is_not_set(value):
    assert read_text(value) is None


def test_a_number_typed_into_a_text_field_reads_as_its_digits():
    assert read_text(101) == "101"
    assert read_text(101.0) == "101"


@pytest.mark.parametrize("value", [True, [], {"en": "x"}, float("nan")])
def test_flags_lists_and_objects_are_not_text(value):
    with pytest.raises(ValueProblem):
        read_text(value)


def test_a_localised_title_reads_in_the_preferred_language():
    assert localised({"fr": "Porte Nord", "en": "Northgate"}) == "Northgate"
    assert localised({"fr": "Porte Nord", "en": "Northgate"}, prefer=("fr", "en")) == "Porte Nord"


def test_a_regional_language_serves_its_language():
    assert localised({"de": "Nordtor", "en-GB": "Northgate"}) == "Northgate"


def test_without_the_preferred_language_the_first_text_given_wins():
    assert localised({"de": "", "fr": " Porte Nord ", "es": "Puerta"}) == "Porte Nord"


def test_a_plain_string_title_passes_through():
    assert localised(" Northgate ") == "Northgate"


@pytest.mark.parametrize("value", [None, {}, {"en": ""}, {"en": None}, ""])
def test_an_empty_title_is_not_set(value):
    assert localised(value) is None


@pytest.mark.parametrize("value", [5, ["Northgate"], {"en": 5}])
def test_a_title_without_any_text_is_a_problem(value):
    with pytest.raises(ValueProblem):
        localised(value)


# --- the problem itself ----------------------------------------------------------------------------------------


def test_a_problem_quotes_a_long_value_only_in_part():
    problem = pytest.raises(ValueProblem, read_int, "x" * 500).value
    assert len(problem.value) <= ECHO_CHARS + 3
    assert problem.value.endswith('…"')


def test_a_problem_describes_an_object_instead_of_quoting_it():
    problem = pytest.raises(ValueProblem, read_text, {"password": "hunter2"}).value
    assert "hunter2" not in str(problem) + repr(problem)
    assert problem.value == "an object with 1 key(s)"


def test_a_problem_names_the_field_its_caller_set():
    problem = pytest.raises(ValueProblem, read_datetime, "yesterday").value
    problem.field = "pti_synced"
    assert str(problem).startswith('pti_synced "yesterday": ')
    assert problem.fix in str(problem)


def test_a_problem_echo_is_printable():
    problem = pytest.raises(ValueProblem, read_bool, "a\x00b\nc").value
    assert problem.value == '"a?b?c"'


# --- properties ------------------------------------------------------------------------------------------------

JSON_LIKE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=10,
)
READERS = [(read_bool, bool), (read_int, int), (read_datetime, datetime), (read_text, str), (localised, str)]


@pytest.mark.parametrize("reader, kind", READERS, ids=[r.__name__ for r, _ in READERS])
@settings(max_examples=300, deadline=None)
@given(value=JSON_LIKE)
def test_every_reader_returns_its_type_or_none_or_a_value_problem_for_any_json(reader, kind, value):
    try:
        result = reader(value)
    except ValueProblem as problem:
        assert problem.message and problem.fix
        assert len(problem.value) <= ECHO_CHARS + 3
        return
    assert result is None or isinstance(result, kind)
    if kind is int:
        assert not isinstance(result, bool)
    if kind is datetime and result is not None:
        assert result.tzinfo is None
    if kind is str and result is not None:
        assert result == result.strip() and result


@settings(max_examples=200, deadline=None)
@given(moment=st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)))
def test_every_utc_timestamp_reads_back_as_itself(moment):
    text = moment.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
    assert read_datetime(text) == moment


@settings(max_examples=200, deadline=None)
@given(number=st.integers())
def test_every_integer_reads_back_from_its_digits(number):
    assert read_int(str(number)) == number
    assert read_text(number) == str(number)

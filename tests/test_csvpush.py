"""The bulk-push CSV reader: what it accepts, and the line-numbered errors it gives for everything else (R9)."""

from datetime import datetime

import pytest

from dashboard.uploads import parse as csvpush
from dashboard.uploads.parse import CsvRow, escape_cell, parse, unknown_rental_errors

A = "64de6eebdd7adb0014825d1a"
B = "64de6eebdd7adb0014825d1b"
HEADER = "id,customFields.pti_synced"


def lines(result) -> list[str]:
    return [str(e) for e in result.errors]


def test_a_storeganise_export_reads_as_rows():
    result = parse(f"{HEADER}\n{A},2023-08-17T19:03:12.008Z\n{B},\n".encode())
    assert result.ok and result.errors == []
    assert result.rows == [CsvRow(2, A, datetime(2023, 8, 17, 19, 3, 12, 8000), None), CsvRow(3, B, None, None)]
    assert result.row_count == 2


def test_a_byte_order_mark_and_crlf_line_ends_are_accepted():
    result = parse(f"\ufeff{HEADER}\r\n{A},2023-08-17T19:03:12.008Z\r\n{B},\r\n".encode())
    assert result.ok and [r.rental_id for r in result.rows] == [A, B]


def test_timestamps_with_an_offset_are_read_as_utc():
    result = parse(f"{HEADER}\n{A},2023-08-17T21:03:12+02:00\n".encode())
    assert result.rows[0].pti_synced == datetime(2023, 8, 17, 19, 3, 12)


def test_ids_are_read_in_lower_case_and_cells_are_trimmed():
    result = parse(f" id , customFields.pti_synced \n {A.upper()} , \n".encode())
    assert result.ok and result.rows[0].rental_id == A


@pytest.mark.parametrize(("word", "value"), [("true", True), ("TRUE", True), ("Yes", True), ("1", True),
                                              ("false", False), ("No", False), ("0", False), ("", None)])
def test_pti_overlocked_takes_true_false_yes_no_one_zero_or_empty(word, value):
    result = parse(f"{HEADER},customFields.pti_overlocked\n{A},,{word}\n".encode())
    assert result.ok and result.rows[0].overlocked is value


def test_other_columns_of_a_storeganise_export_are_ignored():
    result = parse(f"id,unitId,customFields.pti_synced,notes\n{A},=SUM(A1),,+44 20 7946 0000\n".encode())
    assert result.ok and result.rows == [CsvRow(2, A, None, None)]


def test_blank_lines_are_skipped_but_counted_in_line_numbers():
    result = parse(f"{HEADER}\n\n{A},\n\n{B},\n".encode())
    assert [r.line for r in result.rows] == [3, 5]


def test_a_wrong_header_names_the_expected_columns():
    result = parse(f"rental,pti_synced\n{A},\n".encode())
    assert not result.ok and result.rows == []
    (message,) = lines(result)
    assert message.startswith("Line 1: the header must name the columns id and customFields.pti_synced")
    assert "missing id and customFields.pti_synced" in message and 'found "rental", "pti_synced"' in message


def test_a_header_missing_pti_synced_is_refused():
    (message,) = lines(parse(f"id\n{A}\n".encode()))
    assert "missing customFields.pti_synced" in message


def test_a_repeated_column_is_refused():
    (message,) = lines(parse(f"id,customFields.pti_synced,id\n{A},,{A}\n".encode()))
    assert message == "Line 1: the header names id more than once; each column may appear once."


def test_bad_ids_dates_and_booleans_are_each_reported_with_their_line():
    text = (f"{HEADER},customFields.pti_overlocked\n"
            f"{A},2023-08-17T19:03:12.008Z,true\n"
            "64de6eeb,2023-08-17T19:03:12.008Z,\n"
            f"{B},17/08/2023,\n"
            f",2023-02-30T10:00:00Z,maybe\n")
    result = parse(text.encode())
    assert result.rows == [] and result.error_count == 5
    assert lines(result) == [
        'Line 3: id "64de6eeb" is not a Storeganise rental id (24 characters 0-9 and a-f, like '
        "64de6eebdd7adb0014825d1a).",
        'Line 4: customFields.pti_synced "17/08/2023" is not a date and time PTI Sync can read: type a date like '
        "2023-08-17 or a date and time like 2023-08-17T19:03:12.008Z (ISO-8601, year first, never day/month; a time "
        "without a zone is read as UTC), or leave it empty.",
        "Line 5: the id is empty; give the Storeganise rental id.",
        'Line 5: customFields.pti_synced "2023-02-30T10:00:00Z" is not a date and time PTI Sync can read: type a '
        "date like 2023-08-17 or a date and time like 2023-08-17T19:03:12.008Z (ISO-8601, year first, never "
        "day/month; a time without a zone is read as UTC), or leave it empty.",
        'Line 5: customFields.pti_overlocked "maybe" must be true or false (yes/no, on/off and 1/0 work too), or '
        "empty to leave it as it is.",
    ]


def test_a_date_alone_means_midnight_utc():
    result = parse(f"{HEADER}\n{A},2023-09-13\n".encode())
    assert result.ok and result.rows[0].pti_synced == datetime(2023, 9, 13, 0, 0)


def test_a_time_without_a_zone_is_read_as_utc():
    result = parse(f"{HEADER}\n{A},2023-08-17T19:03:12\n{B},2023-08-17 19:03\n".encode())
    assert result.ok
    assert [r.pti_synced for r in result.rows] == [datetime(2023, 8, 17, 19, 3, 12), datetime(2023, 8, 17, 19, 3)]


@pytest.mark.parametrize("cell", ["13/09/2023", "09/13/2023", "13.09.2023"])
def test_a_day_month_date_is_still_refused_and_the_error_names_the_formats_that_work(cell):
    (message,) = lines(parse(f"{HEADER}\n{A},{cell}\n".encode()))
    assert message.startswith(f'Line 2: customFields.pti_synced "{cell}" is not a date and time PTI Sync can read')
    assert "2023-08-17" in message and "2023-08-17T19:03:12.008Z" in message and "never day/month" in message


def test_overlocked_reads_on_and_off_like_storeganise_flags():
    result = parse(f"{HEADER},customFields.pti_overlocked\n{A},,On\n{B},,off\n".encode())
    assert [r.overlocked for r in result.rows] == [True, False]


def test_a_duplicate_id_names_both_lines():
    result = parse(f"{HEADER}\n{A},\n{B},\n{A.upper()},\n".encode())
    assert lines(result) == [f"Line 4: rental {A} is already on line 2; each rental may appear once."]


def test_a_line_with_too_few_or_too_many_values_is_refused():
    result = parse(f"{HEADER}\n{A}\n{B},,extra\n".encode())
    assert lines(result) == [
        "Line 2: this line has 1 value but the header has 2 columns; check for a missing or extra comma.",
        "Line 3: this line has 3 values but the header has 2 columns; check for a missing or extra comma.",
    ]


@pytest.mark.parametrize("data", [b"", b"   \n\r\n", "\ufeff".encode()])
def test_an_empty_file_is_refused(data):
    assert lines(parse(data)) == ["The file is empty. Upload a CSV whose first line is the header "
                                  "id,customFields.pti_synced."]


def test_a_header_without_rows_is_refused():
    assert lines(parse(f"{HEADER}\r\n".encode())) == [
        "The file has a header but no data rows: add one line per rental to push."]


def test_too_many_rows_are_refused_with_the_limit(monkeypatch):
    monkeypatch.setattr(csvpush, "MAX_ROWS", 3)
    ids = [f"{n:024x}" for n in range(5)]
    result = parse((HEADER + "\n" + "".join(f"{i},\n" for i in ids)).encode())
    assert result.rows == [] and lines(result) == ["The file has 5 rows; an upload takes at most 3. Split it "
                                                   "into several files."]
    assert result.row_count == 5
    assert parse((HEADER + "\n" + "".join(f"{i},\n" for i in ids[:3])).encode()).ok


def test_the_row_limit_is_a_hundred_thousand():
    assert csvpush.MAX_ROWS == 100_000


def test_rows_are_read_in_chunks_in_line_order_with_the_count_so_far():
    ids = [f"{n:024x}" for n in range(7)]
    data = (HEADER + "\r\n" + "".join(f"{i},\r\n" for i in ids[:3]) + "nope,\r\n"
            + "".join(f"{i},\r\n" for i in ids[3:])).encode()
    result = csvpush.ParsedCsv()
    seen = []
    for chunk in csvpush.read_chunks(data, result, size=3):
        seen.append(([row.line for row in chunk], result.row_count))
    assert seen == [([2, 3, 4], 3), ([6, 7, 8], 7), ([9], 8)]
    assert lines(result) == ['Line 5: id "nope" is not a Storeganise rental id (24 characters 0-9 and a-f, like '
                             '64de6eebdd7adb0014825d1a).']


def test_a_byte_that_is_not_utf8_is_found_across_the_pieces_checked(monkeypatch):
    monkeypatch.setattr(csvpush, "DECODE_PIECE", 4)  # the two bytes of é straddle pieces: still valid
    assert parse(f"{HEADER}\n{A},\n{B},\n# café\n".encode()).errors[0].line == 4  # read, then refused as an id
    result = parse(f"{HEADER}\n{A},\n".encode() + b"caf\xe9,\n")
    assert lines(result) == ['Line 3: this is not UTF-8 text (byte 4 of the line, 0xE9). Save the file as "CSV UTF-8" '
                             'and upload it again.']


def test_non_utf8_names_the_line_and_byte():
    data = f"{HEADER}\n{A},\n".encode() + "Müller,\n".encode("latin-1")
    assert lines(parse(data)) == ['Line 3: this is not UTF-8 text (byte 2 of the line, 0xFC). Save the file as '
                                  '"CSV UTF-8" and upload it again.']


@pytest.mark.parametrize("cell", ["=HYPERLINK(\"http://x\")", "+1", "-2023-08-17T19:03:12Z", "@SUM(A1)"])
def test_a_formula_in_a_checked_column_is_refused_as_a_formula(cell):
    (message,) = lines(parse(f"{HEADER}\n{A},{cell}\n".encode()))
    assert message.startswith(f'Line 2: customFields.pti_synced "{cell}" starts with {cell[0]}, which a '
                              "spreadsheet would run as a formula")


def test_a_formula_in_the_id_column_is_refused_as_a_formula():
    (message,) = lines(parse(f'{HEADER}\n"=cmd|\' /C calc\'!A0",\n'.encode()))
    assert "starts with =, which a spreadsheet would run as a formula" in message


def test_a_long_bad_value_is_quoted_short():
    (message,) = lines(parse(f"{HEADER}\n{'x' * 500},\n".encode()))
    assert f'"{"x" * 40}…"' in message and "x" * 41 not in message


def test_an_unclosed_quote_is_reported_with_its_line():
    result = parse(f'{HEADER}\n{A},\n"{B},\n'.encode())
    assert not result.ok and result.rows == []
    assert lines(result)[0].startswith("Line ") and "check the quotes" in lines(result)[0]


def test_errors_beyond_the_listing_limit_are_counted():
    data = (HEADER + "\n" + "bad,\n" * (csvpush.MAX_ERRORS + 7)).encode()
    result = parse(data)
    assert len(result.errors) == csvpush.MAX_ERRORS and result.error_count == csvpush.MAX_ERRORS + 7


def test_unknown_rental_ids_are_reported_by_line():
    rows = [CsvRow(2, A, None, None), CsvRow(3, B, None, None)]
    assert [str(e) for e in unknown_rental_errors(rows, {A})] == [
        f"Line 3: no rental with id {B} is known here (check it is a rental id of this business, not a unit or "
        "customer id)."]


@pytest.mark.parametrize(("value", "cell"), [("=1+1", "'=1+1"), ("+44", "'+44"), ("-3", "'-3"), ("@x", "'@x"),
                                             ("\tx", "'\tx"), ("ok", "ok"), (None, ""), (7, "7")])
def test_export_cells_that_start_a_formula_are_escaped(value, cell):
    assert escape_cell(value) == cell


def test_the_callers_check_joins_the_other_errors_in_line_order():
    def check(rows):
        return unknown_rental_errors(rows, {A})

    result = parse(f"{HEADER}\n{A},\n{B},\nbad,\n".encode(), check=check)
    assert [e.line for e in result.errors] == [3, 4] and result.rows == []
    assert parse(f"{HEADER}\n{A},\n".encode(), check=check).ok

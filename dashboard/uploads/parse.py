"""Read and validate a bulk-push CSV (domain.md behaviour 10): bytes in, the rows or every error by line out.

Pure: no Flask, no database. Whether a rental id exists is the caller's question, asked through `check`.
The columns are Storeganise's own export/update names, so a file exported from Storeganise works as it is.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from dashboard.storeganise.values import ValueProblem, read_bool, read_datetime

ID_COLUMN = "id"
SYNCED_COLUMN = "customFields.pti_synced"
OVERLOCKED_COLUMN = "customFields.pti_overlocked"
REQUIRED_COLUMNS = (ID_COLUMN, SYNCED_COLUMN)

MAX_ROWS = 100_000  # one upload; a bigger business is split into several files
CHUNK_ROWS = 2_000  # rows checked against the mirror, stored and reported as progress at a time
DECODE_PIECE = 1 << 20  # bytes checked as UTF-8 at a time
MAX_ERRORS = 500  # errors kept and listed; the count of the rest is still reported
FORMULA_PREFIXES = ("=", "+", "-", "@")  # what spreadsheet programs run as a formula
ECHO_CHARS = 40  # how much of a bad value an error message quotes

RENTAL_ID = re.compile(r"[0-9a-f]{24}")
# Values are read by the rules every Storeganise reader shares (storeganise/values.py): pti_synced as ISO-8601, year
# first, where a date alone (2023-09-13, as the seed writes it) is midnight UTC and a time without a zone is UTC
# (Storeganise exports in UTC); day/month forms such as 13/09/2023 are refused, never guessed.
SYNCED_FORMATS = ("is not a date and time PTI Sync can read: type a date like 2023-08-17 or a date and time like "
                  "2023-08-17T19:03:12.008Z (ISO-8601, year first, never day/month; a time without a zone is read "
                  "as UTC), or leave it empty")
OVERLOCKED_FORMATS = "must be true or false (yes/no, on/off and 1/0 work too), or empty to leave it as it is"


@dataclass(frozen=True)
class CsvRow:
    line: int
    rental_id: str  # Storeganise rental id, lower case
    pti_synced: datetime | None  # naive UTC; None = leave as it is, just push
    overlocked: bool | None  # None = leave as it is


@dataclass(frozen=True)
class CsvError:
    line: int | None  # None: about the whole file
    message: str

    def __str__(self) -> str:
        return self.message if self.line is None else f"Line {self.line}: {self.message}"


@dataclass
class ParsedCsv:
    rows: list[CsvRow] = field(default_factory=list)
    errors: list[CsvError] = field(default_factory=list)
    error_count: int = 0  # every error found, also those beyond MAX_ERRORS
    row_count: int = 0  # data rows in the file, valid or not

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    def add_error(self, line: int | None, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(CsvError(line, message))


def parse(data: bytes, check: Callable[[list[CsvRow]], list[CsvError]] | None = None) -> ParsedCsv:
    """Every row checked before anything is used: the result has either rows or errors, never a partial mix.

    `check` is the caller's own test of the rows that are valid on their own (e.g. unknown rental ids); its
    errors join the others in line order, so one upload lists every problem of the file at once.
    The whole file at once, for small files and tests; the upload job reads `read_chunks` itself.
    """
    result = ParsedCsv()
    for rows in read_chunks(data, result):
        result.rows.extend(rows)
        if check is not None:
            for error in check(rows):
                result.add_error(error.line, error.message)
    if not result.ok:
        result.rows = []
    return result


def read_chunks(data: bytes, result: ParsedCsv, size: int | None = None) -> Iterator[list[CsvRow]]:
    """The rows valid on their own, `size` at a time in line order, while every error goes to `result`.

    Streaming: the text is decoded a few kilobytes at a time and only one chunk of rows is held, so a 100,000-row
    file costs little more than its bytes. `result.row_count` says how many data rows were read so far (a job's
    progress). The caller adds its own errors about a chunk before asking for the next one; once the file is read,
    the errors are put in line order.
    """
    if (bad := _utf8_error(data)) is not None:
        line_start = data.rfind(b"\n", 0, bad) + 1
        line = data.count(b"\n", 0, bad) + 1
        result.add_error(line, f"this is not UTF-8 text (byte {bad - line_start + 1} of the line, "
                               f"0x{data[bad]:02X}). Save the file as \"CSV UTF-8\" and upload it again.")
        return
    size = size or CHUNK_ROWS
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")
    reader = csv.reader(text, strict=True)
    chunk: list[CsvRow] = []
    try:
        header, header_line = _header(reader)
        if not header:
            result.add_error(None, "The file is empty. Upload a CSV whose first line is the header "
                                   f"{ID_COLUMN},{SYNCED_COLUMN}.")
            return
        if not _check_header(header, header_line, result):
            return
        columns = {name: header.index(name) for name in (ID_COLUMN, SYNCED_COLUMN, OVERLOCKED_COLUMN)
                   if name in header}
        seen: dict[str, int] = {}
        line = reader.line_num + 1
        for cells in reader:
            if any(cell.strip() for cell in cells):
                result.row_count += 1
                if result.row_count > MAX_ROWS:
                    _too_many(reader, result.row_count, result)
                    return
                row = _row(cells, line, len(header), columns, seen, result)
                if row is not None:
                    chunk.append(row)
                    if len(chunk) >= size:
                        yield chunk
                        chunk = []
            line = reader.line_num + 1
    except csv.Error as exc:
        result.add_error(reader.line_num, f"the file cannot be read as CSV here ({exc}); check the quotes.")
    if chunk:
        yield chunk
    if result.ok and result.row_count == 0:
        result.add_error(None, "The file has a header but no data rows: add one line per rental to push.")
    result.errors.sort(key=lambda e: e.line or 0)


def unknown_rental_errors(rows: list[CsvRow], known_ids: set[str]) -> list[CsvError]:
    """Rows whose rental PTI Sync does not know (not in the mirror: wrong business, or not imported yet)."""
    return [CsvError(row.line, f"no rental with id {row.rental_id} is known here (check it is a rental id of "
                               "this business, not a unit or customer id).")
            for row in rows if row.rental_id not in known_ids]


def escape_cell(value: object) -> str:
    """A cell safe to open in a spreadsheet: one starting with = + - @ (or tab, CR) gets a leading apostrophe."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith((*FORMULA_PREFIXES, "\t", "\r")) else text


def _utf8_error(data: bytes) -> int | None:
    """Where the first byte that is not UTF-8 is, or None; checked a megabyte at a time (no copy of the whole text)."""
    if data.isascii():
        return None
    view, start = memoryview(data), 0
    while start < len(data):
        final = start + DECODE_PIECE >= len(data)
        try:
            _, used = codecs.utf_8_decode(view[start:start + DECODE_PIECE], "strict", final)
        except UnicodeDecodeError as exc:
            return start + exc.start
        start += used
    return None


def _header(reader) -> tuple[list[str], int]:
    for cells in reader:
        if any(cell.strip() for cell in cells):
            return [cell.strip() for cell in cells], reader.line_num
    return [], reader.line_num


def _check_header(header: list[str], line: int, result: ParsedCsv) -> bool:
    expected = f"{ID_COLUMN} and {SYNCED_COLUMN} ({OVERLOCKED_COLUMN} may follow)"
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        found = ", ".join(_quote(name) for name in header if name) or "nothing"
        result.add_error(line, f"the header must name the columns {expected}, exactly as Storeganise exports them; "
                               f"missing {' and '.join(missing)}; found {found}.")
        return False
    repeated = sorted({name for name in header if name and header.count(name) > 1})
    if repeated:
        result.add_error(line, f"the header names {', '.join(repeated)} more than once; each column may appear "
                               "once.")
        return False
    return True


def _too_many(reader, data_rows: int, result: ParsedCsv) -> None:
    total = data_rows + sum(1 for cells in reader if any(cell.strip() for cell in cells))
    result.errors, result.error_count, result.row_count = [], 0, total
    result.add_error(None, f"The file has {total:,} rows; an upload takes at most {MAX_ROWS:,}. "
                           "Split it into several files.")


def _row(cells: list[str], line: int, width: int, columns: dict[str, int], seen: dict[str, int],
         result: ParsedCsv) -> CsvRow | None:
    """The row when it is valid on its own; else its errors go to `result`."""
    if len(cells) != width:
        values = f"{len(cells)} value" + ("" if len(cells) == 1 else "s")
        result.add_error(line, f"this line has {values} but the header has {width} columns; check for a missing or "
                               "extra comma.")
        return None
    errors_before = result.error_count
    rental_id = _rental_id(cells[columns[ID_COLUMN]].strip(), line, result)
    synced = _cell(read_datetime, cells[columns[SYNCED_COLUMN]].strip(), SYNCED_COLUMN, SYNCED_FORMATS, line, result)
    overlocked = (_cell(read_bool, cells[columns[OVERLOCKED_COLUMN]].strip(), OVERLOCKED_COLUMN, OVERLOCKED_FORMATS,
                        line, result) if OVERLOCKED_COLUMN in columns else None)
    if rental_id is not None:
        if rental_id in seen:
            result.add_error(line, f"rental {rental_id} is already on line {seen[rental_id]}; each rental may "
                                   "appear once.")
        else:
            seen[rental_id] = line
    if result.error_count == errors_before and rental_id is not None:
        return CsvRow(line, rental_id, synced, overlocked)
    return None


def _rental_id(value: str, line: int, result: ParsedCsv) -> str | None:
    if not value:
        result.add_error(line, f"the {ID_COLUMN} is empty; give the Storeganise rental id.")
        return None
    if RENTAL_ID.fullmatch(value.lower()):
        return value.lower()
    result.add_error(line, _refusal(value, ID_COLUMN, "is not a Storeganise rental id (24 characters 0-9 and a-f, "
                                                      "like 64de6eebdd7adb0014825d1a)"))
    return None


def _cell(reader, value: str, column: str, formats: str, line: int, result: ParsedCsv):
    """The cell read by the shared Storeganise rules; an error on the line when it cannot be read."""
    try:
        return reader(value)
    except ValueProblem:
        result.add_error(line, _refusal(value, column, formats))
        return None


def _refusal(value: str, column: str, why: str) -> str:
    if value.startswith(FORMULA_PREFIXES):
        return (f"{column} {_quote(value)} starts with {value[0]}, which a spreadsheet would run as a formula, and "
                f"is not a valid value: it {why}.")
    return f"{column} {_quote(value)} {why}."


def _quote(value: str) -> str:
    return f'"{value[:ECHO_CHARS]}…"' if len(value) > ECHO_CHARS else f'"{value}"'

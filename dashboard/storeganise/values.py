"""One lenient rule set for every value read from Storeganise (docs/storeganise.md, "Reading values").

Staff type custom-field values by hand, and a CSV edit turns them into strings, so a value arrives either as the
type its field was created with or as text: `true`, `"true"`, `"Yes"` and `1` all mean the same flag. Every reader
here accepts both, returns None for "not set" (None or empty text), and raises `ValueProblem` for anything it
cannot read without guessing, with words and a fix an operator can act on. The caller names the field
(`problem.field = "pti_synced"`) and records the problem on its record; it never stops the records around it.

Pure: standard library only, no Flask, database, Redis or HTTP.

Times are returned as naive UTC datetimes, like everything the product stores. A time written without a zone
(`2023-09-13T10:00`) is read as **UTC**: Storeganise itself writes and exports every timestamp in UTC (with a `Z`),
so a value that lost its `Z` in a spreadsheet is still right, and the pure reader knows no site's clock to
choose another. A date alone (`2023-09-13`, as the seed shows `pti_synced`) means midnight UTC that day.
Day/month order is never guessed: `13/09/2023` is refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta

ECHO_CHARS = 40  # how much of a bad value a problem quotes

TRUE_WORDS = frozenset({"true", "yes", "1", "on"})
FALSE_WORDS = frozenset({"false", "no", "0", "off"})

BOOL_FIX = "Type true or false (yes/no, on/off and 1/0 work too), or leave it empty."
INT_FIX = "Type a whole number like 7, digits only, or leave it empty."
DATETIME_FIX = ("Type a date like 2023-09-13 or 2023-09-13T10:00:00Z (ISO-8601, year first; a time without a zone "
                "is read as UTC), or leave it empty.")
TEXT_FIX = "Type the value as plain text, or leave it empty."

_INT_TEXT = re.compile(r"[+-]?[0-9]+(\.0*)?", re.ASCII)
_ISO = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"(?:[T ](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})(?::(?P<second>[0-9]{2})(?:[.,](?P<fraction>[0-9]{1,9}))?)?"
    r"(?P<zone>Z|[+-](?P<zh>[0-9]{2})(?::?(?P<zm>[0-9]{2}))?)?)?",
    re.ASCII | re.IGNORECASE,
)
_LOCAL_DATE = re.compile(r"[0-9]{1,2}[/.\-][0-9]{1,2}[/.\-][0-9]{2,4}")  # 13/09/2023, 09.13.23: order unknown


class ValueProblem(Exception):
    """A value that cannot be read without guessing, in words an operator can act on.

    `value` is a short, printable echo of what was found (never more than ECHO_CHARS characters of it, and only a
    description for lists and objects, so a problem never carries a whole record); `field` is set by the caller
    that knows which field it read.
    """

    def __init__(self, value: object, message: str, fix: str, *, field: str | None = None) -> None:
        self.value = echo(value)
        self.message = message
        self.fix = fix
        self.field = field
        super().__init__(message)

    def __str__(self) -> str:
        where = f"{self.field} " if self.field else ""
        return f"{where}{self.value}: {self.message} {self.fix}"

    def __repr__(self) -> str:
        return f"ValueProblem(field={self.field!r}, value={self.value!r}, message={self.message!r})"


def read_bool(value: object) -> bool | None:
    """True/False from a flag, "true"/"false", "yes"/"no", "on"/"off", 1/0 or "1"/"0" (any case, spaces ignored).

    None and empty text → None (not set); anything else raises ValueProblem.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        if value == 1:
            return True
        if value == 0:
            return False
        raise ValueProblem(value, "This number is not a yes/no value.", BOOL_FIX)
    if isinstance(value, str):
        word = value.strip().lower()
        if not word:
            return None
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ValueProblem(value, "This is not a yes/no value.", BOOL_FIX)
    raise ValueProblem(value, f"This is {_kind(value)}, not a yes/no value.", BOOL_FIX)


def read_int(value: object) -> int | None:
    """A whole number from an int, an integral float (7.0) or numeric text ("7", " 7 ", "7.0", "+7", "-7").

    None and empty text → None; flags (true/false), words ("24 Hours"), fractions (7.5) and anything else raise
    ValueProblem.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueProblem(value, "This is a yes/no value, not a number.", INT_FIX)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        raise ValueProblem(value, "This is not a whole number.", INT_FIX)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if _INT_TEXT.fullmatch(text):
            try:
                return int(text.split(".", 1)[0])
            except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
                raise ValueProblem(value, "This number is far too long.", INT_FIX) from None
        raise ValueProblem(value, "This is not a whole number.", INT_FIX)
    raise ValueProblem(value, f"This is {_kind(value)}, not a number.", INT_FIX)


def read_datetime(value: object) -> datetime | None:
    """A naive UTC datetime from ISO-8601 text or a datetime (or date) object.

    Accepted: `2023-09-13` (midnight UTC), `2023-09-13T10:00`, `…T10:00:00`, `…T10:00:00.123` (up to 9 fraction
    digits, kept to the microsecond), each with `Z`, an offset (`+02:00`, `+0200`, `+02`) or no zone (read as UTC);
    a space may stand for the `T`. An aware datetime is converted to UTC, a naive one is taken as UTC.
    None and empty text → None. Anything else raises ValueProblem, including `13/09/2023` (day/month order is
    never guessed), `yesterday`, epoch numbers and impossible dates (2023-02-30).
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value
        try:
            return value.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:  # year 1 or 9999 moved past the calendar's edge by its offset
            raise ValueProblem(value, "This date is outside the calendar PTI Sync can store.", DATETIME_FIX) from None
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if not isinstance(value, str):
        raise ValueProblem(value, f"This is {_kind(value)}, not a date.", DATETIME_FIX)
    text = value.strip()
    if not text:
        return None
    match = _ISO.fullmatch(text)
    if match is None:
        if _LOCAL_DATE.fullmatch(text):
            raise ValueProblem(value, "PTI Sync does not guess whether this date is day/month or month/day.",
                               DATETIME_FIX)
        raise ValueProblem(value, "This is not a date PTI Sync can read.", DATETIME_FIX)
    return _from_iso(match, value)


def read_text(value: object) -> str | None:
    """Text with surrounding spaces removed; a number becomes its digits (7 → "7", 7.0 → "7").

    None and empty (or blank) text → None. Flags, lists and objects raise ValueProblem.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool):
        raise ValueProblem(value, "This is a yes/no value, not text.", TEXT_FIX)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else repr(value)
    raise ValueProblem(value, f"This is {_kind(value)}, not text.", TEXT_FIX)


def localised(value: object, prefer: Iterable[str] = ("en",)) -> str | None:
    """The text of a localised value such as a site's title `{"en": "Northgate", "fr": "Porte Nord"}`.

    The first preferred language with text wins (an exact key, else a regional one: "en" finds "en-GB"), else the
    first language with text, in the order Storeganise sent them. Plain text passes through (stripped). None, an
    empty object and blank texts → None. Anything else, or an object holding no text at all, raises ValueProblem.
    """
    if value is None or isinstance(value, str):
        return read_text(value)
    if not isinstance(value, Mapping):
        raise ValueProblem(value, f"This is {_kind(value)}, not a name.", TEXT_FIX)
    texts: dict[str, str] = {}
    unreadable = False
    for language, text in value.items():
        if isinstance(text, str):
            if text.strip():
                texts.setdefault(str(language).lower(), text.strip())
        elif text is not None:
            unreadable = True
    preferred = (prefer,) if isinstance(prefer, str) else tuple(prefer)
    for language in (str(p).lower() for p in preferred):
        if language in texts:
            return texts[language]
        for key, text in texts.items():
            if key.replace("_", "-").split("-", 1)[0] == language:
                return text
    if texts:
        return next(iter(texts.values()))
    if unreadable:
        raise ValueProblem(value, "This name holds no text in any language.", TEXT_FIX)
    return None


def echo(value: object) -> str:
    """A short, printable description of `value` for a message: never the whole of a long value or a record."""
    if isinstance(value, Mapping):
        return f"an object with {len(value)} key(s)"
    if isinstance(value, list | tuple | set | frozenset):
        return f"a list of {len(value)} item(s)"
    text = value if isinstance(value, str) else repr(value)
    text = "".join(c if c.isprintable() else "?" for c in text[:ECHO_CHARS + 1])
    return f'"{text[:ECHO_CHARS]}…"' if len(text) > ECHO_CHARS else f'"{text}"'


def _kind(value: object) -> str:
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple | set | frozenset):
        return "a list"
    if isinstance(value, bool):
        return "a yes/no value"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


def _from_iso(match: re.Match, original: str) -> datetime:
    parts = match.groupdict()
    fraction = (parts["fraction"] or "").ljust(6, "0")[:6]
    try:
        moment = datetime(int(parts["year"]), int(parts["month"]), int(parts["day"]), int(parts["hour"] or 0),
                          int(parts["minute"] or 0), int(parts["second"] or 0), int(fraction or 0))
        zone = parts["zone"]
        if zone and zone.upper() != "Z":
            hours, minutes = int(parts["zh"]), int(parts["zm"] or 0)
            if hours > 23 or minutes > 59:
                raise ValueError("offset out of range")
            offset = timedelta(hours=hours, minutes=minutes)
            moment = moment - offset if zone[0] == "+" else moment + offset
    except (ValueError, OverflowError):
        raise ValueProblem(original, "This date does not exist (check the month, day, hour and zone).",
                           DATETIME_FIX) from None
    return moment

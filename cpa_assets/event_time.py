"""What an event's instant and date are, and which landing lines count: defined once for the
sensor's planning (plain Python) and for bronze (Spark), which must agree line for line.

An event's `timestamp` is ISO-8601: a date, optionally a time to the minute, second or fraction of
a second, optionally an offset (`Z`, `+hh:mm` or `+hhmm`); without an offset it is UTC. Its
`event_date` is the UTC date of that instant: `2025-07-10T01:30:00+02:00` is dated 2025-07-09.
Anything else is not a timestamp (the line is rejected as `bad_timestamp`).

A line is blank when it holds nothing but ASCII whitespace; the ledger and the readers skip exactly
those lines. A line whose bytes are not UTF-8 is evidence, never decoded with replacement
characters: bronze rejects it as `invalid_utf8` with its bytes in base64."""

from __future__ import annotations

import datetime as dt
import json
import re

from pyspark.sql import Column
from pyspark.sql import functions as F

TIMESTAMP_PATTERN = (
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?)?"
    r"(Z|[+-]\d{2}:?\d{2})?$"
)
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)

# JSON's whitespace plus vertical tab and form feed: what Python's bytes.strip() removes.
BLANK_BYTES = b" \t\r\x0b\x0c"
BLANK_LINE_PATTERN = r"^[ \t\r\x0B\f]*$"

# The sensor plans from text it reads without Spark's JSON parser: a line that Python's parser
# refuses but Spark's accepts (or a key spelled in another case, which Spark matches) must still
# give its date, so every string value of a "timestamp" key counts.
_TIMESTAMP_VALUES = re.compile(rb'"timestamp"\s*:\s*"([^"\\]*)"', re.IGNORECASE)


def utc_date(text: object) -> str | None:
    """The UTC date (`YYYY-MM-DD`) of an event timestamp, or None when it is not one."""
    if not isinstance(text, str):
        return None
    match = _TIMESTAMP.match(text)
    if not match:
        return None
    year, month, day, hour, minute, second, offset = match.groups()
    try:
        instant = dt.datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    except ValueError:
        return None
    if offset and offset != "Z":
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:])
        if hours > 18 or minutes > 59:
            return None
        instant -= sign * dt.timedelta(hours=hours, minutes=minutes)
    return instant.date().isoformat()


def line_dates(line: bytes) -> set[str]:
    """Every UTC date a landing line may be stored under: its parsed timestamp's and those of any
    `"timestamp": "…"` text in it (a superset of what bronze can store, never less)."""
    dates = {utc_date(value.decode("utf-8", "replace")) for value in _TIMESTAMP_VALUES.findall(line)}
    try:
        parsed = json.loads(line)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        dates.add(utc_date(parsed.get("timestamp")))
    dates.discard(None)
    return dates


def is_blank(line: bytes) -> bool:
    return not line.strip(BLANK_BYTES + b"\n")


def spark_timestamp(text: Column) -> Column:
    """The instant of an event timestamp in Spark (the session time zone is UTC), null when the
    text is not one: the same strings `utc_date` accepts, to the same instant."""
    return F.when(text.rlike(TIMESTAMP_PATTERN), text.try_cast("timestamp"))

"""Cheap looks at landing files that decide which partitions a file touches, without Spark."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import dagster as dg

from cpa_assets.event_time import line_dates
from cpa_assets.partitions import event_date_partitions

CALENDAR_VARIABLES = ("CPA_FIRST_EVENT_DATE", "CPA_LAST_EVENT_DATE", "CPA_FIRST_TICKET_DATE", "CPA_FIRST_BILLING_MONTH")


def event_dates(path: Path) -> set[str]:
    """The event dates (the UTC date of each timestamp, as bronze stores it) of one events file's
    lines that fall inside the partitions; lines bronze will reject add nothing."""
    first = event_date_partitions.get_first_partition_key()
    last = event_date_partitions.get_last_partition_key()
    dates: set[str] = set()
    with path.open("rb") as handle:
        for line in handle:
            dates |= {day for day in line_dates(line) if first <= day <= last}
    return dates


def csv_partition_range(path: Path, column: str, partitions: dg.TimeWindowPartitionsDefinition) -> tuple[str, str] | None:
    """The first and last partition keys that the valid dates of a CSV column fall in."""
    if not path.exists():
        return None
    keys = set(partitions.get_partition_keys())
    found: set[str] = set()
    with path.open(newline="", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            try:
                day = dt.date.fromisoformat((row.get(column) or "").strip()[:10])
            except ValueError:
                continue
            stamp = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
            key = partitions.get_partition_key_for_timestamp(stamp.timestamp())
            if key in keys:
                found.add(key)
    return (min(found), max(found)) if found else None


def _valid_day(text) -> str | None:
    try:
        return dt.date.fromisoformat(text[:10]).isoformat() if isinstance(text, str) else None
    except ValueError:
        return None


def _csv_days(path: Path, column: str) -> list[str]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return [day for row in csv.DictReader(handle) if (day := _valid_day((row.get(column) or "").strip()))]


def landing_calendar(landing: Path, events: list[Path], today: dt.date | None = None) -> dict[str, str]:
    """The partition bounds that fit a landing folder (see partitions.py): event partitions from the
    first event date; tickets from their first day, billing from its first month. Data whose last
    event is at least yesterday is a live stream: its partitions run through today. Otherwise the
    dataset is historical and every calendar ends on its last event or ticket date."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    days: set[str] = set()
    for path in events:
        with path.open("rb") as handle:
            for line in handle:
                days |= line_dates(line)
    if not days:
        return {}
    tickets = _csv_days(landing / "support_tickets.csv", "created_at")
    months = _csv_days(landing / "billing_monthly.csv", "month")
    calendar = {"CPA_FIRST_EVENT_DATE": min(days), "CPA_FIRST_TICKET_DATE": min([*tickets, min(days)])}
    calendar["CPA_FIRST_BILLING_MONTH"] = (min(months) if months else calendar["CPA_FIRST_TICKET_DATE"])[:8] + "01"
    last = max(days)
    if last < (today - dt.timedelta(days=1)).isoformat():
        calendar["CPA_LAST_EVENT_DATE"] = max([*tickets, last])
    return calendar

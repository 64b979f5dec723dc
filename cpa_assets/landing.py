"""Cheap looks at landing files that decide which partitions a file touches, without Spark."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import dagster as dg

from cpa_assets.event_time import line_dates
from cpa_assets.partitions import event_date_partitions


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

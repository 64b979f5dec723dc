"""Cheap looks at landing files that decide which partitions a file touches, without Spark."""

from __future__ import annotations

import json
from pathlib import Path

from cpa_assets.partitions import event_date_partitions


def event_dates(path: Path) -> set[str]:
    """The event dates (UTC, `YYYY-MM-DD`) of the parseable lines of one events file that fall inside
    the partitions; lines bronze will reject add nothing."""
    first = event_date_partitions.get_first_partition_key()
    last = event_date_partitions.get_last_partition_key()
    dates: set[str] = set()
    with path.open("rb") as handle:
        for line in handle:
            try:
                stamp = json.loads(line).get("timestamp")
            except (ValueError, AttributeError):
                continue
            day = stamp[:10] if isinstance(stamp, str) else None
            if day and first <= day <= last:
                dates.add(day)
    return dates

"""The contract's P1 and P2, computed again from landing files with plain Python and pandas, sharing
no code with the pipeline, so that the Cassandra tables can be compared with something independent."""

import csv
import datetime as dt
import json
from pathlib import Path

import pandas as pd

UNIT_METRICS = ("requests", "cpu_hours", "storage_gb_hours")


def _is_valid(row: dict, dates: tuple[str, ...]) -> bool:
    """The contract rejects a CSV row whose date does not exist (e.g. 2025-02-30) in bronze."""
    try:
        for column in dates:
            if row[column]:
                dt.date.fromisoformat(row[column])
    except ValueError:
        return False
    return True


def _first_by_key(path: Path, key: str, dates: tuple[str, ...]) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            if row[key] and _is_valid(row, dates):
                rows.setdefault(row[key], row)
    return rows


def _number(value):
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "bad"
    return number if number == number else "bad"


def landing_events(landing: Path) -> list[dict]:
    """Every usable event once: parseable JSON with an event_id and timestamp, first arrival by file name then line."""
    seen: set[str] = set()
    events = []
    for path in sorted((landing / "usage_events_stream").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                event = json.loads(line)
                stamp = dt.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            if not event.get("event_id") or event["event_id"] in seen:
                continue
            seen.add(event["event_id"])
            events.append({**event, "usage_date": stamp.date()})
    return events


def silver_events(landing: Path) -> pd.DataFrame:
    """Events that pass EV-02, EV-05, RI-01 and RI-02."""
    orgs = _first_by_key(landing / "customers_orgs.csv", "org_id", ("signup_date",))
    resources = _first_by_key(landing / "resources.csv", "resource_id", ("created_at",))
    kept = []
    for event in landing_events(landing):
        value = _number(event.get("value"))
        cost = event.get("cost_usd_increment")
        resource = resources.get(event.get("resource_id"))
        if value == "bad" or (cost is not None and float(cost) < -0.01):
            continue
        if event.get("org_id") not in orgs or resource is None or resource["org_id"] != event["org_id"]:
            continue
        kept.append({**event, "value": value, "cost_usd_increment": None if cost is None else float(cost)})
    return pd.DataFrame(kept)


def p1_daily_usage(landing: Path) -> pd.DataFrame:
    events = silver_events(landing)
    for metric in UNIT_METRICS:
        events[metric] = events["value"].where(events["metric"] == metric).fillna(0.0).astype(float)
    events["cost"] = events["cost_usd_increment"].fillna(0.0)
    events["tokens"] = events.get("genai_tokens", pd.Series(0, index=events.index)).fillna(0).astype("int64")
    events["carbon"] = events.get("carbon_kg", pd.Series(0.0, index=events.index)).fillna(0.0).astype(float)
    grouped = events.groupby(["org_id", "usage_date", "service"], as_index=False).agg(
        daily_cost_usd=("cost", "sum"),
        requests=("requests", "sum"),
        cpu_hours=("cpu_hours", "sum"),
        storage_gb_hours=("storage_gb_hours", "sum"),
        genai_tokens=("tokens", "sum"),
        carbon_kg=("carbon", "sum"),
        event_count=("event_id", "count"),
    )
    return grouped


def p2_top_services(daily: pd.DataFrame, first: dt.date, last: dt.date) -> pd.DataFrame:
    rows = []
    day = first
    while day <= last:
        window = daily[(daily.usage_date > day - dt.timedelta(days=14)) & (daily.usage_date <= day)]
        totals = window.groupby(["org_id", "service"], as_index=False).daily_cost_usd.sum()
        for org_id, group in totals.groupby("org_id"):
            ordered = sorted(zip(group.service, group.daily_cost_usd), key=lambda sc: (-sc[1], sc[0]))
            rows += [(org_id, day, rank, service, cost) for rank, (service, cost) in enumerate(ordered, 1)]
        day += dt.timedelta(days=1)
    return pd.DataFrame(rows, columns=["org_id", "as_of_date", "rank", "service", "total_cost_usd"])

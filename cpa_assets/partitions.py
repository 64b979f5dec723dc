"""Partitions, windows and policies shared by assets, sensors, schedules and the CLI."""

import datetime as dt
import os
import warnings

import dagster as dg

# Time-window mappings that reach before the first partition and single-run backfills are the
# intended design here; Dagster labels both as beta.
warnings.filterwarnings("ignore", category=dg.BetaWarning)

# The days an event may carry: from FIRST_EVENT_DATE through LAST_EVENT_DATE, or through today
# (UTC) when no last date is set, as for a live stream. Events dated outside have no partition to
# live in, so bronze sends them to the rejects table instead of losing them. A historical dataset
# sets both to its own first and last dates (`cpa calendar` prints them, `make run` uses it), so the
# UI lists only the dates that can hold data instead of opening on an empty today.
FIRST_EVENT_DATE = os.environ.get("CPA_FIRST_EVENT_DATE") or "2025-01-01"
LAST_EVENT_DATE = os.environ.get("CPA_LAST_EVENT_DATE") or None


def daily_partitions(first: str, last: str | None = LAST_EVENT_DATE) -> dg.DailyPartitionsDefinition:
    """Daily UTC partitions from `first` through `last` (inclusive), or through today."""
    if last is None:
        return dg.DailyPartitionsDefinition(start_date=first, timezone="UTC", end_offset=1)
    end = (dt.date.fromisoformat(last) + dt.timedelta(days=1)).isoformat()  # Dagster's end is exclusive
    return dg.DailyPartitionsDefinition(start_date=first, end_date=end, timezone="UTC")


event_date_partitions = daily_partitions(FIRST_EVENT_DATE)

TOP_SERVICES_WINDOW_DAYS = 14

# P2 for day D sums the daily mart over D-13 … D; the earliest days simply have a shorter history.
top_services_window = dg.TimeWindowPartitionMapping(
    start_offset=-(TOP_SERVICES_WINDOW_DAYS - 1), end_offset=0, allow_nonexistent_upstream_partitions=True
)

# Cost anomalies of day D are judged against the 28 days before it: four weeks hold every weekday
# four times and still follow a level that drifts over a quarter (see gold/anomalies.py).
ANOMALY_BASELINE_DAYS = 28
anomaly_baseline_window = dg.TimeWindowPartitionMapping(
    start_offset=-ANOMALY_BASELINE_DAYS, end_offset=0, allow_nonexistent_upstream_partitions=True
)

# One run (one SparkSession) materialises a whole partition range: the per-partition overhead of
# Spark jobs and Dagster steps would otherwise dominate the backfill.
single_run = dg.BackfillPolicy.single_run()

# Steps that make P1 readable go first among the steps ready to run: in a stream run the daily
# mart and the serving tables are written before the other marts, so the freshest answer of the
# most asked question does not wait for P2, P5 and P6.
serve_first = {"dagster/priority": "1"}

# The landing ledger (rejects, duplicates, per-file counts) is bookkeeping no serving table reads:
# in a stream run it goes after every mart and table.
bookkeeping_last = {"dagster/priority": "-1"}

# The tags that make a run cover a range of partitions (Dagster's public tag names).
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"

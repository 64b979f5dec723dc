"""Partitions, windows and policies shared by assets, sensors, schedules and the CLI."""

import os
import warnings

import dagster as dg

# Time-window mappings that reach before the first partition and single-run backfills are the
# intended design here; Dagster labels both as beta.
warnings.filterwarnings("ignore", category=dg.BetaWarning)

# The first day an event may carry. Events dated outside [FIRST_EVENT_DATE, today + 1] have no
# partition to live in, so bronze sends them to the rejects table instead of losing them.
FIRST_EVENT_DATE = os.environ.get("CPA_FIRST_EVENT_DATE", "2025-01-01")

event_date_partitions = dg.DailyPartitionsDefinition(
    start_date=FIRST_EVENT_DATE, timezone="UTC", end_offset=1
)

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

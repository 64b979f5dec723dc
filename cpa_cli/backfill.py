"""`cpa backfill`: materialise every asset for every partition the landing data holds, one run per
partitioning (what a UI backfill of everything does with single-run backfill policies)."""

import argparse
import sys
import threading
import time

import dagster as dg

from cpa_assets.batch_partitions import billing_month_partitions, ticket_date_partitions
from cpa_assets.jobs import BILLING_MARTS, TICKET_MARTS
from cpa_assets.landing import csv_partition_range, event_dates
from cpa_assets.partitions import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG
from cpa_resources import LakeResource
from cpa_resources.cassandra import CassandraUnavailable


def landing_date_range(lake: LakeResource) -> tuple[str, str] | None:
    dates: set[str] = set()
    for path in lake.event_files():
        dates |= event_dates(path)
    return (min(dates), max(dates)) if dates else None


def step_seconds(results: list[dg.ExecuteInProcessResult]) -> dict[str, float]:
    """Time spent in each step that succeeded, by step key (`bronze__usage_events`, …)."""
    seconds: dict[str, float] = {}
    for result in results:
        for event in result.all_events:
            if event.event_type_value == "STEP_SUCCESS":
                seconds[event.step_key] = seconds.get(event.step_key, 0.0) + event.event_specific_data.duration_ms / 1000
    return seconds


def layer_seconds(results: list[dg.ExecuteInProcessResult]) -> dict[str, float]:
    """Time spent in the steps of each layer (bronze, silver, gold, cassandra)."""
    seconds: dict[str, float] = {}
    for step, spent in step_seconds(results).items():
        layer = step.split("_")[0]
        seconds[layer] = seconds.get(layer, 0.0) + spent
    return seconds


def slowest_steps(results: list[dg.ExecuteInProcessResult], count: int = 8) -> str:
    ranked = sorted(step_seconds(results).items(), key=lambda item: -item[1])[:count]
    return ", ".join(f"{step} {spent:.1f}" for step, spent in ranked)


def failed_checks(result: dg.ExecuteInProcessResult) -> list[str]:
    return [
        e.asset_check_evaluation_data.asset_check_key.to_user_string()
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.asset_check_evaluation_data.passed
    ]


def run_range(defs, job: str, start: str, end: str, instance, selection=None) -> dg.ExecuteInProcessResult:
    """One run of a job over a partition range, logging one line per asset."""
    job_def = defs.resolve_job_def(job)
    keys = selection.resolve(defs.resolve_asset_graph()) if selection is not None else None
    return job_def.execute_in_process(
        instance=instance,
        tags={PARTITION_RANGE_START_TAG: start, PARTITION_RANGE_END_TAG: end},
        asset_selection=list(keys) if keys else None,
        # Each asset logs one line of progress at INFO; Dagster's own event chatter is DEBUG.
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        raise_on_error=False,
    )


def run_backfill(
    defs: dg.Definitions,
    start: str | None = None,
    end: str | None = None,
    instance: dg.DagsterInstance | None = None,
) -> list[dg.ExecuteInProcessResult]:
    """Event dates [start, end] (default: those found in landing), then every ticket day and billing
    month the CSVs hold. Returns the runs; the first one carries the CSV snapshots."""
    lake: LakeResource = defs.resources["lake"]
    instance = instance or dg.DagsterInstance.get()
    if start is None or end is None:
        found = landing_date_range(lake)
        if found is None:
            raise SystemExit(f"no usage events in {lake.events_dir()}: run `cpa generate` or set CPA_LANDING_DIR")
        start, end = start or found[0], end or found[1]
    began = time.perf_counter()
    # The JVM starts while Dagster prepares the run; the first step then finds the session ready.
    threading.Thread(target=lambda: defs.resources["spark"].spark_session, daemon=True).start()
    plan = [("usage_pipeline", (start, end), None, f"event dates {start} … {end}")]
    for job, file_name, column, partitions, selection, what in (
        ("daily_batch", "support_tickets.csv", "created_at", ticket_date_partitions, TICKET_MARTS, "ticket days"),
        ("monthly_billing", "billing_monthly.csv", "month", billing_month_partitions, BILLING_MARTS, "billing months"),
    ):
        found = csv_partition_range(lake.landing_dir() / file_name, column, partitions)
        if found:
            plan.append((job, found, selection, f"{what} {found[0]} … {found[1]}"))
    results = []
    for job, (first, last), selection, what in plan:
        print(f"cpa backfill: {job}, {what}, landing {lake.landing_dir()}", flush=True)
        result = run_range(defs, job, first, last, instance, selection)
        results.append(result)
        for check in failed_checks(result):
            print(f"  failed check: {check}", flush=True)
        if not result.success:
            break
    seconds = time.perf_counter() - began
    ok = all(r.success and not failed_checks(r) for r in results) and len(results) == len(plan)
    print("cpa backfill: seconds per layer " + ", ".join(f"{k} {v:.1f}" for k, v in layer_seconds(results).items()))
    print("cpa backfill: slowest steps (s) " + slowest_steps(results), flush=True)
    print(f"cpa backfill: {'succeeded' if ok else 'FAILED'} in {seconds:.1f}s ({len(results)} runs)", flush=True)
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="start", help="first event date (default: earliest in landing)")
    parser.add_argument("--to", dest="end", help="last event date (default: latest in landing)")


def run(args: argparse.Namespace) -> int:
    from cpa_assets.definitions import defs

    # Serving is the last step of every run: an unreachable Cassandra is said first, not after the lake is built.
    try:
        defs.resources["cassandra"].session()
    except CassandraUnavailable as exc:
        print(f"cpa backfill: {exc}", file=sys.stderr, flush=True)
        return 2
    results = run_backfill(defs, args.start, args.end)
    return 0 if all(r.success and not failed_checks(r) for r in results) else 1

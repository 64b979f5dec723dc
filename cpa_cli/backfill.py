"""`cpa backfill`: materialise every asset for every partition the landing data holds, in runs over
partition ranges (what a UI backfill of everything does with single-run backfill policies), two
of them side by side."""

import argparse
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import dagster as dg

from cpa_assets.batch_partitions import billing_month_partitions, ticket_date_partitions
from cpa_assets.jobs import ALL_SOURCES, BILLING_MARTS, STREAM_SNAPSHOTS, TICKET_MARTS, USAGE_ASSETS, snapshots
from cpa_assets.landing import csv_partition_range, event_dates
from cpa_assets.partitions import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG
from cpa_resources import LakeResource
from cpa_resources.cassandra import CassandraUnavailable
from cpa_resources.lake import HOLD_TAG


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


def run_range(defs, job: str, start: str, end: str, instance, selection=None, hold: str = "") -> dg.ExecuteInProcessResult:
    """One run of a job over a partition range, logging one line per asset; a run of `hold`
    writes under the lake's hold of that name."""
    job_def = defs.resolve_job_def(job)
    keys = selection.resolve(defs.resolve_asset_graph()) if selection is not None else None
    return job_def.execute_in_process(
        instance=instance,
        tags={PARTITION_RANGE_START_TAG: start, PARTITION_RANGE_END_TAG: end, **({HOLD_TAG: hold} if hold else {})},
        asset_selection=list(keys) if keys else None,
        # Each asset logs one line of progress at INFO; Dagster's own event chatter is DEBUG.
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        raise_on_error=False,
    )


def backfill_plan(lake: LakeResource, start: str, end: str) -> list[list[list[tuple]]]:
    """Phases of lanes of runs (job, partition range, selection, what). The lanes of a phase go side
    by side: usage events from landing to Cassandra in one, the other CSV snapshots and the ticket
    and billing marts in the other, once the two snapshots that silver events join with are in."""
    events = (start, end)
    batch_lane = [("usage_pipeline", events, snapshots(*ALL_SOURCES) - STREAM_SNAPSHOTS, "the other CSV snapshots")]
    for job, file_name, column, partitions, selection, what in (
        ("daily_batch", "support_tickets.csv", "created_at", ticket_date_partitions, TICKET_MARTS, "ticket days"),
        ("monthly_billing", "billing_monthly.csv", "month", billing_month_partitions, BILLING_MARTS, "billing months"),
    ):
        found = csv_partition_range(lake.landing_dir() / file_name, column, partitions)
        if found:
            batch_lane.append((job, found, selection, f"{what} {found[0]} … {found[1]}"))
    return [
        [[("usage_pipeline", events, STREAM_SNAPSHOTS, "the orgs and resources snapshots")]],
        [[("usage_pipeline", events, USAGE_ASSETS, f"event dates {start} … {end}")], batch_lane],
    ]


def run_lane(defs, lane: list[tuple], instance, hold: str) -> list[dg.ExecuteInProcessResult]:
    """The runs of a lane one after another, up to the first that fails."""
    results = []
    for job, (first, last), selection, what in lane:
        print(f"cpa backfill: {job}, {what}", flush=True)
        result = run_range(defs, job, first, last, instance, selection, hold)
        results.append(result)
        for check in failed_checks(result):
            print(f"  failed check: {check}", flush=True)
        if not result.success:
            break
    return results


def run_backfill(
    defs: dg.Definitions,
    start: str | None = None,
    end: str | None = None,
    instance: dg.DagsterInstance | None = None,
) -> list[dg.ExecuteInProcessResult]:
    """Event dates [start, end] (default: those found in landing), then every ticket day and billing
    month the CSVs hold, under one hold of the lake. Returns the runs, in the plan's order."""
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
    plan = backfill_plan(lake, start, end)
    print(f"cpa backfill: landing {lake.landing_dir()}", flush=True)
    results: list[dg.ExecuteInProcessResult] = []
    hold = f"cpa backfill {uuid.uuid4().hex[:8]}"
    # An ephemeral instance keeps runs and events in one in-memory SQLite connection, which takes no
    # two runs at once: there the lanes of a phase go one after another.
    side_by_side = 1 if instance.is_ephemeral else max(len(phase) for phase in plan)
    with lake.held(hold), ThreadPoolExecutor(max_workers=side_by_side) as lanes:
        for phase in plan:
            for done in [lanes.submit(run_lane, defs, lane, instance, hold) for lane in phase]:
                results += done.result()
            if not all(r.success for r in results):
                break
    seconds = time.perf_counter() - began
    planned = sum(len(lane) for phase in plan for lane in phase)
    ok = all(r.success and not failed_checks(r) for r in results) and len(results) == planned
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

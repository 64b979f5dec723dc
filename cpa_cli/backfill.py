"""`cpa backfill`: materialise every asset for every event date in landing, as one run per
partitions definition (what a UI backfill of everything does with single-run backfill policies)."""

import argparse
import threading
import time

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from cpa_assets.landing import event_dates
from cpa_resources import LakeResource


def landing_date_range(lake: LakeResource) -> tuple[str, str] | None:
    dates: set[str] = set()
    for path in lake.event_files():
        dates |= event_dates(path)
    return (min(dates), max(dates)) if dates else None


def run_backfill(
    defs: dg.Definitions,
    start: str | None = None,
    end: str | None = None,
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialise the usage pipeline over [start, end] (default: the dates found in landing)."""
    lake: LakeResource = defs.resources["lake"]
    if start is None or end is None:
        found = landing_date_range(lake)
        if found is None:
            raise SystemExit(f"no usage events in {lake.events_dir()}: run `cpa generate` or set CPA_LANDING_DIR")
        start, end = start or found[0], end or found[1]
    print(f"cpa backfill: event dates {start} … {end}, landing {lake.landing_dir()}", flush=True)
    began = time.perf_counter()
    # The JVM starts while Dagster prepares the run; the first step then finds the session ready.
    threading.Thread(target=defs.resources["spark"].session, daemon=True).start()
    result = defs.resolve_job_def("usage_pipeline").execute_in_process(
        instance=instance or dg.DagsterInstance.get(),
        tags={ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end},
        # Each asset logs one line of progress at INFO; Dagster's own event chatter is DEBUG.
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        raise_on_error=False,
    )
    seconds = time.perf_counter() - began
    print("cpa backfill: seconds per layer " + ", ".join(f"{k} {v:.1f}" for k, v in layer_seconds(result).items()))
    failed_checks = [
        e.asset_check_evaluation_data.asset_check_key.to_user_string()
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.asset_check_evaluation_data.passed
    ]
    status = "succeeded" if result.success and not failed_checks else "FAILED"
    print(f"cpa backfill: {status} in {seconds:.1f}s (run {result.run_id})", flush=True)
    for check in failed_checks:
        print(f"  failed check: {check}", flush=True)
    return result


def layer_seconds(result: dg.ExecuteInProcessResult) -> dict[str, float]:
    """Time spent in the steps of each layer (bronze, silver, gold, cassandra)."""
    seconds: dict[str, float] = {}
    for event in result.all_events:
        if event.event_type_value == "STEP_SUCCESS":
            layer = event.step_key.split("_")[0]
            seconds[layer] = seconds.get(layer, 0.0) + event.event_specific_data.duration_ms / 1000
    return seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="start", help="first event date (default: earliest in landing)")
    parser.add_argument("--to", dest="end", help="last event date (default: latest in landing)")


def run(args: argparse.Namespace) -> int:
    from cpa_assets.definitions import defs

    result = run_backfill(defs, args.start, args.end)
    return 0 if result.success else 1

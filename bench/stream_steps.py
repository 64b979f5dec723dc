"""Benchmark: the seconds of each step of appended stream runs, in one process (no `dg dev`, no
sensor daemon): what a file's run spends where, without the noise of the stack around it.

Usage: python bench/stream_steps.py [--landing DIR] [--files N] [--profile FILE]

The landing folder's CSVs and all but its last N event files are backfilled into a scratch lake
and keyspace; then each of the last N files is delivered and run as the sensor would plan it
(`plan_stream_run`), one after another. It prints each run's steps in order with their seconds,
then each step's median over the runs after the first (the first pays the JVM's warm-up).
With --profile, the runs are profiled (cProfile) into FILE."""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.stack import scratch_landing  # noqa: E402

DEFAULT_LANDING = REPO.parent / "shared" / "datasets" / "cloud_provider" / "landing"
KEYSPACE = "cpa_bench_steps"


def step_seconds(instance, run_id: str) -> dict[str, float]:
    import dagster as dg

    starts, seconds = {}, {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[event.step_key] = record.timestamp
        elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            seconds[event.step_key] = record.timestamp - starts[event.step_key]
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landing", type=Path, default=DEFAULT_LANDING)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()

    events = sorted((args.landing / "usage_events_stream").glob("*.jsonl"))
    preloaded, measured = events[: -args.files], events[-args.files:]
    scratch = Path(tempfile.mkdtemp(prefix="cpa-steps-"))
    landing, stream = scratch_landing(args.landing, scratch, preloaded)
    lake_dir = scratch / "lake"

    from cpa_assets import landing as landing_module

    if hasattr(landing_module, "landing_calendar"):  # before the partitions are defined
        os.environ.update(landing_module.landing_calendar(args.landing, events))
    import dagster as dg

    from cpa_assets.definitions import build_definitions
    from cpa_assets.landing import event_dates
    from cpa_assets import sensors
    from cpa_cli.backfill import run_backfill
    from cpa_resources import CassandraResource, LakeResource

    lake = LakeResource(root=str(lake_dir), landing=str(landing))
    cassandra = CassandraResource.from_env().with_keyspace(KEYSPACE)
    cassandra.session().execute(f"DROP KEYSPACE IF EXISTS {KEYSPACE}")
    defs = build_definitions(lake=lake, cassandra=cassandra)
    instance = dg.DagsterInstance.ephemeral()
    began = time.perf_counter()
    run_backfill(defs, None, None, instance=instance)
    print(f"backfill of {len(preloaded)} files: {time.perf_counter() - began:.1f} s", flush=True)

    job = defs.resolve_job_def("usage_stream")
    profiler = cProfile.Profile() if args.profile else None
    runs: list[dict[str, float]] = []
    cursor = None
    for path in measured:
        shutil.copy(path, stream / f".{path.name}")
        os.replace(stream / f".{path.name}", stream / path.name)
        dates_of = lambda name: event_dates(lake.events_dir() / name)  # noqa: E731
        if hasattr(sensors, "Tick"):
            tick = sensors.Tick(sensors.listing_of(lake), sensors.ledger_of(lake), [], False, time.time())
            request, cursor = sensors.plan_stream_run(cursor, tick, dates_of)
        else:  # the sensor of earlier commits, whose cursor listed every file: compare step times across commits
            if cursor is None:
                cursor = json.dumps({"files": {f.name: [f.size, f.mtime_ns] for f in sensors.listing_of(lake)
                                               if f.name != path.name}, "last_date": None})
            request, cursor = sensors.plan_stream_run(cursor, sensors.listing_of(lake), dates_of)
        began = time.perf_counter()
        if profiler:
            profiler.enable()
        result = job.execute_in_process(
            run_config=request.run_config, tags=request.tags, asset_selection=request.asset_selection,
            instance=instance, raise_on_error=True,
        )
        if profiler:
            profiler.disable()
        wall = time.perf_counter() - began
        seconds = step_seconds(instance, result.run_id)
        runs.append(seconds)
        print(f"{path.name}: {wall:.1f} s, " + ", ".join(f"{k} {v:.2f}" for k, v in seconds.items()), flush=True)
    later = runs[1:] or runs
    print("median over the runs after the first:")
    for step in later[0]:
        print(f"  {step:<48} {statistics.median(r[step] for r in later):6.2f} s")
    print(f"  {'sum':<48} {sum(statistics.median(r[s] for r in later) for s in later[0]):6.2f} s")
    if profiler:
        profiler.dump_stats(args.profile)
    cassandra.session().execute(f"DROP KEYSPACE IF EXISTS {KEYSPACE}")
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

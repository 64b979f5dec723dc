"""Benchmark: freshness of the usage stream, from the rename of a file into the usage-events folder
to its rows being readable in Cassandra, under the settings `make run` uses (`dg dev`, the
project's dagster.yaml, the sensor, local Spark, the local Cassandra).

Usage: python bench/freshness.py [--landing DIR] [--files N] [--rate FILES_PER_MIN]

The landing folder's CSVs and all but its last N event files are backfilled first (as `make run`
does); then the last N files are delivered one by one at the given rate. For each file it prints:
run requested (rename → the sensor's run request recorded), worker up (request → the run started:
its wait in the queue behind earlier runs, then the warm worker taking it or a new process
loading the code), first step (→ the first step), P1 readable (rename →
the file's cells of `org_daily_usage_by_service` written to Cassandra: served from the run's new
events ahead of the daily mart's MERGE, or else by the table's step), all tables (rename → the last Cassandra
table written, in the later run that completed P2, P5 and P6 when the file's run left them to it
because files were waiting) and run end (rename → the run's end, the landing ledger included); then p50 and max
over the files whose run added events to bronze. A file whose run added none (every line a
duplicate: the generator redelivers one file) is printed and marked, but left out: its run serves
nothing, so its seconds say nothing of how fast a change is served."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stack import LiveStack, runs_for_file, scratch_landing, wait_for  # noqa: E402
from cpa_assets.bronze.usage import BRONZE_EVENTS  # noqa: E402
from cpa_assets.gold.tail import DEFERRED_TAG, FOLLOWS_TAG  # noqa: E402
from cpa_assets.gold.usage import P1_TABLE  # noqa: E402
from cpa_cli.replay import deliver  # noqa: E402
from cpa_resources import LakeResource  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LANDING = REPO.parent / "shared" / "datasets" / "cloud_provider" / "landing"
P1_WRITE = "cassandra__org_daily_usage_by_service"
KEYSPACE = "cpa_bench_freshness"


def _idle(instance: dg.DagsterInstance) -> bool:
    busy = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
    return not instance.get_runs(dg.RunsFilter(statuses=busy))


def finished_run(instance: dg.DagsterInstance, name: str) -> dg.DagsterRun | None:
    """The successful stream run that served the file (None while none has; a failed one raises)."""
    for run in runs_for_file(instance, name):
        if run.status == dg.DagsterRunStatus.FAILURE:
            raise RuntimeError(f"the stream run {run.run_id} for {name} failed")
        if run.status == dg.DagsterRunStatus.SUCCESS:
            return run
    return None


def completing_run(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dg.DagsterRun | None:
    """The run that wrote the marts after P1 for the file's events: its own, or, when its run left
    them (files were waiting), the successful run that followed it and left none."""
    if DEFERRED_TAG not in run.tags:
        return run
    for later in instance.get_runs(dg.RunsFilter(job_name="usage_stream", statuses=[dg.DagsterRunStatus.SUCCESS])):
        if run.run_id in later.tags.get(FOLLOWS_TAG, "").split(",") and DEFERRED_TAG not in later.tags:
            return later
    return None


def freshness_figures(instance: dg.DagsterInstance, run: dg.DagsterRun, delivered_at: float) -> dict[str, float]:
    """Seconds from the file's delivery to each moment of the run that served it (and, for all
    tables, of the run that completed the marts it left, if it left them)."""
    run = instance.get_run_by_id(run.run_id)  # with the tags its steps added
    record = instance.get_run_record_by_id(run.run_id)
    steps = {r.step_key: r for r in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)}
    first_step = min(r.timestamp for r in steps.values())
    done = {r.step_key: r.timestamp for r in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)}
    # The daily mart's step records the P1 cells it served ahead of its MERGE as an observation.
    served_ahead = [r.timestamp for r in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION)
                    if r.asset_observation is not None and r.asset_observation.asset_key == P1_TABLE]
    completing = wait_for(lambda: completing_run(instance, run), 900, f"the run completing {run.run_id}")
    tail_done = {r.step_key: r.timestamp for r in instance.all_logs(completing.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)}
    return {
        "requested": record.create_timestamp.timestamp() - delivered_at,
        "worker_up": record.start_time - record.create_timestamp.timestamp(),
        "first_step": first_step - record.start_time,
        "p1_readable": min([done[P1_WRITE], *served_ahead]) - delivered_at,
        "all_tables": max(t for step, t in tail_done.items() if step.startswith("cassandra__")) - delivered_at,
        "left": float(completing.run_id != run.run_id),
        "run_end": record.end_time - delivered_at,
        "rows_added": rows_added(instance, run.run_id),
    }


def rows_added(instance: dg.DagsterInstance, run_id: str) -> int:
    """The events the run added to bronze (its materialisation's `rows_written`)."""
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = record.asset_materialization
        if materialization is not None and materialization.asset_key == BRONZE_EVENTS:
            return int(materialization.metadata["rows_written"].value)
    return 0


def no_event_mark(figures: dict) -> str:
    """What a file's printed line says when its run added no event."""
    return "" if figures["rows_added"] else " | no new event (left out of the medians)"


def served_something(figures: list[dict]) -> list[dict]:
    """The figures of the files whose run added events (all of them if none did)."""
    return [f for f in figures if f["rows_added"]] or figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landing", type=Path, default=DEFAULT_LANDING)
    parser.add_argument("--files", type=int, default=10, help="files delivered one by one (default 10)")
    parser.add_argument("--rate", type=float, default=1.0, help="files per minute (default 1)")
    args = parser.parse_args()

    events = sorted((args.landing / "usage_events_stream").glob("*.jsonl"))
    preloaded, measured = events[: -args.files], events[-args.files:]
    with tempfile.TemporaryDirectory(prefix="cpa-freshness-") as scratch_dir:
        scratch = Path(scratch_dir)
        landing, stream = scratch_landing(args.landing, scratch, preloaded)
        lake = scratch / "lake"

        log = Path(tempfile.gettempdir()) / "cpa-freshness-dg-dev.log"  # kept after the scratch folder goes
        log.unlink(missing_ok=True)
        stack = LiveStack(scratch / "dagster", lake, landing, KEYSPACE, log=log)
        print(f"bench: {len(preloaded)} files backfilled, then {len(measured)} delivered at {args.rate:g}/min;"
              f" {os.cpu_count()} cores", flush=True)
        stack.prepare()
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cpa_cli.main", "backfill"], cwd=REPO, env=stack.env, check=True,
                       stdout=subprocess.DEVNULL)
        print(f"backfill: {time.perf_counter() - began:.1f} s", flush=True)
        try:
            stack.start()
            instance = stack.instance()
            # The sensor's first tick plans every file already there, as under `make run`.
            time.sleep(10)
            wait_for(lambda: _idle(instance), 600, "the first sensor run", interval=1)
            delivered_at: dict[str, float] = {}
            pause = 60.0 / args.rate
            for number, path in enumerate(measured):
                if number:
                    time.sleep(max(0.0, delivered_at[measured[number - 1].name] + pause - time.time()))
                deliver(path, stream)
                delivered_at[path.name] = time.time()
            results = {}
            for path in measured:
                run = wait_for(lambda: finished_run(instance, path.name), 900, f"the stream run for {path.name}")
                results[path.name] = freshness_figures(instance, run, delivered_at[path.name])
                r = results[path.name]
                print(f"{path.name}: run requested {r['requested']:.1f} s | worker up {r['worker_up']:.1f} s |"
                      f" first step {r['first_step']:.1f} s |"
                      f" P1 readable {r['p1_readable']:.1f} s | all tables {r['all_tables']:.1f} s |"
                      f" run end {r['run_end']:.1f} s" + (" | P2, P5, P6 left to a later run" if r["left"] else "")
                      + no_event_mark(r), flush=True)
            crowded = max(LakeResource(root=str(lake)).files_per_partition("bronze", "usage_events", "event_date").values())
            print(f"bronze: at most {crowded} Parquet files in a partition", flush=True)
        finally:
            stack.close()
            stack.env["CPA_CASSANDRA_KEYSPACE"] = KEYSPACE
            subprocess.run([sys.executable, "-c", f"from cpa_resources import CassandraResource; "
                            f"CassandraResource.from_env().session().execute('DROP KEYSPACE IF EXISTS {KEYSPACE}')"],
                           cwd=REPO, env=stack.env, check=False)
    counted = served_something(list(results.values()))
    for figure in ("p1_readable", "all_tables", "run_end"):
        values = [r[figure] for r in counted]
        print(f"freshness ({figure.replace('_', ' ')}): p50 {statistics.median(values):.1f} s, max {max(values):.1f} s"
              f" over {len(values)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())

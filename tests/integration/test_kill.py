"""SIGKILL in the middle of ingesting a file, then start again: the lake and tables equal a clean run."""

import datetime as dt
import shutil
import time

import dagster as dg
import pandas as pd
import pytest

from bench.stack import LiveStack, runs_for_file, wait_for
from cpa_assets.definitions import build_definitions
from cpa_assets.jobs import ALL_SOURCES, snapshots
from cpa_assets.sensors import worker_pid
from cpa_cli.generate import generate
from cpa_cli.replay import deliver
from cpa_resources import LakeResource
from tests.conftest import fresh_keyspace, run_pipeline
from tests.snapshots import snapshot

pytestmark = pytest.mark.integration

USAGE_DATASETS = [
    "bronze/usage_events", "bronze/usage_events_rejects", "bronze/usage_events_duplicates",
    "bronze/usage_events_file_counts", "silver/usage_events", "silver/usage_events_quarantine",
    "gold/org_daily_usage_by_service", "gold/org_top_services_14d", "gold/genai_tokens_by_org_date",
    "gold/cost_anomalies",
]
USAGE_TABLES = ["org_daily_usage_by_service", "org_top_services_14d", "genai_tokens_by_org_date", "cost_anomalies_by_date"]


def _succeeded(instance, name: str, rerun: bool = False) -> bool:
    runs = [r for r in runs_for_file(instance, name) if ("cpa/reruns" in r.tags) == rerun]
    if any(r.status == dg.DagsterRunStatus.FAILURE for r in runs if rerun):
        raise AssertionError(f"the rerun for {name} failed")
    return any(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)


def test_killed_mid_ingest_and_started_again_equals_a_clean_run(tmp_path, cassandra, spark):
    produced = tmp_path / "produced"
    generate(produced, scale=1, seed=5, start=dt.date(2025, 7, 3), days=20)
    first, second = sorted((produced / "usage_events_stream").glob("*.jsonl"))[:2]
    landing, lake_dir = tmp_path / "landing", tmp_path / "lake"
    stream = landing / "usage_events_stream"
    stream.mkdir(parents=True)
    for csv_file in produced.glob("*.csv"):
        shutil.copy(csv_file, landing / csv_file.name)

    # The CSV snapshots the usage marts join with, as the batch schedules would have left them.
    lake = LakeResource(root=str(lake_dir), landing=str(landing))
    defs = build_definitions(lake=lake, cassandra=cassandra)
    snapshot_keys = list(snapshots(*ALL_SOURCES).resolve(defs.resolve_asset_graph()))
    assert defs.resolve_job_def("usage_pipeline").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), asset_selection=snapshot_keys
    ).success

    stack = LiveStack(tmp_path / "dagster", lake_dir, landing, cassandra.keyspace)
    try:
        stack.start()
        instance = stack.instance()
        deliver(first, stream)
        wait_for(lambda: _succeeded(instance, first.name), 300, f"the stream run for {first.name}")

        deliver(second, stream)
        bronze = lake_dir / "bronze" / "usage_events"
        wait_for(lambda: any(runs_for_file(instance, second.name)), 60, "a run for the second file", interval=0.1)
        # Bronze writes into a hidden staging folder before swapping partitions in: kill right there.
        wait_for(lambda: any(p.name.startswith(".staging-") for p in bronze.iterdir()), 300,
                 "bronze starting to write the second file", interval=0.02)
        stack.kill()
        killed = runs_for_file(instance, second.name)[0]
        assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.STARTED
        # Both stream runs ran in the same warm worker process: no new process per file.
        first_run = runs_for_file(instance, first.name)[0]
        assert worker_pid(instance, first_run.run_id) == worker_pid(instance, killed.run_id) is not None

        time.sleep(1)
        stack.start()
        wait_for(lambda: _succeeded(instance, second.name, rerun=True), 400, f"the rerun for {second.name}")
        assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
    finally:
        stack.stop()

    streamed = snapshot(lake, spark, cassandra, USAGE_DATASETS, USAGE_TABLES)
    with fresh_keyspace("kill_reference") as reference:
        result, clean_lake = run_pipeline(landing, tmp_path / "clean_lake", reference)
        assert result.success
        clean = snapshot(clean_lake, spark, reference, USAGE_DATASETS, USAGE_TABLES)
    assert len(clean["bronze/usage_events"]) > 0 and len(clean["cassandra/org_daily_usage_by_service"]) > 0
    for name in clean:
        pd.testing.assert_frame_equal(streamed[name], clean[name], obj=name)

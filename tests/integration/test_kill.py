"""SIGKILL of the whole stack mid-ingest or before a run starts, then start again: nobody steps in, and the lake and tables equal a clean run."""

import time
from pathlib import Path

import dagster as dg
import pytest

from bench.stack import LiveStack, runs_for_file, wait_for
from cpa_assets.sensors import worker_pid
from cpa_cli.replay import deliver
from tests.conftest import fresh_keyspace
from tests.streaming import differences_from_a_clean_run, stream_landing, succeeded

pytestmark = pytest.mark.integration

def _succeeded(instance, name: str, repair: bool = False) -> bool:
    if repair and any(r.status == dg.DagsterRunStatus.FAILURE for r in runs_for_file(instance, name) if "cpa/repairs" in r.tags):
        raise AssertionError(f"the repair for {name} failed")
    return succeeded(instance, name, repair)


def _equals_a_clean_run(tmp_path, landing, lake, spark, cassandra):
    with fresh_keyspace("kill_reference") as reference:
        assert differences_from_a_clean_run(tmp_path, landing, lake, spark, cassandra, reference) == []


def test_killed_mid_ingest_and_started_again_equals_a_clean_run(tmp_path, cassandra, spark):
    landing, lake, (first, second, *_) = stream_landing(tmp_path, cassandra, seed=5)
    stream = lake.events_dir()
    stack = LiveStack(tmp_path / "dagster", Path(lake.root), landing, cassandra.keyspace)
    try:
        stack.start()
        instance = stack.instance()
        deliver(first, stream)
        wait_for(lambda: _succeeded(instance, first.name), 300, f"the stream run for {first.name}")

        deliver(second, stream)
        bronze = Path(lake.root) / "bronze" / "usage_events"
        written = set(bronze.rglob("*.parquet"))
        wait_for(lambda: any(runs_for_file(instance, second.name)), 60, "a run for the second file", interval=0.1)
        # Bronze writes the second file's data files, then commits them: kill as the first appears.
        wait_for(lambda: set(bronze.rglob("*.parquet")) - written, 300,
                 "bronze starting to write the second file", interval=0.02)
        stack.kill()
        killed = runs_for_file(instance, second.name)[0]
        assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.STARTED
        # Each run had a process of its own (Dagster's default launcher), gone with the stack.
        first_run = runs_for_file(instance, first.name)[0]
        assert worker_pid(instance, first_run.run_id) != worker_pid(instance, killed.run_id) is not None

        time.sleep(1)
        stack.start()
        wait_for(lambda: _succeeded(instance, second.name, repair=True), 400, f"the repair for {second.name}")
        assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
    finally:
        stack.close()
    _equals_a_clean_run(tmp_path, landing, lake, spark, cassandra)


NOT_STARTED = (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING)


def test_killed_before_its_run_starts_the_file_still_reaches_cassandra(tmp_path, cassandra, spark):
    """The stack dies between the sensor's request and the worker taking the run (the run is left
    QUEUED or STARTING); started again, nobody steps in, and the file and a later one are served."""
    landing, lake, (first, second, third, *_) = stream_landing(tmp_path, cassandra, seed=9)
    stream = lake.events_dir()
    stack = LiveStack(tmp_path / "dagster", Path(lake.root), landing, cassandra.keyspace)
    try:
        stack.start()
        instance = stack.instance()
        deliver(first, stream)
        wait_for(lambda: _succeeded(instance, first.name), 300, f"the stream run for {first.name}")

        deliver(second, stream)
        waiting = wait_for(lambda: [r for r in runs_for_file(instance, second.name) if r.status in NOT_STARTED],
                           60, "a run for the second file, not started yet", interval=0.005)
        stack.kill()
        left = instance.get_run_by_id(waiting[0].run_id).status
        assert left in NOT_STARTED, f"the run was {left} when the stack died"

        stack.start()
        back = time.monotonic()
        # Within two minutes of the stack being back, the file's events are served (by the run
        # itself once dequeued, or by the repair of a run that never started).
        wait_for(lambda: _succeeded(instance, second.name) or _succeeded(instance, second.name, repair=True),
                 120 + 120, f"the events of {second.name} served")
        healed = time.monotonic() - back
        deliver(third, stream)
        wait_for(lambda: _succeeded(instance, third.name), 300, f"the stream run for {third.name}")
        # The sensor selects a stream run's assets: their checks run with them.
        checks = {e.dagster_event.asset_check_evaluation_data.asset_check_key.to_user_string()
                  for e in instance.all_logs(runs_for_file(instance, third.name)[0].run_id,
                                             of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)}
        assert {"silver/usage_events:conservation", "bronze/usage_events_file_counts:conservation"} <= checks
    finally:
        stack.close()
    print(f"run left {left.value} by the kill; served {healed:.0f} s after the stack was back")
    assert healed < 120 + 60, f"{healed:.0f} s to serve the file after the stack was back"
    _equals_a_clean_run(tmp_path, landing, lake, spark, cassandra)

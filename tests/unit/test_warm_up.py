"""The stream worker's warm-up: one small run per start of the code location, in the warm worker."""

from pathlib import Path

import dagster as dg
import yaml

from cpa_assets import warm_up
from cpa_assets.jobs import usage_stream_job
from cpa_resources import spark_from_env

PROJECT_INSTANCE = Path(__file__).resolve().parents[2] / ".dagster_home" / "dagster.yaml"


def test_one_warm_up_run_per_start_when_stream_runs_stay_warm(tmp_path, monkeypatch):
    monkeypatch.setattr(warm_up, "_requested_in", None)  # a code location that just started
    settings = yaml.safe_load(PROJECT_INSTANCE.read_text())
    with dg.DagsterInstance.local_temp(str(tmp_path), overrides={"run_launcher": settings["run_launcher"]}) as instance:
        first = warm_up.stream_worker_warm_up_sensor(dg.build_sensor_context(instance=instance))
        second = warm_up.stream_worker_warm_up_sensor(dg.build_sensor_context(instance=instance))
        assert isinstance(first, dg.RunRequest)
        assert isinstance(second, dg.SkipReason)
        # It takes the stream's turn and goes to its worker, as a stream run does.
        assert instance.run_launcher.is_warm(warm_up.stream_worker_warm_up.tags)
        assert warm_up.stream_worker_warm_up.tags == usage_stream_job.tags


def test_no_warm_up_where_every_run_gets_a_process_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setattr(warm_up, "_requested_in", None)
    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:  # Dagster's default launcher
        result = warm_up.stream_worker_warm_up_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SkipReason)


def test_the_warm_up_run_starts_spark_and_leaves_the_session_up(spark):
    result = warm_up.stream_worker_warm_up.execute_in_process(resources={"spark": spark_from_env()})
    assert result.success
    assert result.output_for_node("warm_up_spark") == warm_up.WARM_UP_DAYS  # dates parsed, written and read back
    assert spark.range(3).count() == 3  # still up for the next run


def test_the_warm_up_writes_merges_and_reads_a_delta_table_of_every_date(spark):
    class Warm:  # the resource as the op sees it, holding the suite's session
        spark_session = spark

    assert warm_up.warm_up_spark(dg.build_op_context(), spark=Warm()) == warm_up.WARM_UP_DAYS

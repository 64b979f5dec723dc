"""The project's event log: Dagster's SQLite storage with its connections kept and per-partition events
stored in batches, as `make run` configures it."""

from pathlib import Path

import dagster as dg
import yaml

from cpa_resources.event_log import OPEN_DATABASES, PooledSqliteEventLogStorage

PROJECT_INSTANCE = Path(__file__).resolve().parents[2] / ".dagster_home" / "dagster.yaml"
DAYS = dg.DailyPartitionsDefinition(start_date="2025-08-01", end_date="2025-08-06")


@dg.asset(
    partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[dg.AssetCheckSpec("counted", asset="daily_rows")],
)
def daily_rows(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={"dates": len(context.partition_keys)}, check_results=[dg.AssetCheckResult(passed=True)]
    )


def test_runs_over_a_range_record_every_date_once_planned_per_asset(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    settings = yaml.safe_load(PROJECT_INSTANCE.read_text())
    instance = dg.DagsterInstance.local_temp(str(tmp_path), overrides={"event_log_storage": settings["event_log_storage"]})
    storage = instance.event_log_storage
    assert isinstance(storage, PooledSqliteEventLogStorage)
    # Where Dagster's own SQLite event log lives when dagster.yaml names none.
    assert Path(storage._base_dir) == tmp_path / "history" / "runs"

    batches = []
    store_batch = storage.store_event_batch
    monkeypatch.setattr(storage, "store_event_batch", lambda events: batches.append(len(events)) or store_batch(events))

    job = dg.Definitions(assets=[daily_rows], jobs=[dg.define_asset_job("days", selection=[daily_rows])]).resolve_job_def("days")
    tags = {"dagster/asset_partition_range_start": "2025-08-01", "dagster/asset_partition_range_end": "2025-08-05"}
    runs = OPEN_DATABASES + 3
    for _ in range(runs):
        assert job.execute_in_process(instance=instance, tags=tags).success

    key = daily_rows.key
    assert instance.get_materialized_partitions(key) == set(DAYS.get_partition_keys())
    materialized = instance.fetch_materializations(key, limit=1000).records
    assert len(materialized) == 5 * runs
    for run_id in {record.run_id for record in materialized}:
        planned = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED).records
        assert len(planned) == 1  # one per asset, not one per date
    assert len(storage._engines) <= OPEN_DATABASES
    # Each run's five materialisations were stored as one batch, and the asset's row holds the last.
    assert batches.count(5) >= runs
    latest = instance.get_latest_materialization_event(key)
    assert (latest.run_id, latest.dagster_event.partition) == (materialized[0].run_id, "2025-08-05")
    # The check planned in the same batch as the asset was recorded, then evaluated, in every run.
    checks = storage.get_asset_check_execution_history(dg.AssetCheckKey(key, "counted"), limit=1000)
    assert {c.run_id for c in checks if c.status.value == "SUCCEEDED"} == {r.run_id for r in materialized}

    # A deleted run's database is closed and its events are gone; the others read as before.
    gone = materialized[0].run_id
    instance.delete_run(gone)
    assert not instance.all_logs(gone)
    assert len(instance.fetch_materializations(key, limit=1000).records) == 5 * (runs - 1)

"""Files delivered one at a time through the sensor end in the same Cassandra tables as a backfill."""

import datetime as dt
import shutil

import dagster as dg
import pandas as pd
import pytest

from cpa_assets.definitions import build_definitions
from cpa_assets.jobs import ALL_SOURCES, snapshots
from cpa_assets.sensors import usage_events_sensor
from cpa_cli.generate import generate
from cpa_cli.replay import deliver
from cpa_resources import LakeResource
from tests.cassandra_tables import read_table
from tests.conftest import fresh_keyspace, run_pipeline

pytestmark = pytest.mark.integration

TABLES = ("org_daily_usage_by_service", "org_top_services_14d", "genai_tokens_by_org_date", "cost_anomalies_by_date")


def _tables(cassandra) -> dict[str, pd.DataFrame]:
    frames = {}
    for table in TABLES:
        frame = read_table(cassandra, table)
        frames[table] = frame.sort_values(list(frame.columns[:3])).reset_index(drop=True)
    return frames


def test_sensor_delivery_one_file_at_a_time_equals_a_backfill(tmp_path, cassandra, cassandra_server):
    produced = tmp_path / "produced"
    generate(produced, scale=1, seed=3, start=dt.date(2025, 7, 3), days=20)
    files = sorted((produced / "usage_events_stream").glob("*.jsonl"))[:4]
    landing = tmp_path / "landing"
    stream = landing / "usage_events_stream"
    stream.mkdir(parents=True)
    for csv_file in produced.glob("*.csv"):
        shutil.copy(csv_file, landing / csv_file.name)

    lake = LakeResource(root=str(tmp_path / "lake"), landing=str(landing))
    defs = build_definitions(lake=lake, cassandra=cassandra)
    instance = dg.DagsterInstance.ephemeral()
    snapshot_keys = list(snapshots(*ALL_SOURCES).resolve(defs.resolve_asset_graph()))
    assert defs.resolve_job_def("usage_pipeline").execute_in_process(instance=instance, asset_selection=snapshot_keys).success

    cursor, runs = None, 0
    # The same file a second time under another name must change nothing.
    deliveries = [*files, files[1]]
    for number, source in enumerate(deliveries):
        target = deliver(source, tmp_path / "outbox")
        target.rename(stream / f"{number:02d}_{source.name}")
        tick = usage_events_sensor(dg.build_sensor_context(instance=instance, resources={"lake": lake}, cursor=cursor))
        cursor = tick.cursor
        assert len(tick.run_requests) == 1
        request = tick.run_requests[0]
        result = defs.resolve_job_def("usage_stream").execute_in_process(
            instance=instance, tags=request.tags, asset_selection=request.asset_selection
        )
        assert result.success
        runs += 1
        if number == len(files) - 1:
            before_duplicate = _tables(cassandra)
    assert runs == len(deliveries)
    streamed = _tables(cassandra)
    for table in TABLES:
        pd.testing.assert_frame_equal(before_duplicate[table], streamed[table], obj=f"duplicate file changed {table}")

    with fresh_keyspace("stream_reference") as reference:
        result, _ = run_pipeline(landing, tmp_path / "reference_lake", reference)
        assert result.success
        backfilled = _tables(reference)
    for table in TABLES:
        assert len(streamed[table]) > 0 or table == "cost_anomalies_by_date"
        pd.testing.assert_frame_equal(streamed[table], backfilled[table], obj=table)

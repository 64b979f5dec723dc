"""The batch schedules: each tick asks for one run over the CSV's partitions; running it twice changes nothing."""

import datetime as dt

import dagster as dg
import pandas as pd
import pytest

from cpa_assets.definitions import build_definitions
from cpa_assets.schedules import daily_batch_schedule, monthly_billing_schedule
from cpa_cli.generate import generate
from cpa_resources import LakeResource
from tests.cassandra_tables import read_table
from tests.snapshots import lake_tables

pytestmark = pytest.mark.integration


def _state(lake: LakeResource, spark, cassandra, layers=("bronze", "silver", "gold")) -> dict[str, pd.DataFrame]:
    state = {}
    for name in lake_tables(lake):
        if name.split("/")[0] in layers:
            frame = lake.read(spark, *name.split("/")).toPandas().astype(str)
            state[name] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    for table in ("tickets_by_org_date", "revenue_by_org_month"):
        frame = read_table(cassandra, table).astype(str)
        state[table] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    return state


def test_each_schedule_run_twice_changes_nothing(tmp_path, cassandra, spark):
    landing = tmp_path / "landing"
    generate(landing, scale=1, seed=5, start=dt.date(2025, 7, 3), days=10)
    lake = LakeResource(root=str(tmp_path / "lake"), landing=str(landing))
    defs = build_definitions(lake=lake, cassandra=cassandra)
    instance = dg.DagsterInstance.ephemeral()

    def tick(schedule) -> None:
        with dg.build_schedule_context(instance=instance, resources={"lake": lake}) as context:
            request = schedule(context)
        assert isinstance(request, dg.RunRequest), request
        result = defs.resolve_job_def(schedule.job_name).execute_in_process(instance=instance, tags=request.tags)
        assert result.success

    tick(daily_batch_schedule)
    tick(monthly_billing_schedule)
    first = _state(lake, spark, cassandra)
    assert len(first["tickets_by_org_date"]) > 0 and len(first["revenue_by_org_month"]) > 0
    tick(daily_batch_schedule)
    tick(monthly_billing_schedule)
    second = _state(lake, spark, cassandra)
    assert first.keys() == second.keys()
    for name in first:
        pd.testing.assert_frame_equal(first[name], second[name], obj=name)


def test_schedules_are_on_by_default():
    defs = build_definitions()
    for name in ("daily_batch_schedule", "monthly_billing_schedule"):
        assert defs.resolve_schedule_def(name).default_status == dg.DefaultScheduleStatus.RUNNING

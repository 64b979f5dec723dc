"""Acceptance on the real course dataset: the served answers equal an independent computation."""

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from cpa_assets.bronze.batch import CSV_SOURCES
from cpa_assets.gold.anomalies import COST_ANOMALIES_SCHEMA
from tests.cassandra_tables import assert_same_rows, read_table
from tests.conftest import REAL_LANDING, failed_checks, fresh_keyspace, metadata_by_partition, require_real_landing, run_pipeline, summed
from tests.independent_batch import p3_tickets_by_org_date, p4_revenue_by_org_month
from tests.independent_genai import p5_genai_tokens
from tests.independent import landing_events, p1_daily_usage, p2_top_services, silver_events
from tests.snapshots import lake_tables, snapshot

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def cassandra(cassandra_server):
    with fresh_keyspace("real_dataset") as resource:
        yield resource


@pytest.fixture(scope="module")
def backfilled(cassandra, tmp_path_factory):
    """One backfill of the real dataset, shared by the tests of this module."""
    require_real_landing()
    result, lake = run_pipeline(REAL_LANDING, tmp_path_factory.mktemp("lake"), cassandra)
    assert result.success and not failed_checks(result)
    return result, lake


def test_p1_and_p2_equal_an_independent_computation(backfilled, cassandra):
    daily = p1_daily_usage(REAL_LANDING)
    assert_same_rows(read_table(cassandra, "org_daily_usage_by_service"), daily, ["org_id", "usage_date", "service"])

    first, last = daily.usage_date.min(), daily.usage_date.max()
    top = p2_top_services(daily, first, last)
    assert_same_rows(read_table(cassandra, "org_top_services_14d"), top, ["org_id", "as_of_date", "rank"])


def test_p5_equals_an_independent_computation(backfilled, cassandra):
    expected = p5_genai_tokens(REAL_LANDING)
    assert len(expected) > 0
    assert_same_rows(read_table(cassandra, "genai_tokens_by_org_date"), expected, ["org_id", "usage_date"])


def test_p6_serves_exactly_the_flagged_gold_rows(backfilled, cassandra, spark):
    _, lake = backfilled
    gold = lake.read(spark, "gold", "cost_anomalies", COST_ANOMALIES_SCHEMA, "usage_date").toPandas()
    flagged = gold[gold.is_anomaly_zscore | gold.is_anomaly_mad | gold.is_anomaly_p99]
    served = read_table(cassandra, "cost_anomalies_by_date")
    assert len(flagged) > 0
    assert_same_rows(served, flagged[served.columns], ["usage_date", "org_id", "service"])


def test_p3_and_p4_equal_an_independent_computation(backfilled, cassandra):
    tickets = p3_tickets_by_org_date(REAL_LANDING)
    revenue = p4_revenue_by_org_month(REAL_LANDING)
    assert len(tickets) > 0 and len(revenue) > 0
    assert_same_rows(read_table(cassandra, "tickets_by_org_date"), tickets, ["org_id", "ticket_date"])
    assert_same_rows(read_table(cassandra, "revenue_by_org_month"), revenue, ["org_id", "month"])


def test_every_csv_row_reaches_bronze(backfilled, spark):
    _, lake = backfilled
    for source in CSV_SOURCES:
        landing_rows = len(pd.read_csv(REAL_LANDING / source.file_name, dtype=str, keep_default_na=False))
        bronze = lake.read(spark, "bronze", source.table).count()
        rejects = lake.read(spark, "bronze", f"{source.table}_rejects").count()
        assert (bronze, rejects) == (landing_rows, 0), source.table


def test_bronze_holds_every_landing_event_once_and_silver_conserves_each_date(backfilled, spark):
    result, lake = backfilled
    landing_ids = [
        json.loads(line)["event_id"]
        for path in sorted((REAL_LANDING / "usage_events_stream").glob("*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    bronze = lake.read(spark, "bronze", "usage_events").toPandas()
    assert len(bronze) == len(landing_ids) == bronze.event_id.nunique()
    assert set(bronze.event_id) == set(landing_ids)

    silver = lake.read(spark, "silver", "usage_events").groupBy("event_date").count().toPandas()
    held = lake.read(spark, "silver", "usage_events_quarantine").groupBy("event_date").count().toPandas()
    per_date = bronze.groupby(bronze.event_date.astype(str)).size()
    served = (
        silver.set_index(silver.event_date.astype(str))["count"]
        .add(held.set_index(held.event_date.astype(str))["count"], fill_value=0)
    )
    pd.testing.assert_series_equal(per_date.sort_index(), served.sort_index().astype(int), check_names=False)

    # Each date's materialisation carries that date's figures; they add up to the landing's.
    by_date = metadata_by_partition(result, dg.AssetKey(["silver", "usage_events"]))
    kept = silver_events(REAL_LANDING)
    events = landing_events(REAL_LANDING)
    below = sum(1 for e in events if (e.get("cost_usd_increment") or 0) < -0.01)
    assert summed(by_date, "quarantined_by_rule") == {"EV-02": 0, "EV-05": below, "RI-01": 0, "RI-02": 0}
    assert summed(by_date, "flags")["unit_imputed"] == int(kept.unit.isna().sum())
    assert summed(by_date, "flags")["missing_value"] == int(kept.value.isna().sum())
    assert sum(m["rows_quarantined"] for m in by_date.values()) == len(events) - len(kept) == below


def test_each_date_reports_its_own_row_count_after_a_backfill(backfilled, spark):
    """A backfill is one run over 60 dates: every date's latest materialisation tells that date's
    rows, quarantine and conservation, not the range's totals."""
    result, lake = backfilled
    counts = {}
    for table in ("usage_events", "usage_events_quarantine"):
        frame = lake.read(spark, "silver", table).groupBy("event_date").count().collect()
        counts[table] = {str(r[0]): r[1] for r in frame}
    bronze = lake.read(spark, "bronze", "usage_events").groupBy("event_date").count().collect()
    bronze = {str(r[0]): r[1] for r in bronze}
    silver = metadata_by_partition(result, dg.AssetKey(["silver", "usage_events"]))
    held = metadata_by_partition(result, dg.AssetKey(["silver", "usage_events_quarantine"]))
    assert len(silver) == len(counts["usage_events"]) == 60
    for day, rows in counts["usage_events"].items():
        quarantined = counts["usage_events_quarantine"].get(day, 0)
        assert silver[day]["dagster/row_count"] == rows, day
        assert silver[day]["rows_in"] == bronze[day] and silver[day]["rows_quarantined"] == quarantined, day
        assert sum(silver[day]["quarantined_by_rule"].values()) == quarantined == held[day]["dagster/row_count"], day
        assert silver[day]["conservation"] == f"{bronze[day]} bronze = {rows} silver + {quarantined} quarantined"
        assert day in silver[day]["preview"], day
    # The dates differ, so a copied range total could not pass the loop above.
    assert len({m["dagster/row_count"] for m in silver.values()}) > 1


def test_every_lake_table_is_a_delta_table_at_the_version_its_materialisation_reported(backfilled):
    """Runs before `test_backfill_twice_changes_nothing`, which writes new versions."""
    result, lake = backfilled
    names = lake_tables(lake)
    assert {"bronze/usage_events", "silver/usage_events", "gold/org_daily_usage_by_service", "gold/cost_anomalies"} <= set(names)
    reported = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_MATERIALIZATION":
            metadata = event.event_specific_data.materialization.metadata
            if "delta_version" in metadata:
                reported[event.asset_key.to_user_string()] = metadata["delta_version"].value
    for name in names:
        assert (lake.local_root() / name / "_delta_log").is_dir(), name
        assert reported[name] == lake.version(*name.split("/")), name


def test_backfill_twice_changes_nothing(backfilled, spark, cassandra):
    _, lake = backfilled
    before = snapshot(lake, spark, cassandra)
    result, _ = run_pipeline(REAL_LANDING, Path(lake.root), cassandra)
    assert result.success
    after = snapshot(lake, spark, cassandra)
    assert before.keys() == after.keys()
    for name in before:
        pd.testing.assert_frame_equal(before[name], after[name], obj=name)

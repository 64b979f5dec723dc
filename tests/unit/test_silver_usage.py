"""Silver rules EV-02..EV-06, RI-01, RI-02: each bronze row is flagged or quarantined, never dropped."""

import datetime as dt
import time

import pytest
from pyspark.sql import functions as F

from cpa_assets.bronze.usage import BRONZE_SCHEMA
from cpa_assets.silver.usage import SILVER_TABLES, conform_events, silver_may_append, split_silver
from cpa_resources import LakeResource

ORGS = [("org_a", "Acme", "Retail", "us-east", "pro", "customer"), ("org_b", "Beta", "Health", "eu-west", "free", "lead")]
RESOURCES = [("res_a", "org_a", "running", "us-east"), ("res_b", "org_b", "stopped", "eu-west")]


def bronze_row(event_id, **overrides) -> dict:
    row = {
        "event_id": event_id, "timestamp": dt.datetime(2025, 8, 1, 10), "org_id": "org_a", "resource_id": "res_a",
        "service": "compute", "region": "us-east", "metric": "requests", "value": "10", "unit": "count",
        "cost_usd_increment": 1.0, "schema_version": 2, "carbon_kg": 0.1, "genai_tokens": None,
        "source_file": "a.jsonl", "line_no": 1, "ingest_ts": dt.datetime(2025, 8, 2), "event_date": dt.date(2025, 8, 1),
    }
    return {**row, **overrides}


@pytest.fixture
def conform(spark):
    orgs = spark.createDataFrame(ORGS, "org_id string, org_name string, industry string, hq_region string, plan_tier string, lifecycle_stage string")
    resources = spark.createDataFrame(RESOURCES, "resource_id string, org_id string, state string, region string")

    def run(*rows):
        bronze = spark.createDataFrame([tuple(r[f] for f in BRONZE_SCHEMA.fieldNames()) for r in rows], BRONZE_SCHEMA)
        silver, quarantine = split_silver(conform_events(bronze, orgs, resources))
        return silver.toPandas().set_index("event_id"), quarantine.toPandas().set_index("event_id")

    return run


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        ({"value": "n/a"}, "EV-02"),
        ({"cost_usd_increment": -0.02}, "EV-05"),
        ({"org_id": "org_zzz"}, "RI-01"),
        ({"resource_id": "res_missing"}, "RI-02"),
        ({"resource_id": "res_b"}, "RI-02"),
        ({"value": "n/a", "org_id": "org_zzz"}, "EV-02"),
    ],
)
def test_quarantine_rules(conform, overrides, rule):
    silver, quarantine = conform(bronze_row("ok"), bronze_row("bad", **overrides))
    assert list(silver.index) == ["ok"]
    assert quarantine.loc["bad", "dq_rule"] == rule
    assert quarantine.loc["bad", "rejected_ts"] == dt.datetime(2025, 8, 2)


def test_small_negative_cost_is_kept(conform):
    silver, quarantine = conform(bronze_row("e", cost_usd_increment=-0.01))
    assert quarantine.empty and silver.loc["e", "cost_usd_increment"] == -0.01


def test_flags_and_conformed_values(conform):
    silver, quarantine = conform(
        bronze_row("imputed", unit=None, metric="cpu_hours", value="2.5"),
        bronze_row("missing", value=None),
        bronze_row("tokens", genai_tokens=5, service="compute"),
        bronze_row("v1tokens", genai_tokens=5, service="genai", schema_version=1),
        bronze_row("genai", genai_tokens=5, service="genai"),
        bronze_row("odd", service="quantum", region="mars-1"),
    )
    assert quarantine.empty
    flags = {k: sorted(v) for k, v in silver["dq_flags"].items()}
    assert flags["imputed"] == ["unit_imputed"] and silver.loc["imputed", "unit"] == "hours"
    assert silver.loc["imputed", "value"] == 2.5
    assert flags["missing"] == ["missing_value"]
    assert flags["tokens"] == ["genai_tokens_unexpected"] and flags["v1tokens"] == ["genai_tokens_unexpected"]
    assert flags["genai"] == []
    assert flags["odd"] == ["unknown_region", "unknown_service"]


def test_enrichment_with_org_and_resource(conform):
    silver, _ = conform(bronze_row("e"))
    row = silver.loc["e"]
    assert (row.org_name, row.plan_tier, row.lifecycle_stage, row.resource_state) == ("Acme", "pro", "customer", "running")


def test_silver_appends_only_new_files_over_the_snapshots_it_was_written_with(spark, tmp_path):
    lake = LakeResource(root=str(tmp_path))
    for table in ("customers_orgs", "resources"):
        lake.write(spark.createDataFrame([("x",)], "id string"), "bronze", table)
    rows = spark.createDataFrame([("a.jsonl", dt.date(2025, 8, 1))], "source_file string, event_date date")
    for table, schema in SILVER_TABLES:  # one row per table, null outside the two columns the check reads
        full = rows.select(*[F.col(f.name) if f.name in rows.columns else F.lit(None).cast(f.dataType).alias(f.name) for f in schema])
        lake.replace_partitions(full, "silver", table, "event_date", ["2025-08-01"])

    assert silver_may_append(lake, ["b.jsonl"])
    assert not silver_may_append(lake, [])
    assert not silver_may_append(lake, ["a.jsonl"])  # its rows are there already
    assert not silver_may_append(lake, ["0.jsonl"])  # named before a file silver holds
    # A reloaded org snapshot can move old events in or out of quarantine: recompute.
    time.sleep(0.05)
    lake.write(spark.createDataFrame([("y",)], "id string"), "bronze", "customers_orgs")
    assert not silver_may_append(lake, ["b.jsonl"])

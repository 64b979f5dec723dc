"""The shared asset-check results fail when the data is wrong, not only pass when it is right."""

import datetime as dt

import dagster as dg

import pyspark.sql.types as T

from cpa_assets.checks import equality_result, spark_schema, spark_schema_result
from cpa_assets.silver.usage import QUARANTINE_SCHEMA, QUARANTINED_USAGE_EVENT

KEY = dg.AssetKey(["silver", "usage_events_quarantine"])
WHEN = dt.datetime(2025, 8, 1, 12, 0)


def quarantined(spark, *rows: tuple[str, str, dt.date | None], schema: T.StructType = QUARANTINE_SCHEMA):
    """Quarantine rows (event_id, dq_rule, event_date), every other column filled in."""
    fill = {"timestamp": WHEN, "source_file": "events_part_0001.jsonl", "line_no": 1, "ingest_ts": WHEN}
    nullable = T.StructType([T.StructField(f.name, f.dataType) for f in schema.fields])
    return spark.createDataFrame(
        [{**fill, "event_id": event_id, "dq_rule": rule, "event_date": day} for event_id, rule, day in rows], nullable
    )


def test_the_spark_schema_is_the_models_columns_types_and_nulls():
    assert spark_schema(QUARANTINED_USAGE_EVENT) == QUARANTINE_SCHEMA
    assert [f.name for f in QUARANTINE_SCHEMA.fields][-3:] == ["dq_rule", "rejected_ts", "event_date"]
    assert not QUARANTINE_SCHEMA["dq_rule"].nullable and QUARANTINE_SCHEMA["org_id"].nullable


def test_schema_check_passes_and_fails_on_rows(spark):
    assert not spark_schema_result(QUARANTINED_USAGE_EVENT, quarantined(spark, ("e1", "EV-02", None)), KEY).passed
    rows = [("e1", "EV-02", dt.date(2025, 8, 1)), ("e2", "XX-99", dt.date(2025, 8, 1))]
    result = spark_schema_result(QUARANTINED_USAGE_EVENT, quarantined(spark, *rows), KEY)
    assert not result.passed
    assert any(f["failure_case"] == "XX-99" for f in result.metadata["failures"].value)
    assert spark_schema_result(QUARANTINED_USAGE_EVENT, quarantined(spark, rows[0]), KEY).passed


def test_schema_check_fails_on_a_wrong_column_type(spark):
    text_dates = T.StructType([f if f.name != "event_date" else T.StructField("event_date", T.StringType()) for f in QUARANTINE_SCHEMA.fields])
    frame = quarantined(spark, ("e1", "EV-02", "2025-08-01"), schema=text_dates)
    result = spark_schema_result(QUARANTINED_USAGE_EVENT, frame, KEY)
    assert not result.passed and result.metadata["failures"].value[0]["column"] == "event_date"


def test_equality_reports_each_mismatch():
    result = equality_result("conservation", KEY, {"a": 3, "b": 2}, {"a": 3, "b": 1, "c": 1})
    assert not result.passed
    assert result.metadata["mismatches"].value == {"b": {"expected": 2, "actual": 1}, "c": {"expected": 0, "actual": 1}}
    assert equality_result("conservation", KEY, {"a": 1}, {"a": 1}).passed

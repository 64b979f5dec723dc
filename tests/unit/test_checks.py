"""The shared asset-check results fail when the data is wrong, not only pass when it is right."""

import datetime as dt

import dagster as dg

from cpa_assets.checks import equality_result, spark_schema_result
from cpa_assets.silver.usage import QuarantinedUsageEvent

KEY = dg.AssetKey(["silver", "usage_events_quarantine"])


def test_schema_check_passes_and_fails_on_rows(spark):
    good = spark.createDataFrame([("e1", "EV-02", None)], "event_id string, dq_rule string, event_date date")
    assert not spark_schema_result(QuarantinedUsageEvent, good, KEY).passed  # event_date may not be null
    rows = [("e1", "EV-02", dt.date(2025, 8, 1)), ("e2", "XX-99", dt.date(2025, 8, 1))]
    result = spark_schema_result(QuarantinedUsageEvent, spark.createDataFrame(rows, good.schema), KEY)
    assert not result.passed
    assert any(f["failure_case"] == "XX-99" for f in result.metadata["failures"].value)
    assert spark_schema_result(QuarantinedUsageEvent, spark.createDataFrame(rows[:1], good.schema), KEY).passed


def test_schema_check_fails_on_a_wrong_column_type(spark):
    frame = spark.createDataFrame([("e1", "EV-02", "2025-08-01")], "event_id string, dq_rule string, event_date string")
    result = spark_schema_result(QuarantinedUsageEvent, frame, KEY)
    assert not result.passed and result.metadata["failures"].value[0]["column"] == "event_date"


def test_equality_reports_each_mismatch():
    result = equality_result("conservation", KEY, {"a": 3, "b": 2}, {"a": 3, "b": 1, "c": 1})
    assert not result.passed
    assert result.metadata["mismatches"].value == {"b": {"expected": 2, "actual": 1}, "c": {"expected": 0, "actual": 1}}
    assert equality_result("conservation", KEY, {"a": 1}, {"a": 1}).passed

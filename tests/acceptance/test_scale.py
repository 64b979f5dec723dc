"""Ten times the course dataset's size (generated, with every defect): gold and every serving table
equal the same answers computed again in plain Python and pandas from the landing files; P6 serves
exactly the gold rows a detector flags."""

import datetime as dt

import pytest

from cpa_assets.gold.anomalies import COST_ANOMALIES_SCHEMA
from cpa_assets.gold.genai import GENAI_TOKENS_SCHEMA
from cpa_assets.gold.usage import DAILY_USAGE_SCHEMA, TOP_SERVICES_SCHEMA
from cpa_cli.generate import generate
from tests.cassandra_tables import assert_same_rows, read_table
from tests.conftest import failed_checks, fresh_keyspace, run_pipeline
from tests.independent import p1_daily_usage, p2_top_services
from tests.independent_batch import p3_tickets_by_org_date, p4_revenue_by_org_month
from tests.independent_genai import p5_genai_tokens

pytestmark = pytest.mark.acceptance

SCALE = 10


@pytest.fixture(scope="module")
def ten_times(cassandra_server, tmp_path_factory):
    landing = tmp_path_factory.mktemp("landing_10x")
    summary = generate(landing, scale=SCALE, seed=23, start=dt.date(2025, 7, 3), days=60)
    assert summary["rows"]["usage_events_stream"] > 400_000
    with fresh_keyspace("ten_times") as cassandra:
        result, lake = run_pipeline(landing, tmp_path_factory.mktemp("lake_10x"), cassandra)
        assert result.success and failed_checks(result) == []
        yield landing, lake, cassandra


def test_gold_and_serving_at_ten_times_equal_an_independent_computation(ten_times, spark):
    landing, lake, cassandra = ten_times
    daily = p1_daily_usage(landing)
    top = p2_top_services(daily, daily.usage_date.min(), daily.usage_date.max())
    genai = p5_genai_tokens(landing)
    assert len(daily) > 100_000 and len(genai) > 0

    gold = {
        "org_daily_usage_by_service": (lake.read(spark, "gold", "org_daily_usage_by_service", DAILY_USAGE_SCHEMA), daily,
                                       ["org_id", "usage_date", "service"]),
        "org_top_services_14d": (lake.read(spark, "gold", "org_top_services_14d", TOP_SERVICES_SCHEMA), top,
                                 ["org_id", "as_of_date", "rank"]),
        "genai_tokens_by_org_date": (lake.read(spark, "gold", "genai_tokens_by_org_date", GENAI_TOKENS_SCHEMA), genai,
                                     ["org_id", "usage_date"]),
    }
    for table, (frame, expected, key) in gold.items():
        assert_same_rows(frame.toPandas(), expected, key)
        assert_same_rows(read_table(cassandra, table), expected, key)

    assert_same_rows(read_table(cassandra, "tickets_by_org_date"), p3_tickets_by_org_date(landing), ["org_id", "ticket_date"])
    assert_same_rows(read_table(cassandra, "revenue_by_org_month"), p4_revenue_by_org_month(landing), ["org_id", "month"])


def test_p6_at_ten_times_serves_exactly_the_flagged_gold_rows(ten_times, spark):
    _, lake, cassandra = ten_times
    gold = lake.read(spark, "gold", "cost_anomalies", COST_ANOMALIES_SCHEMA, "usage_date").toPandas()
    flagged = gold[gold.is_anomaly_zscore | gold.is_anomaly_mad | gold.is_anomaly_p99]
    served = read_table(cassandra, "cost_anomalies_by_date")
    assert len(flagged) > 0 and len(flagged) < len(gold)
    assert_same_rows(served, flagged[served.columns], ["usage_date", "org_id", "service"])

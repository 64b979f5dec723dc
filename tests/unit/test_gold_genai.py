"""Gold GenAI mart: only `genai` events count, tokens and cost summed per org × day."""

import datetime as dt

from cpa_assets.gold.genai import GENAI_TOKENS_SCHEMA, daily_genai_usage
from cpa_assets.gold.usage import daily_usage

D1, D2 = dt.date(2025, 8, 1), dt.date(2025, 8, 2)
SILVER = (
    "org_id string, service string, metric string, value double, cost_usd_increment double, "
    "genai_tokens long, carbon_kg double, schema_version int, event_date date"
)


def silver(spark, rows):
    return spark.createDataFrame(rows, SILVER)


def test_tokens_cost_and_events_of_genai_service_per_org_and_day(spark):
    frame = silver(
        spark,
        [
            ("org_a", "genai", "requests", 10.0, 1.5, 400, None, 2, D1),
            ("org_a", "genai", "cpu_hours", 2.0, 0.5, 100, None, 2, D1),
            # Null tokens and null cost count as 0; a zero-token event is not a GenAI event.
            ("org_a", "genai", "storage_gb_hours", 3.0, None, None, None, 2, D1),
            ("org_a", "genai", "requests", 1.0, 0.25, 0, None, 2, D1),
            ("org_a", "genai", "requests", 5.0, 2.0, 50, None, 2, D2),
            ("org_b", "genai", "requests", 5.0, 3.0, 7, None, 2, D1),
        ],
    )
    mart = daily_genai_usage(frame)
    assert [(f.name, f.dataType) for f in mart.schema] == [(f.name, f.dataType) for f in GENAI_TOKENS_SCHEMA]
    out = mart.toPandas().set_index(["org_id", "usage_date"])
    a1 = out.loc[("org_a", D1)]
    assert (a1.genai_tokens, a1.genai_cost_usd, a1.genai_events) == (500, 2.25, 2)
    assert tuple(out.loc[("org_a", D2)][["genai_tokens", "genai_cost_usd", "genai_events"]]) == (50, 2.0, 1)
    assert tuple(out.loc[("org_b", D1)][["genai_tokens", "genai_cost_usd", "genai_events"]]) == (7, 3.0, 1)
    assert len(out) == 3


def test_tokens_on_other_services_stay_out_and_v1_genai_tokens_count(spark):
    frame = silver(
        spark,
        [
            ("org_a", "genai", "requests", 10.0, 1.0, 300, None, 1, D1),  # EV-06 on schema v1: still GenAI usage
            ("org_a", "compute", "requests", 10.0, 4.0, 900, None, 2, D1),  # EV-06 off genai: not GenAI usage
            ("org_c", "compute", "requests", 10.0, 4.0, 900, None, 2, D1),
        ],
    )
    out = daily_genai_usage(frame).toPandas()
    assert list(out.org_id) == ["org_a"], "an org without genai events has no row"
    assert (out.genai_tokens[0], out.genai_cost_usd[0], out.genai_events[0]) == (300, 1.0, 1)


def test_equals_the_genai_rows_of_the_daily_usage_mart(spark):
    frame = silver(
        spark,
        [
            ("org_a", "genai", "requests", 10.0, 1.25, 300, 0.1, 2, D1),
            ("org_a", "genai", "cpu_hours", 1.0, 0.75, None, 0.1, 2, D2),
            ("org_a", "storage", "storage_gb_hours", 9.0, 0.5, 40, 0.1, 2, D1),
        ],
    )
    genai = daily_genai_usage(frame).toPandas().set_index(["org_id", "usage_date"]).sort_index()
    daily = daily_usage(frame).where("service = 'genai'").toPandas().set_index(["org_id", "usage_date"]).sort_index()
    assert list(genai.genai_tokens) == list(daily.genai_tokens) == [300, 0]
    assert list(genai.genai_cost_usd) == list(daily.daily_cost_usd) == [1.25, 0.75]
    assert list(genai.genai_events) == [1, 0]

"""Gold usage marts: sums per metric and the 14-day ranking window."""

import datetime as dt

from cpa_assets.gold.usage import DAILY_USAGE_SCHEMA, daily_usage, top_services

D = dt.date(2025, 8, 1)


def test_daily_sums_route_values_by_metric_and_count_null_as_zero(spark):
    rows = [
        ("org_a", "compute", "requests", 10.0, 1.0, None, 0.1),
        ("org_a", "compute", "requests", None, 2.0, None, None),
        ("org_a", "compute", "cpu_hours", 1.5, None, None, 0.2),
        ("org_a", "genai", "storage_gb_hours", 4.0, 0.5, 100, None),
    ]
    silver = spark.createDataFrame(
        [(o, s, m, v, c, t, k, D) for o, s, m, v, c, t, k in rows],
        "org_id string, service string, metric string, value double, cost_usd_increment double, genai_tokens long, carbon_kg double, event_date date",
    )
    out = daily_usage(silver).toPandas().set_index("service")
    compute = out.loc["compute"]
    assert (compute.daily_cost_usd, compute.requests, compute.cpu_hours, compute.storage_gb_hours) == (3.0, 10.0, 1.5, 0.0)
    assert compute.event_count == 3 and abs(compute.carbon_kg - 0.3) < 1e-12 and compute.genai_tokens == 0
    assert out.loc["genai", "genai_tokens"] == 100 and out.loc["genai", "storage_gb_hours"] == 4.0


def test_top_services_sum_the_14_days_ending_on_each_date(spark):
    def day(offset):
        return D + dt.timedelta(days=offset)

    rows = [
        ("org_a", "compute", 5.0, day(0)),
        ("org_a", "storage", 3.0, day(0)),
        ("org_a", "storage", 3.0, day(13)),
        ("org_a", "database", 6.0, day(14)),
    ]
    daily = spark.createDataFrame(
        [(o, s, c, 0.0, 0.0, 0.0, 0, 0.0, 1, d) for o, s, c, d in rows], DAILY_USAGE_SCHEMA
    )
    ranked = top_services(daily, day(0).isoformat(), day(14).isoformat()).toPandas()
    on = {d: list(zip(g.sort_values("rank").service, g.sort_values("rank").total_cost_usd)) for d, g in ranked.groupby("as_of_date")}
    assert on[day(0)] == [("compute", 5.0), ("storage", 3.0)]
    assert on[day(13)] == [("storage", 6.0), ("compute", 5.0)]
    # On day 14 the window is day 1 … day 14: the day-0 costs have left it.
    assert on[day(14)] == [("database", 6.0), ("storage", 3.0)]


def test_ties_rank_by_service_name(spark):
    daily = spark.createDataFrame(
        [("org_a", s, 2.0, 0.0, 0.0, 0.0, 0, 0.0, 1, D) for s in ("storage", "analytics")], DAILY_USAGE_SCHEMA
    )
    ranked = top_services(daily, D.isoformat(), D.isoformat()).toPandas().sort_values("rank")
    assert list(ranked.service) == ["analytics", "storage"] and list(ranked["rank"]) == [1, 2]

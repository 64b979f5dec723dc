"""Gold cost anomalies: three detectors against a trailing baseline of earlier days."""

import datetime as dt

import numpy as np
import pytest

from cpa_assets.gold.anomalies import (
    ANOMALY_BASELINE_DAYS,
    COST_ANOMALIES_SCHEMA,
    MIN_BASELINE_DAYS,
    detect_cost_anomalies,
)
from cpa_assets.gold.usage import DAILY_USAGE_SCHEMA

START = dt.date(2025, 8, 1)
NOISE = (0.2, -0.1, 0.0, 0.15, -0.2, 0.05, -0.05)
FLAGS = ["is_anomaly_zscore", "is_anomaly_mad", "is_anomaly_p99"]


def day(offset: int) -> dt.date:
    return START + dt.timedelta(days=offset)


def steady(offset: int) -> float:
    return 10.0 + NOISE[offset % len(NOISE)]


def daily(spark, *series):
    """A daily usage mart of one org from (service, {day offset: cost}) series."""
    rows = [
        ("org_a", service, cost, 0.0, 0.0, 0.0, 0, 0.0, 1, day(offset))
        for service, costs in series
        for offset, cost in costs.items()
    ]
    return spark.createDataFrame(rows, DAILY_USAGE_SCHEMA)


def detect(spark, *series):
    """The detectors' output, indexed by (service, day offset)."""
    out = detect_cost_anomalies(daily(spark, *series)).toPandas()
    out["offset"] = [(d - START).days for d in out.usage_date]
    return out.set_index(["service", "offset"]).sort_index()


def test_every_daily_row_gets_one_row_with_the_contract_columns(spark):
    frame = detect_cost_anomalies(daily(spark, ("compute", {i: steady(i) for i in range(10)}), ("storage", {3: 1.0})))
    assert [(f.name, f.dataType) for f in frame.schema] == [(f.name, f.dataType) for f in COST_ANOMALIES_SCHEMA]
    assert frame.count() == 11


def test_a_spike_on_a_steady_series_is_flagged_by_all_three_and_nothing_else(spark):
    costs = {i: steady(i) for i in range(20)} | {20: 30.0} | {i: steady(i) for i in range(21, 25)}
    out = detect(spark, ("compute", costs))
    spike = out.loc[("compute", 20)]
    assert spike[FLAGS].tolist() == [True, True, True]
    assert spike.zscore > 20 and spike.robust_zscore > 20 and spike.p99_ratio > 2.5
    others = out.drop(index=("compute", 20))
    assert not others[FLAGS].to_numpy().any()


def test_short_history_raises_no_flag_and_leaves_scores_empty(spark):
    short = {i: steady(i) for i in range(MIN_BASELINE_DAYS - 1)} | {MIN_BASELINE_DAYS - 1: 30.0}
    enough = {i: steady(i) for i in range(MIN_BASELINE_DAYS)} | {MIN_BASELINE_DAYS: 30.0}
    out = detect(spark, ("compute", short), ("storage", enough))
    first_spike = out.loc[("compute", MIN_BASELINE_DAYS - 1)]
    assert first_spike.baseline_days == MIN_BASELINE_DAYS - 1
    assert first_spike[FLAGS].tolist() == [False, False, False]
    assert np.isnan([first_spike.zscore, first_spike.robust_zscore, first_spike.p99_ratio]).all()
    # One more earlier day and the same spike is judged; the other series never leaks into it.
    assert out.loc[("storage", MIN_BASELINE_DAYS)][FLAGS].tolist() == [True, True, True]
    assert out.loc[("storage", MIN_BASELINE_DAYS), "baseline_days"] == MIN_BASELINE_DAYS


def test_mad_still_sees_a_spike_after_an_earlier_outlier_that_masks_it_for_zscore_and_p99(spark):
    costs = {i: steady(i) for i in range(25)} | {8: 300.0, 20: 30.0}
    out = detect(spark, ("compute", costs))
    assert out.loc[("compute", 8)][FLAGS].tolist() == [True, True, True]
    later = out.loc[("compute", 20)]
    assert later.baseline_days == 20
    assert later[FLAGS].tolist() == [False, True, False]
    assert later.baseline_median == pytest.approx(np.median([costs[i] for i in range(20)]))


def test_the_baseline_is_the_earlier_days_of_the_window_with_a_row(spark):
    target = ANOMALY_BASELINE_DAYS + 1
    missing = {10, 11, 12, 13, 14}
    costs = {0: 1000.0} | {i: steady(i) * (1 + i / 100) for i in range(1, target) if i not in missing} | {target: 50.0}
    out = detect(spark, ("compute", costs))
    row = out.loc[("compute", target)]
    # Day 0 has left the 28-day window, the day itself is not its own baseline, missing days are skipped.
    baseline = np.array([cost for offset, cost in costs.items() if 1 <= offset < target])
    assert row.baseline_days == len(baseline) == ANOMALY_BASELINE_DAYS - len(missing)
    assert row.baseline_mean == pytest.approx(baseline.mean())
    assert row.baseline_std == pytest.approx(baseline.std(ddof=1))
    assert row.baseline_median == pytest.approx(np.median(baseline))
    assert row.baseline_mad == pytest.approx(np.median(np.abs(baseline - np.median(baseline))))
    assert row.baseline_p99 == pytest.approx(np.percentile(baseline, 99))
    assert row.daily_cost_usd == 50.0


def test_a_flat_history_does_not_turn_cents_into_anomalies(spark):
    costs = {i: 10.0 for i in range(10)} | {10: 10.05, 11: 10.0, 12: 25.0}
    out = detect(spark, ("compute", costs))
    assert out.loc[("compute", 10)].baseline_std == 0.0
    assert out.loc[("compute", 10)][FLAGS].tolist() == [False, False, False]
    assert out.loc[("compute", 12)][FLAGS].tolist() == [True, True, True]


def test_a_drop_is_not_a_cost_anomaly(spark):
    costs = {i: steady(i) for i in range(15)} | {15: 0.5}
    out = detect(spark, ("compute", costs))
    assert out.loc[("compute", 15)].zscore < -20
    assert out.loc[("compute", 15)][FLAGS].tolist() == [False, False, False]

"""Gold cost anomalies (P6): each org × service × day's cost against its own trailing baseline,
judged by three detectors — z-score, robust z (median and MAD) and the baseline's 99th percentile."""


import datetime as dt
from collections.abc import Iterator

import dagster as dg
import pandera.pyspark as pa
import pyspark.sql.types as T
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from cpa_assets.charts import cost_with_anomalies
from cpa_assets.checks import schema_spec, spark_schema, spark_schema_result
from cpa_assets.metadata import chart_metadata, partition_metadata, side_by_side
from cpa_assets.gold.tail import defer, still_to_follow, tail_mart
from cpa_assets.gold.usage import DAILY_USAGE, DAILY_USAGE_SCHEMA, few_orgs, new_state, scope
from cpa_assets.increments import Mode, UsageRun, upstream
from cpa_assets.partitions import ANOMALY_BASELINE_DAYS, anomaly_baseline_window
from cpa_assets.preview import markdown_preview

from cpa_resources import LakeResource

COST_ANOMALIES = dg.AssetKey(["gold", "cost_anomalies"])

# Fewer earlier days than this make a standard deviation and a MAD too unstable to judge by.
MIN_BASELINE_DAYS = 7

# Upward only: a cost anomaly is unexpected spend. Each day judges thousands of org × service
# series, so textbook thresholds (z > 3, robust z > 3.5) raise several false alarms a day from
# noise alone. Measured by `cpa evaluate` over ~10 000 judged cells per seed, plain noise tops out
# near z 6, robust z 8 and 1.25 × p99, while a tripled day scores above z 20, robust z 16 and
# 2.3 × p99; the thresholds sit between, with room on both sides.
ZSCORE_THRESHOLD = 8.0
ROBUST_Z_THRESHOLD = 10.0
P99_FACTOR = 1.5
# 0.6745 = Φ⁻¹(0.75) puts the MAD on the scale of a standard deviation (Iglewicz & Hoaglin).
MAD_SCALE = 0.6745
# A spread (or level) below a cent, or below 1% of the baseline's level, is rounding, not
# stability: flooring it keeps a flat history from turning cents into huge scores.
MIN_SPREAD_USD = 0.01
MIN_RELATIVE_SPREAD = 0.01

# Each detector's flag column, the score it reads and the score above which it flags.
DETECTORS = {
    "is_anomaly_zscore": ("zscore", ZSCORE_THRESHOLD),
    "is_anomaly_mad": ("robust_zscore", ROBUST_Z_THRESHOLD),
    "is_anomaly_p99": ("p99_ratio", P99_FACTOR),
}

class CostAnomaly(pa.DataFrameModel):
    org_id: T.StringType() = pa.Field()
    service: T.StringType() = pa.Field()
    daily_cost_usd: T.DoubleType() = pa.Field()
    baseline_days: T.IntegerType() = pa.Field(ge=0, le=ANOMALY_BASELINE_DAYS)
    # Null until a cell has enough baseline days to compare against.
    baseline_mean: T.DoubleType() = pa.Field(nullable=True)
    baseline_std: T.DoubleType() = pa.Field(nullable=True, ge=0)
    baseline_median: T.DoubleType() = pa.Field(nullable=True)
    baseline_mad: T.DoubleType() = pa.Field(nullable=True, ge=0)
    baseline_p99: T.DoubleType() = pa.Field(nullable=True)
    zscore: T.DoubleType() = pa.Field(nullable=True)
    robust_zscore: T.DoubleType() = pa.Field(nullable=True)
    p99_ratio: T.DoubleType() = pa.Field(nullable=True)
    is_anomaly_zscore: T.BooleanType() = pa.Field()
    is_anomaly_mad: T.BooleanType() = pa.Field()
    is_anomaly_p99: T.BooleanType() = pa.Field()
    usage_date: T.DateType() = pa.Field()


COST_ANOMALIES_SCHEMA = spark_schema(CostAnomaly)


def _quantile(ascending: Column, n: Column, q: float) -> Column:
    """The q-quantile of a sorted array with linear interpolation (numpy's default); null when empty."""
    position = (n - 1) * F.lit(q)
    low, high = F.floor(position), F.ceil(position)
    below = F.try_element_at(ascending, (low + 1).cast("int"))
    above = F.try_element_at(ascending, (high + 1).cast("int"))
    return F.when(n > 0, below + (above - below) * (position - low))


def _floored(spread: Column, level: Column) -> Column:
    return F.greatest(spread, F.abs(level) * MIN_RELATIVE_SPREAD, F.lit(MIN_SPREAD_USD))


def detect_cost_anomalies(daily: DataFrame) -> DataFrame:
    """Score every daily row against the same org × service's rows of the ANOMALY_BASELINE_DAYS
    days before it (the day itself is never part of its baseline).

    A day without a row is skipped, not read as cost 0: the baseline describes the days the
    service was used, so intermittent use is not a string of spikes over zeros, and a day whose
    data has not arrived yet does not drag the baseline down. `baseline_days` counts the earlier
    days with a row; below MIN_BASELINE_DAYS the scores are null and no flag is raised.

    - zscore = (cost − mean) / std (sample std); flagged above ZSCORE_THRESHOLD.
    - robust_zscore = 0.6745 · (cost − median) / MAD; flagged above ROBUST_Z_THRESHOLD. An earlier
      spike barely moves a median, so it does not mask the next one.
    - p99_ratio = cost / p99 of the baseline (linear interpolation; with at most 28 days it lies
      between the two largest); flagged above P99_FACTOR: the day beats the worst normal day by
      half again.

    Spreads are floored at max(1 cent, 1% of the level) and the p99 at 1 cent, so flat or empty
    histories do not divide by zero."""
    earlier = (
        Window.partitionBy("org_id", "service")
        .orderBy(F.unix_date("usage_date"))
        .rangeBetween(-ANOMALY_BASELINE_DAYS, -1)
    )
    history = daily.select(
        "org_id",
        "service",
        "usage_date",
        "daily_cost_usd",
        F.count(F.lit(1)).over(earlier).cast("int").alias("baseline_days"),
        F.avg("daily_cost_usd").over(earlier).alias("baseline_mean"),
        F.stddev_samp("daily_cost_usd").over(earlier).alias("baseline_std"),
        F.array_sort(F.collect_list("daily_cost_usd").over(earlier)).alias("_history"),
    )
    n = F.col("baseline_days")
    with_median = history.select(
        "*",
        _quantile(F.col("_history"), n, 0.5).alias("baseline_median"),
        _quantile(F.col("_history"), n, 0.99).alias("baseline_p99"),
    )
    deviations = F.array_sort(F.transform("_history", lambda v: F.abs(v - F.col("baseline_median"))))
    baseline = with_median.withColumn("baseline_mad", _quantile(deviations, n, 0.5))

    cost = F.col("daily_cost_usd")
    judged = n >= MIN_BASELINE_DAYS
    zscore = (cost - F.col("baseline_mean")) / _floored(F.col("baseline_std"), F.col("baseline_mean"))
    robust = MAD_SCALE * (cost - F.col("baseline_median")) / _floored(F.col("baseline_mad"), F.col("baseline_median"))
    ratio = cost / F.greatest(F.col("baseline_p99"), F.lit(MIN_SPREAD_USD))
    scored = baseline.select(
        "*",
        F.when(judged, zscore).alias("zscore"),
        F.when(judged, robust).alias("robust_zscore"),
        F.when(judged, ratio).alias("p99_ratio"),
    )
    flags = [F.coalesce(F.col(score) > limit, F.lit(False)).alias(flag) for flag, (score, limit) in DETECTORS.items()]
    return scored.select("*", *flags).select(*COST_ANOMALIES_SCHEMA.fieldNames())


def date_metadata(context: dg.AssetExecutionContext, lake: LakeResource, written: DataFrame, chart: bool) -> dict:
    """Each date's own rows (from the table's log), judged rows, flags per detector and flagged
    preview (of the rows written); the chart of the run's cells when it recomputed them. The
    totals over the rows written."""
    dates = context.partition_keys
    flags = list(DETECTORS)
    per_date = {
        str(r["usage_date"]): r
        for r in written.groupBy("usage_date").agg(
            F.count(F.lit(1)).alias("rows"),
            F.count(F.when(F.col("baseline_days") >= MIN_BASELINE_DAYS, True)).alias("judged"),
            *[F.count(F.when(F.col(flag), True)).alias(flag) for flag in flags],
        ).collect()
    }
    figures = {
        day: {"rows_judged": r["judged"], "flagged": dg.MetadataValue.json({flag: r[flag] for flag in flags})}
        for day, r in per_date.items()
    }
    counts = {d: n for d, n in lake.partition_counts("gold", "cost_anomalies", "usage_date").items() if dates[0] <= d <= dates[-1]}
    flagged = written.where(F.greatest(*[F.col(flag) for flag in flags]))
    partition_metadata(context, COST_ANOMALIES, flagged, "usage_date", counts=counts, extra=figures,
                       order=[F.desc("robust_zscore"), "org_id", "service"])
    if chart:
        cells = written.select("usage_date", "daily_cost_usd", *flags).toPandas()
        chart_metadata(context, COST_ANOMALIES, cost_with_anomalies(cells), "P6 daily cost with the anomaly flags")
    return {
        "rows": sum(counts.values()),
        "written": sum(r["rows"] for r in per_date.values()),
        "judged": sum(r["judged"] for r in per_date.values()),
        **{flag: sum(r[flag] for r in per_date.values()) for flag in flags},
    }


def _days(first: dt.date, last: dt.date) -> list[str]:
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


@tail_mart(COST_ANOMALIES, deps=[dg.AssetDep(DAILY_USAGE, partition_mapping=anomaly_baseline_window)],
           check_specs=[schema_spec(COST_ANOMALIES)])
def cost_anomalies(
    context: dg.AssetExecutionContext, config: UsageRun, spark: LazyPySparkResource, lake: LakeResource
) -> Iterator[dg.MaterializeResult]:
    """Every org × service × usage_date of the daily usage mart with its trailing baseline (the 28
    earlier days that have a row: count, mean, std, median, MAD, p99), the three scores and one flag
    per detector: `is_anomaly_zscore` (z > 8), `is_anomaly_mad` (robust z > 10) and `is_anomaly_p99`
    (cost > 1.5 × p99). With fewer than 7 earlier days nothing is flagged (P6). A stream run judges
    again only the org × service series whose daily rows it changed, on the days whose baseline
    holds one of them."""
    config = still_to_follow(context.instance, config)
    if defer(context, config, lake, "P6"):
        return
    dates = context.partition_keys
    session = spark.spark_session
    daily_side = upstream(config, lake, session, "gold", "org_daily_usage_by_service")
    path = lake.path("gold", "cost_anomalies")
    if daily_side.mode is Mode.INCREMENT:
        if daily_side.changes is not None:
            changed = daily_side.changes.select("org_id", "service", "usage_date").distinct().collect()
            orgs, services = sorted({row[0] for row in changed}), sorted({row[1] for row in changed if row[1] is not None})
            first = min(row[2] for row in changed)
            last = min(max(row[2] for row in changed) + dt.timedelta(days=ANOMALY_BASELINE_DAYS), dt.date.fromisoformat(dates[-1]))
            daily = lake.read(session, "gold", "org_daily_usage_by_service", DAILY_USAGE_SCHEMA, "usage_date",
                              _days(first - dt.timedelta(days=ANOMALY_BASELINE_DAYS), last))
            within = f"usage_date >= '{first}' AND usage_date <= '{last}'"  # Delta's replaceWhere fails on BETWEEN
            # Scoped to the changed series (a superset: every org × service of them), unless too many to name.
            if few_orgs(lake, orgs) and all(row[1] is not None for row in changed):
                daily = daily.where(F.col("org_id").isin(orgs) & F.col("service").isin(services))
                within += f" AND {scope('org_id', orgs)} AND {scope('service', services)}"
            scored = detect_cost_anomalies(daily).where(F.col("usage_date").between(first, last))
            lake.replace_where(scored, "gold", "cost_anomalies", "usage_date", within)
        written = new_state(lake.run_changes(session, "gold", "cost_anomalies"), COST_ANOMALIES_SCHEMA, session).cache()
    else:
        first, last = dt.date.fromisoformat(dates[0]), dt.date.fromisoformat(dates[-1])
        window_days = _days(first - dt.timedelta(days=ANOMALY_BASELINE_DAYS), last)
        daily = lake.read(session, "gold", "org_daily_usage_by_service", DAILY_USAGE_SCHEMA, "usage_date", window_days)
        written = detect_cost_anomalies(daily).where(F.col("usage_date").between(first, last)).cache()
        lake.replace_partitions(written, "gold", "cost_anomalies", "usage_date", dates)
    flags = list(DETECTORS)
    totals, preview, check = side_by_side(
        lambda: date_metadata(context, lake, written, chart=daily_side.mode is Mode.RECOMPUTE),
        lambda: markdown_preview(written.where(F.greatest(*[F.col(flag) for flag in flags])).orderBy(F.desc("robust_zscore"))),
        lambda: spark_schema_result(CostAnomaly, written, COST_ANOMALIES, rows=sum(
            n for d, n in lake.partition_counts("gold", "cost_anomalies", "usage_date").items() if dates[0] <= d <= dates[-1])),
    )
    result = dg.MaterializeResult(
        asset_key=COST_ANOMALIES,
        metadata={
            "dagster/row_count": totals["rows"],
            "rows_written": totals["written"],
            "rows_judged": totals["judged"],
            "flagged": dg.MetadataValue.json({flag: totals[flag] for flag in flags}),
            "written_as": daily_side.mode.value,
            "partitions": len(dates),
            **lake.location(path),
            "preview": dg.MetadataValue.md(preview),
        },
        check_results=[check],
    )
    written.unpersist()
    yield result

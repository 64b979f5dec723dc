"""Gold usage marts: daily cost and usage per org × service (P1) and the 14-day top services (P2)."""


import datetime as dt

import dagster as dg
import pandera.pyspark as pa
import pyspark.sql.types as T
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from cpa_assets.charts import daily_cost_per_service
from cpa_assets.checks import schema_spec, spark_schema, spark_schema_result
from cpa_assets.metadata import chart_metadata, partition_metadata, previews_by_date, side_by_side
from cpa_assets.partitions import TOP_SERVICES_WINDOW_DAYS, event_date_partitions, serve_first, single_run, top_services_window
from cpa_assets.preview import markdown_preview
from cpa_assets.silver.usage import SILVER_EVENTS, SILVER_SCHEMA

from cpa_resources import LakeResource

DAILY_USAGE = dg.AssetKey(["gold", "org_daily_usage_by_service"])
TOP_SERVICES = dg.AssetKey(["gold", "org_top_services_14d"])

class DailyUsage(pa.DataFrameModel):
    org_id: T.StringType() = pa.Field()
    service: T.StringType() = pa.Field()
    daily_cost_usd: T.DoubleType() = pa.Field()
    requests: T.DoubleType() = pa.Field(ge=0)
    cpu_hours: T.DoubleType() = pa.Field(ge=0)
    storage_gb_hours: T.DoubleType() = pa.Field(ge=0)
    genai_tokens: T.LongType() = pa.Field(ge=0)
    carbon_kg: T.DoubleType() = pa.Field()
    event_count: T.IntegerType() = pa.Field(ge=1)
    usage_date: T.DateType() = pa.Field()


class TopService(pa.DataFrameModel):
    org_id: T.StringType() = pa.Field()
    rank: T.IntegerType() = pa.Field(ge=1)
    service: T.StringType() = pa.Field()
    total_cost_usd: T.DoubleType() = pa.Field()
    as_of_date: T.DateType() = pa.Field()


DAILY_USAGE_SCHEMA = spark_schema(DailyUsage)
TOP_SERVICES_SCHEMA = spark_schema(TopService)


def _metric_sum(metric: str) -> F.Column:
    return F.coalesce(F.sum(F.when(F.col("metric") == metric, F.col("value"))), F.lit(0.0))


def daily_usage(silver: DataFrame) -> DataFrame:
    """Sum silver events per org × usage_date × service; a null value or cost counts as 0."""
    return (
        silver.groupBy("org_id", F.col("event_date").alias("usage_date"), "service")
        .agg(
            F.coalesce(F.sum("cost_usd_increment"), F.lit(0.0)).alias("daily_cost_usd"),
            _metric_sum("requests").alias("requests"),
            _metric_sum("cpu_hours").alias("cpu_hours"),
            _metric_sum("storage_gb_hours").alias("storage_gb_hours"),
            F.coalesce(F.sum("genai_tokens"), F.lit(0)).cast("long").alias("genai_tokens"),
            F.coalesce(F.sum("carbon_kg"), F.lit(0.0)).alias("carbon_kg"),
            F.count(F.lit(1)).cast("int").alias("event_count"),
        )
        .select(*DAILY_USAGE_SCHEMA.fieldNames())
    )


def top_services(daily: DataFrame, first_as_of: str, last_as_of: str) -> DataFrame:
    """Rank services per org and as_of_date by cost over as_of_date-13 … as_of_date.

    Each daily row counts towards the 14 as_of dates whose window holds it; ties rank by service name."""
    spread = daily.select(
        "org_id",
        "service",
        "daily_cost_usd",
        F.explode(
            F.sequence(F.col("usage_date"), F.date_add(F.col("usage_date"), TOP_SERVICES_WINDOW_DAYS - 1))
        ).alias("as_of_date"),
    ).where(F.col("as_of_date").between(first_as_of, last_as_of))
    totals = spread.groupBy("org_id", "as_of_date", "service").agg(F.sum("daily_cost_usd").alias("total_cost_usd"))
    order = Window.partitionBy("org_id", "as_of_date").orderBy(F.desc("total_cost_usd"), "service")
    return totals.withColumn("rank", F.row_number().over(order).cast("int")).select(*TOP_SERVICES_SCHEMA.fieldNames())


def _window_start(first_key: str) -> str:
    start = dt.date.fromisoformat(first_key) - dt.timedelta(days=TOP_SERVICES_WINDOW_DAYS - 1)
    return start.isoformat()


def _days(first: str, last: str) -> list[str]:
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


@dg.asset(
    key=DAILY_USAGE,
    deps=[SILVER_EVENTS],
    partitions_def=event_date_partitions,
    backfill_policy=single_run,
    op_tags=serve_first,
    group_name="gold",
    kinds={"spark", "delta"},
    check_specs=[schema_spec(DAILY_USAGE)],
)
def org_daily_usage_by_service(
    context: dg.AssetExecutionContext, spark: LazyPySparkResource, lake: LakeResource
) -> dg.MaterializeResult:
    """Cost and usage per org × usage_date × service: daily_cost_usd, requests, cpu_hours,
    storage_gb_hours, genai_tokens, carbon_kg and event_count, from silver events only (P1)."""
    dates = context.partition_keys
    session = spark.spark_session
    silver = lake.read(session, "silver", "usage_events", SILVER_SCHEMA, "event_date", dates)
    path = lake.replace_partitions(daily_usage(silver), "gold", "org_daily_usage_by_service", "usage_date", dates)
    written = lake.read(session, "gold", "org_daily_usage_by_service", DAILY_USAGE_SCHEMA, "usage_date", dates).cache()
    per_service = written.groupBy("usage_date", "service").agg(F.sum("daily_cost_usd").alias("daily_cost_usd")).toPandas()
    previewed, preview, check, chart = side_by_side(
        lambda: previews_by_date(written, "usage_date", ["org_id", "service"]),
        lambda: markdown_preview(written),
        lambda: spark_schema_result(DailyUsage, written, DAILY_USAGE),
        lambda: daily_cost_per_service(per_service),
    )
    rows = sum(partition_metadata(context, DAILY_USAGE, None, "usage_date", previewed=previewed).values())
    result = dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "partitions": len(dates),
            **lake.location(path),
            "preview": dg.MetadataValue.md(preview),
        },
        check_results=[check],
    )
    chart_metadata(context, DAILY_USAGE, chart, "P1 daily cost per service (USD)")
    written.unpersist()
    return result


@dg.asset(
    key=TOP_SERVICES,
    ins={"daily": dg.AssetIn(DAILY_USAGE, partition_mapping=top_services_window, dagster_type=dg.Nothing)},
    partitions_def=event_date_partitions,
    backfill_policy=single_run,
    group_name="gold",
    kinds={"spark", "delta"},
    check_specs=[schema_spec(TOP_SERVICES)],
)
def org_top_services_14d(
    context: dg.AssetExecutionContext, spark: LazyPySparkResource, lake: LakeResource
) -> dg.MaterializeResult:
    """Services of each org ranked by total cost over the 14 days ending on `as_of_date` (P2).

    All ranked services are kept; "top N" is the first N ranks. Days before the first data day
    contribute nothing, so early windows are shorter."""
    dates = context.partition_keys
    session = spark.spark_session
    window_days = _days(_window_start(dates[0]), dates[-1])
    daily = lake.read(session, "gold", "org_daily_usage_by_service", DAILY_USAGE_SCHEMA, "usage_date", window_days)
    ranked = top_services(daily, dates[0], dates[-1])
    path = lake.replace_partitions(ranked, "gold", "org_top_services_14d", "as_of_date", dates)
    written = lake.read(session, "gold", "org_top_services_14d", TOP_SERVICES_SCHEMA, "as_of_date", dates).cache()
    rows = sum(partition_metadata(context, TOP_SERVICES, written, "as_of_date", order=["org_id", "rank"]).values())
    result = dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "partitions": len(dates),
            **lake.location(path),
            "preview": dg.MetadataValue.md(markdown_preview(written.orderBy("org_id", "as_of_date", "rank"))),
        },
        check_results=[spark_schema_result(TopService, written, TOP_SERVICES)],
    )
    written.unpersist()
    return result

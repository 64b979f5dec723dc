"""Gold GenAI mart: an org's daily GenAI tokens, their cost and the events that carried them (P5)."""

from collections.abc import Iterator

import dagster as dg
import pandera.pyspark as pa
import pyspark.sql.types as T
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cpa_assets.checks import schema_spec, spark_schema, spark_schema_result
from cpa_assets.gold.usage import increment_cells, new_state
from cpa_assets.increments import Mode, UsageRun, upstream
from cpa_assets.metadata import collected, partition_metadata, previews_by_date, release, side_by_side
from cpa_assets.gold.tail import defer, still_to_follow, tail_mart
from cpa_assets.preview import markdown_preview
from cpa_assets.silver.usage import SILVER_EVENTS, SILVER_SCHEMA

from cpa_resources import LakeResource

GENAI_TOKENS = dg.AssetKey(["gold", "genai_tokens_by_org_date"])
GENAI_SERVICE = "genai"

class GenaiTokens(pa.DataFrameModel):
    org_id: T.StringType() = pa.Field()
    genai_tokens: T.LongType() = pa.Field(ge=0)
    genai_cost_usd: T.DoubleType() = pa.Field()
    genai_events: T.IntegerType() = pa.Field(ge=0)
    usage_date: T.DateType() = pa.Field()


GENAI_TOKENS_SCHEMA = spark_schema(GenaiTokens)


def daily_genai_usage(silver: DataFrame) -> DataFrame:
    """Sum the silver events of the `genai` service per org × usage_date.

    Only events whose service is `genai` count, whatever their schema version: their tokens make
    `genai_tokens`, their cost (every metric, null as 0) makes `genai_cost_usd`, and those with
    tokens > 0 make `genai_events`. Tokens reported on another service (EV-06, flagged
    `genai_tokens_unexpected` in silver) are not GenAI usage and stay out; they remain visible in
    the daily usage mart of their own service. So this mart equals the `genai` rows of
    `org_daily_usage_by_service` for tokens and cost, and an org without GenAI events has no row."""
    genai = silver.where(F.col("service") == GENAI_SERVICE)
    return (
        genai.groupBy("org_id", F.col("event_date").alias("usage_date"))
        .agg(
            F.coalesce(F.sum("genai_tokens"), F.lit(0)).cast("long").alias("genai_tokens"),
            F.coalesce(F.sum("cost_usd_increment"), F.lit(0.0)).alias("genai_cost_usd"),
            F.count(F.when(F.col("genai_tokens") > 0, True)).cast("int").alias("genai_events"),
        )
        .select(*GENAI_TOKENS_SCHEMA.fieldNames())
    )


GENAI_CELL = ["org_id", "usage_date"]
GENAI_MEASURES = ["genai_tokens", "genai_cost_usd", "genai_events"]


@tail_mart(GENAI_TOKENS, deps=[SILVER_EVENTS], check_specs=[schema_spec(GENAI_TOKENS)])
def genai_tokens_by_org_date(
    context: dg.AssetExecutionContext, config: UsageRun, spark: LazyPySparkResource, lake: LakeResource
) -> Iterator[dg.MaterializeResult]:
    """GenAI usage per org × usage_date (P5): genai_tokens, genai_cost_usd (estimated from the
    cost increments of `genai` events) and genai_events (events with genai_tokens > 0).

    Only events of the `genai` service count; tokens flagged on other services (EV-06) do not. A
    stream run that added genai events updates only the org × dates they reach."""
    config = still_to_follow(context.instance, config)
    if defer(context, config, lake, "P5"):
        return
    dates = context.partition_keys
    session = spark.spark_session
    silver_side = upstream(config, lake, session, "silver", "usage_events")
    path = lake.path("gold", "genai_tokens_by_org_date")
    if silver_side.mode is Mode.INCREMENT:
        if silver_side.changes is not None:
            increment_cells(lake, session, silver_side.changes, "genai_tokens_by_org_date", GENAI_CELL, daily_genai_usage,
                            GENAI_MEASURES, where=F.col("service") == GENAI_SERVICE, runs=config.follows)
        written = collected(new_state(lake.run_changes(session, "gold", "genai_tokens_by_org_date"), GENAI_TOKENS_SCHEMA, session))
    else:
        silver = lake.read(session, "silver", "usage_events", SILVER_SCHEMA, "event_date", dates)
        written = daily_genai_usage(silver).cache()
        lake.replace_partitions(written, "gold", "genai_tokens_by_org_date", "usage_date", dates)
    counts = {d: n for d, n in lake.partition_counts("gold", "genai_tokens_by_org_date", "usage_date").items()
              if dates[0] <= d <= dates[-1]}
    previewed, preview, check = side_by_side(
        lambda: previews_by_date(written, "usage_date", ["org_id"]),
        lambda: markdown_preview(written),
        lambda: spark_schema_result(GenaiTokens, written, GENAI_TOKENS, rows=sum(counts.values())),
    )
    rows = sum(partition_metadata(context, GENAI_TOKENS, None, "usage_date", counts=counts, previewed=previewed).values())
    result = dg.MaterializeResult(
        asset_key=GENAI_TOKENS,
        metadata={
            "dagster/row_count": rows,
            "rows_written": sum(previewed[0].values()),
            "written_as": silver_side.mode.value,
            "partitions": len(dates),
            **lake.location(path),
            "preview": dg.MetadataValue.md(preview),
        },
        check_results=[check],
    )
    release(written)
    yield result

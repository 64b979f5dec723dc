"""Gold usage marts: daily cost and usage per org × service (P1) and the 14-day top services (P2)."""


import datetime as dt
from collections.abc import Callable, Iterator

import dagster as dg
import pandas as pd
import pandera.pyspark as pa
import pyspark.sql.types as T
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from cpa_assets.charts import daily_cost_per_service
from cpa_assets.checks import schema_spec, spark_schema, spark_schema_result
from cpa_assets.metadata import chart_metadata, collected, partition_metadata, previews_by_date, release, side_by_side
from cpa_assets.partitions import TOP_SERVICES_WINDOW_DAYS, event_date_partitions, serve_first, single_run, top_services_window
from cpa_assets.increments import Mode, UsageRun, upstream
from cpa_assets.preview import markdown_preview
from cpa_assets.bronze.usage import inserted
from cpa_assets.gold.tail import defer, still_to_follow, tail_mart
from cpa_assets.silver.usage import SILVER_EVENTS, SILVER_SCHEMA

from cpa_resources import CassandraResource, LakeResource

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
# The columns of a cell that are sums over its events: a cell's new events add to them.
MEASURES = ["daily_cost_usd", "requests", "cpu_hours", "storage_gb_hours", "genai_tokens", "carbon_kg", "event_count"]
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


CELL = ["org_id", "usage_date", "service"]


def reached_cells(changes: DataFrame) -> DataFrame:
    """The org × usage_date × service cells that silver rows changed in this run."""
    return changes.select("org_id", F.col("event_date").alias("usage_date"), "service").distinct()


def rows_of_cells(silver: DataFrame, cells: DataFrame, cell: list[str]) -> DataFrame:
    """The silver rows of the given cells (null-safe: an unknown service is a cell too)."""
    keyed = silver.withColumn("usage_date", F.col("event_date"))
    condition = [keyed[c].eqNullSafe(cells[c]) for c in cell]
    return keyed.join(F.broadcast(cells), condition, "left_semi").drop("usage_date")


def new_state(changes: DataFrame | None, schema, spark) -> DataFrame:
    """The rows a change feed left in the table (inserted, or updated to), in the table's columns."""
    if changes is None:
        return spark.createDataFrame([], schema)
    return changes.where(F.col("_change_type").isin("insert", "update_postimage")).select(*schema.fieldNames())


def silver_cells(lake: LakeResource, spark, changes: DataFrame, cell: list[str], where=None) -> tuple[DataFrame, list[str]]:
    """The silver rows of every cell the changes reach (cell: org_id, usage_date and maybe service;
    `where`: which changed rows count), read from the dates they reach only; and those dates."""
    changed = changes if where is None else changes.where(where)
    cells = changed.withColumn("usage_date", F.col("event_date")).select(*cell).distinct().cache()
    days = sorted(str(row[0]) for row in cells.select("usage_date").distinct().collect())
    silver = lake.read(spark, "silver", "usage_events", SILVER_SCHEMA, "event_date", days)
    if where is not None:
        silver = silver.where(where)
    return rows_of_cells(silver, cells, cell), days


def increment_cells(lake: LakeResource, spark, changes: DataFrame, table: str, cell: list[str], aggregate,
                    measures: list[str], where=None, runs: list[str] = (),
                    before_merge: Callable[[pd.DataFrame], None] | None = None) -> None:
    """Bring the gold cells that the new silver rows of this run (and of the earlier `runs` it
    completes) reach up to date, in one MERGE: each reached cell gets the sums of its new rows
    added (the rows are new events, the measures sums), a new cell is inserted. If one of these runs
    (or the run this one re-executes) has already merged into the table, adding again would count
    twice: the reached cells are recomputed from all their silver rows instead.

    `before_merge` is handed the sums to add, as a pandas frame, before the MERGE (P1 serves them
    from there); the MERGE then adds those very rows."""
    if lake.run_commits("gold", table, runs):
        rows, _ = silver_cells(lake, spark, changes, cell, where)
        lake.upsert(aggregate(rows), "gold", table, cell, "usage_date")
        return
    new = inserted(changes, SILVER_SCHEMA, spark)
    sums = aggregate(new if where is None else new.where(where))
    if before_merge is not None:
        collected_sums = sums.toPandas()
        if collected_sums.empty:
            return
        before_merge(collected_sums)
        sums = spark.createDataFrame(collected_sums, schema=sums.schema)
    lake.upsert(sums, "gold", table, cell, "usage_date", add=measures)


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
    context: dg.AssetExecutionContext, config: UsageRun, spark: LazyPySparkResource, lake: LakeResource,
    cassandra: CassandraResource,
) -> dg.MaterializeResult:
    """Cost and usage per org × usage_date × service: daily_cost_usd, requests, cpu_hours,
    storage_gb_hours, genai_tokens, carbon_kg and event_count, from silver events only (P1).

    A stream run that added events updates only the cells they reach (their sums grow by the new
    events'), and serves those cells first: P1 is readable before the MERGE, and its table's step
    then writes the merged rows. Any other run recomputes its dates."""
    dates = context.partition_keys
    session = spark.spark_session
    silver_side = upstream(config, lake, session, "silver", "usage_events")
    path = lake.path("gold", "org_daily_usage_by_service")
    if silver_side.mode is Mode.INCREMENT:
        if silver_side.changes is not None:
            # P1 is served from the new events' sums before the MERGE, on a run's first try: a
            # re-executed step could find them served already.
            first_try = context.retry_number == 0 and context.run.parent_run_id is None
            increment_cells(lake, session, silver_side.changes, "org_daily_usage_by_service", CELL, daily_usage, MEASURES,
                            before_merge=(lambda sums: serve_p1_first(context, cassandra, sums)) if first_try else None)
        written = collected(new_state(lake.run_changes(session, "gold", "org_daily_usage_by_service"), DAILY_USAGE_SCHEMA, session))
        chart = None
    else:
        silver = lake.read(session, "silver", "usage_events", SILVER_SCHEMA, "event_date", dates)
        written = daily_usage(silver).cache()
        lake.replace_partitions(written, "gold", "org_daily_usage_by_service", "usage_date", dates)
        chart = written.groupBy("usage_date", "service").agg(F.sum("daily_cost_usd").alias("daily_cost_usd"))
    counts = {d: n for d, n in lake.partition_counts("gold", "org_daily_usage_by_service", "usage_date").items()
              if dates[0] <= d <= dates[-1]}
    previewed, preview, check, png = side_by_side(
        lambda: previews_by_date(written, "usage_date", ["org_id", "service"]),
        lambda: markdown_preview(written),
        lambda: spark_schema_result(DailyUsage, written, DAILY_USAGE, rows=sum(counts.values())),
        lambda: chart is not None and daily_cost_per_service(chart.toPandas()),
    )
    rows = sum(partition_metadata(context, DAILY_USAGE, None, "usage_date", counts=counts, previewed=previewed).values())
    result = dg.MaterializeResult(
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
    if png:
        chart_metadata(context, DAILY_USAGE, png, "P1 daily cost per service (USD)")
    release(written)
    return result


P1_TABLE = dg.AssetKey(["cassandra", "org_daily_usage_by_service"])


def serve_p1_first(context: dg.AssetExecutionContext, cassandra: CassandraResource, sums: pd.DataFrame) -> None:
    """Serve the P1 cells a stream run reaches from the new events' sums, ahead of the MERGE, and
    record it as an observation of the table. A failure here fails nothing: the table's step writes
    the merged rows in any case, retrying while Cassandra is away. The next file's run is still
    planned from the table's step on (`cpa/p1-served`): planned here, its process would start
    beside the MERGE and take fewer of the files that land meanwhile (see docs/figures.md)."""
    # Imported here: the serving tables import this module's schemas.
    from cpa_assets.serving.tables import serve_increment

    try:
        figures = serve_increment(cassandra, DAILY_USAGE, sums, MEASURES)
    except Exception as exc:  # noqa: BLE001 - any failure leaves P1 to its table's step
        context.log.warning(f"P1 not served ahead of the daily mart's MERGE ({exc!r}); its table's step serves it")
        return
    context.log_event(dg.AssetObservation(
        asset_key=P1_TABLE, metadata={"served_from": "the run's new events, ahead of the daily mart's MERGE", **figures}))


def few_orgs(lake: LakeResource, orgs: list[str]) -> bool:
    """Whether a stream run's change reaches few enough orgs that replacing just their rows beats
    replacing whole dates: at most half the orgs there are (and not more than a predicate holds).
    Rewriting a date's file around the rows of most of its orgs costs more than writing it anew."""
    return len(orgs) <= min(MAX_SCOPED_ORGS, lake.row_count("bronze", "customers_orgs") // 2)


MAX_SCOPED_ORGS = 2000


def scope(column: str, values: list[str]) -> str:
    quoted = ", ".join("'" + str(value).replace("'", "''") + "'" for value in values)
    return f"{column} IN ({quoted})"


@tail_mart(TOP_SERVICES, deps=[dg.AssetDep(DAILY_USAGE, partition_mapping=top_services_window)],
           check_specs=[schema_spec(TOP_SERVICES)])
def org_top_services_14d(
    context: dg.AssetExecutionContext, config: UsageRun, spark: LazyPySparkResource, lake: LakeResource
) -> Iterator[dg.MaterializeResult]:
    """Services of each org ranked by total cost over the 14 days ending on `as_of_date` (P2).

    All ranked services are kept; "top N" is the first N ranks. Days before the first data day
    contribute nothing, so early windows are shorter. A stream run re-ranks only the orgs and
    as_of dates whose window holds a daily row it changed."""
    config = still_to_follow(context.instance, config)
    if defer(context, config, lake, "P2"):
        return
    dates = context.partition_keys
    session = spark.spark_session
    daily_side = upstream(config, lake, session, "gold", "org_daily_usage_by_service")
    path = lake.path("gold", "org_top_services_14d")
    if daily_side.mode is Mode.INCREMENT:
        if daily_side.changes is not None:
            changed = daily_side.changes.select("org_id", "usage_date").distinct().collect()
            orgs = sorted({row[0] for row in changed})
            first = min(str(row[1]) for row in changed)
            last = min((dt.date.fromisoformat(max(str(row[1]) for row in changed))
                        + dt.timedelta(days=TOP_SERVICES_WINDOW_DAYS - 1)).isoformat(), dates[-1])
            daily = lake.read(session, "gold", "org_daily_usage_by_service", DAILY_USAGE_SCHEMA, "usage_date",
                              _days(_window_start(first), last))
            within = f"as_of_date >= '{first}' AND as_of_date <= '{last}'"  # Delta's replaceWhere fails on BETWEEN
            if few_orgs(lake, orgs):
                daily = daily.where(F.col("org_id").isin(orgs))
                within += f" AND {scope('org_id', orgs)}"
            lake.replace_where(top_services(daily, first, last), "gold", "org_top_services_14d", "as_of_date", within)
        written = collected(new_state(lake.run_changes(session, "gold", "org_top_services_14d"), TOP_SERVICES_SCHEMA, session))
    else:
        window_days = _days(_window_start(dates[0]), dates[-1])
        daily = lake.read(session, "gold", "org_daily_usage_by_service", DAILY_USAGE_SCHEMA, "usage_date", window_days)
        written = top_services(daily, dates[0], dates[-1]).cache()
        lake.replace_partitions(written, "gold", "org_top_services_14d", "as_of_date", dates)
    counts = {d: n for d, n in lake.partition_counts("gold", "org_top_services_14d", "as_of_date").items()
              if dates[0] <= d <= dates[-1]}
    previewed, preview, check = side_by_side(
        lambda: previews_by_date(written, "as_of_date", ["org_id", "rank"]),
        lambda: markdown_preview(written.sort_values(["org_id", "as_of_date", "rank"]) if isinstance(written, pd.DataFrame)
                                 else written.orderBy("org_id", "as_of_date", "rank")),
        lambda: spark_schema_result(TopService, written, TOP_SERVICES, rows=sum(counts.values())),
    )
    rows = sum(partition_metadata(context, TOP_SERVICES, None, "as_of_date", counts=counts, previewed=previewed).values())
    result = dg.MaterializeResult(
        asset_key=TOP_SERVICES,
        metadata={
            "dagster/row_count": rows,
            "rows_written": sum(previewed[0].values()),
            "written_as": daily_side.mode.value,
            "partitions": len(dates),
            **lake.location(path),
            "preview": dg.MetadataValue.md(preview),
        },
        check_results=[check],
    )
    release(written)
    yield result

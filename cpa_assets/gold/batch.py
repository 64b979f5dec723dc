"""Gold batch marts: tickets per org and day they were opened (P3) and revenue per org and billing
month (P4), built from the silver snapshots and replaced partition by partition."""

from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
import pandera.pyspark as pa
import pyspark.sql.types as T
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cpa_assets.batch_partitions import billing_month_partitions, ticket_date_partitions
from cpa_assets.checks import schema_spec, spark_schema, spark_schema_result
from cpa_assets.metadata import collected, partition_metadata, side_by_side
from cpa_assets.partitions import single_run
from cpa_assets.preview import markdown_preview
from cpa_assets.silver.batch import read_silver

from cpa_resources import LakeResource

TICKETS_BY_DATE = dg.AssetKey(["gold", "tickets_by_org_date"])
REVENUE_BY_MONTH = dg.AssetKey(["gold", "revenue_by_org_month"])
PLACED_CHECK = "every_row_has_a_partition"

class TicketsByOrgDate(pa.DataFrameModel):
    org_id: T.StringType() = pa.Field()
    tickets: T.IntegerType() = pa.Field(ge=1)
    critical_tickets: T.IntegerType() = pa.Field(ge=0)
    sla_breaches: T.IntegerType() = pa.Field(ge=0)
    sla_breach_rate: T.DoubleType() = pa.Field(in_range={"min_value": 0, "max_value": 1})
    open_tickets: T.IntegerType() = pa.Field(ge=0)
    csat_avg: T.DoubleType() = pa.Field(nullable=True, in_range={"min_value": 1, "max_value": 5})
    avg_resolution_hours: T.DoubleType() = pa.Field(nullable=True, ge=0)
    ticket_date: T.DateType() = pa.Field()


class RevenueByOrgMonth(pa.DataFrameModel):
    org_id: T.StringType() = pa.Field()
    currency: T.StringType() = pa.Field(nullable=True)
    subtotal: T.DoubleType() = pa.Field(nullable=True)
    credits: T.DoubleType() = pa.Field(nullable=True)
    taxes: T.DoubleType() = pa.Field(nullable=True)
    fx_to_usd: T.DoubleType() = pa.Field(nullable=True)
    revenue_usd: T.DoubleType() = pa.Field(nullable=True)
    invoices: T.IntegerType() = pa.Field(ge=1)
    month: T.DateType() = pa.Field()


TICKETS_SCHEMA = spark_schema(TicketsByOrgDate)
REVENUE_SCHEMA = spark_schema(RevenueByOrgMonth)


def tickets_by_org_date(tickets: DataFrame) -> DataFrame:
    """Silver tickets per org × ticket_date (the day created).

    `sla_breach_rate` = sla_breaches / tickets (a ticket whose SLA status is unknown counts as not
    breached); `open_tickets` are those not resolved yet; `csat_avg` averages valid scores only (TK-01)
    and `avg_resolution_hours` resolved tickets only, each null when there is nothing to average.
    Tickets without a creation date have no day and are left out."""
    return (
        tickets.where(F.col("created_at").isNotNull())
        .groupBy("org_id", F.col("created_at").alias("ticket_date"))
        .agg(
            F.count(F.lit(1)).cast("int").alias("tickets"),
            F.count_if(F.col("severity") == "critical").cast("int").alias("critical_tickets"),
            F.count_if(F.col("sla_breached")).cast("int").alias("sla_breaches"),
            F.count_if(F.col("resolved_at").isNull()).cast("int").alias("open_tickets"),
            F.avg("csat_valid").alias("csat_avg"),
            F.avg("resolution_hours").alias("avg_resolution_hours"),
        )
        .withColumn("sla_breach_rate", F.col("sla_breaches") / F.col("tickets"))
        .select(*TICKETS_SCHEMA.fieldNames())
    )


def _sum_or_null(column: Column) -> Column:
    """A sum that stays unknown when one of its terms is: a missing amount must not read as 0."""
    return F.when(F.count_if(column.isNull()) == 0, F.sum(column))


def revenue_by_org_month(billing: DataFrame) -> DataFrame:
    """Silver invoices per org × billing month; revenue_usd = (subtotal − credits + taxes) × fx_to_usd.

    An org has one invoice a month in the course data. When it has several, those in one currency at
    one rate add up in that currency and keep it; as soon as the currencies or the rates differ,
    every invoice is converted to USD first and the row reads currency "USD", fx_to_usd 1.0. Either
    way (org, month) stays unique and revenue_usd = (subtotal − credits + taxes) × fx_to_usd holds
    on the row itself. `invoices` counts the invoices behind the row."""
    fx = F.col("fx_to_usd")
    amounts = ("subtotal", "credits", "taxes")
    grouped = billing.groupBy("org_id", F.trunc("month", "month").alias("month")).agg(
        F.size(F.collect_set(F.struct("currency", "fx_to_usd"))).alias("_rates"),
        F.min("currency").alias("_currency"),
        F.min("fx_to_usd").alias("_fx"),
        F.count(F.lit(1)).cast("int").alias("invoices"),
        *[_sum_or_null(F.col(a)).alias(f"_{a}") for a in amounts],
        *[_sum_or_null(F.col(a) * fx).alias(f"_{a}_usd") for a in amounts],
    )
    one_rate = F.col("_rates") == 1
    converted = grouped.select(
        "org_id",
        "month",
        "invoices",
        F.when(one_rate, F.col("_currency")).otherwise(F.lit("USD")).alias("currency"),
        F.when(one_rate, F.col("_fx")).otherwise(F.lit(1.0)).alias("fx_to_usd"),
        *[F.when(one_rate, F.col(f"_{a}")).otherwise(F.col(f"_{a}_usd")).alias(a) for a in amounts],
    )
    revenue = (F.col("subtotal") - F.col("credits") + F.col("taxes")) * F.col("fx_to_usd")
    return converted.withColumn("revenue_usd", revenue).select(*REVENUE_SCHEMA.fieldNames())


@dataclass(frozen=True)
class BatchMart:
    """A gold mart over one silver snapshot, partitioned by one date column of its own."""

    key: dg.AssetKey
    silver_table: str
    build: Callable[[DataFrame], DataFrame]
    date_column: str
    schema: T.StructType
    model: type[pa.DataFrameModel]
    partitions_def: dg.TimeWindowPartitionsDefinition
    description: str

    @property
    def table(self) -> str:
        return self.key.path[-1]


BATCH_MARTS = (
    BatchMart(
        TICKETS_BY_DATE, "support_tickets", tickets_by_org_date, "ticket_date", TICKETS_SCHEMA, TicketsByOrgDate,
        ticket_date_partitions,
        "Tickets per org × ticket_date (the day a ticket was opened): tickets, critical_tickets, sla_breaches, "
        "sla_breach_rate, open_tickets, csat_avg (valid scores only), avg_resolution_hours (P3). "
        "Partitioned by ticket_date.",
    ),
    BatchMart(
        REVENUE_BY_MONTH, "billing_monthly", revenue_by_org_month, "month", REVENUE_SCHEMA, RevenueByOrgMonth,
        billing_month_partitions,
        "Revenue per org × billing month: currency, subtotal, credits, taxes, fx_to_usd and revenue_usd = "
        "(subtotal − credits + taxes) × fx_to_usd (P4); several invoices in different currencies or rates "
        "are converted to USD first. Partitioned by month.",
    ),
)


def unplaced_rows(mart: BatchMart, rows: DataFrame) -> int:
    """Mart rows of the whole silver snapshot whose date has no partition, so no run would write them."""
    first = mart.partitions_def.get_first_partition_key()
    last = mart.partitions_def.get_last_partition_key()
    day = F.col(mart.date_column)
    return rows.where(day.isNull() | (day < F.lit(first).cast("date")) | (day > F.lit(last).cast("date"))).count()


def build_batch_mart(mart: BatchMart) -> dg.AssetsDefinition:
    @dg.asset(
        key=mart.key,
        deps=[dg.AssetKey(["silver", mart.silver_table])],
        partitions_def=mart.partitions_def,
        backfill_policy=single_run,
        group_name="gold",
        kinds={"spark", "delta"},
        description=mart.description,
        check_specs=[
            schema_spec(mart.key),
            dg.AssetCheckSpec(
                PLACED_CHECK,
                asset=mart.key,
                description=f"Every {mart.date_column} of the silver data falls in a partition (warns otherwise: "
                "those rows would never reach gold).",
            ),
        ],
    )
    def _asset(context: dg.AssetExecutionContext, spark: LazyPySparkResource, lake: LakeResource) -> dg.MaterializeResult:
        keys = context.partition_keys
        session = spark.spark_session
        rows = mart.build(read_silver(session, lake, mart.silver_table)).cache()
        in_run = rows.where(F.col(mart.date_column).cast("string").isin(keys))
        # A mart is a few thousand rows: collected once for the preview and the schema check.
        (written, unplaced), path = side_by_side(
            lambda: (collected(in_run), unplaced_rows(mart, rows)),
            lambda: lake.replace_partitions(in_run, "gold", mart.table, mart.date_column, keys),
        )
        rows.unpersist()
        counts = {day: n for day, n in lake.partition_counts("gold", mart.table, mart.date_column).items() if day in set(keys)}
        partition_metadata(context, mart.key, written, mart.date_column, counts=counts, order=["org_id"])
        result = dg.MaterializeResult(
            metadata={
                "dagster/row_count": sum(counts.values()),
                "partitions": len(keys),
                **lake.location(path),
                "preview": dg.MetadataValue.md(markdown_preview(written.sort_values(["org_id", mart.date_column]))),
            },
            check_results=[
                spark_schema_result(mart.model, written, mart.key),
                dg.AssetCheckResult(
                    check_name=PLACED_CHECK,
                    asset_key=mart.key,
                    passed=unplaced == 0,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={"rows_without_partition": unplaced},
                ),
            ],
        )
        return result

    return _asset


tickets_by_org_date_asset, revenue_by_org_month_asset = (build_batch_mart(mart) for mart in BATCH_MARTS)
batch_gold_assets = [tickets_by_org_date_asset, revenue_by_org_month_asset]

"""Silver usage events: conformed, checked against EV-* / RI-* and enriched; every bronze row
lands either in silver (with `dq_flags`) or in quarantine (with `dq_rule`)."""



import dagster as dg
import pandas as pd
import pandera.pyspark as pa
import pyspark.sql.types as T
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cpa_assets.bronze.batch import read_bronze
from cpa_assets.bronze.usage import BRONZE_EVENTS, BRONZE_SCHEMA, BronzeUsageEvent, arrived_after, inserted
from cpa_assets.checks import equality_result, schema_spec, spark_schema, spark_schema_result
from cpa_assets.metadata import chart_metadata, collected, partition_metadata, previews_by_date, release, side_by_side
from cpa_assets.charts import quarantine_by_rule
from cpa_assets.increments import Mode, UsageRun, upstream
from cpa_assets.contract import MIN_COST_INCREMENT, REGIONS, SERVICES, UNIT_BY_METRIC
from cpa_assets.partitions import event_date_partitions, serve_first, single_run
from cpa_assets.preview import markdown_preview

from cpa_resources import LakeResource

SILVER_EVENTS = dg.AssetKey(["silver", "usage_events"])
QUARANTINE = dg.AssetKey(["silver", "usage_events_quarantine"])

# Quarantine rules in order of precedence: a row failing several is quarantined under the first.
QUARANTINE_RULES = ("EV-02", "EV-05", "RI-01", "RI-02")
FLAGS = ("unit_imputed", "missing_value", "genai_tokens_unexpected", "missing_cost", "unknown_service",
         "unknown_region", "unknown_metric", "unit_mismatch")

class SilverUsageEvent(pa.DataFrameModel):
    event_id: T.StringType() = pa.Field()
    timestamp: T.TimestampType() = pa.Field()
    # Known org and resource (RI-01, RI-02 quarantine the others), enriched from their snapshots.
    org_id: T.StringType() = pa.Field()
    resource_id: T.StringType() = pa.Field()
    service: T.StringType() = pa.Field(nullable=True)
    region: T.StringType() = pa.Field(nullable=True)
    metric: T.StringType() = pa.Field(nullable=True)
    value: T.DoubleType() = pa.Field(nullable=True)
    unit: T.StringType() = pa.Field(nullable=True)
    cost_usd_increment: T.DoubleType() = pa.Field(nullable=True, ge=MIN_COST_INCREMENT)
    schema_version: T.IntegerType() = pa.Field(nullable=True)
    carbon_kg: T.DoubleType() = pa.Field(nullable=True)
    genai_tokens: T.LongType() = pa.Field(nullable=True, ge=0)
    org_name: T.StringType() = pa.Field()
    industry: T.StringType() = pa.Field(nullable=True)
    hq_region: T.StringType() = pa.Field(nullable=True)
    plan_tier: T.StringType() = pa.Field(nullable=True)
    lifecycle_stage: T.StringType() = pa.Field(nullable=True)
    resource_state: T.StringType() = pa.Field(nullable=True)
    resource_region: T.StringType() = pa.Field(nullable=True)
    dq_flags: T.ArrayType(T.StringType()) = pa.Field(nullable=True)
    source_file: T.StringType() = pa.Field(nullable=True)
    ingest_ts: T.TimestampType() = pa.Field(nullable=True)
    event_date: T.DateType() = pa.Field()


# A quarantined event keeps its bronze columns, with the rule that stopped it and when.
QUARANTINED_USAGE_EVENT = (
    BronzeUsageEvent.to_schema()
    .remove_columns(["event_date"])
    .add_columns(
        {
            "dq_rule": pa.Column(T.StringType(), pa.Check.isin(list(QUARANTINE_RULES))),
            "rejected_ts": pa.Column(T.TimestampType(), nullable=True),
            "event_date": pa.Column(T.DateType()),
        }
    )
)

SILVER_SCHEMA = spark_schema(SilverUsageEvent)
QUARANTINE_SCHEMA = spark_schema(QUARANTINED_USAGE_EVENT)

# The two tables every bronze row ends in, written side by side.
SILVER_TABLES = (("usage_events", SILVER_SCHEMA), ("usage_events_quarantine", QUARANTINE_SCHEMA))


def conform_events(bronze: DataFrame, orgs: DataFrame, resources: DataFrame) -> DataFrame:
    """Bronze events with `dq_rule` (null unless quarantined), `dq_flags` and the org/resource enrichment."""
    org_cols = orgs.select(
        F.col("org_id").alias("_org_id"), "org_name", "industry", "hq_region", "plan_tier", "lifecycle_stage"
    )
    res_cols = resources.select(
        F.col("resource_id").alias("_resource_id"),
        F.col("org_id").alias("_resource_org_id"),
        F.col("state").alias("resource_state"),
        F.col("region").alias("resource_region"),
    )
    joined = (
        bronze.join(F.broadcast(org_cols), bronze.org_id == org_cols._org_id, "left")
        .join(F.broadcast(res_cols), bronze.resource_id == res_cols._resource_id, "left")
    )
    value = F.trim("value").try_cast("double")
    expected_unit = F.create_map(*[F.lit(x) for pair in UNIT_BY_METRIC.items() for x in pair])[F.col("metric")]
    rule = (
        F.when(F.col("value").isNotNull() & (value.isNull() | F.isnan(value)), "EV-02")
        .when(F.col("cost_usd_increment") < MIN_COST_INCREMENT, "EV-05")
        .when(F.col("_org_id").isNull(), "RI-01")
        .when(F.col("_resource_id").isNull() | (F.col("_resource_org_id") != F.col("org_id")), "RI-02")
    )
    flags = F.filter(
        F.array(
            F.when(F.col("unit").isNull() & expected_unit.isNotNull(), F.lit("unit_imputed")),
            F.when(F.col("value").isNull(), F.lit("missing_value")),
            F.when(
                F.col("genai_tokens").isNotNull() & ((F.col("service") != "genai") | (F.col("schema_version") < 2)),
                F.lit("genai_tokens_unexpected"),
            ),
            F.when(F.col("cost_usd_increment").isNull(), F.lit("missing_cost")),
            F.when(~F.coalesce(F.col("service").isin(*SERVICES), F.lit(False)), F.lit("unknown_service")),
            F.when(~F.coalesce(F.col("region").isin(*REGIONS), F.lit(False)), F.lit("unknown_region")),
            F.when(expected_unit.isNull(), F.lit("unknown_metric")),
            F.when(F.col("unit").isNotNull() & (F.col("unit") != expected_unit), F.lit("unit_mismatch")),
        ),
        lambda flag: flag.isNotNull(),
    )
    return joined.select(
        *bronze.columns,
        value.alias("_value_num"),
        F.coalesce(F.col("unit"), expected_unit).alias("_unit_conformed"),
        "org_name", "industry", "hq_region", "plan_tier", "lifecycle_stage", "resource_state", "resource_region",
        rule.alias("dq_rule"),
        flags.alias("dq_flags"),
    )


def split_silver(conformed: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(silver, quarantine) from conformed events."""
    silver = conformed.where(F.col("dq_rule").isNull()).withColumn("value", F.col("_value_num")).withColumn(
        "unit", F.col("_unit_conformed")
    )
    # The delivery time of the file decides the quarantine time, so re-running changes nothing.
    quarantine = conformed.where(F.col("dq_rule").isNotNull()).withColumn("rejected_ts", F.col("ingest_ts"))
    return silver.select(*SILVER_SCHEMA.fieldNames()), quarantine.select(*QUARANTINE_SCHEMA.fieldNames())


def silver_may_append(lake: LakeResource, names: list[str]) -> bool:
    """Appending the bronze rows of these files gives what recomputing would: silver holds none of
    them yet (no row from them or from a file named after them), and the org and resource snapshots
    it joins have not changed since silver was last written (a reloaded snapshot can move old
    events in or out of quarantine: recompute then)."""
    silver_at = min(lake.written_at("silver", table) for table, _ in SILVER_TABLES)
    snapshots_at = max(lake.written_at("bronze", table) for table in ("customers_orgs", "resources"))
    return snapshots_at <= silver_at and all(arrived_after(lake, "silver", table, names) for table, _ in SILVER_TABLES)


def tally(quarantined: DataFrame, written: DataFrame | pd.DataFrame) -> dict[str, dict[str, dict]]:
    """Quarantined rows per date and rule ({"rules": {date: {rule: n}}}) of the dates' quarantine,
    and the flags of the rows written per date ({"flags": {date: {flag: n}}}): one Spark job (or
    the rules' alone, when the rows written were collected already)."""
    keyed = quarantined.select(F.lit("rules").alias("table"), "event_date", F.col("dq_rule").alias("key"))
    if not isinstance(written, pd.DataFrame):
        keyed = keyed.unionByName(written.select(F.lit("flags").alias("table"), "event_date", F.explode("dq_flags").alias("key")))
    counts: dict[str, dict[str, dict]] = {"rules": {}, "flags": {}}
    for table, day, key, n in keyed.groupBy("table", "event_date", "key").count().collect():
        counts[table].setdefault(str(day), {})[key] = n
    if isinstance(written, pd.DataFrame):
        for day, flags in zip(written["event_date"].astype(str), written["dq_flags"]):
            for flag in flags if flags is not None else ():
                counts["flags"].setdefault(day, {})
                counts["flags"][day][flag] = counts["flags"][day].get(flag, 0) + 1
    return counts


def summed(per_date: dict[str, dict], names: tuple[str, ...]) -> dict[str, int]:
    """Each of `names` summed over the dates of {date: {name: n}}."""
    return {name: sum(counts.get(name, 0) for counts in per_date.values()) for name in names}


def date_metadata(
    context: dg.AssetExecutionContext,
    previewed: tuple[tuple, tuple],
    per_date: dict[str, dict],
    appending: bool,
) -> None:
    """Each date's own figures on its silver and quarantine materialisations: rows, rows in from
    bronze, quarantined by rule (everything the date holds), conservation, and the flags and
    preview of the rows written (appending: the rows added; `previewed`: `previews_by_date` of
    them and of the quarantine); the quarantine chart."""
    figures, held = {}, {}
    for day in context.partition_keys:
        n_bronze, n_silver, n_held = (per_date[name].get(day, 0) for name in ("bronze", "silver", "quarantine"))
        by_rule = dg.MetadataValue.json({rule: 0 for rule in QUARANTINE_RULES} | per_date["rules"].get(day, {}))
        figures[day] = {
            "rows_in": n_bronze,
            "rows_quarantined": n_held,
            "quarantined_by_rule": by_rule,
            "flags": dg.MetadataValue.json({flag: 0 for flag in FLAGS} | per_date["flags"].get(day, {})),
            "flags_cover": "the rows this run appended" if appending else "every row of the date",
            "conservation": f"{n_bronze} bronze = {n_silver} silver + {n_held} quarantined"
            + ("" if n_bronze == n_silver + n_held else " (does not balance)"),
        }
        held[day] = {"by_rule": by_rule}
    by_day_and_rule = pd.DataFrame(
        [(day, rule, n) for day, counts in per_date["rules"].items() for rule, n in counts.items()],
        columns=["event_date", "dq_rule", "rows"],
    )
    silver_previews, quarantine_previews = previewed
    partition_metadata(context, SILVER_EVENTS, None, "event_date", counts=per_date["silver"], extra=figures,
                       previewed=silver_previews)
    partition_metadata(context, QUARANTINE, None, "event_date", counts=per_date["quarantine"], extra=held,
                       previewed=quarantine_previews)
    chart_metadata(context, QUARANTINE, quarantine_by_rule(by_day_and_rule), "Quarantined usage events per day, by rule")


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            SILVER_EVENTS,
            deps=[BRONZE_EVENTS, dg.AssetKey(["bronze", "customers_orgs"]), dg.AssetKey(["bronze", "resources"])],
            group_name="silver",
            kinds={"spark", "delta"},
            description="Usage events that pass EV-02, EV-05, RI-01 and RI-02: `value` as a number, the unit "
            "imputed from the metric (EV-03), `dq_flags` for EV-03/04/06 and DM-02, enriched with the org and the "
            "resource. Partitioned by `event_date`.",
        ),
        dg.AssetSpec(
            QUARANTINE,
            deps=[BRONZE_EVENTS],
            group_name="silver",
            kinds={"spark", "delta"},
            description="Usage events held back from silver, with the first rule they fail (`dq_rule`) and `rejected_ts`.",
        ),
    ],
    partitions_def=event_date_partitions,
    backfill_policy=single_run,
    op_tags=serve_first,
    check_specs=[
        schema_spec(SILVER_EVENTS),
        schema_spec(QUARANTINE),
        dg.AssetCheckSpec(
            "conservation",
            asset=SILVER_EVENTS,
            blocking=True,
            description="For every event_date: bronze rows = silver rows + quarantined rows.",
        ),
    ],
)
def silver_usage_events(
    context: dg.AssetExecutionContext, config: UsageRun, spark: LazyPySparkResource, lake: LakeResource
):
    """Conform bronze usage events into silver and quarantine: the rows bronze added in this run
    (an appending stream run), or every bronze row of the run's dates."""
    dates = context.partition_keys
    session = spark.spark_session
    tables = SILVER_TABLES
    bronze_side = upstream(config, lake, session, "bronze", "usage_events")
    appending = bronze_side.mode is Mode.INCREMENT and silver_may_append(lake, config.appended)
    if appending:
        # Only the rows bronze inserted in this run are conformed and merged in on event_id.
        source = inserted(bronze_side.changes, BRONZE_SCHEMA, session)
    else:
        source = lake.read(session, "bronze", "usage_events", BRONZE_SCHEMA, "event_date", dates)
    conformed = conform_events(
        source, read_bronze(session, lake, "customers_orgs"), read_bronze(session, lake, "resources")
    ).cache()
    split = split_silver(conformed)
    if appending:
        # Silver holds no row of these files (silver_may_append): the rows are added as they are,
        # and what was written is those rows, collected once for the metadata.
        written, quarantined_now = side_by_side(*[lambda frame=frame: collected(frame) for frame in split])
        if bronze_side.changes is not None:  # the two commits side by side (two tables)
            side_by_side(*[lambda frame=frame, table=table: lake.append(frame, "silver", table, "event_date")
                           for frame, (table, _) in zip(split, tables)])
    else:
        side_by_side(*[lambda frame=frame, table=table: lake.replace_partitions(frame, "silver", table, "event_date", dates)
                       for frame, (table, _) in zip(split, tables)])
        written, quarantined_now = split
    silver_path, quarantine_path = (lake.path("silver", table) for table, _ in tables)

    # Row counts per date come from the three tables' logs; the quarantine's rules from its rows of
    # the run's dates (a small table); flags, previews and schema checks from the rows written.
    in_dates = lambda counts: {day: n for day, n in counts.items() if dates[0] <= day <= dates[-1]}  # noqa: E731
    per_date = {
        "bronze": in_dates(lake.partition_counts("bronze", "usage_events", "event_date")),
        "silver": in_dates(lake.partition_counts("silver", tables[0][0], "event_date")),
        "quarantine": in_dates(lake.partition_counts("silver", tables[1][0], "event_date")),
    }
    held = lake.read(session, "silver", *tables[1], "event_date", dates)
    tallied, silver_previews, quarantine_previews, preview, silver_check, quarantine_check = side_by_side(
        lambda: tally(held, written),
        lambda: previews_by_date(written, "event_date", ["event_id"]),
        lambda: previews_by_date(quarantined_now, "event_date", ["event_id"]),
        lambda: markdown_preview(written),
        lambda: spark_schema_result(SilverUsageEvent, written, SILVER_EVENTS, rows=sum(per_date["silver"].values())),
        lambda: spark_schema_result(QUARANTINED_USAGE_EVENT, quarantined_now, QUARANTINE, rows=sum(per_date["quarantine"].values())),
    )
    per_date |= tallied
    by_rule = summed(per_date["rules"], QUARANTINE_RULES)
    by_flag = summed(per_date["flags"], FLAGS)
    totals = {name: sum(per_date[name].values()) for name in ("bronze", "silver", "quarantine")}
    date_metadata(context, (silver_previews, quarantine_previews), per_date, appending)
    yield dg.MaterializeResult(
        asset_key=SILVER_EVENTS,
        metadata={
            "dagster/row_count": totals["silver"],
            "rows_in": totals["bronze"],
            "rows_quarantined": totals["quarantine"],
            "rows_written": sum(silver_previews[0].values()),
            "written_as": f"{len(config.appended)} files appended" if appending else "dates recomputed",
            "flags": dg.MetadataValue.json(by_flag),
            "quarantined_by_rule": dg.MetadataValue.json(by_rule),
            **lake.location(silver_path),
            "preview": dg.MetadataValue.md(preview),
        },
    )
    yield dg.MaterializeResult(
        asset_key=QUARANTINE,
        metadata={
            "dagster/row_count": totals["quarantine"],
            "by_rule": dg.MetadataValue.json(by_rule),
            **lake.location(quarantine_path),
        },
    )
    yield silver_check
    yield quarantine_check
    dates_seen = set(per_date["bronze"]) | set(per_date["silver"]) | set(per_date["quarantine"])
    yield equality_result(
        "conservation",
        SILVER_EVENTS,
        expected={d: per_date["bronze"].get(d, 0) for d in dates_seen},
        actual={d: per_date["silver"].get(d, 0) + per_date["quarantine"].get(d, 0) for d in dates_seen},
    )
    for frame in (conformed, written, quarantined_now):
        release(frame)
    context.log.info(
        f"silver usage_events: {totals['bronze']} bronze = {totals['silver']} silver + {totals['quarantine']}"
        f" quarantined {by_rule} ({'appended' if appending else 'recomputed'})"
    )

"""Bronze batch sources: the seven landing CSVs as typed snapshots, one asset pair per file."""


import csv
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyspark.sql.types as T
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

import pandera.pyspark as pa

from cpa_assets.checks import equality_result, schema_spec, spark_schema, spark_schema_result
from cpa_assets.metadata import collect_and_write_pair
from cpa_assets.preview import markdown_preview
from cpa_assets.subsets import selected_results

from cpa_resources import LakeResource

TYPES = {
    "string": T.StringType(),
    "date": T.DateType(),
    "timestamp": T.TimestampType(),
    "boolean": T.BooleanType(),
    "double": T.DoubleType(),
}


@dataclass(frozen=True)
class CsvSource:
    """A landing CSV as the contract describes it: its key and its columns with their types."""

    table: str
    key: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]

    @property
    def file_name(self) -> str:
        return f"{self.table}.csv"

    @property
    def pandera_schema(self) -> pa.DataFrameSchema:
        """Every column of its contract type, key columns never null, then where each row came from."""
        return pa.DataFrameSchema(
            {name: pa.Column(TYPES[kind], nullable=name not in self.key) for name, kind in self.columns}
            | {
                "row_no": pa.Column(T.IntegerType(), nullable=True),
                "source_file": pa.Column(T.StringType(), nullable=True),
                "ingest_ts": pa.Column(T.TimestampType(), nullable=True),
            }
        )

    @property
    def schema(self) -> T.StructType:
        return spark_schema(self.pandera_schema)


CSV_SOURCES = (
    CsvSource(
        "customers_orgs",
        ("org_id",),
        (("org_id", "string"), ("org_name", "string"), ("industry", "string"), ("hq_region", "string"),
         ("plan_tier", "string"), ("is_enterprise", "boolean"), ("signup_date", "date"), ("sales_rep", "string"),
         ("lifecycle_stage", "string"), ("marketing_source", "string"), ("nps_score", "double")),
    ),
    CsvSource(
        "users",
        ("user_id",),
        (("user_id", "string"), ("org_id", "string"), ("email", "string"), ("role", "string"),
         ("active", "boolean"), ("created_at", "date"), ("last_login", "date")),
    ),
    CsvSource(
        "resources",
        ("resource_id",),
        (("resource_id", "string"), ("org_id", "string"), ("service", "string"), ("region", "string"),
         ("created_at", "date"), ("state", "string"), ("tags_json", "string")),
    ),
    CsvSource(
        "billing_monthly",
        ("invoice_id",),
        (("invoice_id", "string"), ("org_id", "string"), ("month", "date"), ("subtotal", "double"),
         ("credits", "double"), ("taxes", "double"), ("currency", "string"), ("exchange_rate_to_usd", "double")),
    ),
    CsvSource(
        "support_tickets",
        ("ticket_id",),
        (("ticket_id", "string"), ("org_id", "string"), ("category", "string"), ("severity", "string"),
         ("created_at", "date"), ("resolved_at", "date"), ("csat", "double"), ("sla_breached", "boolean")),
    ),
    CsvSource(
        "marketing_touches",
        ("touch_id",),
        (("touch_id", "string"), ("org_id", "string"), ("campaign", "string"), ("channel", "string"),
         ("timestamp", "timestamp"), ("clicked", "boolean"), ("converted", "boolean")),
    ),
    CsvSource(
        "nps_surveys",
        ("org_id", "survey_date"),
        (("org_id", "string"), ("survey_date", "date"), ("nps_score", "double"), ("comment", "string")),
    ),
)
SOURCES_BY_TABLE = {source.table: source for source in CSV_SOURCES}

class BronzeCsvReject(pa.DataFrameModel):
    source_file: T.StringType() = pa.Field()
    row_no: T.IntegerType() = pa.Field(ge=1)
    raw_row: T.StringType() = pa.Field()
    reason: T.StringType() = pa.Field(str_matches=r"^(missing_key|duplicate_key|bad_\w+:\w+)$")
    ingest_ts: T.TimestampType() = pa.Field(nullable=True)


REJECT_SCHEMA = spark_schema(BronzeCsvReject)


class LandingColumnsError(ValueError):
    """A landing CSV is missing, or its header lacks a contract column or holds one the contract
    does not know: nothing of that source is written."""


def read_header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return next(csv.reader(handle), [])


def count_rows(path: Path) -> int:
    """Data rows as a CSV reader sees them (quoted newlines stay inside their row)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return sum(1 for row in csv.reader(handle) if row) - 1


def check_header(source: CsvSource, path: Path) -> None:
    """Raise LandingColumnsError, naming the file and the columns, unless the header holds exactly
    the contract's columns (in any order)."""
    header = [name.lstrip("\ufeff").strip() for name in read_header(path)]
    missing = [name for name, _ in source.columns if name not in header]
    unknown = [name for name in header if name not in dict(source.columns)]
    problems = ([f"missing column(s) {', '.join(missing)}"] if missing else []) + (
        [f"unknown column(s) {', '.join(unknown)}"] if unknown else [])
    if problems:
        raise LandingColumnsError(f"{path}: {'; '.join(problems)} (expected {source.file_name} columns: "
                                  f"{', '.join(n for n, _ in source.columns)})")


def read_csv_rows(spark: SparkSession, source: CsvSource, path: Path) -> DataFrame:
    """The file's rows as text (no type inference), numbered in file order, BOM-safe."""
    raw = (
        spark.read.option("header", True).option("multiLine", True).option("escape", '"')
        .option("encoding", "UTF-8").csv(str(path))
    )
    raw = raw.toDF(*[c.lstrip("\ufeff").strip() for c in raw.columns])
    numbered = raw.withColumn("_order", F.monotonically_increasing_id()).withColumn(
        "row_no", F.row_number().over(Window.orderBy("_order")).cast("int")
    )
    return numbered.select(
        *[F.col(name) for name, _ in source.columns],
        "row_no",
        F.col("_metadata.file_name").alias("source_file"),
        F.col("_metadata.file_modification_time").alias("ingest_ts"),
    )


def type_rows(source: CsvSource, rows: DataFrame) -> DataFrame:
    """Cast each column to its contract type; `reason` names the first defect of an unusable row."""
    casts = {name: F.trim(F.col(name)).try_cast(TYPES[kind]) for name, kind in source.columns if kind != "string"}
    bad = [F.when(F.col(name).isNotNull() & cast.isNull(), F.lit(f"bad_{kind}:{name}"))
           for (name, kind), cast in ((c, casts[c[0]]) for c in source.columns if c[0] in casts)]
    missing_key = F.greatest(*[F.col(k).isNull() | (F.trim(F.col(k)) == "") for k in source.key]) \
        if len(source.key) > 1 else F.col(source.key[0]).isNull() | (F.trim(F.col(source.key[0])) == "")
    reason = F.when(missing_key, F.lit("missing_key")).otherwise(F.coalesce(*bad, F.lit(None).cast("string")))
    raw_row = F.to_json(F.struct(*[name for name, _ in source.columns]))
    return rows.select(
        *[casts.get(name, F.trim(F.col(name))).alias(name) for name, _ in source.columns],
        "row_no",
        "source_file",
        "ingest_ts",
        reason.alias("reason"),
        raw_row.alias("raw_row"),
    )


def split_rows(source: CsvSource, typed: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(rows, rejects): unusable rows and later duplicates of a key go to rejects with a reason."""
    usable = typed.where(F.col("reason").isNull())
    first = Window.partitionBy(*source.key).orderBy("row_no")
    ranked = usable.withColumn("_arrival", F.row_number().over(first))
    rows = ranked.where(F.col("_arrival") == 1).select(*source.schema.fieldNames())
    duplicates = ranked.where(F.col("_arrival") > 1).withColumn("reason", F.lit("duplicate_key"))
    rejects = typed.where(F.col("reason").isNotNull()).unionByName(duplicates.drop("_arrival"))
    return rows, rejects.select(*REJECT_SCHEMA.fieldNames())


def bronze_key(source: CsvSource) -> dg.AssetKey:
    return dg.AssetKey(["bronze", source.table])


def rejects_key(source: CsvSource) -> dg.AssetKey:
    return dg.AssetKey(["bronze", f"{source.table}_rejects"])


def ingest_csv(source: CsvSource, spark: SparkSession, lake: LakeResource) -> list:
    """Bronze for one landing CSV: its materialisations and check results, or LandingColumnsError
    before anything of it is written. The typed rows are split once, collected once (a CSV is a
    few thousand rows) for the previews and checks, and the two tables written side by side; the
    rows each table holds are counted from its log."""
    path = lake.landing_dir() / source.file_name
    if not path.exists():
        raise LandingColumnsError(f"{path}: landing file does not exist")
    check_header(source, path)
    typed = type_rows(source, read_csv_rows(spark, source, path)).cache()
    rows, rejects = split_rows(source, typed)
    kept, rejected, table_path, rejects_path = collect_and_write_pair(
        lake, "bronze", (source.table, f"{source.table}_rejects"), (rows, rejects), typed)
    n_rows, n_rejected = lake.row_count("bronze", source.table), lake.row_count("bronze", f"{source.table}_rejects")
    reasons = {reason: int(n) for reason, n in rejected["reason"].value_counts().items()}
    n_duplicates = reasons.get("duplicate_key", 0)
    n_rejects = n_rejected - n_duplicates
    landing_rows = count_rows(path)
    table_key, reject_key = bronze_key(source), rejects_key(source)
    return [
        dg.MaterializeResult(
            asset_key=table_key,
            metadata={
                "dagster/row_count": n_rows,
                "landing_rows": landing_rows,
                "duplicates_dropped": n_duplicates,
                "rejected": n_rejects,
                **lake.location(table_path),
                "preview": dg.MetadataValue.md(markdown_preview(kept)),
            },
        ),
        dg.MaterializeResult(
            asset_key=reject_key,
            metadata={
                "dagster/row_count": n_rejected,
                "by_reason": dg.MetadataValue.json(reasons),
                **lake.location(rejects_path),
            },
        ),
        spark_schema_result(source.pandera_schema, kept, table_key),
        spark_schema_result(BronzeCsvReject, rejected, reject_key),
        equality_result(
            "conservation", table_key, {source.file_name: landing_rows},
            {source.file_name: n_rows + n_rejects + n_duplicates},
        ),
    ]


def _specs(source: CsvSource) -> list[dg.AssetSpec]:
    return [
        dg.AssetSpec(
            bronze_key(source),
            group_name="bronze",
            kinds={"spark", "delta"},
            description=f"`{source.file_name}` as a typed snapshot, one row per {' + '.join(source.key)} "
            "(the first row wins), with `source_file`, `row_no` and `ingest_ts`.",
            skippable=True,
        ),
        dg.AssetSpec(
            rejects_key(source),
            group_name="bronze",
            kinds={"spark", "delta"},
            description=f"Rows of `{source.file_name}` that bronze did not keep: the raw row and the reason "
            "(`missing_key`, `bad_<type>:<column>`, `duplicate_key`).",
            skippable=True,
        ),
    ]


def _check_specs(source: CsvSource) -> list[dg.AssetCheckSpec]:
    return [
        schema_spec(bronze_key(source)),
        schema_spec(rejects_key(source)),
        dg.AssetCheckSpec(
            "conservation",
            asset=bronze_key(source),
            blocking=True,
            description="Landing rows = bronze rows + rejects + duplicates.",
        ),
    ]


def build_bronze_csv(source: CsvSource) -> dg.AssetsDefinition:
    """One step per landing CSV, so a bad file fails its own source alone: the other sources, and
    what depends on them, go on."""

    @dg.multi_asset(
        name=f"bronze_{source.table}",
        specs=_specs(source),
        check_specs=_check_specs(source),
        can_subset=True,
    )
    def _asset(context: dg.AssetExecutionContext, spark: LazyPySparkResource, lake: LakeResource):
        try:
            results = ingest_csv(source, spark.spark_session, lake)
        except LandingColumnsError as exc:
            # Nothing of this source is written: its tables keep their last snapshot.
            raise dg.Failure(description=str(exc), metadata={"file": source.file_name}) from exc
        yield from selected_results(context, results)
        rows = results[0].metadata
        context.log.info(
            f"bronze {source.table}: {rows['landing_rows']} landing rows = {rows['dagster/row_count']} rows"
            f" + {rows['rejected']} rejects + {rows['duplicates_dropped']} duplicates"
        )

    _asset.__doc__ = (f"Bronze snapshot of `{source.file_name}`. A file that is missing, lacks a contract column "
                      "or holds an unknown one fails this step alone, naming the file and the columns.")
    return _asset


bronze_csv_assets = [build_bronze_csv(source) for source in CSV_SOURCES]


def read_bronze(spark: SparkSession, lake: LakeResource, table: str) -> DataFrame:
    return lake.read(spark, "bronze", table, SOURCES_BY_TABLE[table].schema)

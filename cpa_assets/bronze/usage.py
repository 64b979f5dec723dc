"""Bronze usage events: every landing line becomes exactly one bronze row, reject or counted duplicate."""


from functools import reduce
from pathlib import Path

import dagster as dg
import pandera.pyspark as pa
import pyspark.sql.types as T
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from cpa_assets.checks import equality_result, schema_spec, spark_schema, spark_schema_result
from cpa_assets.event_time import BLANK_LINE_PATTERN, is_blank, spark_timestamp
from cpa_assets.metadata import partition_metadata, previews_by_date, side_by_side
from cpa_assets.partitions import bookkeeping_last, event_date_partitions, single_run
from cpa_assets.preview import markdown_preview

from cpa_resources import LakeResource

BRONZE_EVENTS = dg.AssetKey(["bronze", "usage_events"])
REJECTS = dg.AssetKey(["bronze", "usage_events_rejects"])
DUPLICATES = dg.AssetKey(["bronze", "usage_events_duplicates"])
FILE_COUNTS = dg.AssetKey(["bronze", "usage_events_file_counts"])

class BronzeUsageEvent(pa.DataFrameModel):
    event_id: T.StringType() = pa.Field(str_length={"min_value": 1})
    timestamp: T.TimestampType() = pa.Field()
    org_id: T.StringType() = pa.Field(nullable=True)
    resource_id: T.StringType() = pa.Field(nullable=True)
    service: T.StringType() = pa.Field(nullable=True)
    region: T.StringType() = pa.Field(nullable=True)
    metric: T.StringType() = pa.Field(nullable=True)
    # As delivered: a number, a numeric string or anything else; silver decides what it means.
    value: T.StringType() = pa.Field(nullable=True)
    unit: T.StringType() = pa.Field(nullable=True)
    cost_usd_increment: T.DoubleType() = pa.Field(nullable=True)
    schema_version: T.IntegerType() = pa.Field(nullable=True, ge=1)
    carbon_kg: T.DoubleType() = pa.Field(nullable=True)
    genai_tokens: T.LongType() = pa.Field(nullable=True, ge=0)
    source_file: T.StringType() = pa.Field(str_endswith=".jsonl")
    line_no: T.IntegerType() = pa.Field(ge=1)
    ingest_ts: T.TimestampType() = pa.Field()
    event_date: T.DateType() = pa.Field()


class BronzeReject(pa.DataFrameModel):
    source_file: T.StringType() = pa.Field()
    line_no: T.IntegerType() = pa.Field(ge=1)
    # The line as text; null when its bytes are not UTF-8, which `raw_base64` then holds exactly.
    raw_line: T.StringType() = pa.Field(nullable=True)
    raw_base64: T.StringType() = pa.Field(nullable=True)
    reason: T.StringType() = pa.Field(
        str_matches=r"^(invalid_utf8|malformed_json|missing_event_id|bad_timestamp|bad_number:.+|event_date_out_of_range)$",
    )
    ingest_ts: T.TimestampType() = pa.Field()


class BronzeDuplicate(pa.DataFrameModel):
    event_id: T.StringType() = pa.Field()
    source_file: T.StringType() = pa.Field()
    line_no: T.IntegerType() = pa.Field(ge=1)
    kept_source_file: T.StringType() = pa.Field()
    kept_line_no: T.IntegerType() = pa.Field(ge=1)
    event_date: T.DateType() = pa.Field()
    ingest_ts: T.TimestampType() = pa.Field()


BRONZE_SCHEMA = spark_schema(BronzeUsageEvent)
REJECT_SCHEMA = spark_schema(BronzeReject)
# The ledger's duplicates, as written (for the UI's column schema).
DUPLICATE_SCHEMA = spark_schema(BronzeDuplicate)

TEXT_FIELDS = ["event_id", "timestamp", "org_id", "resource_id", "service", "region", "metric", "value", "unit"]
NUMBER_FIELDS = {name: BRONZE_SCHEMA[name].dataType for name in ("cost_usd_increment", "schema_version", "carbon_kg", "genai_tokens")}
# Every key is read as text: a number, a numeric string or an unexpected type never breaks the
# parse of the other keys, and keys a future schema adds are simply not selected.
RAW_SCHEMA = T.StructType(
    [T.StructField(name, T.StringType()) for name in [*TEXT_FIELDS, *NUMBER_FIELDS]]
    + [T.StructField("_corrupt", T.StringType())]
)


def read_event_lines(spark: SparkSession, files: list[Path]) -> DataFrame:
    """One row per non-blank line: file name, 1-based line number, the line as text (null when its
    bytes are not UTF-8), those bytes in base64 when they are not, and delivery time."""
    if not files:
        schema = "source_file string, line_no int, raw_line string, raw_base64 string, ingest_ts timestamp"
        return spark.createDataFrame([], schema)
    # A whole file per row keeps each line's position, which decides which duplicate arrived first.
    # Spark reads the bytes as they are; its `split` would decode them, so a file that is not UTF-8
    # is split on its newline bytes instead.
    text = F.col("value")
    pieces = F.when(F.is_valid_utf8(text), F.split(text, "\n")).otherwise(_split_bytes(text))
    whole = spark.read.text([str(f) for f in files], wholetext=True).select(
        F.col("_metadata.file_name").alias("source_file"),
        F.col("_metadata.file_modification_time").alias("ingest_ts"),
        F.posexplode(pieces).alias("pos", "piece"),
    )
    valid = F.is_valid_utf8("piece")
    lines = whole.select(
        "source_file",
        (F.col("pos") + 1).cast("int").alias("line_no"),
        F.when(valid, F.regexp_replace("piece", "\r$", "")).alias("raw_line"),
        # Spark's base64 breaks its output into MIME lines; the bytes are one unbroken string here.
        F.when(~valid, F.translate(F.base64(F.col("piece").cast("binary")), "\r\n", "")).alias("raw_base64"),
        "ingest_ts",
    )
    return lines.where(F.col("raw_base64").isNotNull() | ~F.col("raw_line").rlike(BLANK_LINE_PATTERN))


def _split_bytes(text: Column) -> Column:
    """The lines of a text whose bytes may not be UTF-8, byte for byte: as hex with a space after
    every byte, a newline byte is exactly an aligned `0A `."""
    spaced = F.regexp_replace(F.hex(text.cast("binary")), "(..)", "$1 ")
    return F.transform(F.split(spaced, "0A "), lambda piece: F.unhex(F.regexp_replace(piece, " ", "")).cast("string"))


def _number(raw: str, dtype: T.DataType) -> F.Column:
    as_double = F.col(f"j.{raw}").try_cast("double")
    if isinstance(dtype, T.DoubleType):
        return as_double
    return F.when(as_double == F.floor(as_double), as_double.cast(dtype))


def _is_bad_number(raw: str, dtype: T.DataType) -> F.Column:
    parsed = _number(raw, dtype)
    finite = parsed.isNotNull() & ~F.isnan(parsed.cast("double")) & (F.abs(parsed.cast("double")) != float("inf"))
    return F.col(f"j.{raw}").isNotNull() & ~finite


def parse_events(lines: DataFrame, first_date: str, last_date: str) -> DataFrame:
    """Parse and type each line; `reason` is null for a usable event and names the defect otherwise."""
    # Spark's JSON reader accepts single-quoted strings by default; a line like that is not JSON.
    options = {"columnNameOfCorruptRecord": "_corrupt", "allowSingleQuotes": "false"}
    parsed = lines.withColumn("j", F.from_json("raw_line", RAW_SCHEMA, options))
    bad_numbers = F.concat_ws(
        ",", *[F.when(_is_bad_number(name, dtype), F.lit(name)) for name, dtype in NUMBER_FIELDS.items()]
    )
    typed = parsed.select(
        "source_file",
        "line_no",
        "raw_line",
        "raw_base64",
        "ingest_ts",
        F.col("j._corrupt").alias("_corrupt"),
        F.col("j").isNull().alias("_no_object"),
        F.trim("j.event_id").alias("event_id"),
        spark_timestamp(F.col("j.timestamp")).alias("timestamp"),
        *[F.col(f"j.{name}").alias(name) for name in TEXT_FIELDS if name not in ("event_id", "timestamp")],
        *[_number(name, dtype).alias(name) for name, dtype in NUMBER_FIELDS.items()],
        bad_numbers.alias("_bad_numbers"),
    ).withColumn("event_date", F.to_date("timestamp"))
    reason = (
        F.when(F.col("raw_base64").isNotNull(), "invalid_utf8")
        .when(F.col("_no_object") | F.col("_corrupt").isNotNull(), "malformed_json")
        .when(F.col("event_id").isNull() | (F.col("event_id") == ""), "missing_event_id")
        .when(F.col("timestamp").isNull(), "bad_timestamp")
        .when(F.col("_bad_numbers") != "", F.concat(F.lit("bad_number:"), F.col("_bad_numbers")))
        .when(~F.col("event_date").between(first_date, last_date), "event_date_out_of_range")
    )
    return typed.withColumn("reason", reason).drop("_corrupt", "_no_object", "_bad_numbers")


def split_events(parsed: DataFrame) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(events, rejects, duplicates): the first arrival of an event_id wins, by file name then line."""
    usable = parsed.where(F.col("reason").isNull())
    arrival = Window.partitionBy("event_id").orderBy("source_file", "line_no")
    ranked = usable.withColumn("_arrival", F.row_number().over(arrival)).withColumn(
        "_first", F.first(F.struct("source_file", "line_no")).over(arrival)
    )
    events = ranked.where(F.col("_arrival") == 1).select(*BRONZE_SCHEMA.fieldNames())
    duplicates = ranked.where(F.col("_arrival") > 1).select(
        "event_id",
        "source_file",
        "line_no",
        F.col("_first.source_file").alias("kept_source_file"),
        F.col("_first.line_no").alias("kept_line_no"),
        "event_date",
        "ingest_ts",
    )
    rejects = parsed.where(F.col("reason").isNotNull()).select(*REJECT_SCHEMA.fieldNames())
    return events, rejects, duplicates


class PlannedFile(dg.Config):
    """A landing file as the usage sensor saw it when it planned a run."""

    name: str
    size: int
    mtime_ns: int


class LandingFiles(dg.Config):
    """The landing files a run reads. Empty (a backfill, a run from the UI): every file there now.
    Otherwise the files the usage sensor planned the run for, plus every file the landing ledger
    already holds: a file that lands while the run is going waits for the next run instead of
    reaching bronze and the ledger halfway."""

    files: list[PlannedFile] = []
    # The planned files, when each of them arrived after every file before it (the usual case):
    # bronze and silver then add their events to the dates they touch instead of recomputing those
    # dates from every file. Empty: recompute.
    appended: list[str] = []


# Per file, what the landing ledger records of it: lines_read = bronze_rows + rejects + duplicates,
# the size and modification time it was read with, and the first and last event dates its rows
# (and the duplicates of them) are stored under.
FILE_COUNTS_SCHEMA = (
    "source_file string, lines_read long, bronze_rows long, rejects long, duplicates long,"
    " size long, mtime_ns long, first_date date, last_date date"
)


def delivered_files(lake: LakeResource) -> dict[str, dict]:
    """The landing ledger as plain rows by file name (no Spark: the usage sensor reads it every
    tick); empty before the first ledger or for one written before sizes were recorded."""
    if not lake.exists("bronze", "usage_events_file_counts"):
        return {}
    table = lake.small_table("bronze", "usage_events_file_counts")
    if "size" not in table.column_names:
        return {}
    return {row["source_file"]: row for row in table.to_pylist()}


def run_files(lake: LakeResource, config: LandingFiles) -> dict[Path, tuple[int, int]]:
    """The landing files a run reads, each with the size and modification time the ledger records
    for it: as planned for the planned ones, as the ledger has them for the others, as found now
    in a run that reads every file."""
    files = lake.event_files()
    if not config.files:
        return {f: (f.stat().st_size, f.stat().st_mtime_ns) for f in files}
    known = {name: (row["size"], row["mtime_ns"]) for name, row in delivered_files(lake).items()}
    known |= {f.name: (f.size, f.mtime_ns) for f in config.files}
    return {f: known[f.name] for f in files if f.name in known}


def held_rows(
    spark: SparkSession, lake: LakeResource, layer: str, tables: tuple[tuple[str, T.StructType], ...], columns: list[str]
) -> DataFrame:
    """`table` and `columns` of every row the tables of a layer hold, read once and cached: an
    appending step checks, joins and counts against it instead of reading the layer again."""
    frames = [lake.read(spark, layer, table, schema, "event_date").select(F.lit(table).alias("table"), *columns)
              for table, schema in tables]
    return reduce(DataFrame.unionByName, frames).cache()


def arrived_after(held: DataFrame, names: list[str]) -> bool:
    """True when no held row comes from these files or from any file sorting after them, so adding
    the files' rows is the same as recomputing with them: first arrivals are decided by file name,
    and none of these rows can be there already."""
    if not names:
        return False
    latest = held.agg(F.max("source_file")).first()[0]
    return latest is None or latest < min(names)


def appended_events(spark: SparkSession, files: list[Path], held: DataFrame) -> DataFrame:
    """The events files add to bronze: their first arrivals, less the event_ids bronze holds."""
    events, _, _ = split_events(parsed_landing(spark, files))
    return events.join(held.select("event_id"), "event_id", "left_anti")


# The bronze asset and the ledger of the same run parse the same files: keep the last parse,
# keyed by what the files are, so a run reads landing once and a changed file is parsed anew.
_last_parse: dict[tuple, DataFrame] = {}


def _fingerprint(spark: SparkSession, files: list[Path]) -> tuple:
    stats = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return (id(spark), stats)


def parsed_landing(spark: SparkSession, files: list[Path]) -> DataFrame:
    """Every line of the files, parsed (`parse_events`), cached until other files are parsed."""
    key = _fingerprint(spark, files)
    if key not in _last_parse:
        for stale in _last_parse.values():
            stale.unpersist()
        _last_parse.clear()
        bounds = (event_date_partitions.get_first_partition_key(), event_date_partitions.get_last_partition_key())
        _last_parse[key] = parse_events(read_event_lines(spark, files), *bounds).cache()
    return _last_parse[key]


def landing_events(spark: SparkSession, files: list[Path]) -> tuple[DataFrame, DataFrame, DataFrame]:
    return split_events(parsed_landing(spark, files))


@dg.asset(
    key=BRONZE_EVENTS,
    partitions_def=event_date_partitions,
    backfill_policy=single_run,
    group_name="bronze",
    kinds={"spark", "delta"},
    check_specs=[schema_spec(BRONZE_EVENTS)],
)
def bronze_usage_events(
    context: dg.AssetExecutionContext, config: LandingFiles, spark: LazyPySparkResource, lake: LakeResource
) -> dg.MaterializeResult:
    """Usage events from every landing JSON-lines file, typed minimally (`value` stays text), one row
    per `event_id` (the first arrival wins), partitioned by `event_date` (UTC).

    Rejected lines and dropped duplicates are accounted for in the `usage_events_rejects`,
    `usage_events_duplicates` and `usage_events_file_counts` assets."""
    dates = context.partition_keys
    session = spark.spark_session
    files = list(run_files(lake, config))
    path = lake.path("bronze", "usage_events")
    added = [f for f in files if f.name in config.appended]
    held = held_rows(session, lake, "bronze", (("usage_events", BRONZE_SCHEMA),), ["event_id", "source_file", "event_date"])
    appending = bool(added) and arrived_after(held, config.appended)
    if appending:
        written = appended_events(session, added, held).cache()
        touched = lake.append_partitions(written, "bronze", "usage_events", "event_date")
        compacted = lake.compact_partitions(session, "bronze", "usage_events", "event_date", touched)
        context.log.info(f"bronze usage_events: {len(added)} files appended to {len(touched)} dates, {len(compacted)} compacted")
        # The rows held before and the rows just added: what the dates hold now, without reading them again.
        stored = held.select("event_date").unionByName(written.select("event_date")).where(
            F.col("event_date").between(dates[0], dates[-1]))
    else:
        events, _, _ = landing_events(session, files)
        chosen = events.where(F.col("event_date").between(dates[0], dates[-1]))
        lake.replace_partitions(chosen, "bronze", "usage_events", "event_date", dates)
        written = lake.read(session, "bronze", "usage_events", BRONZE_SCHEMA, "event_date", dates).cache()
        stored = lake.read(session, "bronze", "usage_events", BRONZE_SCHEMA, "event_date", dates)
    # The schema check and the preview read the rows this run wrote; the counts cover its dates.
    counted, previewed, preview, check = side_by_side(
        lambda: stored.groupBy("event_date").count().collect(),
        lambda: previews_by_date(written, "event_date"),
        lambda: markdown_preview(written),
        lambda: spark_schema_result(BronzeUsageEvent, written, BRONZE_EVENTS),
    )
    per_date = {str(day): n for day, n in counted}
    rows = sum(per_date.values())
    partition_metadata(context, BRONZE_EVENTS, None, "event_date", counts=per_date, previewed=previewed)
    result = dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "partitions": len(dates),
            "dates_with_rows": len(per_date),
            "landing_files": len(files),
            "written_as": f"{len(added)} files appended" if appending else "dates recomputed",
            **lake.location(path),
            "preview": dg.MetadataValue.md(preview),
        },
        check_results=[check],
    )
    written.unpersist()
    held.unpersist()
    context.log.info(f"bronze usage_events: {rows} rows over {len(per_date)} of {len(dates)} dates")
    return result


def ledger_extension(config: LandingFiles, ledger: dict[str, dict], stats: dict[Path, tuple[int, int]]) -> list[Path]:
    """The files an appending run adds to the landing ledger, when their rejects and duplicates can
    be added to those it holds instead of parsing every file again: the ledger balances, still
    describes every file it holds as the run reads them, and each new file sorts after all of
    them, so none of their lines can displace one the ledger has placed. Empty: recompute."""
    if not config.appended or not ledger:
        return []
    found = {f.name: size_mtime for f, size_mtime in stats.items()}
    if any(found.get(name) != (row["size"], row["mtime_ns"]) for name, row in ledger.items()):
        return []
    if any(row["lines_read"] != row["bronze_rows"] + row["rejects"] + row["duplicates"] for row in ledger.values()):
        return []
    new = [f for f in stats if f.name not in ledger]
    return new if new and min(f.name for f in new) > max(ledger) else []


def extended_rejects_and_duplicates(
    spark: SparkSession, lake: LakeResource, new: list[Path], bronze: DataFrame
) -> tuple[DataFrame, DataFrame]:
    """The ledger's rejects and duplicates with those of the new files: a usable line of theirs is
    a duplicate when bronze keeps another line under its event_id (the first arrival, from any file)."""
    parsed = parsed_landing(spark, new)
    kept = bronze.select("event_id", F.col("source_file").alias("kept_source_file"), F.col("line_no").alias("kept_line_no"))
    duplicates = (
        parsed.where(F.col("reason").isNull())
        .join(kept, "event_id")
        .where((F.col("source_file") != F.col("kept_source_file")) | (F.col("line_no") != F.col("kept_line_no")))
        .select(*DUPLICATE_SCHEMA.fieldNames())
    )
    rejects = parsed.where(F.col("reason").isNotNull()).select(*REJECT_SCHEMA.fieldNames())
    held_rejects = lake.read(spark, "bronze", "usage_events_rejects", REJECT_SCHEMA)
    held_duplicates = lake.read(spark, "bronze", "usage_events_duplicates", DUPLICATE_SCHEMA)
    return held_rejects.unionByName(rejects), held_duplicates.unionByName(duplicates)


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if not is_blank(line))


@dg.multi_asset(
    name="bronze_usage_events_ledger",
    specs=[
        dg.AssetSpec(
            REJECTS,
            deps=[BRONZE_EVENTS],
            group_name="bronze",
            kinds={"spark", "delta"},
            description="Landing lines that cannot become an event, with file, line number, raw text and reason.",
        ),
        dg.AssetSpec(
            DUPLICATES,
            deps=[BRONZE_EVENTS],
            group_name="bronze",
            kinds={"spark", "delta"},
            description="Later arrivals of an `event_id` already in bronze, dropped and kept here with where the first one came from.",
        ),
        dg.AssetSpec(
            FILE_COUNTS,
            deps=[BRONZE_EVENTS],
            group_name="bronze",
            kinds={"spark", "delta"},
            description="Per landing file: lines read = bronze rows + rejects + duplicates dropped.",
        ),
    ],
    op_tags=bookkeeping_last,
    check_specs=[
        schema_spec(REJECTS),
        schema_spec(DUPLICATES),
        dg.AssetCheckSpec(
            "conservation",
            asset=FILE_COUNTS,
            blocking=True,
            description="For every landing file, its non-blank lines equal its bronze rows + rejects + duplicates.",
        ),
    ],
)
def usage_events_ledger(
    context: dg.AssetExecutionContext, config: LandingFiles, spark: LazyPySparkResource, lake: LakeResource
):
    """Account for every landing line that bronze did not keep, and prove nothing went missing."""
    session = spark.spark_session
    stats = run_files(lake, config)
    files = list(stats)
    # Bronze rows are read back from disk, across every partition, so the balance covers what
    # was actually written rather than what was meant to be.
    bronze = lake.read(session, "bronze", "usage_events", BRONZE_SCHEMA, "event_date")
    new = ledger_extension(config, delivered_files(lake), stats)
    if new:
        rejects, duplicates = extended_rejects_and_duplicates(session, lake, new, bronze)
        context.log.info(f"landing ledger: extended by {len(new)} files, the {len(files) - len(new)} it holds not parsed again")
    else:
        _, rejects, duplicates = landing_events(session, files)
    rejects_path = lake.write(rejects, "bronze", "usage_events_rejects")
    duplicates_path = lake.write(duplicates, "bronze", "usage_events_duplicates")
    rejects = lake.read(session, "bronze", "usage_events_rejects").cache()
    duplicates = lake.read(session, "bronze", "usage_events_duplicates").cache()

    empty = {"lines_read": 0, "bronze_rows": 0, "rejects": 0, "duplicates": 0, "size": None, "mtime_ns": None,
             "first_date": None, "last_date": None}
    per_file = {f.name: {**empty, "lines_read": _count_lines(f), "size": size, "mtime_ns": mtime}
                for f, (size, mtime) in stats.items()}
    for column, frame in (("rejects", rejects), ("duplicates", duplicates)):
        for row in frame.groupBy("source_file").count().collect():
            per_file.setdefault(row[0], dict(empty))[column] = row[1]
    # The dates a file's rows are stored under, and those of the later copies its rows displaced:
    # a file rewritten in place must have both recomputed. One pass over bronze counts and dates.
    displaced = duplicates.groupBy(F.col("kept_source_file").alias("source_file")).agg(
        F.min("event_date").alias("first"), F.max("event_date").alias("last"))
    for row in bronze.groupBy("source_file").agg(F.count("*"), F.min("event_date"), F.max("event_date")).collect():
        per_file.setdefault(row[0], dict(empty)).update(bronze_rows=row[1], first_date=row[2], last_date=row[3])
    for row in displaced.collect():
        if row[0] in per_file:
            dates = [d for d in (per_file[row[0]]["first_date"], per_file[row[0]]["last_date"], row[1], row[2]) if d]
            per_file[row[0]] |= {"first_date": min(dates), "last_date": max(dates)}
    columns = [c.split()[0] for c in FILE_COUNTS_SCHEMA.split(",")]
    counts = session.createDataFrame(
        [(name, *[c[column] for column in columns[1:]]) for name, c in sorted(per_file.items())], FILE_COUNTS_SCHEMA
    )
    counts_path = lake.write(counts, "bronze", "usage_events_file_counts")

    reasons = {r[0]: r[1] for r in rejects.groupBy("reason").count().collect()}
    n_rejects = sum(reasons.values())
    n_duplicates = duplicates.count()
    yield dg.MaterializeResult(
        asset_key=REJECTS,
        metadata={
            "dagster/row_count": n_rejects,
            "by_reason": dg.MetadataValue.json(reasons),
            **lake.location(rejects_path),
            "preview": dg.MetadataValue.md(markdown_preview(rejects)),
        },
    )
    yield dg.MaterializeResult(
        asset_key=DUPLICATES,
        metadata={"dagster/row_count": n_duplicates, **lake.location(duplicates_path)},
    )
    totals = {key: sum(c[key] for c in per_file.values()) for key in ("lines_read", "bronze_rows", "rejects", "duplicates")}
    yield dg.MaterializeResult(
        asset_key=FILE_COUNTS,
        metadata={
            "dagster/row_count": len(per_file),
            **totals,
            "written_as": f"extended by {len(new)} files" if new else "recomputed from every file",
            **lake.location(counts_path),
        },
    )
    yield spark_schema_result(BronzeReject, rejects, REJECTS)
    yield spark_schema_result(BronzeDuplicate, duplicates, DUPLICATES)
    yield equality_result(
        "conservation",
        FILE_COUNTS,
        expected={name: c["lines_read"] for name, c in per_file.items()},
        actual={name: c["bronze_rows"] + c["rejects"] + c["duplicates"] for name, c in per_file.items()},
    )
    rejects.unpersist()
    duplicates.unpersist()
    context.log.info(
        f"landing ledger: {totals['lines_read']} lines in {len(files)} files = {totals['bronze_rows']} bronze"
        f" + {totals['rejects']} rejects + {totals['duplicates']} duplicates"
    )

"""Bronze usage events: every landing line becomes exactly one bronze row, reject or counted duplicate."""


from collections.abc import Collection
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
from cpa_assets.metadata import collected, partition_metadata, previews_by_date, release, side_by_side
from cpa_assets.increments import UsageRun
from cpa_assets.partitions import bookkeeping_last, event_date_partitions, serve_first, single_run
from cpa_assets.preview import markdown_preview

from cpa_resources import LakeResource
from cpa_resources.lake import MAX_FILES_PER_PARTITION, MAX_FILES_PER_PARTITION_BUSY

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
    # Each line's JSON is parsed once, as a generator's output: the optimizer moves a filter on
    # `reason` (the ledger's rejects) below a plain projection and would then parse the line again
    # for every field the filter reads (13 s instead of 2 s for the course dataset), never below a
    # generator.
    parsed = lines.select("*", F.explode(F.array(F.from_json("raw_line", RAW_SCHEMA, options))).alias("j"))
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


class LandingFiles(UsageRun):
    """The landing files a run reads. Empty (a backfill, a run from the UI): every file there now.
    Otherwise the files the usage sensor planned the run for, plus every file the landing ledger
    already holds: a file that lands while the run is going waits for the next run instead of
    reaching bronze and the ledger halfway. `appended`: the planned files, when each of them arrived
    after every file before it (the usual case): bronze adds their events instead of recomputing
    the run's dates from every file."""

    files: list[PlannedFile] = []


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


def arrived_after(lake: LakeResource, layer: str, table: str, names: list[str]) -> bool:
    """True when the table holds no row from these files or from any file sorting after them, so
    adding the files' rows is the same as recomputing with them: first arrivals are decided by file
    name, and none of these rows can be there already. Read from the table's log (the largest
    `source_file` its files' statistics record), not from its rows."""
    if not names:
        return False
    latest = lake.column_max(layer, table, "source_file")
    return latest is None or latest < min(names)


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


def inserted(changes: DataFrame | None, schema: T.StructType, spark: SparkSession) -> DataFrame:
    """The rows a change feed inserted, in the table's columns (none when there was no commit)."""
    if changes is None:
        return spark.createDataFrame([], schema)
    return changes.where(F.col("_change_type") == "insert").select(*schema.fieldNames())


@dg.asset(
    key=BRONZE_EVENTS,
    partitions_def=event_date_partitions,
    backfill_policy=single_run,
    op_tags=serve_first,
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
    appending = arrived_after(lake, "bronze", "usage_events", [f.name for f in added])
    if appending:
        # One commit inserts the files' first arrivals whose event_id bronze does not hold yet; what
        # it inserted is read back from the change feed (only the files the commit wrote).
        events, _, _ = landing_events(session, added)
        lake.append_partitions(events, "bronze", "usage_events", "event_date")
        written = collected(inserted(lake.run_changes(session, "bronze", "usage_events"), BRONZE_SCHEMA, session))
    else:
        events, _, _ = landing_events(session, files)
        written = events.where(F.col("event_date").between(dates[0], dates[-1])).cache()
        lake.replace_partitions(written, "bronze", "usage_events", "event_date", dates)
    per_date = {day: n for day, n in lake.partition_counts("bronze", "usage_events", "event_date").items()
                if dates[0] <= day <= dates[-1]}
    # The schema check and the preview read the rows this run wrote; the counts cover its dates.
    previewed, preview, check = side_by_side(
        lambda: previews_by_date(written, "event_date", ["event_id"]),
        lambda: markdown_preview(written),
        lambda: spark_schema_result(BronzeUsageEvent, written, BRONZE_EVENTS, rows=sum(per_date.values())),
    )
    rows = sum(per_date.values())
    partition_metadata(context, BRONZE_EVENTS, None, "event_date", counts=per_date, previewed=previewed)
    result = dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "rows_written": sum(previewed[0].values()),
            "partitions": len(dates),
            "dates_with_rows": len(per_date),
            "landing_files": len(files),
            "written_as": f"{len(added)} files appended" if appending else "dates recomputed",
            **lake.location(path),
            "preview": dg.MetadataValue.md(preview),
        },
        check_results=[check],
    )
    release(written)
    context.log.info(f"bronze usage_events: {rows} rows over {len(per_date)} of {len(dates)} dates"
                     f" ({'appended' if appending else 'recomputed'})")
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


def new_files_ledger(
    spark: SparkSession, lake: LakeResource, new: list[Path], kept: DataFrame
) -> tuple[DataFrame, DataFrame]:
    """The rejects and duplicates of files added after every file the ledger holds: their lines
    bronze rejects, and their usable lines bronze did not keep (`kept`: the rows bronze kept of
    them, i.e. what this run inserted), each with the line bronze keeps under its event_id: one of
    these files', or an earlier file's (looked up in bronze only when there is one)."""
    parsed = parsed_landing(spark, new)
    rejects = parsed.where(F.col("reason").isNotNull()).select(*REJECT_SCHEMA.fieldNames())
    dropped = parsed.where(F.col("reason").isNull()).join(kept.select("source_file", "line_no"),
                                                          ["source_file", "line_no"], "left_anti").cache()
    holders = kept.select("event_id", F.col("source_file").alias("kept_source_file"), F.col("line_no").alias("kept_line_no"))
    held_before = dropped.select("event_id").distinct().join(holders.select("event_id"), "event_id", "left_anti")
    if held_before.take(1):
        earlier = lake.read(spark, "bronze", "usage_events", BRONZE_SCHEMA, "event_date").join(held_before, "event_id", "left_semi")
        holders = holders.unionByName(earlier.select(
            "event_id", F.col("source_file").alias("kept_source_file"), F.col("line_no").alias("kept_line_no")))
    duplicates = dropped.join(holders, "event_id").select(*DUPLICATE_SCHEMA.fieldNames())
    dropped.unpersist()
    return rejects, duplicates


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if not is_blank(line))


EMPTY_COUNTS = {"lines_read": 0, "bronze_rows": 0, "rejects": 0, "duplicates": 0, "size": None, "mtime_ns": None,
                "first_date": None, "last_date": None}


def file_counts(
    stats: dict[Path, tuple[int, int]], rejects: DataFrame, duplicates: DataFrame, kept: DataFrame,
    held: dict[str, dict] | None = None,
) -> dict[str, dict]:
    """Per file of `stats`: lines read, bronze rows (`kept`), rejects and duplicates, and the first
    and last event dates its rows, and the later copies they displaced, are stored under; files of
    the ledger (`held`) whose rows a duplicate displaced come back with their dates widened. One
    Spark job."""
    per_file = {f.name: {**EMPTY_COUNTS, "lines_read": _count_lines(f), "size": size, "mtime_ns": mtime}
                for f, (size, mtime) in stats.items()}
    keyed = reduce(DataFrame.unionByName, [
        kept.select(F.lit("bronze_rows").alias("what"), "source_file", "event_date"),
        rejects.select(F.lit("rejects").alias("what"), "source_file", F.lit(None).cast("date").alias("event_date")),
        duplicates.select(F.lit("duplicates").alias("what"), "source_file", F.lit(None).cast("date").alias("event_date")),
        # A file rewritten in place must have the dates of the later copies its rows displaced recomputed too.
        duplicates.select(F.lit("displaced").alias("what"), F.col("kept_source_file").alias("source_file"), "event_date"),
    ])
    totals = keyed.groupBy("what", "source_file").agg(F.count(F.lit(1)), F.min("event_date"), F.max("event_date"))
    for what, name, n, first, last in sorted(totals.collect(), key=lambda row: row[0] == "displaced"):
        if what == "displaced":
            counts = per_file.get(name) or ({**held[name]} if name in (held or {}) else None)
            if counts is None:
                continue
            widened = [d for d in (counts["first_date"], counts["last_date"], first, last) if d]
            if (min(widened), max(widened)) != (counts["first_date"], counts["last_date"]):
                per_file[name] = counts | {"first_date": min(widened), "last_date": max(widened)}
            continue
        counts = per_file.setdefault(name, dict(EMPTY_COUNTS))
        counts[what] = n
        if what == "bronze_rows":
            counts |= {"first_date": first, "last_date": last}
    return per_file


# The tag of a run whose last step, the ledger, has begun: every table a reader sees is written.
KEEPING_BOOKS_TAG = "cpa/books"


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
    """Account for every landing line that bronze did not keep, and prove nothing went missing.

    Last in a run (nothing served reads it), it also compacts the bronze and silver partitions that
    appended files left crowded: when no delivered file waits for the stream, or when they grew
    crowded past the bound for a busy stream. It first tags the run `cpa/books`: the usage sensor
    may then plan the next run, whose process starts meanwhile and waits for the lake's lock."""
    context.instance.add_run_tags(context.run.run_id, {KEEPING_BOOKS_TAG: "1"})
    session = spark.spark_session
    stats = run_files(lake, config)
    files = list(stats)
    ledger = delivered_files(lake)
    new = ledger_extension(config, ledger, stats)
    kept_now = inserted(lake.run_changes(session, "bronze", "usage_events"), BRONZE_SCHEMA, session)
    if new and {row["source_file"] for row in kept_now.select("source_file").distinct().collect()} <= {f.name for f in new}:
        # The new files' rows in bronze are exactly what this run inserted: their lines are
        # accounted for from them, and the files the ledger holds keep their counts.
        kept = kept_now.where(F.col("source_file").isin([f.name for f in new])).cache()
        rejects, duplicates = (frame.cache() for frame in new_files_ledger(session, lake, new, kept))
        counts = file_counts({f: stats[f] for f in new}, rejects, duplicates, kept, held=ledger)
        per_file = {**ledger, **counts}
        # The new files' rows are added to the ledger, unless a held file's dates widened: then it is written whole.
        widened = not set(counts) <= {f.name for f in new}
        write_counts, count_rows = (lake.write, per_file) if widened else (lake.append, counts)
        # Three tables, three commits side by side.
        rejects_path, duplicates_path, counts_path = side_by_side(
            lambda: lake.append(rejects, "bronze", "usage_events_rejects"),
            lambda: lake.append(duplicates, "bronze", "usage_events_duplicates"),
            lambda: write_counts(session.createDataFrame(_count_rows(count_rows), FILE_COUNTS_SCHEMA),
                                 "bronze", "usage_events_file_counts"),
        )
        written_as = f"extended by {len(new)} files"
        context.log.info(f"landing ledger: extended by {len(new)} files, the {len(files) - len(new)} it holds not parsed again")
    else:
        # Bronze rows are read back from disk, across every partition, so the balance covers what
        # was actually written rather than what was meant to be.
        kept = lake.read(session, "bronze", "usage_events", BRONZE_SCHEMA, "event_date").select(
            "event_id", "source_file", "line_no", "event_date").cache()
        _, rejects, duplicates = landing_events(session, files)
        rejects, duplicates = rejects.cache(), duplicates.cache()
        rejects_path = lake.write(rejects, "bronze", "usage_events_rejects")
        duplicates_path = lake.write(duplicates, "bronze", "usage_events_duplicates")
        per_file = file_counts(stats, rejects, duplicates, kept)
        counts_path = lake.write(session.createDataFrame(_count_rows(per_file), FILE_COUNTS_SCHEMA),
                                 "bronze", "usage_events_file_counts")
        written_as = "recomputed from every file"
    waiting = waiting_files(lake, per_file)
    most = MAX_FILES_PER_PARTITION_BUSY if waiting else MAX_FILES_PER_PARTITION
    compacted = {layer_table: lake.compact_partitions(session, *layer_table.split("/"), "event_date", most=most)
                 for layer_table in ("bronze/usage_events", "silver/usage_events", "silver/usage_events_quarantine")}
    if waiting:
        context.log.info(f"{len(waiting)} delivered files wait for the stream: partitions compacted only past"
                         f" {MAX_FILES_PER_PARTITION_BUSY} files")

    reasons = {r[0]: r[1] for r in rejects.groupBy("reason").count().collect()}
    n_rejects = sum(c["rejects"] for c in per_file.values())
    n_duplicates = sum(c["duplicates"] for c in per_file.values())
    reject_check, duplicate_check, preview = side_by_side(
        lambda: spark_schema_result(BronzeReject, rejects, REJECTS, rows=sum(c["rejects"] for c in per_file.values())),
        lambda: spark_schema_result(BronzeDuplicate, duplicates, DUPLICATES, rows=sum(c["duplicates"] for c in per_file.values())),
        lambda: markdown_preview(rejects),
    )
    yield dg.MaterializeResult(
        asset_key=REJECTS,
        metadata={
            "dagster/row_count": n_rejects,
            "by_reason_in_files_read": dg.MetadataValue.json(reasons),
            **lake.location(rejects_path),
            "preview": dg.MetadataValue.md(preview),
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
            "written_as": written_as,
            "compacted_partitions": dg.MetadataValue.json({k: len(v) for k, v in compacted.items()}),
            **lake.location(counts_path),
        },
    )
    yield reject_check
    yield duplicate_check
    yield equality_result(
        "conservation",
        FILE_COUNTS,
        expected={name: c["lines_read"] for name, c in per_file.items()},
        actual={name: c["bronze_rows"] + c["rejects"] + c["duplicates"] for name, c in per_file.items()},
    )
    for frame in (rejects, duplicates, kept):
        frame.unpersist()
    context.log.info(
        f"landing ledger: {totals['lines_read']} lines in {len(per_file)} files = {totals['bronze_rows']} bronze"
        f" + {totals['rejects']} rejects + {totals['duplicates']} duplicates"
    )


def waiting_files(lake: LakeResource, known: Collection[str]) -> list[str]:
    """Delivered files not among `known` (the ledger as this run leaves it, or the ledger and this
    run's files): they wait for the run after this one. Compaction, and the marts after P1
    (cpa_assets/gold/tail.py), wait for a run with none waiting: their seconds would delay them all."""
    return [f.name for f in lake.event_files() if f.name not in known]


def _count_rows(per_file: dict[str, dict]) -> list[tuple]:
    columns = [c.split()[0] for c in FILE_COUNTS_SCHEMA.split(",")]
    return [(name, *[c[column] for column in columns[1:]]) for name, c in sorted(per_file.items())]

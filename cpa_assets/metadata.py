"""What the UI tells about each table.

Definition metadata, shown on an asset's page before anything runs: its columns
(`dagster/column_schema`, derived from the table's Spark schema), where it lives
(`dagster/table_name`: the Parquet folder, or `keyspace.table` in Cassandra), its owners, a code
version, and for a serving table its primary key.

Materialisation metadata per date: a run over a range of dates records one materialisation per
date, and Dagster copies the step's metadata onto each of them. `partition_metadata` gives each
date its own figures (row count, preview, whatever the asset counts per date) instead, through
`context.add_asset_metadata(..., partition_key=...)`."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyspark.sql.types as T
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from cpa_assets.preview import PREVIEW_ROWS, markdown_header, markdown_row

PACKAGE = Path(__file__).resolve().parent

OWNERS = {
    "bronze": ["team:data-engineering"],
    "silver": ["team:data-engineering"],
    "gold": ["team:analytics"],
    "serving": ["team:analytics"],
}

# Cassandra's name for each Spark type the serving tables use (cql/ holds the DDL).
CQL_TYPES = {"string": "text", "date": "date", "double": "double", "int": "int", "bigint": "bigint", "boolean": "boolean"}


def ddl_schema(ddl: str) -> T.StructType:
    """A flat Spark DDL schema ("name type, name type", as `createDataFrame` takes it) as a StructType,
    without a SparkSession; every column nullable, as Spark makes them."""
    fields, depth, current = [], 0, ""
    for char in ddl + ",":
        depth += {"<": 1, ">": -1}.get(char, 0)
        if char == "," and depth == 0:
            name, kind = current.strip().split(None, 1)
            fields.append(T.StructField(name, _DDL_TYPES.get(kind.strip().lower()) or T.StringType()))
            current = ""
        else:
            current += char
    return T.StructType(fields)


_DDL_TYPES = {
    "string": T.StringType(), "long": T.LongType(), "bigint": T.LongType(), "int": T.IntegerType(),
    "integer": T.IntegerType(), "double": T.DoubleType(), "date": T.DateType(), "timestamp": T.TimestampType(),
    "boolean": T.BooleanType(),
}


def column_schema(schema: T.StructType | str, type_names: Mapping[str, str] | None = None) -> dg.TableSchema:
    """The UI's column table of a Spark schema (or a flat DDL string): name, type and whether it may be null."""
    if isinstance(schema, str):
        schema = ddl_schema(schema)
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=field.name,
                type=(type_names or {}).get(field.dataType.simpleString(), field.dataType.simpleString()),
                constraints=dg.TableColumnConstraints(nullable=field.nullable),
            )
            for field in schema.fields
        ]
    )


def table_catalog() -> dict[dg.AssetKey, tuple[str, str, T.StructType]]:
    """Every Parquet table of the lake: asset key → (layer, table, Spark schema), from each layer's
    own schema constants."""
    from cpa_assets.bronze import batch as bronze_batch
    from cpa_assets.bronze import usage as bronze_usage
    from cpa_assets.gold.anomalies import COST_ANOMALIES, COST_ANOMALIES_SCHEMA
    from cpa_assets.gold.batch import BATCH_MARTS
    from cpa_assets.gold.genai import GENAI_TOKENS, GENAI_TOKENS_SCHEMA
    from cpa_assets.gold.usage import DAILY_USAGE, DAILY_USAGE_SCHEMA, TOP_SERVICES, TOP_SERVICES_SCHEMA
    from cpa_assets.silver import batch as silver_batch
    from cpa_assets.silver import usage as silver_usage

    schemas: dict[dg.AssetKey, T.StructType] = {
        bronze_usage.BRONZE_EVENTS: bronze_usage.BRONZE_SCHEMA,
        bronze_usage.REJECTS: bronze_usage.REJECT_SCHEMA,
        bronze_usage.DUPLICATES: bronze_usage.DUPLICATE_SCHEMA,
        bronze_usage.FILE_COUNTS: bronze_usage.FILE_COUNTS_SCHEMA,
        silver_usage.SILVER_EVENTS: silver_usage.SILVER_SCHEMA,
        silver_usage.QUARANTINE: silver_usage.QUARANTINE_SCHEMA,
        DAILY_USAGE: DAILY_USAGE_SCHEMA,
        TOP_SERVICES: TOP_SERVICES_SCHEMA,
        GENAI_TOKENS: GENAI_TOKENS_SCHEMA,
        COST_ANOMALIES: COST_ANOMALIES_SCHEMA,
        **{mart.key: mart.schema for mart in BATCH_MARTS},
    }
    for source in bronze_batch.CSV_SOURCES:
        schemas[bronze_batch.bronze_key(source)] = source.schema
        schemas[bronze_batch.rejects_key(source)] = bronze_batch.REJECT_SCHEMA
    for table in silver_batch.SILVER_TABLES:
        schemas[table.silver_key] = table.schema
        schemas[table.quarantine_key] = table.quarantine_schema
    return {key: (key.path[0], key.path[-1], schema) for key, schema in schemas.items()}


def layer_code_version(group: str) -> str:
    """A digest of the layer's source folder (cpa_assets/<layer>/): it changes when its code does."""
    digest = hashlib.sha256()
    for path in sorted((PACKAGE / group).glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def with_definition_metadata(assets: list, lake, cassandra) -> list:
    """The assets with their column schema, table name, owners and code version (and primary key
    for the serving tables) added to their specs."""
    from cpa_assets.serving.tables import SERVING_TABLES

    lake_tables = table_catalog()
    serving = {table.key: table for table in SERVING_TABLES}
    versions = {group: layer_code_version(group) for group in OWNERS}

    def add(spec: dg.AssetSpec) -> dg.AssetSpec:
        if spec.key in serving:
            table = serving[spec.key]
            metadata = {
                "dagster/column_schema": column_schema(table.gold_schema, CQL_TYPES),
                "dagster/table_name": cassandra.table(table.name),
                "primary_key": f"(({', '.join(table.partition_key)}), {', '.join(table.clustering)})",
                "partition_key": dg.MetadataValue.json(list(table.partition_key)),
                "clustering_columns": dg.MetadataValue.json(list(table.clustering)),
            }
        else:
            layer, name, schema = lake_tables[spec.key]
            metadata = {
                "dagster/column_schema": column_schema(schema),
                "dagster/table_name": str(lake.path(layer, name)),
            }
        return spec.merge_attributes(metadata=metadata, owners=OWNERS[spec.group_name]).replace_attributes(
            code_version=versions[spec.group_name]
        )

    return dg.map_asset_specs(add, assets)


def collected(rows: DataFrame) -> pd.DataFrame:
    """A few rows (what a stream run wrote), collected once: its previews and schema check then
    read them in Python, instead of one Spark job each. Keeps the rows' Spark schema for the check."""
    frame = rows.toPandas()
    frame.attrs["spark_schema"] = rows.schema
    return frame


def previews_by_date(
    rows: DataFrame | pd.DataFrame, date_column: str, order: list | None = None
) -> tuple[dict[str, int], dict[str, str]]:
    """Every date's row count and its first PREVIEW_ROWS rows as a markdown table: in one Spark job
    (two windows over the same partitioning: one shuffle) and one pass over the sample, or from
    rows already `collected`."""
    columns = list(rows.columns)
    order = order or [c for c in columns if c != date_column][:2]
    if isinstance(rows, pd.DataFrame):
        ordered = rows.sort_values([date_column, *order], na_position="first", kind="stable")
        sample = ordered.assign(_rows=ordered.groupby(date_column)[date_column].transform("size"),
                                _n=ordered.groupby(date_column).cumcount() + 1)
        sample = sample[sample["_n"] <= PREVIEW_ROWS]
    else:
        ordering = [c if isinstance(c, Column) else F.col(c) for c in order]
        by_date = Window.partitionBy(date_column)
        sample = (
            rows.withColumn("_n", F.row_number().over(by_date.orderBy(*ordering)))
            .withColumn("_rows", F.count(F.lit(1)).over(by_date))
            .where(F.col("_n") <= PREVIEW_ROWS)
            .toPandas()
            .sort_values([date_column, "_n"])
        )
    header = markdown_header(columns)
    counts, lines = {}, {}
    for day, n, values in zip(sample[date_column].astype(str), sample["_rows"], sample[columns].itertuples(index=False, name=None)):
        counts[day] = int(n)
        lines.setdefault(day, [header]).append(markdown_row(values))
    return counts, {day: "\n".join(table) for day, table in lines.items()}


def release(rows: DataFrame | pd.DataFrame) -> None:
    """Drop a step's cached frame (rows already collected hold nothing in Spark)."""
    if not isinstance(rows, pd.DataFrame):
        rows.unpersist()


def side_by_side(*actions: Callable[[], Any]) -> list:
    """Run independent Spark actions (on cached or small frames) in threads of their own and give
    their results in order. Such jobs are bound by each job's fixed cost (planning, scheduling, the
    round trips to the JVM), not by the cores; side by side those waits overlap."""
    with ThreadPoolExecutor(max_workers=len(actions), thread_name_prefix="cpa-spark") as pool:
        return [future.result() for future in [pool.submit(action) for action in actions]]


def collect_and_write_pair(
    lake: Any, layer: str, tables: tuple[str, str], frames: tuple[DataFrame, DataFrame], source: DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, str, str]:
    """A step's two tables (its rows and the rows it set aside, both split from the cached `source`):
    each collected once for the step's figures, previews and checks, both written side by side, then
    the cache dropped. Gives the two collected frames and the two table paths."""
    first, second = frames
    kept, set_aside = side_by_side(lambda: collected(first), lambda: collected(second))
    first_path, second_path = side_by_side(
        lambda: lake.write(first, layer, tables[0]), lambda: lake.write(second, layer, tables[1]))
    source.unpersist()
    return kept, set_aside, first_path, second_path


def partition_metadata(
    context: dg.AssetExecutionContext,
    asset_key: dg.AssetKey,
    rows: DataFrame | None,
    date_column: str,
    counts: Mapping[str, int] | None = None,
    extra: Mapping[str, Mapping] | None = None,
    order: list | None = None,
    previewed: tuple[dict[str, int], dict[str, str]] | None = None,
) -> dict[str, int]:
    """Give each date of the run its own row count and preview (and `extra[date]`), over the
    step's metadata for the range. `rows`: the rows to preview (None: no preview), or `previewed`:
    what `previews_by_date` gave for them already; `counts`: each date's row count when the caller
    has it already (it counts more than the previewed rows), else counted from `rows`. Returns
    the counts."""
    if previewed is None:
        previewed = previews_by_date(rows, date_column, order) if rows is not None else None
    counted, previews = previewed or ({}, {})
    counts = counted if counts is None else counts
    for key in context.partition_keys:
        metadata = {"dagster/row_count": counts.get(key, 0), **(extra or {}).get(key, {})}
        if previewed is not None:
            metadata["preview"] = dg.MetadataValue.md(previews.get(key, "_no rows_"))
        context.add_asset_metadata(metadata, asset_key=asset_key, partition_key=key)
    return dict(counts)


def chart_metadata(context: dg.AssetExecutionContext, asset_key: dg.AssetKey, png: bytes, title: str) -> None:
    """A chart of the run's dates on the materialisation of its last date, the one the asset's page
    shows as the latest (on every date it would store the same image 60 times a run)."""
    from cpa_assets.charts import markdown_image

    context.add_asset_metadata(
        {"chart": dg.MetadataValue.md(f"**{title}**, {context.partition_keys[0]} … {context.partition_keys[-1]}\n\n"
                                      + markdown_image(png, title))},
        asset_key=asset_key,
        partition_key=context.partition_keys[-1],
    )

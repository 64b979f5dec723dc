"""Asset-check results shared by every layer: pandera schema validation and count conservation."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pandera.pandas as pap
import pandera.pyspark as pa
import pyspark.sql.types as T
from pyspark.sql import DataFrame

SCHEMA_CHECK = "pandera_schema"


def schema_spec(asset_key: dg.AssetKey, description: str = "") -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        SCHEMA_CHECK,
        asset=asset_key,
        blocking=True,
        description=description or "The written rows satisfy the pandera schema (types, nulls, value sets, ranges).",
    )


def spark_schema(model: type[pa.DataFrameModel] | pa.DataFrameSchema) -> T.StructType:
    """A table's Spark schema, derived from its pandera model: the model's columns in order, each
    with its type and nullability (pandera's `to_structtype` makes every column nullable)."""
    schema = model.to_schema() if isinstance(model, type) else model
    return T.StructType([T.StructField(name, column.dtype.type, column.nullable) for name, column in schema.columns.items()])


# Up to this many rows, a check collects them and runs the model's checks in pandas (one Spark job);
# beyond, pandera runs them in Spark (a job per check, but nothing collected).
PANDAS_ROWS = 200_000


def spark_schema_result(
    model: type[pa.DataFrameModel] | pa.DataFrameSchema, df: DataFrame | pd.DataFrame, asset_key: dg.AssetKey,
    rows: int | None = None,
) -> dg.AssetCheckResult:
    """Validate written rows against a pandera.pyspark model: column types against the Spark
    schema, then every column's nullability, uniqueness and checks on the rows.

    The rows are collected once (Arrow), or were already (`metadata.collected`, which keeps their
    Spark schema), and the model's own checks run on them with pandera's pandas backend: one Spark
    job instead of one per check, which dominates at these data sizes. More than PANDAS_ROWS rows
    (`rows`, when the caller knows how many) are validated by pandera.pyspark in Spark instead."""
    schema = model.to_schema() if isinstance(model, type) else model
    if rows is not None and rows > PANDAS_ROWS and not isinstance(df, pd.DataFrame):
        return _in_spark(schema, df, asset_key, rows)
    spark_schema = df.attrs["spark_schema"] if isinstance(df, pd.DataFrame) else df.schema
    spark_types = {field.name: field.dataType for field in spark_schema.fields}
    failures = [
        {"column": name, "check": "dtype", "expected": str(column.dtype), "found": str(spark_types.get(name))}
        for name, column in schema.columns.items()
        if spark_types.get(name) != column.dtype.type
    ]
    if schema.strict:
        failures += [
            {"column": name, "check": "column_in_schema", "expected": "absent", "found": str(dtype)}
            for name, dtype in spark_types.items()
            if name not in schema.columns
        ]
    # A nullable column without checks cannot fail on its rows: it is not collected.
    on_rows = pap.DataFrameSchema(
        {
            name: pap.Column(None, checks=c.checks, nullable=c.nullable, unique=c.unique)
            for name, c in schema.columns.items()
            if c.checks or not c.nullable or c.unique
        }
    )
    if not failures:
        rows = df[list(on_rows.columns)] if isinstance(df, pd.DataFrame) else df.select(*on_rows.columns).toPandas()
        try:
            on_rows.validate(rows, lazy=True)
        except pap.errors.SchemaErrors as exc:
            failures = exc.failure_cases.head(20).astype(str).to_dict("records")
    return dg.AssetCheckResult(
        check_name=SCHEMA_CHECK,
        asset_key=asset_key,
        passed=not failures,
        metadata={"failures": dg.MetadataValue.json(failures)},
    )


def _in_spark(schema: pa.DataFrameSchema, df: DataFrame, asset_key: dg.AssetKey, rows: int) -> dg.AssetCheckResult:
    """pandera.pyspark's own validation, in Spark: its report, flattened to one line per failure."""
    report = schema.validate(df.select(*[name for name in schema.columns if name in df.columns])).pandera.errors
    failures = [
        {"scope": scope, "check": check, "column": str(error.get("column")), "error": str(error.get("error"))[:300]}
        for scope, checks in (report or {}).items() for check, errors in checks.items() for error in errors
    ]
    return dg.AssetCheckResult(
        check_name=SCHEMA_CHECK,
        asset_key=asset_key,
        passed=not failures,
        metadata={"rows_validated": rows, "validated_by": "pandera.pyspark", "failures": dg.MetadataValue.json(failures[:20])},
    )


def pandas_schema_result(
    schema: pap.DataFrameSchema, df: pd.DataFrame, asset_key: dg.AssetKey
) -> dg.AssetCheckResult:
    """Validate a pandas frame (rows read back from Cassandra) with a pandera schema, lazily."""
    try:
        schema.validate(df, lazy=True)
        failures: list[dict] = []
    except pap.errors.SchemaErrors as exc:
        failures = exc.failure_cases.head(20).astype(str).to_dict("records")
    return dg.AssetCheckResult(
        check_name=SCHEMA_CHECK,
        asset_key=asset_key,
        passed=not failures,
        metadata={"rows_validated": len(df), "failures": dg.MetadataValue.json(failures)},
    )


def equality_result(
    check_name: str, asset_key: dg.AssetKey, expected: dict[str, int], actual: dict[str, int]
) -> dg.AssetCheckResult:
    """Pass when two keyed counts agree everywhere; the mismatches are the metadata."""
    keys = sorted(set(expected) | set(actual))
    mismatches = {k: {"expected": expected.get(k, 0), "actual": actual.get(k, 0)} for k in keys
                  if expected.get(k, 0) != actual.get(k, 0)}
    return dg.AssetCheckResult(
        check_name=check_name,
        asset_key=asset_key,
        passed=not mismatches,
        metadata={
            "keys_compared": len(keys),
            "expected_total": sum(expected.values()),
            "actual_total": sum(actual.values()),
            "mismatches": dg.MetadataValue.json(dict(list(mismatches.items())[:50])),
        },
    )

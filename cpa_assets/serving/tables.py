"""Cassandra serving tables: one asset per question of CONTRACT §3, built by one factory.

A materialisation replaces exactly the dates it covers: the rows of those dates are deleted and
the gold rows written, with client timestamps so the writes always win over the deletes."""


import datetime as dt
import math
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg
import pandas as pd
import pandera.pandas as pap
from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent, execute_concurrent_with_args
from cassandra.query import BatchStatement, BatchType, BoundStatement
from cassandra.util import Date
from dagster_pyspark import LazyPySparkResource
from pyspark.sql.types import DateType, StructType

from cpa_assets.checks import pandas_schema_result, schema_spec
from cpa_assets.metadata import partition_metadata
from cpa_assets.batch_partitions import billing_month_partitions, ticket_date_partitions
from cpa_assets.gold.batch import REVENUE_BY_MONTH, REVENUE_SCHEMA, TICKETS_BY_DATE, TICKETS_SCHEMA
from cpa_assets.gold.anomalies import COST_ANOMALIES, COST_ANOMALIES_SCHEMA
from cpa_assets.gold.genai import GENAI_TOKENS, GENAI_TOKENS_SCHEMA
from cpa_assets.gold.tail import P1_SERVED_TAG, still_to_follow
from cpa_assets.increments import UsageRun
from cpa_assets.gold.usage import DAILY_USAGE, DAILY_USAGE_SCHEMA, TOP_SERVICES, TOP_SERVICES_SCHEMA
from cpa_assets.partitions import event_date_partitions, serve_first, single_run

from cpa_resources import CassandraResource, LakeResource

NOT_NAN = pap.Check(
    lambda v: not (isinstance(v, float) and math.isnan(v)), element_wise=True, ignore_na=False, name="not_nan"
)

# A serving step rides out a short Cassandra outage (a restart takes 5–10 s) by retrying with
# backoff (2, 4, 8, 16, 32 s); a longer one fails the run, which the usage sensor runs again.
SERVING_RETRIES = dg.RetryPolicy(max_retries=5, delay=2, backoff=dg.Backoff.EXPONENTIAL)

# Statements per unlogged batch: one partition's rows of this size stay under Cassandra's default
# 5 KiB batch warning. A request costs the client more than the rows it carries (the driver's
# Python), so a batch packs the rows of several partitions: no more than Cassandra accepts without
# a warning (unlogged_batch_across_partitions_warn_threshold: 10), and no more bytes than
# BATCH_BYTES by `_weight` (each partition and cell costs the server more than its value: rows of
# 9 columns, ≈ 60 bytes of values, measured ≈ 170–200 bytes each in a batch of 10 partitions).
BATCH_ROWS = 40
BATCH_PARTITIONS = 10
BATCH_BYTES = 4096
CELL_BYTES = 24
CONCURRENCY = 64
# Reading back more partitions than this, one query each, is slower than one scan of the table.
MAX_PARTITION_READS = 1000


@dataclass(frozen=True)
class ServingTable:
    """A question's table: where its rows come from and how they are keyed."""

    name: str
    gold: dg.AssetKey
    gold_schema: StructType
    date_column: str
    partition_key: tuple[str, ...]
    clustering: tuple[str, ...]
    partitions_def: dg.PartitionsDefinition
    question: str
    # Only gold rows with one of these flags set are served (P6: the flagged rows); empty: every row.
    served_if_any: tuple[str, ...] = ()

    @property
    def served_rows(self) -> str:
        """The SQL condition of the gold rows served ("" for every row)."""
        return " OR ".join(self.served_if_any)

    @property
    def key(self) -> dg.AssetKey:
        return dg.AssetKey(["cassandra", self.name])

    @property
    def columns(self) -> list[str]:
        return self.gold_schema.fieldNames()

    @property
    def primary_key(self) -> list[str]:
        return [*self.partition_key, *self.clustering]


    @property
    def date_in_partition_key(self) -> bool:
        return self.date_column in self.partition_key

    def pandera_schema(self) -> pap.DataFrameSchema:
        """Rows read back (as Python values): every column present, the primary key never null and
        unique, and no NaN anywhere: a value that does not exist is null (CONTRACT §3)."""
        return pap.DataFrameSchema(
            {column: pap.Column(nullable=column not in self.primary_key, checks=[NOT_NAN]) for column in self.columns},
            unique=self.primary_key,
            strict=True,
        )


SERVING_TABLES = (
    ServingTable(
        name="org_daily_usage_by_service",
        gold=DAILY_USAGE,
        gold_schema=DAILY_USAGE_SCHEMA,
        date_column="usage_date",
        partition_key=("org_id",),
        clustering=("usage_date", "service"),
        partitions_def=event_date_partitions,
        question="P1: cost and requests of an org, per service and day, over a date range",
    ),
    ServingTable(
        name="org_top_services_14d",
        gold=TOP_SERVICES,
        gold_schema=TOP_SERVICES_SCHEMA,
        date_column="as_of_date",
        partition_key=("org_id", "as_of_date"),
        clustering=("rank",),
        partitions_def=event_date_partitions,
        question="P2: the N services of an org with the highest cost over the 14 days ending on a date",
    ),
    ServingTable(
        name="tickets_by_org_date",
        gold=TICKETS_BY_DATE,
        gold_schema=TICKETS_SCHEMA,
        date_column="ticket_date",
        partition_key=("org_id",),
        clustering=("ticket_date",),
        partitions_def=ticket_date_partitions,
        question="P3: an org's daily tickets, critical tickets and SLA-breach rate over the last 30 days",
    ),
    ServingTable(
        name="revenue_by_org_month",
        gold=REVENUE_BY_MONTH,
        gold_schema=REVENUE_SCHEMA,
        date_column="month",
        partition_key=("org_id",),
        clustering=("month",),
        partitions_def=billing_month_partitions,
        question="P4: an org's monthly revenue with credits and taxes, in USD",
    ),
    ServingTable(
        name="genai_tokens_by_org_date",
        gold=GENAI_TOKENS,
        gold_schema=GENAI_TOKENS_SCHEMA,
        date_column="usage_date",
        partition_key=("org_id",),
        clustering=("usage_date",),
        partitions_def=event_date_partitions,
        question="P5: an org's daily GenAI tokens and their estimated cost",
    ),
    ServingTable(
        name="cost_anomalies_by_date",
        gold=COST_ANOMALIES,
        gold_schema=COST_ANOMALIES_SCHEMA,
        date_column="usage_date",
        partition_key=("usage_date",),
        clustering=("org_id", "service"),
        partitions_def=event_date_partitions,
        question="P6: the cost anomalies of a day",
        served_if_any=("is_anomaly_zscore", "is_anomaly_mad", "is_anomaly_p99"),
    ),
)


def _where(columns: Iterable[str]) -> str:
    return " AND ".join(f"{c} = ?" for c in columns)


def _to_python(frame: pd.DataFrame) -> list[tuple]:
    # Python scalars, not numpy ones: the driver serialises by Python type. Spark's nulls arrive in
    # pandas as NaN in float columns; Cassandra must store them as null, never as NaN.
    values = frame.astype(object)
    return [tuple(row) for row in values.where(frame.notna(), None).itertuples(index=False)]


def _plain(value):
    # The driver reads `date` columns as its own Date type; plain dates compare with gold's.
    return value.date() if isinstance(value, Date) else value


def served_frame(table: ServingTable, rows: Iterable) -> pd.DataFrame:
    """Rows read back (all of the table's columns, in order) as a frame of Python values, its date
    columns as plain dates: one conversion per date value, not a call per value of every row."""
    frame = pd.DataFrame(list(rows), columns=table.columns, dtype=object)
    for field in table.gold_schema.fields:
        if isinstance(field.dataType, DateType):
            frame[field.name] = frame[field.name].map(_plain).astype(object)
    return frame


def existing_partitions(session: Session, table: ServingTable, name: str) -> list[tuple]:
    """Partition keys the table holds (a scan of partition keys only, no filtering)."""
    columns = ", ".join(table.partition_key)
    return [tuple(_plain(v) for v in row) for row in session.execute(f"SELECT DISTINCT {columns} FROM {name}")]


def date_slices(session: Session, table: ServingTable, name: str, dates: list[dt.date]) -> tuple[str, list[tuple]]:
    """A WHERE clause and the values that bind it, one per partition, that reach every row the table
    holds for `dates`: whole partitions where the date is in the partition key, a date range of each
    partition where it is a clustering column."""
    partitions = existing_partitions(session, table, name)
    if table.date_in_partition_key:
        position = table.partition_key.index(table.date_column)
        wanted = set(dates)
        return _where(table.partition_key), [p for p in partitions if p[position] in wanted]
    where = f"{_where(table.partition_key)} AND {table.date_column} >= ? AND {table.date_column} <= ?"
    return where, [(*p, min(dates), max(dates)) for p in partitions]


def _weight(statement: BoundStatement) -> int:
    """What a statement adds to a batch, as Cassandra counts it, roughly: its values' bytes and an
    allowance per cell."""
    return sum(len(value) for value in statement.values if value) + CELL_BYTES * len(statement.values)


def execute_packed(session: Session, statements: dict[tuple, list[BoundStatement]]) -> int:
    """Run bound statements, given per partition, in unlogged batches of at most BATCH_ROWS
    statements over at most BATCH_PARTITIONS partitions whose replicas are the same nodes (a
    token-aware client sends each batch to a node that holds all of it), and at most BATCH_BYTES
    of them when they are several partitions'; the number of batches. A partition's statements
    keep their order; one with more than BATCH_ROWS spans batches."""
    metadata = session.cluster.metadata
    open_batches: dict[tuple, tuple[BatchStatement, int, int]] = {}  # by replicas: a batch, its partitions, bytes
    batches: list[BatchStatement] = []
    for bound in statements.values():
        first = bound[0]
        replicas = () if first.routing_key is None else tuple(
            host.endpoint for host in metadata.get_replicas(first.keyspace, first.routing_key))
        weight = sum(_weight(statement) for statement in bound)
        batch, partitions, held = open_batches.pop(replicas, (None, 0, 0))
        if batch is not None and (partitions == BATCH_PARTITIONS or len(batch) + len(bound) > BATCH_ROWS
                                  or held + weight > BATCH_BYTES):
            batches.append(batch)  # full, or the partition would not fit whole: it starts a batch
            batch = None
        for start in range(0, len(bound), BATCH_ROWS):
            if batch is None or len(batch) == BATCH_ROWS:
                if batch is not None:
                    batches.append(batch)
                batch, partitions, held = BatchStatement(batch_type=BatchType.UNLOGGED), 0, 0
            for statement in bound[start : start + BATCH_ROWS]:
                batch.add(statement)
        open_batches[replicas] = (batch, partitions + 1, held + weight)
    batches += [batch for batch, _, _ in open_batches.values() if len(batch)]
    execute_concurrent(session, [(batch, ()) for batch in batches], concurrency=CONCURRENCY, raise_on_first_error=True)
    return len(batches)


def write_rows(session: Session, table: ServingTable, name: str, rows: pd.DataFrame, stamp: int) -> int:
    """Upsert rows with a client timestamp, in unlogged batches (`execute_packed`); the number of
    batches."""
    insert = session.prepare(
        f"INSERT INTO {name} ({', '.join(table.columns)}) VALUES ({', '.join('?' for _ in table.columns)})"
        f" USING TIMESTAMP {stamp}"
    )
    by_partition: dict[tuple, list[BoundStatement]] = defaultdict(list)
    key_positions = [table.columns.index(c) for c in table.partition_key]
    for row in _to_python(rows[table.columns]):
        by_partition[tuple(row[i] for i in key_positions)].append(insert.bind(row))
    return execute_packed(session, by_partition)


def delete_where(session: Session, name: str, where: str, stamp: int, keys: Iterable[tuple], partition_key_size: int) -> int:
    """Delete with a client timestamp what `where` reaches for each tuple of `keys` (whose first
    values are a partition key), in unlogged batches (`execute_packed`); the number of batches."""
    delete = session.prepare(f"DELETE FROM {name} USING TIMESTAMP {stamp} WHERE {where}")
    by_partition: dict[tuple, list[BoundStatement]] = defaultdict(list)
    for key in keys:
        by_partition[tuple(key[:partition_key_size])].append(delete.bind(key))
    return execute_packed(session, by_partition)


def replace_dates(session: Session, table: ServingTable, name: str, rows: pd.DataFrame, dates: list[dt.date]) -> dict:
    """Make the table hold exactly `rows` for `dates` (all rows fall in `dates`).

    The new rows are written first with timestamp t+1, then everything the table held for those
    dates is deleted with timestamp t: the delete cannot touch the new rows, and a reader never
    sees a date emptied while it is being replaced."""
    stamp = int(time.time() * 1_000_000)
    batches = write_rows(session, table, name, rows, stamp + 1)
    where, stale = date_slices(session, table, name, dates)
    batches += delete_where(session, name, where, stamp, stale, len(table.partition_key))
    return {"rows_written": len(rows), "batches": batches, "partitions_cleared_of_older_rows": len(stale)}


def read_dates(session: Session, table: ServingTable, name: str, dates: list[dt.date]) -> pd.DataFrame:
    """Every row the table holds for `dates` as Python values (a NaN stays NaN, a null stays None),
    to validate and to compare with gold."""
    columns = ", ".join(table.columns)
    if table.date_in_partition_key:
        # Date-keyed partitions can number thousands (P2: org × day): one paged scan beats reading each.
        served = served_frame(table, session.execute(f"SELECT {columns} FROM {name}"))
        return served[served[table.date_column].isin(set(dates))].reset_index(drop=True)
    where, args = date_slices(session, table, name, dates)
    select = session.prepare(f"SELECT {columns} FROM {name} WHERE {where}")
    results = execute_concurrent_with_args(session, select, args, concurrency=CONCURRENCY, raise_on_first_error=True)
    return served_frame(table, (r for outcome in results for r in outcome.result_or_exc))


def final_state(table: ServingTable, changes: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What a gold table's change feed means for the table served from it: (the rows to write, the
    keys to delete). A key's last commit decides its state after the run; within one commit a row
    inserted or updated to wins over its deletion (a replaced row is deleted and inserted again).
    A key whose row is not served after the run is deleted if its row was served before (its first
    deleted or pre-update row): P6's rows that were never flagged need no delete."""
    def served(frame: pd.DataFrame) -> pd.Series:
        if not table.served_if_any:
            return pd.Series(True, index=frame.index)
        return frame[list(table.served_if_any)].fillna(False).astype(bool).any(axis=1)

    present = changes["_change_type"].isin(["insert", "update_postimage"])
    latest = changes.groupby(table.primary_key, dropna=False)["_commit_version"].transform("max")
    last = changes[changes["_commit_version"] == latest].assign(_present=present)
    last = last.sort_values("_present").drop_duplicates(table.primary_key, keep="last")
    last = last.assign(_served=last["_present"].astype(bool) & served(last))
    prior = changes[changes["_change_type"].isin(["delete", "update_preimage"])]
    prior = prior.assign(_was_served=served(prior)).groupby(table.primary_key, dropna=False)["_was_served"].any()
    was_served = last.set_index(table.primary_key).index.map(prior.to_dict()).fillna(False).astype(bool)
    gone = ~last["_served"].to_numpy() & was_served
    return (last.loc[last["_served"], table.columns].reset_index(drop=True),
            last.loc[gone, table.primary_key].reset_index(drop=True))


def apply_changes(session: Session, table: ServingTable, name: str, rows: pd.DataFrame, gone: pd.DataFrame) -> dict:
    """Upsert `rows` and delete the keys of `gone`: writes at t+1, deletes at t, as `replace_dates`."""
    stamp = int(time.time() * 1_000_000)
    batches = write_rows(session, table, name, rows, stamp + 1)
    batches += delete_where(session, name, _where(table.primary_key), stamp, _to_python(gone[table.primary_key]),
                            len(table.partition_key))
    return {"rows_written": len(rows), "batches": batches, "rows_deleted": len(gone)}


def read_keys(session: Session, table: ServingTable, name: str, keys: pd.DataFrame, table_rows: int) -> pd.DataFrame:
    """The rows the table holds for the given primary keys (absent keys give no row): one query per
    partition they fall in (over the dates they span, where the date is a clustering column), or
    one scan of the table when the keys are a good part of its `table_rows` anyway."""
    if keys.empty:
        return pd.DataFrame(columns=table.columns, dtype=object)
    partitions = keys.groupby(list(table.partition_key), dropna=False)
    wanted = keys[table.primary_key].astype(object).drop_duplicates()
    if partitions.ngroups > MAX_PARTITION_READS and len(wanted) * 4 > table_rows:
        # Thousands of partitions (P2 is org × day) holding much of the table: one paged scan beats reading each.
        rows = served_frame(table, session.execute(f"SELECT {', '.join(table.columns)} FROM {name}"))
        return rows.merge(wanted, on=table.primary_key, how="inner")[table.columns]
    if table.date_in_partition_key:
        where, args = _where(table.partition_key), [tuple(p) if isinstance(p, tuple) else (p,) for p in partitions.groups]
    else:
        where = f"{_where(table.partition_key)} AND {table.date_column} >= ? AND {table.date_column} <= ?"
        spans = partitions[table.date_column].agg(["min", "max"])
        args = [(*(p if isinstance(p, tuple) else (p,)), low, high) for p, (low, high) in spans.iterrows()]
    select = session.prepare(f"SELECT {', '.join(table.columns)} FROM {name} WHERE {where}")
    results = execute_concurrent_with_args(session, select, [tuple(_python(v) for v in a) for a in args],
                                           concurrency=CONCURRENCY, raise_on_first_error=True)
    rows = served_frame(table, (row for outcome in results for row in outcome.result_or_exc))
    return rows.merge(wanted, on=table.primary_key, how="inner")[table.columns]


def _python(value):
    return value.item() if hasattr(value, "item") else value


def read_cells(session: Session, table: ServingTable, name: str, keys: pd.DataFrame) -> pd.DataFrame:
    """The rows the table holds for exactly these primary keys, one point query each (absent keys
    give no row): a file's few hundred cells, not the partitions they fall in."""
    select = session.prepare(f"SELECT {', '.join(table.columns)} FROM {name} WHERE {_where(table.primary_key)}")
    args = [tuple(_python(v) for v in key) for key in keys[table.primary_key].itertuples(index=False)]
    results = execute_concurrent_with_args(session, select, args, concurrency=CONCURRENCY, raise_on_first_error=True)
    return served_frame(table, (row for outcome in results for row in outcome.result_or_exc))


def serve_increment(cassandra: CassandraResource, gold: dg.AssetKey, sums: pd.DataFrame, measures: list[str]) -> dict:
    """Serve the cells a stream run's new events reach before their gold table is merged: each
    cell as served now (absent: nothing yet) with the new events' sums added, as the gold MERGE
    adds them. The table's own step writes the merged gold rows after it, later in time, so what
    this writes is overwritten by gold's either way."""
    table = next(t for t in SERVING_TABLES if t.gold == gold)
    session = cassandra.session()
    cassandra.apply_cql(table.name)
    name = cassandra.table(table.name)
    held = read_cells(session, table, name, sums)
    rows = sums.merge(held, on=table.primary_key, how="left", suffixes=("", "_held"), indicator=True)
    found = rows["_merge"] == "both"
    for column in measures:
        rows[column] = rows[f"{column}_held"].where(found, 0).astype(sums[column].dtype) + rows[column]
    batches = write_rows(session, table, name, rows[table.columns], int(time.time() * 1_000_000))
    return {"cells": len(rows), "new_cells": int((~found).sum()), "batches": batches}


def same_rows(table: ServingTable, gold: pd.DataFrame, served: pd.DataFrame) -> dict[str, int]:
    """Count, per date, the gold rows that Cassandra does not hold exactly (and extra served rows)."""
    merged = gold.merge(served, on=table.primary_key, how="outer", suffixes=("", "_served"), indicator=True)
    value_columns = [c for c in table.columns if c not in table.primary_key]
    differs = merged["_merge"] != "both"
    for column in value_columns:
        left, right = merged[column], merged[f"{column}_served"]
        differs |= ~((left == right) | (left.isna() & right.isna()))
    return merged.loc[differs, table.date_column].astype(str).value_counts().to_dict()


def build_serving_asset(table: ServingTable) -> dg.AssetsDefinition:
    @dg.asset(
        key=table.key,
        deps=[table.gold],
        partitions_def=table.partitions_def,
        backfill_policy=single_run,
        op_tags=serve_first,
        retry_policy=SERVING_RETRIES,
        group_name="serving",
        kinds={"cassandra"},
        description=f"Cassandra table `{table.name}`, primary key (({', '.join(table.partition_key)}), "
        f"{', '.join(table.clustering)}), answering {table.question}. Re-materialising a date replaces "
        "exactly that date's rows.",
        check_specs=[
            schema_spec(table.key, "Rows read back from Cassandra satisfy the pandera schema (primary key unique, not null)."),
            dg.AssetCheckSpec(
                "matches_gold",
                asset=table.key,
                blocking=True,
                description="Rows read back from Cassandra for the materialised dates equal the gold rows.",
            ),
        ],
    )
    def _asset(
        context: dg.AssetExecutionContext, config: UsageRun, spark: LazyPySparkResource, lake: LakeResource,
        cassandra: CassandraResource,
    ):
        keys = context.partition_keys
        dates = [dt.date.fromisoformat(k) for k in keys]
        gold_table = table.gold.path[-1]
        config = still_to_follow(context.instance, config)
        session = cassandra.session()
        cassandra.apply_cql(table.name)
        name = cassandra.table(table.name)
        started = time.perf_counter()
        if config.increments and table.partitions_def is event_date_partitions:
            # A stream run: the gold rows this run (and the runs it completes) changed, as their
            # commits' change feed left them.
            changes = lake.run_changes(spark.spark_session, "gold", gold_table, config.follows)
            feed = (changes.select(*table.columns, "_change_type", "_commit_version").toPandas()
                    if changes is not None else pd.DataFrame(columns=[*table.columns, "_change_type", "_commit_version"]))
            gold, gone = final_state(table, feed)
            written = apply_changes(session, table, name, gold, gone)
            seconds = time.perf_counter() - started
            table_rows = sum(lake.partition_counts("gold", gold_table, table.date_column).values())
            served = read_keys(session, table, name, pd.concat([gold[table.primary_key], gone], ignore_index=True), table_rows)
            how = "the rows this run's gold commits changed"
        else:
            frame = lake.read(spark.spark_session, "gold", gold_table, table.gold_schema, table.date_column, keys)
            gold = (frame.where(table.served_rows) if table.served_rows else frame).toPandas()
            written = replace_dates(session, table, name, gold, dates)
            seconds = time.perf_counter() - started
            served = read_dates(session, table, name, dates)
            how = "dates replaced"
        differences = same_rows(table, gold, served.infer_objects())
        context.log.info(f"cassandra {table.name}: {written['rows_written']} rows in {seconds:.1f}s ({how}; "
                         + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in written.items() if k != "rows_written") + ")")
        if table.gold == DAILY_USAGE:  # P1 is served: the sensor may plan the next file's run (gold/tail.py)
            context.instance.add_run_tags(context.run.run_id, {P1_SERVED_TAG: "1"})
        if how == "dates replaced":  # each date's rows, as served; a stream run counts what it wrote
            partition_metadata(context, table.key, None, table.date_column,
                               counts=gold[table.date_column].astype(str).value_counts().to_dict())
            written = {"dagster/row_count": written["rows_written"], **written}
        return dg.MaterializeResult(
            metadata={
                **written,
                "written_as": how,
                "write_seconds": round(seconds, 2),
                "keyspace": cassandra.keyspace,
                "table": table.name,
            },
            check_results=[
                pandas_schema_result(table.pandera_schema(), served, table.key),
                dg.AssetCheckResult(
                    check_name="matches_gold",
                    asset_key=table.key,
                    passed=not differences,
                    metadata={
                        "gold_rows": len(gold),
                        "served_rows": len(served),
                        "differing_rows_by_date": dg.MetadataValue.json(differences),
                    },
                ),
            ],
        )

    return _asset


serving_assets = [build_serving_asset(table) for table in SERVING_TABLES]

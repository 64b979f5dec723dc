"""The data lake: landing input, and bronze, silver and gold Delta Lake tables.

Every write is one commit of a Delta table: a whole table overwritten, the given partitions
replaced (`replaceWhere`), rows matching a predicate replaced, new events merged on `event_id`
(which inserts only ids the table does not hold yet), or rows merged on their key (updated or
inserted). Readers see one version or the next, never a half-written one; a killed writer leaves
files no version names. Each commit is a version `cpa history TABLE` lists and `cpa restore TABLE
--version N` goes back to. Data files no version of the last `RETENTION_HOURS` uses are vacuumed as
partitions are compacted.

Each commit of a run carries the run's id (Delta's `userMetadata`), and every table keeps a change
feed: a step finds what the steps before it changed in this run (`run_changes`) and does work in
proportion to that, not to the table. Row counts per partition come from the table's log (each
data file's record count), not from reading the data.

The root is a folder or any Hadoop file-system URI (`file://` by default); the lock that
serialises runs is always a local file (the lake's folder when it is local, else
$DAGSTER_HOME)."""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable as LakeTable
from pydantic import PrivateAttr
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

REPO_ROOT = Path(__file__).resolve().parents[1]
EVENTS_FOLDER = "usage_events_stream"
# Appending a file's rows adds a Parquet file to each partition they reach; a partition holding
# more is compacted (OPTIMIZE) into one file, so reads never open a pile of small files. A stream
# step reads every partition it covers, so few files beat rare compactions: P1 of a warm stream run
# took 7.1 s at p50 and 9.6 s in the run that compacts with 4, against 7.8 s at p50 with 10 (measured).
MAX_FILES_PER_PARTITION = 4
# While more files wait for the stream, a run leaves compaction to a run with none waiting (its
# seconds would delay them all), unless a partition holds this many files: bounded either way.
MAX_FILES_PER_PARTITION_BUSY = 12
# Versions stay restorable for a week; older data files go at the next compaction (VACUUM).
RETENTION_HOURS = 168
# Every run that writes the lake holds this lock from its start to its end; another run waits.
LOCK_FILE = ".cpa-lake.lock"
LOCK_POLL_SECONDS = 0.2
ROOT_RUN_TAG = "dagster/root_run_id"  # Dagster's tag on a re-execution: the run the chain started with
# A run writes a table a handful of times: its commits are among the table's latest ones.
RUN_COMMITS_LOOKBACK = 50


class LakeResource(dg.ConfigurableResource):
    """Where landing files are read and where bronze, silver and gold Delta tables live.

    One guard for every writer: a run (the sensor's, a schedule's, `cpa backfill`'s, the UI's
    Materialize or backfill) holds the lake's lock for as long as the run uses this resource, so
    runs that replace the same partitions never interleave, however they were launched. The lock is
    the kernel's (`flock`): a run killed with SIGKILL releases it with its process."""

    root: str = str(REPO_ROOT / "datalake")
    landing: str = ""
    _lock: int | None = PrivateAttr(default=None)
    # The run whose commits this resource tags: the first run of a re-execution chain, so a step
    # re-executed from the UI finds what the steps it follows committed in the run it re-executes.
    # Outside a run (""), commits carry no run.
    _run_id: str = PrivateAttr(default="")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if context.run is not None:  # a run, not a sensor's evaluation
            self._lock = self.hold_lock(context.run.run_id, context.log)
            self._run_id = context.run.tags.get(ROOT_RUN_TAG) or context.run.run_id

    @property
    def run_id(self) -> str:
        """The run whose id this resource's commits carry ("" outside a run)."""
        return self._run_id

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the lock
            self._lock = None

    def hold_lock(self, holder: str, log=None) -> int:
        """Wait for the lake's lock, then hold it (until the returned descriptor is closed),
        recording who holds it."""
        path = self.lock_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        waiting_since = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if waiting_since is None:
                    waiting_since = time.monotonic()
                    if log is not None:
                        log.info(f"waiting for the lake, held by {self.lock_holder() or 'another run'}")
                time.sleep(LOCK_POLL_SECONDS)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"holder": holder, "pid": os.getpid(), "since": time.time()}).encode(), 0)
        if waiting_since is not None and log is not None:
            log.info(f"the lake is free after {time.monotonic() - waiting_since:.1f} s")
        return fd

    def local_root(self) -> Path | None:
        """The lake's folder when it is on this machine's disk (a path or a file: URI)."""
        parsed = urlparse(self.root)
        if parsed.scheme in ("", "file"):
            return Path(parsed.path if parsed.scheme else self.root)
        return None

    def lock_path(self) -> Path:
        home = self.local_root() or Path(os.environ.get("DAGSTER_HOME") or REPO_ROOT / ".dagster_home")
        return home / LOCK_FILE

    def lock_holder(self) -> dict | None:
        try:
            return json.loads(self.lock_path().read_text() or "null")
        except (OSError, ValueError):
            return None

    @classmethod
    def from_env(cls) -> LakeResource:
        root = os.environ.get("CPA_LAKE_DIR") or str(REPO_ROOT / "datalake")
        return cls(root=root, landing=os.environ.get("CPA_LANDING_DIR", ""))

    def landing_dir(self) -> Path:
        if self.landing:
            return Path(self.landing)
        local = self.local_root()
        if local is None:
            raise ValueError(f"the lake {self.root} is not a local folder: set CPA_LANDING_DIR to the landing folder")
        return local / "landing"

    def events_dir(self) -> Path:
        return self.landing_dir() / EVENTS_FOLDER

    def event_files(self) -> list[Path]:
        """Complete event files in arrival order (file name order); hidden and temporary names are not yet delivered."""
        folder = self.events_dir()
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob("*.jsonl") if not p.name.startswith((".", "_")) and p.is_file())

    def path(self, layer: str, table: str) -> str:
        """The table's location, as Spark and Delta Lake address it."""
        return f"{self.root.rstrip('/')}/{layer}/{table}"

    def exists(self, layer: str, table: str) -> bool:
        return LakeTable.is_deltatable(self.path(layer, table))

    def table(self, layer: str, table: str) -> LakeTable:
        """The table's current version, read without Spark (delta-rs): for the sensor, reports, tests."""
        return LakeTable(self.path(layer, table))

    def small_table(self, layer: str, table: str) -> pa.Table:
        """An unpartitioned table's current rows, read without Spark (the files its version names)."""
        files = self.table(layer, table).file_uris()
        if not files:
            return pa.table({})
        return pq.read_table(files)

    def version(self, layer: str, table: str) -> int | None:
        """The table's current version; None before its first write."""
        return self.table(layer, table).version() if self.exists(layer, table) else None

    def location(self, path: str) -> dict[str, dg.MetadataValue]:
        """A materialisation's metadata for the table it wrote: where, and the version it made."""
        metadata = {"path": dg.MetadataValue.path(path)}
        if LakeTable.is_deltatable(path):  # a step with nothing to write leaves an absent table absent
            metadata["delta_version"] = dg.MetadataValue.int(LakeTable(path).version())
        return metadata

    def written_at(self, layer: str, table: str) -> float:
        """When the table last changed (its newest commit, epoch seconds); 0 if absent."""
        if not self.exists(layer, table):
            return 0.0
        return self.table(layer, table).history(1)[0]["timestamp"] / 1000

    def read(
        self,
        spark: SparkSession,
        layer: str,
        table: str,
        schema: StructType | None = None,
        partition_column: str | None = None,
        keys: Iterable[str] | None = None,
    ) -> DataFrame:
        """A table's current version, or only the given partitions of it: the schema's columns in
        its order (every column as stored without one); a partitioned table not written yet reads
        as empty. The frame is pinned to that version: a later commit, even by the same step, does
        not change what it reads (Delta Lake would otherwise refresh a cached frame after a write)."""
        version = self.version(layer, table)
        if version is None:
            if partition_column is None:
                raise FileNotFoundError(f"{layer}/{table} has not been materialised yet ({self.path(layer, table)})")
            return spark.createDataFrame([], schema)
        rows = spark.read.format("delta").option("versionAsOf", version).load(self.path(layer, table))
        if keys is not None:
            rows = rows.where(F.col(partition_column).isin(list(keys)))
        return rows if schema is None else rows.select(*schema.fieldNames())

    def write(self, df: DataFrame, layer: str, table: str) -> str:
        """Replace an unpartitioned table as a whole, in one commit."""
        path = self.path(layer, table)
        # One file, written by one task; the rows are still computed in parallel (a coalesce would
        # pull the whole computation into that one task).
        self._writer(df.repartition(1)).mode("overwrite").option("overwriteSchema", "true").save(path)
        return path

    def append(self, df: DataFrame, layer: str, table: str, partition_column: str | None = None) -> str:
        """Add rows to a table (created if absent), in one commit: the caller knows none of them is
        there yet (an insert that must hold whatever the table holds is `append_partitions`)."""
        path = self.path(layer, table)
        if partition_column is None:
            self._writer(df.repartition(1)).mode("append").save(path)
        else:
            self._writer(df.repartition(partition_column)).mode("append").partitionBy(partition_column).save(path)
        return path

    def replace_partitions(
        self, df: DataFrame, layer: str, table: str, partition_column: str, keys: Iterable[str]
    ) -> str:
        """Replace exactly the given partitions in one commit (`replaceWhere`): written rows land,
        keys without rows end up empty. A row outside the keys fails the write."""
        path = self.path(layer, table)
        keys = sorted(set(keys))
        if not keys:
            return path
        self._writer(df.repartition(partition_column)).mode("overwrite").option(
            "replaceWhere", in_keys(partition_column, keys)).partitionBy(partition_column).save(path)
        return path

    def replace_where(self, df: DataFrame, layer: str, table: str, partition_column: str, predicate: str) -> str:
        """Replace the rows matching a SQL predicate with the frame's, in one commit (`replaceWhere`
        on data columns): every row of the frame must match it. Creates the table if need be."""
        path = self.path(layer, table)
        writer = self._writer(df.repartition(partition_column)).partitionBy(partition_column)
        if self.exists(layer, table):
            writer = writer.mode("overwrite").option("replaceWhere", predicate)
        writer.save(path)
        return path

    def upsert(self, df: DataFrame, layer: str, table: str, keys: list[str], partition_column: str,
               add: list[str] | None = None) -> str:
        """Merge rows on their key, in one commit: a held row with the same key is replaced (or, with
        `add`, has the frame's values of those columns added to its own), a new key inserted,
        nothing deleted. Only the partitions the frame reaches are read."""
        path = self.path(layer, table)
        if not self.exists(layer, table):
            self._writer(df.repartition(partition_column)).partitionBy(partition_column).save(path)
            return path
        rows = df.cache()  # MERGE reads its source twice, and the partitions it reaches are read first
        try:
            reached = [str(row[0]) for row in rows.select(partition_column).distinct().collect()]
            if not reached:
                return path
            # Null-safe: a key column may hold null (a service silver kept unknown), still one row per key.
            on = " AND ".join([f"held.{key} <=> new.{key}" for key in keys] + [f"held.{in_keys(partition_column, reached)}"])
            update = "*" if not add else ", ".join(f"held.{c} = held.{c} + new.{c}" for c in add)
            with temporary_view(rows) as new:
                self._sql(df.sparkSession, f"MERGE INTO {table_ref(path)} AS held USING {new} AS new ON {on}"
                          f" WHEN MATCHED THEN UPDATE SET {update} WHEN NOT MATCHED THEN INSERT *")
        finally:
            rows.unpersist()
        return path

    def append_partitions(
        self, df: DataFrame, layer: str, table: str, partition_column: str, key: str = "event_id"
    ) -> str:
        """Merge rows into the table on `key`, inserting only keys it does not hold yet, in one
        commit (none when nothing is new). What was inserted: `run_changes`."""
        path = self.path(layer, table)
        if not self.exists(layer, table):
            self._writer(df.repartition(partition_column)).partitionBy(partition_column).save(path)
            return path
        with temporary_view(df) as new:
            self._sql(df.sparkSession, f"MERGE INTO {table_ref(path)} AS held USING {new} AS new"
                      f" ON held.{key} = new.{key} WHEN NOT MATCHED THEN INSERT *")
        return path

    def compact_partitions(
        self, spark: SparkSession, layer: str, table: str, partition_column: str, keys: Iterable[str] | None = None,
        most: int = MAX_FILES_PER_PARTITION,
    ) -> list[str]:
        """Compact (OPTIMIZE) the partitions (of `keys`, or all) that hold more than `most` files,
        then vacuum the files no version of the retention period uses; the compacted keys."""
        if not self.exists(layer, table):
            return []
        counts = self.files_per_partition(layer, table, partition_column)
        crowded = sorted(k for k, n in counts.items() if n > most and (keys is None or k in set(keys)))
        if crowded:
            self._sql(spark, f"OPTIMIZE {table_ref(self.path(layer, table))} WHERE {in_keys(partition_column, crowded)}")
            self.vacuum(layer, table)
        return crowded

    def vacuum(self, layer: str, table: str) -> list[str]:
        """Delete the data files no version of the last RETENTION_HOURS names; the files deleted.
        Through delta-rs: one listing of the table's folder (Spark's VACUUM costs tens of seconds
        of jobs on a small table)."""
        return self.table(layer, table).vacuum(retention_hours=RETENTION_HOURS, dry_run=False)

    def files_per_partition(self, layer: str, table: str, partition_column: str) -> dict[str, int]:
        """How many data files the table's current version names in each partition."""
        actions = pa.table(self.table(layer, table).get_add_actions(flatten=True))
        counts: dict[str, int] = {}
        for value in actions.column(f"partition.{partition_column}").to_pylist():
            counts[str(value)] = counts.get(str(value), 0) + 1
        return counts

    def history(self, layer: str, table: str, limit: int | None = None) -> list[dict]:
        """The table's versions, newest first: version, timestamp (ms), operation and its figures."""
        return self.table(layer, table).history(limit)

    def restore(self, spark: SparkSession, layer: str, table: str, version: int) -> dict:
        """Make an earlier version the table's current one, as a new commit (history is kept); the
        restore's figures (files removed and restored)."""
        return self._sql(spark, f"RESTORE TABLE {table_ref(self.path(layer, table))} TO VERSION AS OF {int(version)}")[0].asDict()

    # --- commits of this run, change feed, counts from the log ---------------------------------

    def _writer(self, df: DataFrame):
        """A Delta writer whose commit carries this run's id."""
        return df.write.format("delta").option("userMetadata", self._run_id)

    def _sql(self, spark: SparkSession, statement: str) -> list:
        """A Delta SQL command (MERGE, OPTIMIZE, RESTORE) whose commit carries this run's id."""
        spark.conf.set("spark.databricks.delta.commitInfo.userMetadata", self._run_id)
        return spark.sql(statement).collect()

    def run_commits(self, layer: str, table: str, runs: Iterable[str] = ()) -> list[dict]:
        """This run's commits of the table (and those of the earlier `runs` it completes), oldest
        first (version, operation, ...): none outside a run or when no such run has written it."""
        if not self._run_id or not self.exists(layer, table):
            return []
        wanted = {self._run_id, *runs}
        return sorted((entry for entry in self.history(layer, table, RUN_COMMITS_LOOKBACK)
                       if entry.get("userMetadata") in wanted), key=lambda entry: entry["version"])

    def run_changes(self, spark: SparkSession, layer: str, table: str, runs: Iterable[str] = ()) -> DataFrame | None:
        """The rows this run's commits (and those of the earlier `runs`) inserted, updated or deleted
        (Delta's change feed: the table's columns with `_change_type` and `_commit_version`), read
        from the files those commits wrote; None when none of these runs made a commit of the table."""
        commits = self.run_commits(layer, table, runs)
        if not commits:
            return None
        changes = (spark.read.format("delta").option("readChangeFeed", "true")
                   .option("startingVersion", commits[0]["version"]).option("endingVersion", commits[-1]["version"])
                   .load(self.path(layer, table)))
        if runs:  # another writer's commits may lie between theirs
            changes = changes.where(F.col("_commit_version").isin([c["version"] for c in commits]))
        return changes

    def partition_counts(self, layer: str, table: str, partition_column: str) -> dict[str, int]:
        """Rows per partition of the table's current version, from its log (each data file's record
        count): no data read. Partitions without rows are absent."""
        if not self.exists(layer, table):
            return {}
        actions = pa.table(self.table(layer, table).get_add_actions(flatten=True))
        counts: dict[str, int] = {}
        for key, rows in zip(actions.column(f"partition.{partition_column}").to_pylist(),
                             actions.column("num_records").to_pylist()):
            counts[str(key)] = counts.get(str(key), 0) + (rows or 0)
        return {key: n for key, n in counts.items() if n}

    def row_count(self, layer: str, table: str) -> int:
        """Rows of the table's current version, from its log: no data read (0 when absent)."""
        if not self.exists(layer, table):
            return 0
        return sum(n or 0 for n in pa.table(self.table(layer, table).get_add_actions(flatten=True)).column("num_records").to_pylist())

    def column_max(self, layer: str, table: str, column: str):
        """The largest value of a column in the table's current version, from its log's file
        statistics (no data read); None for an empty or absent table."""
        if not self.exists(layer, table):
            return None
        actions = pa.table(self.table(layer, table).get_add_actions(flatten=True))
        if f"max.{column}" not in actions.column_names:
            return None
        return max((value for value in actions.column(f"max.{column}").to_pylist() if value is not None), default=None)


def table_ref(path: str) -> str:
    """A Delta table addressed by its path in Spark SQL (MERGE, OPTIMIZE, RESTORE): SQL reaches the
    table the same way from an in-process session and from a Spark Connect client."""
    return "delta.`" + path.replace("`", "``") + "`"


@contextmanager
def temporary_view(df: DataFrame) -> Iterator[str]:
    """The frame as a temporary view of a name of its own, for the length of the block."""
    name = f"cpa_rows_{uuid.uuid4().hex}"
    df.createOrReplaceTempView(name)
    try:
        yield name
    finally:
        df.sparkSession.catalog.dropTempView(name)


def in_keys(column: str, keys: Iterable[str]) -> str:
    """A SQL predicate: the column holds one of the keys."""
    quoted = ", ".join("'" + str(key).replace("'", "''") + "'" for key in keys)
    return f"{column} IN ({quoted})"

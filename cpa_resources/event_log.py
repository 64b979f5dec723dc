"""Dagster's SQLite event log, keeping its database connections open between events.

Dagster's `SqliteEventLogStorage` builds a new SQLAlchemy engine and opens a new SQLite connection
for every event it stores, and an asset event is stored twice (the run's database and the index).
A stream run over 60 event dates records one materialisation per asset and date, about 700
events: measured in a warm run, the engines alone cost ≈ 5 s of its 30 s.

`PooledSqliteEventLogStorage` is the same storage, same files and same layout (one database per
run under `$DAGSTER_HOME/history/runs/`, plus the index), with one engine per database kept for the
databases used last.

A step over 60 dates also records one materialisation per asset and date, each a transaction of
its own in both databases (≈ 5 ms each, measured: ≈ 3.5 s of a stream run's steps). Dagster
hands a step's per-partition events to `store_event_batch` when `DAGSTER_EVENT_BATCH_SIZE` is set,
which this storage sets (`EVENT_BATCH_SIZE`) unless the environment names a size; it stores
such a batch in one transaction per database, the same rows as one event at a time. Nothing
else changes: reads, watchers and migrations are Dagster's own."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from dagster import Field, StringSource
from dagster._core.event_api import EventLogEntry
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SQLITE_BUSY_TIMEOUT_SECONDS, SqliteEventLogStorage
from dagster._serdes.config_class import ConfigurableClassData
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine

# The index and the few runs going at once; older run databases are closed.
OPEN_DATABASES = 8
# Per-partition events of one step output stored together: a run over 60 dates at once.
EVENT_BATCH_SIZE = 100
BATCHED_EVENTS = ASSET_EVENTS | ASSET_CHECK_EVENTS


def default_base_dir() -> str:
    """Where Dagster keeps its SQLite event logs when dagster.yaml names no event log storage.

    Dagster tells a storage its config, not the instance's folder: the folder is $DAGSTER_HOME,
    as for every Dagster process. Code that opens an instance from another folder sets
    DAGSTER_HOME to it first, or names `base_dir`."""
    home = os.environ.get("DAGSTER_HOME") or os.getcwd()
    return os.path.join(home, "history", "runs", "")


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """`SqliteEventLogStorage` with an open engine per database, for the databases used last."""

    def __init__(self, base_dir: str | None = None, inst_data: ConfigurableClassData | None = None):
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", str(EVENT_BATCH_SIZE))
        super().__init__(base_dir or default_base_dir(), inst_data=inst_data)

    @classmethod
    def config_type(cls):
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]):
        return cls(inst_data=inst_data, **config_value)

    @property
    def supports_partition_subset_in_asset_materialization_planned_events(self) -> bool:
        # One "planned" event per asset for a run over a range of dates, not one per date. (Dagster
        # then leaves a failed run's dates in their last state instead of marking them failed.)
        return True

    def _engine(self, shard: str) -> Engine:
        engine = self._engines.pop(shard, None)
        if engine is None:
            # Every use holds the storage's lock, so a connection never serves two threads at once.
            engine = create_engine(
                self.conn_string_for_shard(shard),
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            )
        self._engines[shard] = engine
        while len(self._engines) > OPEN_DATABASES:
            self._engines.popitem(last=False)[1].dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """What `store_event` does for each event of a batch (asset events, and the check events
        planned with them), with the run's rows and the index's asset rows in one transaction each."""
        if not events or any(not e.is_dagster_event or e.dagster_event_type not in BATCHED_EVENTS for e in events):
            super().store_event_batch(events)  # one at a time
            return
        rows = [self._event_to_row(event) for event in events]
        for run_id in dict.fromkeys(event.run_id for event in events):
            with self.run_connection(run_id) as conn:
                conn.execute(SqlEventLogStorageTable.insert(), [row for row in rows if row["run_id"] == run_id])
        assets = [(e, row) for e, row in zip(events, rows) if e.dagster_event_type in ASSET_EVENTS]
        with self.index_transaction() as conn:
            ids = [conn.execute(SqlEventLogStorageTable.insert().values(**row)).inserted_primary_key[0] for _, row in assets]
            self._store_asset_event_tags(conn, [e for e, _ in assets], ids)
            # An asset's row keeps its latest event of each kind: each event overwrites the one
            # before, so the last of each kind, in order, leaves the row as all of them would.
            latest = {(e.dagster_event.asset_key, e.dagster_event_type): (e, i) for (e, _), i in zip(assets, ids)}
            for event, event_id in sorted(latest.values(), key=lambda pair: pair[1]):
                self._store_asset_event(conn, event, event_id)
        for event, row in zip(events, rows):
            if event.dagster_event_type in ASSET_CHECK_EVENTS:
                with self.index_connection() as conn:
                    event_id = conn.execute(SqlEventLogStorageTable.insert().values(**row)).inserted_primary_key[0]
                self.store_asset_check_event(event, event_id)

    def _close(self, shard: str | None = None) -> None:
        with self._db_lock:
            for name in [shard] if shard else list(self._engines):
                engine = self._engines.pop(name, None)
                if engine is not None:
                    engine.dispose()

    def delete_events(self, run_id: str) -> None:
        self._close(run_id)
        super().delete_events(run_id)

    def wipe(self) -> None:
        self._close()
        super().wipe()

    def dispose(self) -> None:
        self._close()
        super().dispose()

"""The lake's Delta tables: exactly the partitions asked for replaced, in one commit; new keys merged
once; small files compacted; earlier versions restorable."""

import datetime as dt
import os
import threading
import time

import dagster as dg
import pandas as pd
import pytest

from cpa_resources import LakeResource
from cpa_resources.lake import MAX_FILES_PER_PARTITION

SCHEMA = "id int, day date"


def days(lake, spark):
    frame = lake.read(spark, "gold", "t", spark.createDataFrame([], SCHEMA).schema, "day").toPandas()
    return sorted(zip(frame.day.astype(str), frame.id))


def files_per_day(lake) -> dict[str, int]:
    """Data files the table's current version names, per partition."""
    counts: dict[str, int] = {}
    for uri in lake.table("gold", "t").file_uris():
        day = uri.split("day=")[1].split("/")[0]
        counts[day] = counts.get(day, 0) + 1
    return counts


def test_replace_partitions_touches_only_the_given_keys_in_one_commit(spark, tmp_path):
    lake = LakeResource(root=str(tmp_path))
    d1, d2, d3 = dt.date(2025, 8, 1), dt.date(2025, 8, 2), dt.date(2025, 8, 3)
    lake.replace_partitions(spark.createDataFrame([(1, d1), (2, d2), (3, d3)], SCHEMA), "gold", "t", "day",
                            ["2025-08-01", "2025-08-02", "2025-08-03"])

    # d2 gets new rows, d3 is in range but has no rows any more, d1 is out of range.
    lake.replace_partitions(spark.createDataFrame([(20, d2)], SCHEMA), "gold", "t", "day", ["2025-08-02", "2025-08-03"])

    assert days(lake, spark) == [("2025-08-01", 1), ("2025-08-02", 20)]
    assert (tmp_path / "gold" / "t" / "_delta_log").is_dir()
    assert lake.version("gold", "t") == 1
    assert [entry["operation"] for entry in lake.history("gold", "t")] == ["WRITE", "WRITE"]


def test_a_row_outside_the_replaced_keys_fails_the_write_and_changes_nothing(spark, tmp_path):
    lake = LakeResource(root=str(tmp_path))
    d1, d2 = dt.date(2025, 8, 1), dt.date(2025, 8, 2)
    lake.replace_partitions(spark.createDataFrame([(1, d1)], SCHEMA), "gold", "t", "day", ["2025-08-01"])
    with pytest.raises(Exception, match="replaceWhere|does not conform|DELTA_REPLACE_WHERE"):
        lake.replace_partitions(spark.createDataFrame([(2, d1), (3, d2)], SCHEMA), "gold", "t", "day", ["2025-08-02"])
    assert days(lake, spark) == [("2025-08-01", 1)]
    assert lake.version("gold", "t") == 0


def test_merged_rows_insert_only_new_keys_and_crowded_partitions_are_compacted(spark, tmp_path):
    lake = LakeResource(root=str(tmp_path))
    schema = "event_id string, day date"
    d1, d2 = dt.date(2025, 8, 1), dt.date(2025, 8, 2)
    expected = []
    for n in range(MAX_FILES_PER_PARTITION + 5):
        rows = [(f"a{n}", d1)] + ([(f"b{n}", d2)] if n % 2 else [])
        # Every batch also carries an id the table holds already: the merge leaves it alone.
        again = [("a0", d2)] if n else []
        lake.append_partitions(spark.createDataFrame(rows + again, schema), "gold", "t", "day")
        lake.compact_partitions(spark, "gold", "t", "day")
        expected += [(str(day), i) for i, day in rows]
        assert max(files_per_day(lake).values()) <= MAX_FILES_PER_PARTITION
    frame = lake.read(spark, "gold", "t").toPandas()
    assert sorted(zip(frame.day.astype(str), frame.event_id)) == sorted(expected)
    # A busy stream's bound: partitions are left alone until they hold more files than it.
    for n in range(MAX_FILES_PER_PARTITION + 1):
        lake.append_partitions(spark.createDataFrame([(f"c{n}", d1)], schema), "gold", "t", "day")
    held = files_per_day(lake)[str(d1)]
    assert held > MAX_FILES_PER_PARTITION
    assert lake.compact_partitions(spark, "gold", "t", "day", keys=[str(d1)], most=held) == []
    assert lake.compact_partitions(spark, "gold", "t", "day", keys=[str(d1)], most=held - 1) == [str(d1)]
    assert files_per_day(lake)[str(d1)] == 1
    assert "OPTIMIZE" in [entry["operation"] for entry in lake.history("gold", "t")]
    assert "MERGE" in [entry["operation"] for entry in lake.history("gold", "t")]


def test_a_frame_read_before_a_write_keeps_reading_the_version_it_was_read_at(spark, tmp_path):
    lake = LakeResource(root=str(tmp_path))
    schema = "event_id string, day date"
    lake.append_partitions(spark.createDataFrame([("a", dt.date(2025, 8, 1))], schema), "gold", "t", "day")
    held = lake.read(spark, "gold", "t").cache()
    assert held.count() == 1
    lake.append_partitions(spark.createDataFrame([("b", dt.date(2025, 8, 1))], schema), "gold", "t", "day")
    assert held.count() == 1 and held.unionByName(lake.read(spark, "gold", "t")).count() == 3


def test_reading_missing_partitions_gives_an_empty_frame(spark, tmp_path):
    lake = LakeResource(root=str(tmp_path))
    schema = spark.createDataFrame([], SCHEMA).schema
    assert lake.read(spark, "gold", "t", schema, "day", ["2025-08-01"]).count() == 0
    assert not lake.exists("gold", "t") and lake.version("gold", "t") is None


def test_a_lake_root_may_be_a_file_uri(spark, tmp_path):
    lake = LakeResource(root=f"file://{tmp_path}")
    lake.write(spark.createDataFrame([(1, dt.date(2025, 8, 1))], SCHEMA), "gold", "t")
    assert lake.exists("gold", "t") and (tmp_path / "gold" / "t" / "_delta_log").is_dir()
    assert lake.read(spark, "gold", "t").count() == 1
    assert lake.lock_path() == tmp_path / ".cpa-lake.lock"


def test_event_files_skip_hidden_and_temporary_names(tmp_path):
    stream = tmp_path / "landing" / "usage_events_stream"
    stream.mkdir(parents=True)
    for name in ("b.jsonl", "a.jsonl", ".c.jsonl", "_d.jsonl", "e.jsonl.tmp"):
        (stream / name).write_text("")
    assert [p.name for p in LakeResource(root=str(tmp_path)).event_files()] == ["a.jsonl", "b.jsonl"]


def test_files_a_killed_writer_left_are_invisible(spark, tmp_path):
    lake = LakeResource(root=str(tmp_path))
    d1 = dt.date(2025, 8, 1)
    lake.replace_partitions(spark.createDataFrame([(1, d1)], SCHEMA), "gold", "t", "day", ["2025-08-01"])
    # A writer killed before its commit leaves data files that no version of the log names.
    orphan = tmp_path / "gold" / "t" / "day=2025-08-01" / "part-00000-killed.snappy.parquet"
    pd.DataFrame({"id": pd.Series([99], dtype="int32"), "day": [d1]}).to_parquet(orphan)
    assert days(lake, spark) == [("2025-08-01", 1)]
    lake.replace_partitions(spark.createDataFrame([(2, d1)], SCHEMA), "gold", "t", "day", ["2025-08-01"])
    assert days(lake, spark) == [("2025-08-01", 2)]


def test_a_table_restored_to_an_earlier_version_holds_its_rows_again(spark, tmp_path):
    lake = LakeResource(root=str(tmp_path))
    d1, d2 = dt.date(2025, 8, 1), dt.date(2025, 8, 2)
    lake.replace_partitions(spark.createDataFrame([(1, d1), (2, d2)], SCHEMA), "gold", "t", "day",
                            ["2025-08-01", "2025-08-02"])
    lake.replace_partitions(spark.createDataFrame([(-5, d2)], SCHEMA), "gold", "t", "day", ["2025-08-02"])
    assert days(lake, spark) == [("2025-08-01", 1), ("2025-08-02", -5)]
    lake.restore(spark, "gold", "t", 0)
    assert days(lake, spark) == [("2025-08-01", 1), ("2025-08-02", 2)]
    assert lake.version("gold", "t") == 2 and lake.history("gold", "t", 1)[0]["operation"] == "RESTORE"


def test_a_run_waits_for_the_lake_while_another_run_holds_it(tmp_path):
    lake = LakeResource(root=str(tmp_path))
    finished = []

    @dg.asset
    def writer(lake: LakeResource) -> None:
        finished.append(time.monotonic())

    held = lake.hold_lock("a stream run")
    released_at = None
    run = threading.Thread(target=lambda: dg.materialize([writer], resources={"lake": lake}))
    try:
        run.start()
        time.sleep(2)
        assert not finished, "a second run wrote while the lake was held"
        released_at = time.monotonic()
    finally:
        os.close(held)
    run.join(60)
    assert finished and finished[0] >= released_at
    assert lake.lock_holder()["holder"] != "a stream run"


def test_every_asset_takes_the_lake_resource_so_every_run_of_them_holds_the_lake():
    from cpa_assets.definitions import defs

    for assets_def in defs.resolve_asset_graph().assets_defs:
        assert "lake" in assets_def.required_resource_keys, assets_def.keys


def test_upsert_replaces_or_adds_to_rows_by_key_and_inserts_new_keys(spark, tmp_path):
    lake = LakeResource(root=str(tmp_path))
    schema = "org string, service string, cost double, day date"
    d1, d2 = dt.date(2025, 8, 1), dt.date(2025, 8, 2)
    lake.replace_partitions(spark.createDataFrame([("a", "x", 1.0, d1), ("a", None, 2.0, d1), ("b", "x", 3.0, d2)], schema),
                            "gold", "t", "day", ["2025-08-01", "2025-08-02"])
    keys = ["org", "service", "day"]
    # A null in the key is a key like any other: the row with it is added to, not doubled.
    lake.upsert(spark.createDataFrame([("a", None, 0.5, d1), ("c", "y", 4.0, d1)], schema), "gold", "t", keys, "day", add=["cost"])
    lake.upsert(spark.createDataFrame([("b", "x", 9.0, d2)], schema), "gold", "t", keys, "day")
    rows = sorted((r.org, r.service or "-", r.cost, str(r.day)) for r in lake.read(spark, "gold", "t").collect())
    assert rows == [("a", "-", 2.5, "2025-08-01"), ("a", "x", 1.0, "2025-08-01"), ("b", "x", 9.0, "2025-08-02"),
                    ("c", "y", 4.0, "2025-08-01")]
    assert lake.partition_counts("gold", "t", "day") == {"2025-08-01": 3, "2025-08-02": 1}
    assert lake.column_max("gold", "t", "org") == "c" and lake.row_count("gold", "t") == 4


def test_replace_where_replaces_only_the_rows_matching_its_predicate(spark, tmp_path):
    lake = LakeResource(root=str(tmp_path))
    schema = "org string, cost double, day date"
    d1, d2 = dt.date(2025, 8, 1), dt.date(2025, 8, 2)
    lake.replace_partitions(spark.createDataFrame([("a", 1.0, d1), ("b", 2.0, d1), ("a", 3.0, d2)], schema),
                            "gold", "t", "day", ["2025-08-01", "2025-08-02"])
    lake.replace_where(spark.createDataFrame([("a", 10.0, d1)], schema), "gold", "t", "day",
                       "day >= '2025-08-01' AND day <= '2025-08-02' AND org IN ('a')")
    rows = sorted((r.org, r.cost, str(r.day)) for r in lake.read(spark, "gold", "t").collect())
    assert rows == [("a", 10.0, "2025-08-01"), ("b", 2.0, "2025-08-01")]


class _Run:
    def __init__(self, run_id, tags=None):
        self.run_id, self.tags = run_id, tags or {}


class _Context:
    def __init__(self, run):
        self.run, self.log = run, None


def test_a_run_finds_its_own_commits_and_what_they_changed(spark, tmp_path):
    lake = LakeResource(root=str(tmp_path))
    schema = "event_id string, day date"
    d1 = dt.date(2025, 8, 1)
    lake.append_partitions(spark.createDataFrame([("a", d1)], schema), "bronze", "t", "day")  # outside any run
    lake.setup_for_execution(_Context(_Run("run-1")))
    try:
        assert lake.run_commits("bronze", "t") == [] and lake.run_changes(spark, "bronze", "t") is None
        lake.append_partitions(spark.createDataFrame([("a", d1), ("b", d1)], schema), "bronze", "t", "day")
        commits = lake.run_commits("bronze", "t")
        assert [c["operation"] for c in commits] == ["MERGE"]
        changes = lake.run_changes(spark, "bronze", "t").collect()
        assert [(r.event_id, r._change_type) for r in changes] == [("b", "insert")]
    finally:
        lake.teardown_after_execution(None)
    # A re-execution of run-1 (Dagster tags it with its root run) sees run-1's commits as its own.
    lake.setup_for_execution(_Context(_Run("run-2", {"dagster/root_run_id": "run-1"})))
    try:
        assert len(lake.run_commits("bronze", "t")) == 1
    finally:
        lake.teardown_after_execution(None)

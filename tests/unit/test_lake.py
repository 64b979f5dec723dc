"""The lake's Delta tables: exactly the partitions asked for replaced, in one commit; new keys merged
once; small files compacted; earlier versions restorable."""

import datetime as dt
import os
import threading
import time

import dagster as dg
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
        touched = lake.append_partitions(spark.createDataFrame(rows + again, schema), "gold", "t", "day")
        assert touched == ["2025-08-01", "2025-08-02"][: len(rows + again) if n else 1]
        lake.compact_partitions(spark, "gold", "t", "day", touched)
        expected += [(str(day), i) for i, day in rows]
        assert max(files_per_day(lake).values()) <= MAX_FILES_PER_PARTITION
    frame = lake.read(spark, "gold", "t").toPandas()
    assert sorted(zip(frame.day.astype(str), frame.event_id)) == sorted(expected)
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
    spark.createDataFrame([(99, d1)], SCHEMA).toPandas().to_parquet(orphan)
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

"""The lake replaces exactly the partitions it is asked to, and nothing else."""

import datetime as dt
import os
import threading
import time
from pathlib import Path

import dagster as dg

from cpa_resources import LakeResource
from cpa_resources.lake import LEFTOVER_AGE_SECONDS, MAX_FILES_PER_PARTITION, _sweep_leftovers

SCHEMA = "id int, day date"


def days(lake, spark):
    frame = lake.read(spark, "gold", "t", spark.createDataFrame([], SCHEMA).schema, "day").toPandas()
    return sorted(zip(frame.day.astype(str), frame.id))


def test_replace_partitions_touches_only_the_given_keys(spark, tmp_path):
    lake = LakeResource(root=str(tmp_path))
    d1, d2, d3 = dt.date(2025, 8, 1), dt.date(2025, 8, 2), dt.date(2025, 8, 3)
    lake.replace_partitions(spark.createDataFrame([(1, d1), (2, d2), (3, d3)], SCHEMA), "gold", "t", "day",
                            ["2025-08-01", "2025-08-02", "2025-08-03"])

    # d2 gets new rows, d3 is in range but has no rows any more, d1 is out of range.
    lake.replace_partitions(spark.createDataFrame([(20, d2)], SCHEMA), "gold", "t", "day", ["2025-08-02", "2025-08-03"])

    assert days(lake, spark) == [("2025-08-01", 1), ("2025-08-02", 20)]
    assert not any(p.name.startswith(".") for p in (tmp_path / "gold" / "t").iterdir())


def test_appended_rows_join_their_partitions_and_crowded_partitions_are_compacted(spark, tmp_path):
    lake = LakeResource(root=str(tmp_path))
    schema = spark.createDataFrame([], SCHEMA).schema
    d1, d2 = dt.date(2025, 8, 1), dt.date(2025, 8, 2)
    expected = []
    for n in range(MAX_FILES_PER_PARTITION + 5):
        rows = [(n, d1)] + ([(100 + n, d2)] if n % 2 else [])
        touched = lake.append_partitions(spark.createDataFrame(rows, SCHEMA), "gold", "t", "day")
        assert touched == ["2025-08-01", "2025-08-02"][: len(rows)]
        lake.compact_partitions(spark, "gold", "t", schema, "day", touched)
        expected += [(str(day), i) for i, day in rows]
        files = {p.parent.name: len(list(p.parent.glob("*.parquet"))) for p in (tmp_path / "gold" / "t").glob("*/*.parquet")}
        assert max(files.values()) <= MAX_FILES_PER_PARTITION
    assert days(lake, spark) == sorted(expected)
    # Day 1 got a file every time and was compacted; day 2 got one every other time.
    assert len(list((tmp_path / "gold" / "t" / "day=2025-08-01").glob("*.parquet"))) < MAX_FILES_PER_PARTITION + 5
    assert not any(p.name.startswith(".") for p in (tmp_path / "gold" / "t").iterdir())


def test_reading_missing_partitions_gives_an_empty_frame(spark, tmp_path):
    lake = LakeResource(root=str(tmp_path))
    schema = spark.createDataFrame([], SCHEMA).schema
    assert lake.read(spark, "gold", "t", schema, "day", ["2025-08-01"]).count() == 0


def test_event_files_skip_hidden_and_temporary_names(tmp_path):
    stream = tmp_path / "landing" / "usage_events_stream"
    stream.mkdir(parents=True)
    for name in ("b.jsonl", "a.jsonl", ".c.jsonl", "_d.jsonl", "e.jsonl.tmp"):
        (stream / name).write_text("")
    assert [p.name for p in LakeResource(root=str(tmp_path)).event_files()] == ["a.jsonl", "b.jsonl"]


def test_a_killed_writers_leftovers_are_invisible_and_swept_once_old(spark, tmp_path):
    lake = LakeResource(root=str(tmp_path))
    d1 = dt.date(2025, 8, 1)
    lake.replace_partitions(spark.createDataFrame([(1, d1)], SCHEMA), "gold", "t", "day", ["2025-08-01"])
    table = tmp_path / "gold" / "t"
    fresh, stale = table / ".staging-fresh" / "day=2025-08-01", table / ".old-day=2025-08-01-stale"
    for leftover in (fresh, stale):
        leftover.mkdir(parents=True)
        (leftover / "part-0.parquet").write_bytes(b"half written")
    old = time.time() - LEFTOVER_AGE_SECONDS - 60
    os.utime(stale, (old, old))
    assert days(lake, spark) == [("2025-08-01", 1)]

    lake.replace_partitions(spark.createDataFrame([(2, d1)], SCHEMA), "gold", "t", "day", ["2025-08-01"])
    assert days(lake, spark) == [("2025-08-01", 2)]
    # A young leftover may belong to a writer still at work; an old one cannot.
    assert sorted(p.name for p in table.iterdir() if p.name.startswith(".")) == [".staging-fresh"]


def test_sweeping_skips_a_staging_folder_another_writer_swaps_in_meanwhile(tmp_path, monkeypatch):
    # Tables of one step are written side by side: a folder listed a moment ago may be gone.
    folder = tmp_path / "silver"
    folder.mkdir()
    stale = folder / ".staging-resources-old"
    stale.mkdir()
    os.utime(stale, (0, 0))
    listed = [folder / ".staging-users-just-swapped", stale]
    monkeypatch.setattr(Path, "iterdir", lambda self: iter(listed))
    _sweep_leftovers(folder)
    assert not stale.exists()


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

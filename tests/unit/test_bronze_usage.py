"""Bronze usage parsing: every landing line ends as an event, a reject with its reason, or a duplicate."""

import json
from pathlib import Path

import pytest

from cpa_assets.bronze.usage import (
    BRONZE_SCHEMA, FILE_COUNTS_SCHEMA, LandingFiles, PlannedFile, ledger_extension, new_files_ledger,
    parse_events, read_event_lines, run_files, split_events, waiting_files,
)
from cpa_resources import LakeResource

FIRST, LAST = "2025-01-01", "2026-12-31"


def event(event_id="evt_1", **overrides) -> dict:
    base = {
        "event_id": event_id, "timestamp": "2025-08-18T14:04:00Z", "org_id": "org_a", "resource_id": "res_a",
        "service": "compute", "region": "us-east", "metric": "requests", "value": 12.5, "unit": "count",
        "cost_usd_increment": 0.5, "schema_version": 1,
    }
    return {**base, **overrides}


def write(folder: Path, name: str, lines: list) -> Path:
    path = folder / name
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def split(spark, files):
    events, rejects, duplicates = split_events(parse_events(read_event_lines(spark, files), FIRST, LAST))
    return events.toPandas(), rejects.toPandas(), duplicates.toPandas()


def test_bad_lines_are_rejected_with_reason_file_and_raw_line(spark, tmp_path):
    bad_json = '{"event_id": "evt_x", "timestamp": '
    no_id = json.dumps(event(event_id=None))
    bad_time = json.dumps(event("evt_t", timestamp="18/08/2025 14:04"))
    path = write(tmp_path, "a.jsonl", [event("evt_1"), bad_json, no_id, bad_time, event("evt_2")])

    events, rejects, duplicates = split(spark, [path])

    assert sorted(events.event_id) == ["evt_1", "evt_2"]
    assert duplicates.empty
    by_line = rejects.set_index("line_no")
    assert by_line.loc[2, "reason"] == "malformed_json" and by_line.loc[2, "raw_line"] == bad_json
    assert by_line.loc[3, "reason"] == "missing_event_id" and by_line.loc[3, "raw_line"] == no_id
    assert by_line.loc[4, "reason"] == "bad_timestamp" and by_line.loc[4, "raw_line"] == bad_time
    assert set(rejects.source_file) == {"a.jsonl"}


def test_value_stays_text_whatever_its_json_type(spark, tmp_path):
    path = write(tmp_path, "a.jsonl", [event("e1", value=2.4547), event("e2", value="12.5"), event("e3", value=None),
                                       event("e4", value="n/a")])
    events, _, _ = split(spark, [path])
    assert dict(zip(events.event_id, events.value)) == {"e1": "2.4547", "e2": "12.5", "e3": None, "e4": "n/a"}


def test_unknown_keys_and_v2_fields_do_not_break_parsing(spark, tmp_path):
    v2 = event("e2", schema_version=2, carbon_kg=0.0005, genai_tokens=347, service="genai")
    v3 = {**event("e3", schema_version=3), "pricing_model": {"tier": "spot"}, "carbon_kg": 0.1}
    events, rejects, _ = split(spark, [write(tmp_path, "a.jsonl", [event("e1"), v2, v3])])
    assert rejects.empty
    row = events.set_index("event_id")
    assert row.loc["e2", "genai_tokens"] == 347 and row.loc["e3", "schema_version"] == 3
    assert row.loc["e1", "carbon_kg"] != row.loc["e1", "carbon_kg"]  # NaN: v1 has no carbon_kg


def test_first_arrival_wins_within_and_across_files(spark, tmp_path):
    first = write(tmp_path, "events_0001.jsonl", [event("e1", cost_usd_increment=1.0), event("e1", cost_usd_increment=2.0)])
    second = write(tmp_path, "events_0002.jsonl", [event("e1", cost_usd_increment=3.0), event("e2")])
    events, rejects, duplicates = split(spark, [second, first])

    assert events.set_index("event_id").loc["e1", "cost_usd_increment"] == 1.0
    assert sorted(zip(duplicates.source_file, duplicates.line_no)) == [("events_0001.jsonl", 2), ("events_0002.jsonl", 1)]
    assert set(duplicates.kept_source_file) == {"events_0001.jsonl"} and set(duplicates.kept_line_no) == {1}
    assert rejects.empty


def test_blank_lines_empty_files_and_a_truncated_last_line(spark, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    truncated = tmp_path / "cut.jsonl"
    truncated.write_text(json.dumps(event("e1")) + "\n\n" + json.dumps(event("e2"))[:40])
    events, rejects, _ = split(spark, [empty, truncated])
    assert list(events.event_id) == ["e1"]
    assert list(zip(rejects.line_no, rejects.reason)) == [(3, "malformed_json")]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"cost_usd_increment": "abc"}, "bad_number:cost_usd_increment"),
        ({"genai_tokens": 1.5}, "bad_number:genai_tokens"),
        ({"timestamp": "1999-12-31T23:00:00Z"}, "event_date_out_of_range"),
    ],
)
def test_unusable_fields_are_rejected_not_silently_nulled(spark, tmp_path, overrides, reason):
    _, rejects, _ = split(spark, [write(tmp_path, "a.jsonl", [event("e1", **overrides)])])
    assert list(rejects.reason) == [reason]


def test_every_line_is_accounted_for(spark, tmp_path):
    lines = [event("e1"), "{oops", event("e1"), event(None), event("e2"), "", event("e3", timestamp="later")]
    events, rejects, duplicates = split(spark, [write(tmp_path, "a.jsonl", lines)])
    non_blank = sum(1 for line in lines if line != "")
    assert len(events) + len(rejects) + len(duplicates) == non_blank


def test_single_quoted_lines_are_not_json(spark, tmp_path):
    line = str(event("e1"))  # a Python repr: single quotes, None
    _, rejects, _ = split(spark, [write(tmp_path, "a.jsonl", [line])])
    assert list(rejects.reason) == ["malformed_json"]


def test_a_run_reads_the_ledger_files_and_its_planned_files_as_planned(spark, tmp_path):
    stream = tmp_path / "landing" / "usage_events_stream"
    stream.mkdir(parents=True)
    for name in ("a.jsonl", "b.jsonl", "c.jsonl", "d.jsonl"):
        (stream / name).write_text("")
    lake = LakeResource(root=str(tmp_path / "lake"), landing=str(tmp_path / "landing"))
    ledger = spark.createDataFrame(
        [("a.jsonl", 0, 0, 0, 0, 7, 70, None, None)], FILE_COUNTS_SCHEMA)
    lake.write(ledger, "bronze", "usage_events_file_counts")
    planned = LandingFiles(files=[PlannedFile(name="c.jsonl", size=3, mtime_ns=30),
                                  PlannedFile(name="gone.jsonl", size=1, mtime_ns=1)])
    # b.jsonl landed after the plan: the next run's. d.jsonl likewise.
    assert {f.name: stats for f, stats in run_files(lake, planned).items()} == {"a.jsonl": (7, 70), "c.jsonl": (3, 30)}
    everything = run_files(lake, LandingFiles())
    assert [f.name for f in everything] == ["a.jsonl", "b.jsonl", "c.jsonl", "d.jsonl"]
    assert everything[stream / "b.jsonl"] == (0, (stream / "b.jsonl").stat().st_mtime_ns)


def test_files_no_run_has_taken_wait_and_put_compaction_off(tmp_path):
    stream = tmp_path / "landing" / "usage_events_stream"
    stream.mkdir(parents=True)
    for name in ("a.jsonl", "b.jsonl", ".c.jsonl.tmp"):
        (stream / name).write_text("")
    lake = LakeResource(root=str(tmp_path / "lake"), landing=str(tmp_path / "landing"))
    assert waiting_files(lake, {"a.jsonl": _ledger_row()}) == ["b.jsonl"]  # a file still being written does not count
    assert waiting_files(lake, {"a.jsonl": _ledger_row(), "b.jsonl": _ledger_row()}) == []


def _ledger_row(lines=2, bronze=1, rejects=1, duplicates=0, size=10, mtime_ns=100) -> dict:
    return {"lines_read": lines, "bronze_rows": bronze, "rejects": rejects, "duplicates": duplicates,
            "size": size, "mtime_ns": mtime_ns}


def test_the_ledger_is_extended_only_by_files_after_all_it_holds():
    a, b, c = Path("a.jsonl"), Path("b.jsonl"), Path("c.jsonl")
    ledger = {"b.jsonl": _ledger_row()}
    appending = LandingFiles(appended=["c.jsonl"])
    assert ledger_extension(appending, ledger, {b: (10, 100), c: (5, 50)}) == [c]
    # Recompute: a backfill or UI run, no ledger yet, a new file sorting before a held one, a held
    # file changed or gone, a ledger that does not balance.
    assert ledger_extension(LandingFiles(), ledger, {b: (10, 100), c: (5, 50)}) == []
    assert ledger_extension(appending, {}, {b: (10, 100), c: (5, 50)}) == []
    assert ledger_extension(appending, ledger, {a: (5, 50), b: (10, 100), c: (5, 50)}) == []
    assert ledger_extension(appending, ledger, {b: (11, 100), c: (5, 50)}) == []
    assert ledger_extension(appending, ledger, {c: (5, 50)}) == []
    assert ledger_extension(appending, {"b.jsonl": _ledger_row(bronze=0)}, {b: (10, 100), c: (5, 50)}) == []
    assert ledger_extension(appending, ledger, {b: (10, 100)}) == []


def test_a_new_files_ledger_equals_its_part_of_one_parsed_from_every_file(spark, tmp_path):
    old = write(tmp_path, "a.jsonl", [event("e1"), event("e2"), "{oops"])
    # e1 again (kept in a.jsonl) twice, a reject, e3 twice (the first kept), a new e4.
    new = write(tmp_path, "b.jsonl", [event("e1"), event("e3"), "{bad", event("e1"), event("e3"), event("e4")])
    lake = LakeResource(root=str(tmp_path / "lake"), landing=str(tmp_path / "landing"))
    events, _, _ = split_events(parse_events(read_event_lines(spark, [old]), FIRST, LAST))
    lake.replace_partitions(events, "bronze", "usage_events", "event_date", ["2025-08-18"])
    new_events, _, _ = split_events(parse_events(read_event_lines(spark, [new]), FIRST, LAST))
    lake.append_partitions(new_events, "bronze", "usage_events", "event_date")

    bronze = lake.read(spark, "bronze", "usage_events", BRONZE_SCHEMA, "event_date")
    kept = bronze.where(bronze.source_file == "b.jsonl")  # what the append inserted
    rejects, duplicates = (frame.toPandas() for frame in new_files_ledger(spark, lake, [new], kept))
    _, every_reject, every_duplicate = split(spark, [old, new])

    def rows(frame, columns):
        return sorted(map(tuple, frame[frame.source_file == "b.jsonl"][columns].astype(str).values.tolist()))

    assert rows(rejects, ["source_file", "line_no", "reason"]) == rows(every_reject, ["source_file", "line_no", "reason"])
    columns = ["event_id", "source_file", "line_no", "kept_source_file", "kept_line_no", "event_date"]
    assert rows(duplicates, columns) == rows(every_duplicate, columns)
    assert len(duplicates) == 3 and set(duplicates.kept_source_file) == {"a.jsonl", "b.jsonl"}

"""The usage-events sensor as a pure function of (cursor, listing): each file planned exactly once."""

import json
import subprocess
import threading
import time

import dagster as dg
from dagster._core.events import EngineEventData
from dagster._core.utils import make_new_run_id

from cpa_assets import sensors
from cpa_assets.definitions import build_definitions
from cpa_assets.sensors import DOWNSTREAM_DAYS, Delivered, plan_stream_run, process_gone, usage_events_sensor
from cpa_resources import LakeResource

START, END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
DATES = {"a.jsonl": {"2025-07-10", "2025-07-20"}, "b.jsonl": {"2025-07-01"}, "c.jsonl": {"2025-09-30"}, "e.jsonl": set()}


def plan(cursor, *files):
    return plan_stream_run(cursor, list(files), DATES.__getitem__)


def test_first_file_plans_its_dates_and_the_windows_that_read_them():
    request, cursor = plan(None, Delivered("a.jsonl", 10, 1))
    # The last date seen caps the range: later windows have no data yet.
    assert (request.tags[START], request.tags[END]) == ("2025-07-10", "2025-07-20")
    assert json.loads(cursor) == {"files": {"a.jsonl": [10, 1]}, "last_date": "2025-07-20"}


def test_same_listing_again_plans_nothing():
    _, cursor = plan(None, Delivered("a.jsonl", 10, 1))
    request, again = plan(cursor, Delivered("a.jsonl", 10, 1))
    assert request is None and json.loads(again) == json.loads(cursor)


def test_a_late_file_updates_its_old_dates_and_the_windows_after_them():
    _, cursor = plan(None, Delivered("a.jsonl", 10, 1))
    request, _ = plan(cursor, Delivered("a.jsonl", 10, 1), Delivered("b.jsonl", 5, 2))
    assert (request.tags[START], request.tags[END]) == ("2025-07-01", "2025-07-20")
    assert request.tags["cpa/files"] == "b.jsonl"


def test_a_file_bringing_a_new_date_extends_the_range():
    _, cursor = plan(None, Delivered("a.jsonl", 10, 1))
    request, cursor = plan(cursor, Delivered("a.jsonl", 10, 1), Delivered("c.jsonl", 5, 3))
    assert (request.tags[START], request.tags[END]) == ("2025-09-30", "2025-09-30")
    assert json.loads(cursor)["last_date"] == "2025-09-30"
    assert DOWNSTREAM_DAYS == 28


def test_a_rewritten_file_is_planned_again_and_an_undatable_one_updates_the_ledger():
    _, cursor = plan(None, Delivered("a.jsonl", 10, 1))
    rewritten, cursor = plan(cursor, Delivered("a.jsonl", 12, 9))
    assert rewritten is not None and rewritten.run_key
    empty, _ = plan(cursor, Delivered("a.jsonl", 12, 9), Delivered("e.jsonl", 0, 4))
    assert START not in empty.tags
    assert {k.path[-1] for k in empty.asset_selection} == {"usage_events_rejects", "usage_events_duplicates", "usage_events_file_counts"}


def test_a_run_reads_exactly_the_files_listed_when_it_was_planned():
    _, cursor = plan(None, Delivered("a.jsonl", 10, 1))
    request, cursor = plan(cursor, Delivered("b.jsonl", 5, 2), Delivered("a.jsonl", 10, 1))
    configs = {op: c["config"].get("files") for op, c in request.run_config["ops"].items()}
    assert configs == {
        "bronze__usage_events": ["a.jsonl", "b.jsonl"],
        "silver_usage_events": None,
        "bronze_usage_events_ledger": ["a.jsonl", "b.jsonl"],
    }
    # A run that only updates the ledger configures only the ledger's op.
    empty, _ = plan(cursor, Delivered("a.jsonl", 10, 1), Delivered("b.jsonl", 5, 2), Delivered("e.jsonl", 0, 4))
    assert list(empty.run_config["ops"]) == ["bronze_usage_events_ledger"]


def appended(request) -> dict[str, list[str]]:
    ops = request.run_config["ops"]
    return {op: ops[op]["config"]["appended"] for op in ("bronze__usage_events", "silver_usage_events")}


def test_files_named_after_every_file_seen_are_appended_any_other_is_recomputed():
    first, cursor = plan(None, Delivered("b.jsonl", 5, 2))
    assert appended(first) == {"bronze__usage_events": [], "silver_usage_events": []}  # nothing seen yet
    later, after_c = plan(cursor, Delivered("b.jsonl", 5, 2), Delivered("c.jsonl", 5, 3))
    assert appended(later) == {"bronze__usage_events": ["c.jsonl"], "silver_usage_events": ["c.jsonl"]}
    # A name sorting before one already seen can displace first arrivals: its dates are recomputed.
    out_of_order, _ = plan(after_c, Delivered("a.jsonl", 10, 1), Delivered("b.jsonl", 5, 2), Delivered("c.jsonl", 5, 3))
    assert appended(out_of_order) == {"bronze__usage_events": [], "silver_usage_events": []}
    # So is a file delivered again with new content.
    again, _ = plan(after_c, Delivered("b.jsonl", 5, 2), Delivered("c.jsonl", 6, 4))
    assert appended(again) == {"bronze__usage_events": [], "silver_usage_events": []}


def test_sensor_reads_the_folder_and_keeps_its_cursor(tmp_path, monkeypatch):
    monkeypatch.setattr(sensors, "WAIT_FOR_FILES_SECONDS", 0.5)
    stream = tmp_path / "landing" / "usage_events_stream"
    stream.mkdir(parents=True)
    (stream / "f1.jsonl").write_text('{"event_id": "e1", "timestamp": "2025-08-01T10:00:00Z"}\n')
    (stream / ".f2.jsonl.tmp").write_text('{"event_id": "e2", "timestamp": "2025-08-02T10:00:00Z"}\n')
    lake = LakeResource(root=str(tmp_path / "lake"), landing=str(tmp_path / "landing"))
    instance = dg.DagsterInstance.ephemeral()
    context = dg.build_sensor_context(instance=instance, resources={"lake": lake}, definitions=build_definitions(lake=lake))
    result = usage_events_sensor(context)
    assert len(result.run_requests) == 1
    assert result.run_requests[0].tags[START] == result.run_requests[0].tags[END] == "2025-08-01"
    started = time.monotonic()
    again = usage_events_sensor(dg.build_sensor_context(instance=instance, resources={"lake": lake}, cursor=result.cursor))
    assert again.run_requests == [] and time.monotonic() - started >= 0.5  # it watched the folder meanwhile


def test_a_tick_that_finds_nothing_new_plans_a_file_the_moment_it_lands(tmp_path, monkeypatch):
    monkeypatch.setattr(sensors, "WAIT_FOR_FILES_SECONDS", 30)
    stream = tmp_path / "landing" / "usage_events_stream"
    stream.mkdir(parents=True)
    (stream / "f1.jsonl").write_text('{"event_id": "e1", "timestamp": "2025-08-01T10:00:00Z"}\n')
    lake = LakeResource(root=str(tmp_path / "lake"), landing=str(tmp_path / "landing"))
    instance = dg.DagsterInstance.ephemeral()
    first = usage_events_sensor(dg.build_sensor_context(instance=instance, resources={"lake": lake}))

    def land():
        time.sleep(1)
        (stream / ".f2.jsonl.tmp").write_text('{"event_id": "e2", "timestamp": "2025-08-02T10:00:00Z"}\n')
        (stream / ".f2.jsonl.tmp").rename(stream / "f2.jsonl")

    lander = threading.Thread(target=land)
    started = time.monotonic()
    lander.start()
    tick = usage_events_sensor(dg.build_sensor_context(instance=instance, resources={"lake": lake}, cursor=first.cursor))
    waited = time.monotonic() - started
    lander.join()
    assert [r.tags["cpa/files"] for r in tick.run_requests] == ["f2.jsonl"]
    assert 1 <= waited < 3


def _started_stream_run(instance, worker_pid: int) -> dg.DagsterRun:
    run = dg.DagsterRun(
        job_name="usage_stream", run_id=make_new_run_id(), status=dg.DagsterRunStatus.STARTED,
        tags={START: "2025-08-01", END: "2025-08-20", "cpa/files": "f1.jsonl", "cpa/lake": "usage"},
        run_config={"ops": {"bronze__usage_events": {"config": {"files": ["f1.jsonl"], "appended": ["f1.jsonl"]}},
                            "silver_usage_events": {"config": {"appended": ["f1.jsonl"]}}}},
    )
    instance.add_run(run)
    instance.report_engine_event(f"Started process for run (pid: {worker_pid}).", run, EngineEventData.in_process(worker_pid))
    return run


def test_process_gone_tells_a_live_process_from_a_killed_one():
    worker = subprocess.Popen(["sleep", "60"])
    assert not process_gone(worker.pid)
    worker.kill()
    time.sleep(0.2)  # not reaped yet: a zombie is gone too
    assert process_gone(worker.pid)
    worker.wait()
    assert process_gone(worker.pid)


def test_a_stream_run_whose_worker_died_is_failed_and_requested_again(tmp_path):
    lake = LakeResource(root=str(tmp_path / "lake"), landing=str(tmp_path / "landing"))
    # A persistent instance with Dagster's default run launcher, as `make run` uses.
    (tmp_path / "dagster").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp_path / "dagster"))
    worker = subprocess.Popen(["sleep", "60"])
    worker.kill()
    worker.wait()
    dead = _started_stream_run(instance, worker.pid)
    survivor = subprocess.Popen(["sleep", "60"])
    try:
        alive = _started_stream_run(instance, survivor.pid)
        result = usage_events_sensor(dg.build_sensor_context(instance=instance, resources={"lake": lake}))
    finally:
        survivor.kill()
        survivor.wait()
    assert [r.tags["cpa/reruns"] for r in result.run_requests] == [dead.run_id]
    rerun = result.run_requests[0]
    assert (rerun.tags[START], rerun.tags[END], rerun.tags["cpa/files"]) == ("2025-08-01", "2025-08-20", "f1.jsonl")
    assert rerun.run_key == f"rerun-{dead.run_id}"
    # The dead run may have appended part of its file: the rerun recomputes its dates instead.
    assert rerun.run_config == {"ops": {"bronze__usage_events": {"config": {"files": ["f1.jsonl"]}},
                                        "silver_usage_events": {"config": {}}}}
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED

"""The usage-events sensor as a pure function of (cursor, what it sees): each file planned exactly
once, failed runs repaired, the cursor small."""

import datetime as dt
import json
import os
import subprocess
import threading
import time

import dagster as dg
from dagster._core.events import EngineEventData
from dagster._core.utils import make_new_run_id

from cpa_assets import sensors
from cpa_assets.definitions import build_definitions
from cpa_assets.bronze.usage import KEEPING_BOOKS_TAG
from cpa_assets.gold.tail import DEFERRED_TAG, FOLLOWS_TAG, P1_SERVED_TAG, still_to_follow
from cpa_assets.increments import UsageRun
from cpa_assets.sensors import (
    DOWNSTREAM_DAYS, FOLLOWING_OPS, TAIL_ASSETS, TAIL_OPS, DeferredTail, Delivered, FailedRun, Tick, plan_stream_run,
    process_gone, usage_events_sensor,
)
from cpa_resources import LakeResource

START, END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
DATES = {"a.jsonl": {"2025-07-10", "2025-07-20"}, "b.jsonl": {"2025-07-01"}, "c.jsonl": {"2025-09-30"}, "e.jsonl": set()}
NOW = 1_000_000.0


def plan(cursor, *files, ledger=None, failed=(), busy=False, now=NOW, fresh=False, deferred=None):
    tick = Tick(list(files), ledger or {}, list(failed), busy, now, snapshots_missing=fresh, deferred=deferred)
    return plan_stream_run(cursor, tick, lambda name: DATES.get(name, {"2025-07-15"}))


def recorded(*files: Delivered, first="2025-07-10", last="2025-07-20") -> dict:
    """The landing ledger after a run read these files."""
    return {f.name: {"source_file": f.name, "size": f.size, "mtime_ns": f.mtime_ns, "first_date": dt.date.fromisoformat(first),
                     "last_date": dt.date.fromisoformat(last)} for f in files}


def files_of(request) -> list[str]:
    return [f["name"] for f in request.run_config["ops"]["bronze_usage_events_ledger"]["config"]["files"]]


def appended(request) -> dict[str, list[str]]:
    ops = request.run_config["ops"]
    # The ledger extends itself, and every later step follows bronze's changes, exactly when bronze appends.
    for op in ("bronze_usage_events_ledger", *FOLLOWING_OPS):
        assert ops[op]["config"]["appended"] == ops["bronze__usage_events"]["config"]["appended"], op
    return {op: ops[op]["config"]["appended"] for op in ("bronze__usage_events", "silver_usage_events")}


A, B, C, E = Delivered("a.jsonl", 10, 1), Delivered("b.jsonl", 5, 2), Delivered("c.jsonl", 5, 3), Delivered("e.jsonl", 0, 4)


def test_first_file_plans_its_dates_and_the_windows_that_read_them():
    request, cursor = plan(None, A)
    # The last date seen caps the range: later windows have no data yet.
    assert (request.tags[START], request.tags[END]) == ("2025-07-10", "2025-07-20")
    assert files_of(request) == ["a.jsonl"]
    assert json.loads(cursor)["pending"] == {"a.jsonl": [10, 1, NOW]}


def test_a_stream_run_on_a_fresh_lake_loads_the_snapshots_silver_joins_with():
    usual, _ = plan(None, A)
    keys = {key.to_user_string() for key in usual.asset_selection}
    assert "bronze/usage_events" in keys and "cassandra/org_daily_usage_by_service" in keys
    assert not keys & {"bronze/customers_orgs", "bronze/resources", "cassandra/tickets_by_org_date"}
    fresh, _ = plan(None, A, fresh=True)
    assert fresh.asset_selection is None  # the whole job, the org and resource snapshots included
    job = build_definitions().resolve_job_def("usage_stream")
    assert {"bronze/customers_orgs", "bronze/resources"} <= {k.to_user_string() for k in job.asset_layer.selected_asset_keys}


def test_a_file_in_flight_or_in_the_ledger_is_not_planned_again():
    _, cursor = plan(None, A)
    request, again = plan(cursor, A)
    assert request is None and json.loads(again)["pending"] == json.loads(cursor)["pending"]
    # Once the ledger records the file, the cursor forgets it.
    request, after = plan(again, A, ledger=recorded(A))
    assert request is None and json.loads(after)["pending"] == {}


def test_after_a_backfill_the_first_tick_plans_nothing():
    request, cursor = plan(None, A, B, ledger=recorded(A, B))
    assert request is None and json.loads(cursor)["pending"] == {}


def test_a_late_file_updates_its_old_dates_and_the_windows_after_them():
    request, _ = plan(None, A, B, ledger=recorded(A))
    assert (request.tags[START], request.tags[END]) == ("2025-07-01", "2025-07-20")
    assert request.tags["cpa/files"] == "b.jsonl" and files_of(request) == ["b.jsonl"]


def test_a_file_bringing_a_new_date_extends_the_range():
    request, cursor = plan(None, A, C, ledger=recorded(A))
    assert (request.tags[START], request.tags[END]) == ("2025-09-30", "2025-09-30")
    assert json.loads(cursor)["last_date"] == "2025-09-30"
    assert DOWNSTREAM_DAYS == 28


def test_a_file_rewritten_in_place_recomputes_the_dates_of_its_old_and_new_content():
    rewritten = Delivered("b.jsonl", 7, 9)
    request, _ = plan(None, A, rewritten, ledger=recorded(A) | recorded(B, first="2025-07-05", last="2025-07-06"))
    assert (request.tags[START], request.tags[END]) == ("2025-07-01", "2025-07-20")
    assert appended(request) == {"bronze__usage_events": [], "silver_usage_events": []}
    assert request.run_config["ops"]["bronze__usage_events"]["config"]["files"] == [
        {"name": "b.jsonl", "size": 7, "mtime_ns": 9}]


def test_an_undatable_file_updates_the_ledger_alone():
    request, _ = plan(None, A, E, ledger=recorded(A))
    assert START not in request.tags
    assert {k.path[-1] for k in request.asset_selection} == {"usage_events_rejects", "usage_events_duplicates", "usage_events_file_counts"}
    assert list(request.run_config["ops"]) == ["bronze_usage_events_ledger"]


def test_files_named_after_every_file_known_are_appended_any_other_is_recomputed():
    first, cursor = plan(None, B)
    assert appended(first) == {"bronze__usage_events": [], "silver_usage_events": []}  # nothing known yet
    later, _ = plan(None, B, C, ledger=recorded(B))
    assert appended(later) == {"bronze__usage_events": ["c.jsonl"], "silver_usage_events": ["c.jsonl"]}
    # A name sorting before one already known can displace first arrivals: its dates are recomputed.
    out_of_order, _ = plan(None, A, B, C, ledger=recorded(B, C))
    assert appended(out_of_order) == {"bronze__usage_events": [], "silver_usage_events": []}


def test_while_a_stream_run_is_queued_or_going_files_wait_and_then_go_as_one_run():
    _, cursor = plan(None, A)
    waiting, cursor = plan(cursor, A, B, C, busy=True)
    assert waiting is None
    together, _ = plan(cursor, A, B, C)
    assert files_of(together) == ["b.jsonl", "c.jsonl"]


def failed_run(run_id="r1", attempt=1, ended=NOW - 60, updated=NOW - 60, files=("a.jsonl",),
               start="2025-07-10", end="2025-07-20") -> FailedRun:
    return FailedRun(run_id, tuple({"name": n, "size": 10, "mtime_ns": 1} for n in files), start, end, attempt, ended, updated)


def test_a_failed_run_is_repaired_after_its_backoff_by_recomputing_its_range():
    _, cursor = plan(None, A)
    just_failed = failed_run(ended=NOW - 1, updated=NOW - 1)
    request, cursor = plan(cursor, A, failed=[just_failed])
    assert request is None  # 5 s of backoff first
    request, cursor = plan(cursor, A, failed=[just_failed], now=NOW + 5)
    assert request.tags["cpa/repairs"] == "r1" and request.tags["cpa/attempt"] == "2"
    assert (request.tags[START], request.tags[END]) == ("2025-07-10", "2025-07-20")
    assert appended(request) == {"bronze__usage_events": [], "silver_usage_events": []}
    assert files_of(request) == ["a.jsonl"]
    # Repaired once: the same failure seen again plans nothing.
    again, _ = plan(cursor, A, failed=[just_failed], now=NOW + 60)
    assert again is None


def test_a_repair_that_fails_again_waits_longer_each_time_up_to_thirty_seconds():
    assert [sensors.backoff_seconds(n) for n in (1, 2, 3, 4, 9)] == [5, 10, 20, 30, 30]
    third = failed_run("r3", attempt=3, ended=NOW - 15, updated=NOW - 15)
    assert plan(None, A, ledger=recorded(A), failed=[third])[0] is None
    assert plan(None, A, ledger=recorded(A), failed=[third], now=NOW + 5)[0].tags["cpa/attempt"] == "4"


def test_the_next_file_takes_a_failed_run_in_at_once_and_recomputes_both():
    dead = failed_run(ended=NOW - 1, updated=NOW - 1)
    request, _ = plan(None, A, C, ledger=recorded(A), failed=[dead])
    assert request.tags["cpa/repairs"] == "r1" and files_of(request) == ["a.jsonl", "c.jsonl"]
    assert (request.tags[START], request.tags[END]) == ("2025-07-10", "2025-09-30")
    assert appended(request) == {"bronze__usage_events": [], "silver_usage_events": []}


LEFT = DeferredTail(("r1", "r2"), "2025-06-20", "2025-07-18")


def follows(request) -> dict[str, list[str]]:
    return {op: entry["config"].get("follows", []) for op, entry in request.run_config["ops"].items()}


def test_the_next_file_completes_the_marts_earlier_runs_left_over_their_range_too():
    request, _ = plan(None, A, C, ledger=recorded(A), deferred=LEFT)
    assert appended(request)["bronze__usage_events"] == ["c.jsonl"]
    # The marts after P1 and their tables follow both runs' commits; bronze, silver and P1 this run's only.
    assert {op: runs for op, runs in follows(request).items() if runs} == {op: ["r1", "r2"] for op in TAIL_OPS}
    assert request.tags[FOLLOWS_TAG] == "r1,r2"
    assert (request.tags[START], request.tags[END]) == ("2025-06-20", "2025-09-30")


def test_with_no_file_coming_the_marts_left_get_a_run_of_their_own():
    request, _ = plan(None, A, ledger=recorded(A), deferred=LEFT)
    assert request.asset_selection == TAIL_ASSETS
    assert follows(request) == {op: ["r1", "r2"] for op in TAIL_OPS}
    assert (request.tags[START], request.tags[END]) == ("2025-06-20", "2025-07-18")
    # Nothing left, nothing new: no run.
    assert plan(None, A, ledger=recorded(A))[0] is None


def test_a_run_that_recomputes_covers_the_marts_left_without_following_them():
    out_of_order, _ = plan(None, A, B, ledger=recorded(B), deferred=LEFT)
    assert not any(follows(out_of_order).values()) and FOLLOWS_TAG not in out_of_order.tags
    assert (out_of_order.tags[START], out_of_order.tags[END]) == ("2025-06-20", "2025-07-20")
    repair, _ = plan(None, A, ledger=recorded(A), failed=[failed_run(start="2025-07-25", end="2025-08-01")], deferred=LEFT)
    assert not any(follows(repair).values())
    assert (repair.tags[START], repair.tags[END]) == ("2025-06-20", "2025-08-01")


def test_the_cursor_stays_small_after_twelve_thousand_files():
    files = [Delivered(f"events_{i:05d}.jsonl", 1000 + i, i) for i in range(12_000)]
    cursor = None
    for start in range(0, 12_000, 1_000):
        batch = files[: start + 1_000]
        request, cursor = plan(cursor, *batch, ledger=recorded(*files[:start]))
        assert len(files_of(request)) == 1_000
    _, cursor = plan(cursor, *files, ledger=recorded(*files))
    assert len(cursor) <= 4096, len(cursor)


def test_a_file_pending_for_long_with_no_run_going_is_planned_again():
    _, cursor = plan(None, A)
    assert plan(cursor, A, now=NOW + 600)[0] is None
    assert plan(cursor, A, now=NOW + 1000, busy=True)[0] is None
    assert files_of(plan(cursor, A, now=NOW + 1000)[0]) == ["a.jsonl"]


def test_an_event_with_a_utc_offset_is_planned_under_its_utc_date(tmp_path, monkeypatch):
    monkeypatch.setattr(sensors, "WAIT_FOR_FILES_SECONDS", 0)
    stream = tmp_path / "landing" / "usage_events_stream"
    stream.mkdir(parents=True)
    (stream / "f1.jsonl").write_text('{"event_id": "e1", "timestamp": "2025-07-10T01:30:00+02:00"}\n')
    lake = LakeResource(root=str(tmp_path / "lake"), landing=str(tmp_path / "landing"))
    with dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources={"lake": lake}) as context:
        result = usage_events_sensor(context)
    assert result.run_requests[0].tags[START] == "2025-07-09"


def test_sensor_reads_the_folder_and_keeps_its_cursor(tmp_path, monkeypatch):
    monkeypatch.setattr(sensors, "WAIT_FOR_FILES_SECONDS", 0.5)
    stream = tmp_path / "landing" / "usage_events_stream"
    stream.mkdir(parents=True)
    (stream / "f1.jsonl").write_text('{"event_id": "e1", "timestamp": "2025-08-01T10:00:00Z"}\n')
    (stream / ".f2.jsonl.tmp").write_text('{"event_id": "e2", "timestamp": "2025-08-02T10:00:00Z"}\n')
    lake = LakeResource(root=str(tmp_path / "lake"), landing=str(tmp_path / "landing"))
    instance = dg.DagsterInstance.ephemeral()
    with dg.build_sensor_context(instance=instance, resources={"lake": lake}, definitions=build_definitions(lake=lake)) as context:
        result = usage_events_sensor(context)
    assert len(result.run_requests) == 1
    assert result.run_requests[0].tags[START] == result.run_requests[0].tags[END] == "2025-08-01"
    started = time.monotonic()
    with dg.build_sensor_context(instance=instance, resources={"lake": lake}, cursor=result.cursor) as context:
        again = usage_events_sensor(context)
    assert again.run_requests == [] and time.monotonic() - started >= 0.5  # it watched the folder meanwhile


def test_a_tick_that_finds_nothing_new_plans_a_file_the_moment_it_lands(tmp_path, monkeypatch):
    monkeypatch.setattr(sensors, "WAIT_FOR_FILES_SECONDS", 30)
    stream = tmp_path / "landing" / "usage_events_stream"
    stream.mkdir(parents=True)
    (stream / "f1.jsonl").write_text('{"event_id": "e1", "timestamp": "2025-08-01T10:00:00Z"}\n')
    lake = LakeResource(root=str(tmp_path / "lake"), landing=str(tmp_path / "landing"))
    instance = dg.DagsterInstance.ephemeral()
    with dg.build_sensor_context(instance=instance, resources={"lake": lake}) as context:
        first = usage_events_sensor(context)

    def land():
        time.sleep(1)
        (stream / ".f2.jsonl.tmp").write_text('{"event_id": "e2", "timestamp": "2025-08-02T10:00:00Z"}\n')
        (stream / ".f2.jsonl.tmp").rename(stream / "f2.jsonl")

    lander = threading.Thread(target=land)
    started = time.monotonic()
    lander.start()
    with dg.build_sensor_context(instance=instance, resources={"lake": lake}, cursor=first.cursor) as context:
        tick = usage_events_sensor(context)
    waited = time.monotonic() - started
    lander.join()
    assert [r.tags["cpa/files"] for r in tick.run_requests] == ["f2.jsonl"]
    assert 1 <= waited < 3


def _started_stream_run(instance, worker_pid: int, job_name: str = "usage_stream") -> dg.DagsterRun:
    planned = [{"name": "f1.jsonl", "size": 10, "mtime_ns": 1}]
    run = dg.DagsterRun(
        job_name=job_name, run_id=make_new_run_id(), status=dg.DagsterRunStatus.STARTED,
        tags={START: "2025-08-01", END: "2025-08-20", "cpa/files": "f1.jsonl", "cpa/lake": "usage"},
        run_config={"ops": {"bronze__usage_events": {"config": {"files": planned, "appended": ["f1.jsonl"]}},
                            "silver_usage_events": {"config": {"appended": ["f1.jsonl"]}}}},
    )
    instance.add_run(run)
    instance.report_engine_event(f"Started process for run (pid: {worker_pid}).", run, EngineEventData.in_process(worker_pid))
    return run


def _land(stream, name: str, day: str) -> None:
    (stream / name).write_text(f'{{"event_id": "{name}", "timestamp": "{day}T10:00:00Z"}}\n')


def _f1_in_flight(tmp_path, monkeypatch):
    """f1.jsonl delivered and its stream run going (its worker is this process): the events folder,
    the instance, that run, and a tick of the sensor with f1.jsonl pending in its cursor."""
    monkeypatch.setattr(sensors, "WAIT_FOR_FILES_SECONDS", 0)
    stream = tmp_path / "landing" / "usage_events_stream"
    stream.mkdir(parents=True)
    _land(stream, "f1.jsonl", "2025-08-01")
    lake = LakeResource(root=str(tmp_path / "lake"), landing=str(tmp_path / "landing"))
    instance = dg.DagsterInstance.ephemeral()
    working = _started_stream_run(instance, os.getpid())
    f1 = (stream / "f1.jsonl").stat()
    cursor = json.dumps({"pending": {"f1.jsonl": [f1.st_size, f1.st_mtime_ns, time.time()]}})

    def tick():
        with dg.build_sensor_context(instance=instance, resources={"lake": lake}, cursor=cursor) as context:
            return usage_events_sensor(context).run_requests

    return stream, instance, working, tick


def test_the_next_run_is_planned_once_the_run_before_keeps_its_books(tmp_path, monkeypatch):
    stream, instance, working, tick = _f1_in_flight(tmp_path, monkeypatch)
    _land(stream, "f2.jsonl", "2025-08-02")  # while f1.jsonl's run works
    assert tick() == []
    # It reached its ledger, having left its marts after P1: the next run is planned now, appends
    # f2.jsonl alone (f1.jsonl is still in flight) and follows the run before.
    instance.add_run_tags(working.run_id, {KEEPING_BOOKS_TAG: "1", DEFERRED_TAG: working.run_id})
    [request] = tick()
    assert request.tags["cpa/files"] == "f2.jsonl" and request.tags[FOLLOWS_TAG] == working.run_id
    assert request.run_config["ops"]["bronze__usage_events"]["config"]["appended"] == ["f2.jsonl"]
    # While that next run starts, nothing more is planned.
    instance.add_run(dg.DagsterRun(job_name="usage_stream", run_id=make_new_run_id(), status=dg.DagsterRunStatus.STARTING))
    assert tick() == []


def test_the_next_run_is_planned_once_the_run_before_has_served_p1(tmp_path, monkeypatch):
    stream, instance, working, tick = _f1_in_flight(tmp_path, monkeypatch)
    # P1 is served and the run is in its tail: with no file waiting, nothing is planned for its marts.
    instance.add_run_tags(working.run_id, {P1_SERVED_TAG: "1", FOLLOWS_TAG: "r0"})
    assert tick() == []
    # A file lands: its run is planned now and follows the run before, and those it follows, in case
    # that run leaves its marts to it.
    _land(stream, "f2.jsonl", "2025-08-02")
    [request] = tick()
    assert request.tags["cpa/files"] == "f2.jsonl" and request.tags[FOLLOWS_TAG] == f"r0,{working.run_id}"
    assert request.run_config["ops"]["gold__org_top_services_14d"]["config"]["follows"] == ["r0", working.run_id]
    assert request.run_config["ops"]["bronze__usage_events"]["config"]["appended"] == ["f2.jsonl"]
    assert (request.tags[START], request.tags[END]) == ("2025-08-01", "2025-08-20")  # the run before's range too


def test_a_tail_drops_the_runs_whose_marts_a_run_that_left_none_completed():
    instance = dg.DagsterInstance.ephemeral()

    def run(status, **tags):
        added = dg.DagsterRun(job_name="usage_stream", run_id=make_new_run_id(), status=status, tags=tags)
        instance.add_run(added)
        return added.run_id

    left = run(dg.DagsterRunStatus.SUCCESS, **{DEFERRED_TAG: "x"})
    completed = run(dg.DagsterRunStatus.SUCCESS)
    going = run(dg.DagsterRunStatus.STARTED)
    failed = run(dg.DagsterRunStatus.FAILURE)
    assert still_to_follow(instance, UsageRun(appended=["f.jsonl"], follows=[left, completed, going])) == UsageRun(
        appended=["f.jsonl"], follows=[going])
    # Runs that left their marts, are still going or failed are followed.
    assert still_to_follow(instance, UsageRun(follows=[left, going, failed])).follows == [left, going, failed]
    assert still_to_follow(instance, UsageRun(follows=[left, completed])).follows == []


def test_process_gone_tells_a_live_process_from_a_killed_one():
    worker = subprocess.Popen(["sleep", "60"])
    assert not process_gone(worker.pid)
    worker.kill()
    time.sleep(0.2)  # not reaped yet: a zombie is gone too
    assert process_gone(worker.pid)
    worker.wait()
    assert process_gone(worker.pid)


def test_a_run_whose_worker_died_is_failed_and_a_stream_one_repaired(tmp_path, monkeypatch):
    monkeypatch.setattr(sensors, "WAIT_FOR_FILES_SECONDS", 0)
    monkeypatch.setattr(sensors, "REPAIR_BACKOFF_SECONDS", (0,))
    lake = LakeResource(root=str(tmp_path / "lake"), landing=str(tmp_path / "landing"))
    # A persistent instance with Dagster's default run launcher, as `make run` uses.
    (tmp_path / "dagster").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp_path / "dagster"))
    worker = subprocess.Popen(["sleep", "60"])
    worker.kill()
    worker.wait()
    dead = _started_stream_run(instance, worker.pid)
    dead_ui_run = _started_stream_run(instance, worker.pid, job_name="__ASSET_JOB")
    survivor = subprocess.Popen(["sleep", "60"])
    try:
        alive = _started_stream_run(instance, survivor.pid, job_name="__ASSET_JOB")  # a live run is left alone
        with dg.build_sensor_context(instance=instance, resources={"lake": lake}) as context:
            result = usage_events_sensor(context)
        # The next tick does not repair it twice.
        with dg.build_sensor_context(instance=instance, resources={"lake": lake}, cursor=result.cursor) as context:
            again = usage_events_sensor(context)
        assert again.run_requests == []
    finally:
        survivor.kill()
        survivor.wait()
    assert [r.tags["cpa/repairs"] for r in result.run_requests] == [dead.run_id]
    repair = result.run_requests[0]
    assert (repair.tags[START], repair.tags[END], repair.tags["cpa/files"]) == ("2025-08-01", "2025-08-20", "f1.jsonl")
    # The dead run may have appended part of its file: the repair recomputes its dates instead.
    assert repair.run_config["ops"]["bronze__usage_events"]["config"] == {
        "files": [{"name": "f1.jsonl", "size": 10, "mtime_ns": 1}], "appended": []}
    # A dead run of any job frees its slot; only stream runs are run again.
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(dead_ui_run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED

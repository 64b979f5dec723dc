"""The usage-events sensor: each newly delivered file becomes one run over the dates it changes, and
no failed run is left unrepaired.

Files are not time-ordered, so there is no watermark: a file's own event dates decide the range,
widened by the windows that read those dates (P2's 14 days, the anomaly baseline's 28). What was
delivered lives where it belongs, in the landing ledger (`bronze/usage_events_file_counts`: each
file with the size and modification time it was read with); the cursor holds only what is in
flight, so it stays small whatever the number of files.

Files usually arrive in name order: a run for files whose names sort after every file known adds
their events to bronze and silver (appends) and recomputes the gold dates they touch; any other
run (a file named out of order, a file rewritten in place, a repair) recomputes its dates from
every landing file.

A run that left the marts after P1 to the next (files were waiting, cpa_assets/gold/tail.py) is
followed by the next run over its range too: the next file's run, or a run of its own for those
marts when no file comes. The next file's run is planned as soon as the run before has served P1,
while that one is still in its tail: it follows that run whether or not it will leave its marts.

A stream run that failed, whatever step it died in (a bad server, a killed process, a run that
never started), is repaired by the next run over its range: the next file's run takes it in, or,
when no file comes, a run of its own after a short backoff."""

import datetime as dt
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from cpa_assets.bronze.usage import (
    DUPLICATES, FILE_COUNTS, KEEPING_BOOKS_TAG, REJECTS, bronze_usage_events, delivered_files, usage_events_ledger,
)
from cpa_assets.increments import UsageRun
from cpa_assets.jobs import usage_stream_job
from cpa_assets.landing import event_dates
from cpa_assets.gold.anomalies import cost_anomalies
from cpa_assets.gold.genai import genai_tokens_by_org_date
from cpa_assets.gold.tail import DEFERRED_TAG, FOLLOWS_TAG, P1_SERVED_TAG, still_to_follow
from cpa_assets.gold.usage import org_daily_usage_by_service, org_top_services_14d
from cpa_assets.partitions import (
    ANOMALY_BASELINE_DAYS, TOP_SERVICES_WINDOW_DAYS, event_date_partitions,
    PARTITION_RANGE_END_TAG as RANGE_END, PARTITION_RANGE_START_TAG as RANGE_START,
)
from cpa_assets.serving.tables import SERVING_TABLES, serving_assets
from cpa_assets.silver.usage import silver_usage_events
from cpa_resources import LakeResource

WORKER_STARTED = "Started process for run (pid: "

# A changed day D feeds P2 up to D+13 and anomaly baselines up to D+28.
DOWNSTREAM_DAYS = max(TOP_SERVICES_WINDOW_DAYS - 1, ANOMALY_BASELINE_DAYS)

# Dagster's sensor daemon starts an evaluation every 5 s at most (its loop's floor), so a file
# landing just after one would wait up to 5 s for the next. A tick that finds nothing new watches
# the folder instead, for up to this long, and plans a file the moment it lands; the daemon's next
# evaluation follows about a second after this one returns.
WAIT_FOR_FILES_SECONDS = float(os.environ.get("CPA_SENSOR_WAIT_SECONDS", "4"))
WATCH_INTERVAL_SECONDS = 0.1
# While watching, the runs in flight are looked at again this often (the folder every interval).
RECHECK_RUNS_SECONDS = 0.5

# A failed run is repaired after 5 s, its repair (if it fails too) after 10 s, then 20 s, then
# every 30 s: a server that comes back is served again within a minute, whatever the outage.
REPAIR_BACKOFF_SECONDS = (5, 10, 20, 30)
# A file planned this long ago that no run recorded, while no stream run is queued or going (its
# run was deleted or cancelled by hand), is planned again.
PENDING_TIMEOUT_SECONDS = 900
FAILED_RUNS_PER_TICK = 50

# A stream run's assets: the job less the org and resource snapshots, which the batch schedules keep.
STREAM_ASSETS = [
    *bronze_usage_events.keys, *usage_events_ledger.keys, *silver_usage_events.keys,
    *[key for assets in (org_daily_usage_by_service, org_top_services_14d, genai_tokens_by_org_date, cost_anomalies)
      for key in assets.keys],
    *[assets.key for assets in serving_assets if assets.partitions_def is event_date_partitions],
]


@dataclass(frozen=True, order=True)
class Delivered:
    """A complete file in the events folder, as the folder listing shows it."""

    name: str
    size: int
    mtime_ns: int

    def planned(self) -> dict:
        return {"name": self.name, "size": self.size, "mtime_ns": self.mtime_ns}


@dataclass(frozen=True)
class FailedRun:
    """A stream run that failed: what it covered, how many attempts it was, when it ended."""

    run_id: str
    files: tuple = ()
    start: str | None = None
    end: str | None = None
    attempt: int = 1
    ended_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True)
class DeferredTail:
    """The runs whose marts after P1 the last stream run left to the next, and the range they cover;
    not `settled` while that run is still in its tail (it may yet write them): only a new file's
    run follows them then, none is planned for them alone."""

    runs: tuple[str, ...]
    start: str | None = None
    end: str | None = None
    settled: bool = True


@dataclass
class Tick:
    """What the sensor knows at one moment, besides its cursor: the folder, the ledger, the failed
    runs not repaired yet (oldest first), whether a stream run is queued or going (`busy`) and
    whether one is past P1's table (`books`: in its tail or its ledger, see `stream_runs_in_flight`)."""

    listing: list[Delivered]
    ledger: dict[str, dict] = field(default_factory=dict)
    failed: list[FailedRun] = field(default_factory=list)
    busy: bool = False
    now: float = 0.0
    # A fresh lake has no org or resource snapshot yet: the run loads them first.
    snapshots_missing: bool = False
    deferred: DeferredTail | None = None
    books: bool = False


def backoff_seconds(attempt: int) -> float:
    return REPAIR_BACKOFF_SECONDS[min(attempt, len(REPAIR_BACKOFF_SECONDS)) - 1]


def _same(record: dict | list | None, f: Delivered) -> bool:
    if isinstance(record, dict):
        return (record.get("size"), record.get("mtime_ns")) == (f.size, f.mtime_ns)
    return bool(record) and list(record[:2]) == [f.size, f.mtime_ns]


def plan_stream_run(
    cursor: str | None, tick: Tick, dates_of: Callable[[str], set[str]]
) -> tuple[dg.RunRequest | None, str]:
    """(the run that the new files and the failed runs need, the new cursor). Pure.

    A file is new when neither the ledger nor a run in flight (the cursor's `pending`) holds it
    with its size and modification time: each delivery is planned once, a file rewritten in place
    again. While a stream run is queued or going (short of P1's table) nothing is planned, so the
    files that arrive meanwhile are taken together by the next run: a backlog is one run, not a
    queue of runs."""
    state = {"pending": {}, "repaired_through": 0.0, "last_date": None} | (json.loads(cursor) if cursor else {})
    listed = {f.name: f for f in tick.listing}
    pending = {
        name: entry for name, entry in state["pending"].items()
        if name in listed and not _same(tick.ledger.get(name), listed[name])
        and not (not tick.busy and not tick.books and tick.now - entry[2] > PENDING_TIMEOUT_SECONDS)
    }
    state["pending"] = pending
    if tick.busy:
        return None, json.dumps(state, sort_keys=True)
    new = sorted(f for f in tick.listing if not _same(tick.ledger.get(f.name), f) and not _same(pending.get(f.name), f))
    repairs = []
    for run in tick.failed:
        if run.updated_at <= state["repaired_through"]:
            continue
        if not new and tick.now - run.ended_at < backoff_seconds(run.attempt):
            break  # later failures wait with it, so none is repaired twice
        repairs.append(run)
    deferred = tick.deferred
    if deferred is not None and not deferred.settled and not new:
        deferred = None  # the run in its tail may still write them
    if not new and not repairs and deferred is None:
        return None, json.dumps(state, sort_keys=True)

    known = set(tick.ledger) | set(pending)
    # New names that sort after every file known (the usual delivery) are appended; a late,
    # out-of-order or rewritten file, or a repair, makes the run recompute its dates from every file.
    appended = [f.name for f in new] if known and new and not repairs and new[0].name > max(known) else []
    dates = set().union(*(dates_of(f.name) for f in new)) if new else set()
    for f in new:  # a file rewritten in place: the dates of its old content are recomputed too
        old = tick.ledger.get(f.name) or {}
        dates |= {str(old[key]) for key in ("first_date", "last_date") if old.get(key)}
    ledger_last = [str(row["last_date"]) for row in tick.ledger.values() if row.get("last_date")]
    state["last_date"] = max([*dates, *ledger_last, *([state["last_date"]] if state["last_date"] else [])], default=None)
    for f in new:
        pending[f.name] = [f.size, f.mtime_ns, tick.now]
    if repairs:
        state["repaired_through"] = max(run.updated_at for run in repairs)

    files = {entry["name"]: entry for run in repairs for entry in run.files} | {f.name: f.planned() for f in new}
    identity = json.dumps([[f.name, f.size, f.mtime_ns] for f in new] + [run.run_id for run in repairs]
                          + list(deferred.runs if deferred else ()))
    tags = {"cpa/files": ",".join(sorted(files))[:200],
            "cpa/attempt": str(max([run.attempt for run in repairs], default=0) + 1)}
    if repairs:
        tags["cpa/repairs"] = ",".join(run.run_id for run in repairs)[:1000]
    # The marts left by earlier runs follow their commits in a run that appends (or in a run of
    # their own); a run that recomputes covers their range anyway.
    follows = list(deferred.runs) if deferred and (appended or not new) and not repairs else []
    if follows:
        tags[FOLLOWS_TAG] = ",".join(follows)[:1000]
    planned = {"files": sorted(files.values(), key=lambda entry: entry["name"])}
    starts = [run.start for run in repairs + ([deferred] if deferred else []) if run.start] + ([min(dates)] if dates else [])
    ends = [run.end for run in repairs + ([deferred] if deferred else []) if run.end]
    if dates:
        widened = (dt.date.fromisoformat(max(dates)) + dt.timedelta(days=DOWNSTREAM_DAYS)).isoformat()
        ends.append(min(widened, state["last_date"]))
    request_args = {"run_key": hashlib.sha256(identity.encode()).hexdigest()[:16], "tags": tags}
    if not starts:
        # Nothing datable (an empty file, or only lines bronze rejects): the ledger still counts it.
        request = dg.RunRequest(
            **request_args, asset_selection=[REJECTS, DUPLICATES, FILE_COUNTS],
            run_config={"ops": {usage_events_ledger.op.name: {"config": planned}}},
        )
        return request, json.dumps(state, sort_keys=True)
    tags |= {RANGE_START: min(starts), RANGE_END: max(ends)}
    run_config = {"ops": {
        bronze_usage_events.op.name: {"config": planned | {"appended": appended}},
        usage_events_ledger.op.name: {"config": planned | {"appended": appended}},
        **{name: {"config": {"appended": appended} | ({"follows": follows} if name in TAIL_OPS else {})}
           for name in FOLLOWING_OPS},
    }}
    selection = None if tick.snapshots_missing else STREAM_ASSETS
    if not new and not repairs:  # only the marts earlier runs left
        selection = TAIL_ASSETS
        run_config = {"ops": {name: {"config": {"follows": follows}} for name in TAIL_OPS}}
    return dg.RunRequest(**request_args, asset_selection=selection, run_config=run_config), json.dumps(state, sort_keys=True)


# The marts after P1 and their tables: a stream run may leave them to the next (cpa_assets/gold/tail.py).
TAIL_MARTS = (org_top_services_14d, genai_tokens_by_org_date, cost_anomalies)
TAIL_ASSETS = [key for assets in TAIL_MARTS for key in assets.keys]
TAIL_ASSETS += [table.key for table in SERVING_TABLES if table.gold in TAIL_ASSETS]
TAIL_OPS = [assets.node_def.name for assets in TAIL_MARTS] + [
    assets.node_def.name for assets in serving_assets if assets.key in TAIL_ASSETS]

# The steps after bronze that follow what it added (see cpa_assets/increments.py).
FOLLOWING_OPS = [
    silver_usage_events.node_def.name,
    *[assets.node_def.name for assets in (org_daily_usage_by_service, org_top_services_14d, genai_tokens_by_org_date,
                                          cost_anomalies)],
    *[assets.node_def.name for assets in serving_assets if assets.partitions_def is event_date_partitions],
]


def listing_of(lake: LakeResource) -> list[Delivered]:
    files = []
    for path in lake.event_files():
        stat = path.stat()
        files.append(Delivered(path.name, stat.st_size, stat.st_mtime_ns))
    return files


_ledger_cache: dict[str, tuple[tuple, dict]] = {}


def ledger_of(lake: LakeResource) -> dict[str, dict]:
    """The landing ledger, read again only when it has a new version."""
    path = lake.path("bronze", "usage_events_file_counts")
    version = lake.version("bronze", "usage_events_file_counts")
    cached = _ledger_cache.get(path)
    if version is None or cached is None or cached[0] != version:
        _ledger_cache[path] = (version, delivered_files(lake))
    return _ledger_cache[path][1]


def process_gone(pid: int) -> bool:
    """True when no live process has this pid (a zombie left for its parent to reap counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    except OSError:
        state = ""
    return state in ("Z", "X")


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of the process the run launcher started for a run, from the run's engine events."""
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        if record.message.startswith(WORKER_STARTED):
            return int(record.dagster_event.engine_event_data.metadata["pid"].value)
    return None


def orphaned_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Runs still marked started whose worker is gone (killed, out of memory, the machine went
    down). Dagster's run launchers on one machine cannot check a worker's health, so run monitoring
    alone would leave them started forever, holding a run slot and, for a stream run, every later
    file in the queue. (Runs that never started are run monitoring's: see dagster.yaml.)"""
    if not isinstance(instance.run_launcher, dg.DefaultRunLauncher):
        return []  # workers on other machines: their pids mean nothing here
    started = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    return [run for run in started if (pid := worker_pid(instance, run.run_id)) is not None and process_gone(pid)]


def failed_stream_runs(instance: dg.DagsterInstance, since: float) -> list[FailedRun]:
    """Stream runs that failed after `since` (their record's update time), oldest first."""
    records = instance.get_run_records(
        dg.RunsFilter(job_name=usage_stream_job.name, statuses=[dg.DagsterRunStatus.FAILURE],
                      updated_after=dt.datetime.fromtimestamp(since, dt.timezone.utc)),
        limit=FAILED_RUNS_PER_TICK, order_by="update_timestamp", ascending=True,
    )
    failed = []
    for record in records:
        run = record.dagster_run
        ops = run.run_config.get("ops", {}) if isinstance(run.run_config, dict) else {}
        files = next((op["config"].get("files", []) for op in ops.values() if op.get("config", {}).get("files")), [])
        failed.append(FailedRun(
            run_id=run.run_id,
            files=tuple(entry for entry in files if isinstance(entry, dict)),
            start=run.tags.get(RANGE_START),
            end=run.tags.get(RANGE_END),
            attempt=int(run.tags.get("cpa/attempt", "1")),
            ended_at=record.end_time or record.update_timestamp.timestamp(),
            updated_at=record.update_timestamp.timestamp(),
        ))
    return failed


def keeps_books(run: dg.DagsterRun) -> bool:
    """A stream run in its last step, the ledger: its marts are written or left (`cpa/deferred`)."""
    return run.status == dg.DagsterRunStatus.STARTED and bool(run.tags.get(KEEPING_BOOKS_TAG))


def hands_on(run: dg.DagsterRun) -> bool:
    """A stream run past P1's table (in its tail or its ledger): the next run may be planned."""
    return run.status == dg.DagsterRunStatus.STARTED and any(run.tags.get(t) for t in (P1_SERVED_TAG, KEEPING_BOOKS_TAG))


def appends(run: dg.DagsterRun) -> bool:
    """Whether the run adds its files' events (rather than recomputing its dates)."""
    ops = run.run_config.get("ops", {}) if isinstance(run.run_config, dict) else {}
    return bool(ops.get(bronze_usage_events.op.name, {}).get("config", {}).get("appended"))


def deferred_tail(instance: dg.DagsterInstance) -> DeferredTail | None:
    """The runs whose marts after P1 are still to follow: those the last stream run to end (or to
    reach its ledger) left, if it succeeded so far (a failed one is repaired over its range, which
    holds theirs). A run in its tail that appends and has left nothing yet may still leave its
    marts: the next file's run follows it and the runs it follows, unsettled."""
    recent = instance.get_runs(
        dg.RunsFilter(job_name=usage_stream_job.name, statuses=[
            dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.STARTED]),
        limit=1,
    )
    run = recent[0] if recent else None
    # A run going short of P1 (started meanwhile) may follow them already: nothing to hand on.
    if run is None or not (run.status == dg.DagsterRunStatus.SUCCESS or hands_on(run)):
        return None
    start, end = run.tags.get(RANGE_START), run.tags.get(RANGE_END)
    if run.tags.get(DEFERRED_TAG):
        return DeferredTail(tuple(run.tags[DEFERRED_TAG].split(",")), start, end)
    if keeps_books(run) or run.status == dg.DagsterRunStatus.SUCCESS or not appends(run):
        return None  # its marts are written (a run that recomputes never leaves them)
    followed = [r for r in run.tags.get(FOLLOWS_TAG, "").split(",") if r]
    runs = still_to_follow(instance, UsageRun(follows=followed)).follows + [run.run_id]
    return DeferredTail(tuple(runs), start, end, settled=False)


IN_FLIGHT = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED)


def stream_runs_in_flight(instance: dg.DagsterInstance) -> tuple[bool, bool]:
    """(whether a stream run is queued or going short of P1's table, whether one is past it).
    One past P1 does not hold the next run back: that run's process starts meanwhile and waits
    for the lake's lock (the `cpa/lake` limit in dagster.yaml lets two stream runs be launched), so
    the seconds a run takes to start overlap the tail's and the ledger's instead of following them."""
    runs = instance.get_runs(dg.RunsFilter(job_name=usage_stream_job.name, statuses=list(IN_FLIGHT)))
    return any(not hands_on(run) for run in runs), any(hands_on(run) for run in runs)


@dg.sensor(job=usage_stream_job, minimum_interval_seconds=2, default_status=dg.DefaultSensorStatus.RUNNING)
def usage_events_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
    """Watch the usage-events folder; each tick turns the files delivered since the last one into
    one run over the event dates they touch and the windows that read them (a tick that finds none
    waits a few seconds for one), and repairs failed stream runs by running their range again."""
    instance = context.instance
    for dead in orphaned_runs(instance):
        instance.report_run_failed(dead, "its worker process is gone (killed, or the machine restarted)")
    state = json.loads(context.cursor) if context.cursor else {}
    failed = failed_stream_runs(instance, state.get("repaired_through", 0.0))

    def plan(cursor):
        busy, books = stream_runs_in_flight(instance)
        tick = Tick(listing_of(lake), ledger_of(lake), failed, busy, time.time(),
                    snapshots_missing=not all(lake.exists("bronze", t) for t in ("customers_orgs", "resources")),
                    deferred=None if busy else deferred_tail(instance), books=books)
        return plan_stream_run(cursor, tick, lambda name: event_dates(lake.events_dir() / name))

    # Watching: a file that lands, or the stream run in flight that ends with files waiting for it,
    # is planned at once rather than at the next evaluation.
    request, cursor = plan(context.cursor)
    watch_until = time.monotonic() + WAIT_FOR_FILES_SECONDS
    seen, planned_at = listing_of(lake), time.monotonic()
    while request is None and time.monotonic() < watch_until:
        time.sleep(WATCH_INTERVAL_SECONDS)
        listing = listing_of(lake)
        if listing != seen or time.monotonic() - planned_at >= RECHECK_RUNS_SECONDS:
            request, cursor = plan(cursor)
            seen, planned_at = listing, time.monotonic()
    if request is not None and "cpa/repairs" in request.tags:
        context.log.info(f"repairing failed stream runs {request.tags['cpa/repairs']}")
    return dg.SensorResult(run_requests=[request] if request else [], cursor=cursor)

"""The usage-events sensor: each newly delivered file becomes one run over the dates it changes.

Files are not time-ordered, so there is no watermark: a file's own event dates decide the range,
widened by the windows that read those dates (P2's 14 days, the anomaly baseline's 28).

Files usually arrive in name order: a run for files whose names sort after every file seen adds
their events to bronze and silver (appends) and recomputes the gold dates they touch; any other
run (a file named out of order or delivered again with new content, a backfill) recomputes its
dates from all landing files.

A stream run whose worker process died (killed, or the machine went down) is run again, as a
recompute of its range from all landing files, which repairs whatever the dead one left
half-written."""

import datetime as dt
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from cpa_assets.bronze.usage import DUPLICATES, FILE_COUNTS, REJECTS, bronze_usage_events, usage_events_ledger
from cpa_assets.jobs import usage_stream_job
from cpa_assets.landing import event_dates
from cpa_assets.partitions import ANOMALY_BASELINE_DAYS, TOP_SERVICES_WINDOW_DAYS
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


@dataclass(frozen=True, order=True)
class Delivered:
    """A complete file in the events folder, as the folder listing shows it."""

    name: str
    size: int
    mtime_ns: int


def plan_stream_run(
    cursor: str | None, listing: list[Delivered], dates_of: Callable[[str], set[str]]
) -> tuple[dg.RunRequest | None, str]:
    """(the run the new files need, the new cursor). Pure: the cursor remembers every file seen
    (name, size, mtime) and the latest event date seen, so a file is planned exactly once and a
    file re-delivered with new content is planned again."""
    state = json.loads(cursor) if cursor else {"files": {}, "last_date": None}
    new = sorted(f for f in listing if state["files"].get(f.name) != [f.size, f.mtime_ns])
    if not new:
        return None, json.dumps(state, sort_keys=True)
    # New names that sort after every file seen so far (the usual delivery) are appended; a late,
    # out-of-order or re-delivered file makes the run recompute its dates from every file.
    appended = [f.name for f in new] if state["files"] and new[0].name > max(state["files"]) else []
    dates = set().union(*(dates_of(f.name) for f in new))
    for f in new:
        state["files"][f.name] = [f.size, f.mtime_ns]
    run_key = hashlib.sha256(json.dumps([[f.name, f.size, f.mtime_ns] for f in new]).encode()).hexdigest()[:16]
    tags = {"cpa/files": ",".join(f.name for f in new)[:200]}
    # The run reads exactly the files listed now; one landing meanwhile is the next run's.
    listed = {"files": sorted(f.name for f in listing)}
    if not dates:
        # Nothing datable (an empty file, or only lines bronze rejects): the ledger still counts it.
        request = dg.RunRequest(
            run_key=run_key, asset_selection=[REJECTS, DUPLICATES, FILE_COUNTS], tags=tags,
            run_config={"ops": {usage_events_ledger.op.name: {"config": listed}}},
        )
        return request, json.dumps(state, sort_keys=True)
    state["last_date"] = max(dates | ({state["last_date"]} if state["last_date"] else set()))
    widened = (dt.date.fromisoformat(max(dates)) + dt.timedelta(days=DOWNSTREAM_DAYS)).isoformat()
    tags |= {ASSET_PARTITION_RANGE_START_TAG: min(dates), ASSET_PARTITION_RANGE_END_TAG: min(widened, state["last_date"])}
    run_config = {"ops": {
        bronze_usage_events.op.name: {"config": listed | {"appended": appended}},
        silver_usage_events.node_def.name: {"config": {"appended": appended}},
        usage_events_ledger.op.name: {"config": listed},
    }}
    return dg.RunRequest(run_key=run_key, tags=tags, run_config=run_config), json.dumps(state, sort_keys=True)


def listing_of(lake: LakeResource) -> list[Delivered]:
    files = []
    for path in lake.event_files():
        stat = path.stat()
        files.append(Delivered(path.name, stat.st_size, stat.st_mtime_ns))
    return files


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
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        if record.message.startswith(WORKER_STARTED):
            return int(record.dagster_event.engine_event_data.metadata["pid"].value)
    return None


def orphaned_stream_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Stream runs still marked started whose worker is gone. Dagster's default run launcher cannot
    check a worker's health, so run monitoring alone would leave them started forever, holding
    the one `cpa/lake` slot and every later file in the queue."""
    if not isinstance(instance.run_launcher, DefaultRunLauncher):
        return []  # workers on other machines: their pids mean nothing here
    started = instance.get_runs(dg.RunsFilter(job_name=usage_stream_job.name, statuses=[dg.DagsterRunStatus.STARTED]))
    return [run for run in started if (pid := worker_pid(instance, run.run_id)) is not None and process_gone(pid)]


def rerun_request(run: dg.DagsterRun) -> dg.RunRequest:
    """The same range and assets as a dead run, under a run key of its own so it is requested once."""
    tags = {key: value for key, value in run.tags.items() if key.startswith(("cpa/files", "dagster/asset_partition_range"))}
    # The dead run may have appended part of its files: the rerun recomputes its dates instead.
    ops = {name: {"config": {k: v for k, v in op["config"].items() if k != "appended"}}
           for name, op in run.run_config.get("ops", {}).items()}
    return dg.RunRequest(
        run_key=f"rerun-{run.run_id}",
        asset_selection=sorted(run.asset_selection) if run.asset_selection else None,
        run_config={**run.run_config, "ops": ops} if ops else run.run_config,
        tags={**tags, "cpa/reruns": run.run_id},
    )


@dg.sensor(job=usage_stream_job, minimum_interval_seconds=2, default_status=dg.DefaultSensorStatus.RUNNING)
def usage_events_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
    """Watch the usage-events folder; each tick turns the files delivered since the last one into
    one run over the event dates they touch and the windows that read them (a tick that finds none
    waits a few seconds for one); a stream run whose worker died is marked failed and requested again."""
    reruns = []
    for dead in orphaned_stream_runs(context.instance):
        context.instance.report_run_failed(dead, "its worker process is gone (killed, or the machine restarted); running it again")
        reruns.append(rerun_request(dead))

    def plan(cursor):
        return plan_stream_run(cursor, listing_of(lake), lambda name: event_dates(lake.events_dir() / name))

    request, cursor = plan(context.cursor)
    watch_until = time.monotonic() + WAIT_FOR_FILES_SECONDS
    while request is None and not reruns and time.monotonic() < watch_until:
        time.sleep(WATCH_INTERVAL_SECONDS)
        request, cursor = plan(cursor)
    return dg.SensorResult(run_requests=reruns + ([request] if request else []), cursor=cursor)

"""The usage-events sensor: each newly delivered file becomes one run over the dates it changes.

Files are not time-ordered, so there is no watermark: a file's own event dates decide the range,
widened by the windows that read those dates (P2's 14 days, the anomaly baseline's 28)."""

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from cpa_assets.bronze.usage import DUPLICATES, FILE_COUNTS, REJECTS
from cpa_assets.jobs import usage_stream_job
from cpa_assets.landing import event_dates
from cpa_assets.partitions import ANOMALY_BASELINE_DAYS, TOP_SERVICES_WINDOW_DAYS
from cpa_resources import LakeResource

# A changed day D feeds P2 up to D+13 and anomaly baselines up to D+28.
DOWNSTREAM_DAYS = max(TOP_SERVICES_WINDOW_DAYS - 1, ANOMALY_BASELINE_DAYS)


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
    dates = set().union(*(dates_of(f.name) for f in new))
    for f in new:
        state["files"][f.name] = [f.size, f.mtime_ns]
    run_key = hashlib.sha256(json.dumps([[f.name, f.size, f.mtime_ns] for f in new]).encode()).hexdigest()[:16]
    tags = {"cpa/files": ",".join(f.name for f in new)[:200]}
    if not dates:
        # Nothing datable (an empty file, or only lines bronze rejects): the ledger still counts it.
        request = dg.RunRequest(run_key=run_key, asset_selection=[REJECTS, DUPLICATES, FILE_COUNTS], tags=tags)
        return request, json.dumps(state, sort_keys=True)
    state["last_date"] = max(dates | ({state["last_date"]} if state["last_date"] else set()))
    widened = (dt.date.fromisoformat(max(dates)) + dt.timedelta(days=DOWNSTREAM_DAYS)).isoformat()
    tags |= {ASSET_PARTITION_RANGE_START_TAG: min(dates), ASSET_PARTITION_RANGE_END_TAG: min(widened, state["last_date"])}
    return dg.RunRequest(run_key=run_key, tags=tags), json.dumps(state, sort_keys=True)


def listing_of(lake: LakeResource) -> list[Delivered]:
    files = []
    for path in lake.event_files():
        stat = path.stat()
        files.append(Delivered(path.name, stat.st_size, stat.st_mtime_ns))
    return files


@dg.sensor(job=usage_stream_job, minimum_interval_seconds=2, default_status=dg.DefaultSensorStatus.RUNNING)
def usage_events_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
    """Watch the usage-events folder; each tick turns the files delivered since the last one into
    one run over the event dates they touch and the windows that read them."""
    request, cursor = plan_stream_run(context.cursor, listing_of(lake), lambda name: event_dates(lake.events_dir() / name))
    return dg.SensorResult(run_requests=[request] if request else [], cursor=cursor)

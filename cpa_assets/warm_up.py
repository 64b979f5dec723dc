"""Warming the stream's worker when the stack starts.

Stream runs execute one after another in a warm worker inside the Dagster daemon
(`cpa_resources/warm_runs.py`), where the SparkSession stays up between runs. Its first run would
pay for starting the JVM and compiling Spark's read and write paths (bronze 14 s instead of 3 s
for the first file after `make run`'s backfill), and every file delivered behind it would wait in
the queue. So, once per start of the code location, a sensor asks for one small run of its own in
that worker: it starts the session, parses a few made-up events with bronze's own parser, writes
them to a partitioned Delta table, merges them in again (inserting nothing) and counts them back,
as a stream step does, in a scratch lake.
It carries the stream's tag, so it takes the stream's turn like any stream run and never touches
the lake."""

import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from cpa_assets.bronze.usage import parse_events, read_event_lines, split_events
from cpa_assets.jobs import STREAM_TAGS
from cpa_resources import LakeResource

# Made-up events over as many dates as a course file touches.
WARM_UP_DAYS = 60
WARM_UP_EVENTS_PER_DAY = 10


def warm_up_lines(days: int = WARM_UP_DAYS, per_day: int = WARM_UP_EVENTS_PER_DAY) -> str:
    """JSON lines of made-up usage events, `per_day` on each of `days` dates (and one repeated id)."""
    lines = []
    for n in range(days * per_day):
        day = dt.date(2025, 1, 1) + dt.timedelta(days=n % days)
        lines.append(json.dumps({
            "event_id": f"warm_{n % (days * per_day - 1)}", "timestamp": f"{day}T12:00:00Z", "org_id": "org_warm",
            "resource_id": "res_warm", "service": "compute", "region": "us-east", "metric": "requests",
            "value": n, "unit": "count", "cost_usd_increment": 0.01, "schema_version": 2,
        }))
    return "\n".join(lines) + "\n"


@dg.op(description="Start the stream worker's SparkSession and run bronze's parse, a partitioned Delta write, a merge and a read on made-up events.")
def warm_up_spark(context: dg.OpExecutionContext, spark: LazyPySparkResource) -> int:
    """The number of dates written and read back."""
    began = time.perf_counter()
    session = spark.spark_session
    with tempfile.TemporaryDirectory(prefix="cpa-warm-up-") as scratch:
        landing = Path(scratch) / "warm_up.jsonl"
        landing.write_text(warm_up_lines())
        last = (dt.date(2025, 1, 1) + dt.timedelta(days=WARM_UP_DAYS - 1)).isoformat()
        events, _, _ = split_events(parse_events(read_event_lines(session, [landing]), "2025-01-01", last))
        lake = LakeResource(root=scratch)
        for _ in range(2):  # the first write creates the table, the second merges into it
            lake.append_partitions(events, "bronze", "events", "event_date")
        days = lake.read(session, "bronze", "events").groupBy("event_date").count().toPandas()
    context.log.info(f"stream worker warm: {len(days)} dates parsed, written, read and counted in {time.perf_counter() - began:.1f} s")
    return len(days)


@dg.job(name="stream_worker_warm_up", tags=STREAM_TAGS,
        description="Start the stream worker's Spark session before the first file arrives (requested once per start).")
def stream_worker_warm_up():
    warm_up_spark()


_requested_in: int | None = None  # the pid of the code server that asked already


# Its first tick comes as the stack starts; every later one is a skipped tick kept for a day (see
# dagster.yaml's retention): at one a minute, 1,440 at most.
@dg.sensor(job=stream_worker_warm_up, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def stream_worker_warm_up_sensor(context: dg.SensorEvaluationContext):
    """Once per start of the code location, when stream runs go to a warm worker: one warm-up run."""
    global _requested_in
    if not getattr(context.instance.run_launcher, "keeps_a_warm_worker", False):
        return dg.SkipReason("stream runs get a process of their own here: nothing stays warm")
    if _requested_in == os.getpid():
        return dg.SkipReason("the stream worker was warmed when the code location started")
    _requested_in = os.getpid()
    return dg.RunRequest(run_key=f"{os.getpid()}-{int(time.time())}")

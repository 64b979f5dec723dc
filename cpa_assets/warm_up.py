"""Warming the stream's worker when the stack starts.

Stream runs execute one after another in a warm worker inside the Dagster daemon
(`cpa_resources/warm_runs.py`), where the SparkSession stays up between runs. Its first run would
pay for starting the JVM and compiling Spark's read and write paths (bronze 14 s instead of 3 s
for the first file after `make run`'s backfill), and every file delivered behind it would wait in
the queue. So, once per start of the code location, a sensor asks for one small run of its own in
that worker: it starts the session and writes, reads and aggregates a few partitioned Parquet
rows, as a stream step does, in a scratch folder. It carries the stream's tag, so it takes the
stream's turn like any stream run and never touches the lake."""

import os
import tempfile
import time

import dagster as dg
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import functions as F

from cpa_assets.jobs import STREAM_TAGS

WARM_UP_ROWS = 6000


@dg.op(description="Start the stream worker's SparkSession and run a small partitioned Parquet write, read and aggregate.")
def warm_up_spark(context: dg.OpExecutionContext, spark: LazyPySparkResource) -> int:
    """The number of partitions written and read back."""
    began = time.perf_counter()
    session = spark.spark_session
    with tempfile.TemporaryDirectory(prefix="cpa-warm-up-") as scratch:
        folder = os.path.join(scratch, "rows")
        rows = session.range(WARM_UP_ROWS).select(
            F.date_add(F.lit("2025-01-01").cast("date"), (F.col("id") % 60).cast("int")).alias("event_date"),
            F.col("id").cast("string").alias("event_id"),
            (F.col("id") / 7).alias("value"),
        )
        rows.write.partitionBy("event_date").parquet(folder)
        days = session.read.parquet(folder).groupBy("event_date").agg(F.sum("value").alias("value")).toPandas()
    context.log.info(f"stream worker warm: {len(days)} partitions written, read and summed in {time.perf_counter() - began:.1f} s")
    return len(days)


@dg.job(name="stream_worker_warm_up", tags=STREAM_TAGS,
        description="Start the stream worker's Spark session before the first file arrives (requested once per start).")
def stream_worker_warm_up():
    warm_up_spark()


_requested_in: int | None = None  # the pid of the code server that asked already


@dg.sensor(job=stream_worker_warm_up, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def stream_worker_warm_up_sensor(context: dg.SensorEvaluationContext):
    """Once per start of the code location, when stream runs go to a warm worker: one warm-up run."""
    global _requested_in
    if not getattr(context.instance.run_launcher, "keeps_a_warm_worker", False):
        return dg.SkipReason("stream runs get a process of their own here: nothing stays warm")
    if _requested_in == os.getpid():
        return dg.SkipReason("the stream worker was warmed when the code location started")
    _requested_in = os.getpid()
    return dg.RunRequest(run_key=f"{os.getpid()}-{int(time.time())}")

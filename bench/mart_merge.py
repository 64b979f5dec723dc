"""Benchmark: the daily mart's `MERGE` (`LakeResource.upsert` with measures added) on a mart of a
given size, with and without Delta deletion vectors: does a file's increment cost less when the
`MERGE` marks the replaced rows deleted instead of rewriting the files that hold them?

Usage: python bench/mart_merge.py [--rows-per-date 22000] [--dates 60] [--increment 360] [--rounds 2]

A synthetic table with the mart's key (org_id, usage_date, service) and measures, `--dates`
partitions of `--rows-per-date` rows, is written twice: as the pipeline writes it and with
`delta.enableDeletionVectors`. Then an increment of `--increment` cells spread over every date
(as a stream file's events are; mostly cells the mart holds) is merged into each table in turn,
`--rounds` times alternating. It prints each merge's seconds, what its commit says it rewrote,
and the medians. Spark is the environment's (`CPA_SPARK_REMOTE`, `CPA_SPARK_MASTER`, or local
mode; `make bench-merge` starts the local Spark Connect server)."""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pyspark.sql import DataFrame, SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from cpa_resources import LakeResource, session_from_env  # noqa: E402
from cpa_resources.lake import table_ref  # noqa: E402

KEY = ["org_id", "usage_date", "service"]
MEASURES = ["cost_usd", "requests", "genai_tokens", "storage_gb_hours"]
SERVICES = 10
# What a MERGE commit says it did: files rewritten, rows copied into them unchanged, deletion vectors.
MERGE_METRICS = ["numTargetFilesRemoved", "numTargetRowsCopied", "numTargetDeletionVectorsAdded", "numTargetRowsUpdated"]


def mart_rows(spark: SparkSession, dates: int, rows_per_date: int, seed: int) -> DataFrame:
    """`rows_per_date` distinct cells on each of `dates` days: org × service, one row a cell."""
    cell = F.col("id") % rows_per_date
    return (
        spark.range(dates * rows_per_date)
        .withColumn("usage_date", F.date_add(F.lit("2025-07-01").cast("date"), (F.col("id") / rows_per_date).cast("int")))
        .withColumn("org_id", F.concat(F.lit("org_"), (cell / SERVICES).cast("int").cast("string")))
        .withColumn("service", F.concat(F.lit("svc_"), (cell % SERVICES).cast("string")))
        .withColumn("cost_usd", F.rand(seed) * 10)
        .withColumn("requests", (F.rand(seed + 1) * 100).cast("long"))
        .withColumn("genai_tokens", (F.rand(seed + 2) * 1000).cast("long"))
        .withColumn("storage_gb_hours", F.rand(seed + 3))
        .drop("id")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # The 100× generated data (seed 7) holds 1,304,727 org × date × service cells over 60 dates.
    parser.add_argument("--rows-per-date", type=int, default=22_000)
    parser.add_argument("--dates", type=int, default=60)
    # A 100× file's run reaches ≈ 360 cells (357, 359, 240 in `make bench-scale`).
    parser.add_argument("--increment", type=int, default=360)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    spark = session_from_env()
    scratch = Path(tempfile.mkdtemp(prefix="cpa-mart-merge-"))
    lake = LakeResource(root=str(scratch))
    variants = {"rewrite files": "mart", "deletion vectors": "mart_dv"}
    try:
        for table in variants.values():
            lake.upsert(mart_rows(spark, args.dates, args.rows_per_date, seed=1), "gold", table, KEY, "usage_date")
        spark.sql(f"ALTER TABLE {table_ref(lake.path('gold', variants['deletion vectors']))}"
                  " SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')").collect()
        print(f"mart: {args.dates} dates × {args.rows_per_date:,} cells; increment: {args.increment:,} cells", flush=True)
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        # Mostly held cells (replaced, measures added) and a few new ones, on every date.
        fraction = args.increment / (args.dates * args.rows_per_date)
        for round_ in range(args.rounds):
            for name, table in variants.items():
                increment = mart_rows(spark, args.dates, int(args.rows_per_date * 1.01), seed=10 + round_)
                increment = increment.sample(fraction=fraction, seed=round_).cache()
                increment.count()
                began = time.perf_counter()
                lake.upsert(increment, "gold", table, KEY, "usage_date", add=MEASURES)
                seconds[name].append(time.perf_counter() - began)
                increment.unpersist()
                metrics = lake.history("gold", table, 1)[0].get("operationMetrics") or {}
                print(f"round {round_ + 1}, {name}: {seconds[name][-1]:.2f} s ("
                      + ", ".join(f"{k} {metrics.get(k)}" for k in MERGE_METRICS) + ")", flush=True)
        for name, values in seconds.items():
            print(f"median, {name}: {statistics.median(values):.2f} s")
        ratio = statistics.median(seconds["deletion vectors"]) / statistics.median(seconds["rewrite files"])
        print(f"deletion vectors / rewrite files: {ratio:.2f}×")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Spark: local mode by default, a cluster master URL or a Spark Connect server by configuration."""

from __future__ import annotations

import os
import sys

import dagster as dg
from pyspark.sql import SparkSession


class SparkResource(dg.ConfigurableResource):
    """One SparkSession per process, shared by every step of a run (the in-process executor)."""

    master: str = "local[2]"
    remote: str = ""
    driver_memory: str = "2g"
    shuffle_partitions: int = 4

    @classmethod
    def from_env(cls) -> SparkResource:
        return cls(
            master=os.environ.get("CPA_SPARK_MASTER", "local[2]"),
            remote=os.environ.get("CPA_SPARK_REMOTE", ""),
            driver_memory=os.environ.get("CPA_SPARK_DRIVER_MEMORY", "2g"),
            shuffle_partitions=int(os.environ.get("CPA_SPARK_SHUFFLE_PARTITIONS", "4")),
        )

    def session(self) -> SparkSession:
        builder = SparkSession.builder.appName("cpa")
        if self.remote:
            return builder.remote(self.remote).getOrCreate()
        # Python workers run the driver's interpreter (the project's virtualenv, with pandas and
        # pyarrow), locally or on a cluster's executors, not whatever `python3` their PATH finds.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        session = (
            builder.master(self.master)
            .config("spark.driver.memory", self.driver_memory)
            .config("spark.sql.shuffle.partitions", str(self.shuffle_partitions))
            .config("spark.default.parallelism", str(self.shuffle_partitions))
            .config("spark.sql.session.timeZone", "UTC")
            # Adaptive execution re-plans each query around its shuffles: at these data sizes that costs
            # more than it saves (a stream step's 60-partition write: 0.9 s without, 1.3 s with).
            .config("spark.sql.adaptive.enabled", "false")
            .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
            # The UI server and its listeners cost start-up time and memory a batch step never uses.
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.parquet.compression.codec", "snappy")
            # Local files without Hadoop's .crc side files (Parquet checksums its own pages): a
            # 60-partition write takes 0.5 s instead of 0.6 s, a read of 360 small files 10 % less.
            .config("spark.hadoop.fs.file.impl", "org.apache.hadoop.fs.RawLocalFileSystem")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            # Listing a few hundred partition folders is quicker on the driver than as a Spark job.
            .config("spark.sql.sources.parallelPartitionDiscovery.threshold", "100000")
            .config("spark.driver.extraJavaOptions", "-XX:+UseParallelGC -XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=256m")
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("ERROR")
        return session

"""Spark through dagster-pyspark: local mode by default, a cluster master URL or a Spark Connect
server by configuration (`CPA_SPARK_MASTER`, `CPA_SPARK_REMOTE`), with Delta Lake's extensions.

Delta Lake's jars (the version of the `delta-spark` Python package, which matches Spark's) are
fetched once from Maven Central with `mvn` into `CPA_DELTA_CACHE` (`~/.cache/cpa/delta`) and
handed to the session as `spark.jars`, which a cluster's executors receive from the driver: no
resolution at every session start."""

from __future__ import annotations

import os
import sys
from importlib.metadata import version
from pathlib import Path

from dagster_pyspark import LazyPySparkResource
from pyspark.sql import SparkSession

from cpa_resources import maven
from cpa_resources.local_cassandra import java_home

DELTA_VERSION = version("delta-spark")
SCALA_BINARY = "2.13"  # Spark 4's


def delta_jars() -> list[Path]:
    """Delta Lake's Spark jars (delta-spark and delta-storage; Spark already ships the rest)."""
    cache = Path(os.environ.get("CPA_DELTA_CACHE") or Path.home() / ".cache" / "cpa" / "delta").expanduser()
    lib = maven.fetch("io.delta", f"delta-spark_{SCALA_BINARY}", DELTA_VERSION, cache / DELTA_VERSION, java_home(),
                      groups="io.delta")
    return sorted(lib.glob("*.jar"))


def spark_config(
    master: str = "local[2]", remote: str = "", driver_memory: str = "2g", shuffle_partitions: int = 4
) -> dict[str, str]:
    """The session's settings: a Spark Connect address alone (its server has this project's
    settings, see `local_spark`), or a master with Delta Lake and this project's tuning."""
    if remote:
        return {"spark.remote": remote}
    return {
        "spark.jars": ",".join(str(jar) for jar in delta_jars()),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        # A table's state is rebuilt from its log by a Spark job per new version; the default 50
        # partitions suit a log of thousands of files, not this lake's (a 60-date replaceWhere:
        # 1.5 s instead of 3.3 s, a read 0.7 s instead of 2.0 s, measured).
        "spark.databricks.delta.snapshotPartitions": "1",
        # Log entries are kept as long as the data files a restore needs (see LakeResource).
        "spark.databricks.delta.properties.defaults.logRetentionDuration": "interval 7 days",
        # Delta keeps each table's log and state in memory once read; bounded, so a long-lived server
        # (or a test session touching thousands of scratch tables) does not hold them all.
        "spark.databricks.delta.deltaLog.cacheSize": "64",
        # Every table keeps a change feed: a step reads what the steps before it changed in its run
        # from the files those commits wrote (see LakeResource.run_changes).
        "spark.databricks.delta.properties.defaults.enableChangeDataFeed": "true",
        # MERGE reads its source twice; Delta copies it to local disk first in case it would change
        # in between. Every source here is cached or read from files no one writes meanwhile (the
        # lake's lock): a MERGE takes 0.9 s instead of 1.25 s without the copy (measured).
        "spark.databricks.delta.merge.materializeSource": "none",
        # The checksum file of each commit needs the table's whole state computed after the commit:
        # 0.65 s instead of 0.85 s to overwrite a small table (measured); nothing here reads it.
        "spark.databricks.delta.writeChecksumFile.enabled": "false",
        "spark.app.name": "cpa",
        "spark.master": master,
        "spark.driver.memory": driver_memory,
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        "spark.default.parallelism": str(shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.log.level": "ERROR",
        # Adaptive execution re-plans each query around its shuffles: at these data sizes that costs
        # more than it saves (a stream step's 60-partition write: 0.9 s without, 1.3 s with).
        "spark.sql.adaptive.enabled": "false",
        "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
        # The UI server and its listeners cost start-up time and memory a batch step never uses.
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.parquet.compression.codec": "snappy",
        # Local files without Hadoop's .crc side files (Parquet checksums its own pages): a
        # 60-partition write takes 0.5 s instead of 0.6 s, a read of 360 small files 10 % less.
        "spark.hadoop.fs.file.impl": "org.apache.hadoop.fs.RawLocalFileSystem",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Listing a few hundred partition folders is quicker on the driver than as a Spark job.
        "spark.sql.sources.parallelPartitionDiscovery.threshold": "100000",
        "spark.driver.extraJavaOptions": "-XX:+UseParallelGC -XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=256m",
    }


def local_settings() -> dict[str, str]:
    """The settings of a local-mode Spark configured from the environment (the Spark Connect server
    of `local_spark` runs with them too)."""
    return spark_config(
        master=os.environ.get("CPA_SPARK_MASTER", "local[2]"),
        driver_memory=os.environ.get("CPA_SPARK_DRIVER_MEMORY", "2g"),
        shuffle_partitions=int(os.environ.get("CPA_SPARK_SHUFFLE_PARTITIONS", "4")),
    )


def spark_from_env() -> LazyPySparkResource:
    """dagster-pyspark's resource, configured from the environment; the session starts on first use."""
    # Python workers run the driver's interpreter (the project's virtualenv, with pandas and
    # pyarrow), locally or on a cluster's executors, not whatever `python3` their PATH finds:
    # PySpark takes it from PYSPARK_PYTHON, not from the session's configuration.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    remote = os.environ.get("CPA_SPARK_REMOTE", "")
    return LazyPySparkResource(spark_config=spark_config(remote=remote) if remote else local_settings())


def session_from_env() -> SparkSession:
    """The environment's SparkSession, outside a run (command-line tools, tests, benchmarks)."""
    return spark_from_env().spark_session

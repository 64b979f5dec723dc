"""Typed Dagster resources: the lake, Spark (dagster-pyspark's, configured here) and Cassandra."""

from cpa_resources.cassandra import CassandraResource
from cpa_resources.lake import LakeResource
from cpa_resources.spark import session_from_env, spark_from_env

__all__ = ["CassandraResource", "LakeResource", "session_from_env", "spark_from_env"]

"""Typed Dagster resources: the lake, Spark and Cassandra."""

from cpa_resources.cassandra import CassandraResource
from cpa_resources.lake import LakeResource
from cpa_resources.spark import SparkResource

__all__ = ["CassandraResource", "LakeResource", "SparkResource"]

"""How a step of the usage path knows what to do in a run: recompute its partitions, or work from
what the steps before it changed in this run.

A run the usage sensor plans for files that arrived after every file known carries their names
(`appended`) in every usage step's config. Bronze and silver then add those files' events; each
later step reads what its upstream table's commits of this run changed (the table's change feed,
`LakeResource.run_changes`) and updates only the rows those changes reach. A backfill, a run from
the UI and a repair carry no names: every step recomputes the run's partitions. So does a step
whose upstream recomputed in this run (bronze finding that the files cannot simply be added,
silver after a reload of the org or resource snapshot)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import dagster as dg
from pyspark.sql import DataFrame, SparkSession

from cpa_resources import LakeResource


class UsageRun(dg.Config):
    """What the usage sensor says of a run: the files it adds, when they arrived after every file
    before them (the usual delivery). Empty: recompute the run's partitions."""

    appended: list[str] = []


class Mode(Enum):
    RECOMPUTE = "dates recomputed"
    INCREMENT = "rows the run's changes reach"


# Commit operations that only add rows (or replace rows by key): what a step downstream can follow
# through the change feed. Anything else (a replaceWhere overwrite, a restore) means recompute.
FOLLOWABLE = {"MERGE", "WRITE:Append", "WRITE:ErrorIfExists"}


def _kind(commit: dict) -> str:
    operation = commit.get("operation", "")
    if operation == "WRITE":
        return f"WRITE:{(commit.get('operationParameters') or {}).get('mode', '')}"
    return operation


@dataclass
class Upstream:
    """What a step does with one upstream table in this run: recompute, or follow its `changes`
    (None: the run changed nothing there)."""

    mode: Mode
    changes: DataFrame | None = None


def upstream(config: UsageRun, lake: LakeResource, spark: SparkSession, layer: str, table: str) -> Upstream:
    """Recompute unless the run appends and every data-changing commit of this run to the upstream
    table only added (or merged) rows; then its change feed for those commits."""
    if not config.appended:
        return Upstream(Mode.RECOMPUTE)
    commits = [c for c in lake.run_commits(layer, table) if c.get("operation") != "OPTIMIZE"]
    if any(_kind(c) not in FOLLOWABLE for c in commits):
        return Upstream(Mode.RECOMPUTE)
    if not commits:
        return Upstream(Mode.INCREMENT, None)
    return Upstream(Mode.INCREMENT, lake.run_changes(spark, layer, table))

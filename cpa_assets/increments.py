"""How a step of the usage path knows what to do in a run: recompute its partitions, or work from
what the steps before it changed in this run.

A run the usage sensor plans for files that arrived after every file known carries their names
(`appended`) in every usage step's config. Bronze and silver then add those files' events; each
later step reads what its upstream table's commits of this run changed (the table's change feed,
`LakeResource.run_changes`) and updates only the rows those changes reach. A backfill, a run from
the UI and a repair carry no names: every step recomputes the run's partitions. So does a step
whose upstream recomputed in this run (bronze finding that the files cannot simply be added,
silver after a reload of the org or resource snapshot).

The marts after P1 may be left by a run to the next one while files wait (cpa_assets/gold/tail.py):
that run's config names the runs it completes (`follows`), and those marts and their tables follow
the commits of all of them. Steps before them (bronze, silver, the daily mart) follow this run only:
following an earlier run's silver commits again would add its events twice."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import dagster as dg
from pyspark.sql import DataFrame, SparkSession

from cpa_resources import LakeResource


class UsageRun(dg.Config):
    """What the usage sensor says of a run: the files it adds, when they arrived after every file
    before them (the usual delivery), and for the marts after P1, the earlier runs that left theirs
    to this one (`follows`, see cpa_assets/gold/tail.py). Both empty: recompute the run's partitions."""

    appended: list[str] = []
    follows: list[str] = []

    @property
    def increments(self) -> bool:
        return bool(self.appended or self.follows)


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
    """Recompute unless the run appends (or completes earlier runs) and every data-changing commit
    of this run and of the runs it follows to the upstream table only added (or merged) rows; then
    the change feed of those commits."""
    if not config.increments:
        return Upstream(Mode.RECOMPUTE)
    commits = [c for c in lake.run_commits(layer, table, config.follows) if c.get("operation") != "OPTIMIZE"]
    if any(_kind(c) not in FOLLOWABLE for c in commits):
        return Upstream(Mode.RECOMPUTE)
    if not commits:
        return Upstream(Mode.INCREMENT, None)
    return Upstream(Mode.INCREMENT, lake.run_changes(spark, layer, table, config.follows))

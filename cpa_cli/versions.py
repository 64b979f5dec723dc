"""`cpa history TABLE` and `cpa restore TABLE --version N`: a lake table's versions, and rolling a
bad load back to an earlier one."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone

from cpa_resources import LakeResource

LAYERS = ("bronze", "silver", "gold")


def add_arguments(parser: argparse.ArgumentParser, restoring: bool) -> None:
    parser.add_argument("table", help="LAYER/TABLE (gold/org_daily_usage_by_service), or a table name found in one layer only")
    if restoring:
        parser.add_argument("--version", type=int, required=True, help="the version to make current again")
    else:
        parser.add_argument("--limit", type=int, default=20, help="how many of the newest versions (0: all)")


def resolve(lake: LakeResource, name: str) -> tuple[str, str]:
    """(layer, table) of a lake table named LAYER/TABLE or by its name alone."""
    if "/" in name:
        layer, table = name.split("/", 1)
        if layer not in LAYERS or not lake.exists(layer, table):
            raise SystemExit(f"no table {name} in the lake at {lake.root}")
        return layer, table
    found = [layer for layer in LAYERS if lake.exists(layer, name)]
    if not found:
        raise SystemExit(f"no table {name} in any layer of the lake at {lake.root}")
    if len(found) > 1:
        raise SystemExit(f"{name} is a table of {' and '.join(found)}: name it as LAYER/{name}")
    return found[0], name


def history(args: argparse.Namespace) -> int:
    lake = LakeResource.from_env()
    layer, table = resolve(lake, args.table)
    print(f"{layer}/{table}  ({lake.path(layer, table)})")
    print(f"{'version':>7}  {'time (UTC)':19}  {'operation':18}  figures")
    for entry in lake.history(layer, table, args.limit or None):
        at = datetime.fromtimestamp(entry["timestamp"] / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        figures = {k: v for k, v in (entry.get("operationMetrics") or {}).items()
                   if k in ("numOutputRows", "numFiles", "numTargetRowsInserted", "numRemovedFiles", "numAddedFiles",
                            "numRestoredFiles")}
        predicate = (entry.get("operationParameters") or {}).get("predicate")
        if predicate and predicate != "[]":
            figures["predicate"] = predicate[:60]
        print(f"{entry['version']:>7}  {at:19}  {entry['operation']:18}  {json.dumps(figures)}")
    return 0


def restore(args: argparse.Namespace) -> int:
    from cpa_resources import session_from_env

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    lake = LakeResource.from_env()
    layer, table = resolve(lake, args.table)
    current = lake.version(layer, table)
    if not 0 <= args.version <= current:
        raise SystemExit(f"{layer}/{table} has versions 0 to {current}: no version {args.version}")
    lock = lake.hold_lock("cpa restore")  # no run writes the lake meanwhile
    try:
        figures = lake.restore(session_from_env(), layer, table, args.version)
    finally:
        os.close(lock)
    print(f"{layer}/{table}: version {args.version} is current again, as version {lake.version(layer, table)} "
          f"({figures.get('num_restored_files', 0)} files restored, {figures.get('num_removed_files', 0)} removed)")
    print("Tables built from it still hold what the bad load gave them: materialise its downstream assets "
          "(Dagster UI, or `cpa backfill`) to carry the restored rows through.")
    return 0

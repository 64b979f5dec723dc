"""`cpa calendar`: the partition bounds that fit the landing data, as shell `export` lines.

`make run` evaluates them before the backfill and the UI, so a historical dataset's partitions are
exactly its dates and a live stream's run through today. A variable already set is left alone."""

import argparse
import os
import shlex

from cpa_assets.landing import CALENDAR_VARIABLES, landing_calendar
from cpa_resources import LakeResource


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--landing", help="landing folder (default: CPA_LANDING_DIR or datalake/landing)")


def run(args: argparse.Namespace) -> int:
    lake = LakeResource.from_env()
    if args.landing:
        lake = LakeResource(root=lake.root, landing=args.landing)
    found = landing_calendar(lake.landing_dir(), lake.event_files())
    for name in CALENDAR_VARIABLES:
        if name in found and not os.environ.get(name):
            print(f"export {name}={shlex.quote(found[name])}")
    return 0

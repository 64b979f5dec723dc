"""Benchmark: how fast the Dagster instance grows while the usage sensor idles, under `make run`'s
settings (`dg dev`, the project's dagster.yaml), on a lake that already holds a landing folder's
files (backfilled, as `make run` leaves it).

Usage: python bench/idle.py [--landing DIR] [--minutes M]

It prints the instance's size after the stack settled and M minutes later, the bytes per hour
between the two, and the sensor's cursor size."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stack import LiveStack  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LANDING = REPO.parent / "shared" / "datasets" / "cloud_provider" / "landing"
KEYSPACE = "cpa_bench_idle"


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landing", type=Path, default=DEFAULT_LANDING)
    parser.add_argument("--minutes", type=float, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cpa-idle-") as scratch_dir:
        scratch = Path(scratch_dir)
        landing = scratch / "landing"
        shutil.copytree(args.landing, landing)
        stack = LiveStack(scratch / "dagster", scratch / "lake", landing, KEYSPACE)
        subprocess.run([sys.executable, "-m", "cpa_cli.main", "backfill"], cwd=REPO, env=stack.env, check=True,
                       stdout=subprocess.DEVNULL)
        try:
            stack.start()
            time.sleep(60)  # the first ticks, the daemon's own start-up records
            before, began = size_of(stack.home), time.monotonic()
            time.sleep(args.minutes * 60)
            after, hours = size_of(stack.home), (time.monotonic() - began) / 3600
            cursor = _cursor(stack)
        finally:
            stack.stop()
    print(f"idle sensor: instance {before:,} B after start-up, {after:,} B {args.minutes:g} min later:"
          f" {(after - before) / hours:,.0f} B per hour; cursor {cursor} B")
    return 0


def _cursor(stack: LiveStack) -> int:
    """The usage sensor's cursor size, as the instance stores it with every tick."""
    for state in stack.instance().all_instigator_state():
        if state.name == "usage_events_sensor" and state.instigator_data is not None:
            return len(state.instigator_data.cursor or "")
    return -1


if __name__ == "__main__":
    sys.exit(main())

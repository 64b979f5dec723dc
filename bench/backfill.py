"""Benchmark: `cpa backfill` from an empty lake, wall time per layer and peak memory.

Usage: python bench/backfill.py [--landing DIR] [--runs N]
Prints one block of figures per run; the README quotes them. The landing folder defaults to the
course dataset beside the repository."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.stack import scratch_instance  # noqa: E402
from cpa_resources import local_postgres, local_spark  # noqa: E402
from cpa_resources.local_postgres import INSTANCE_ENV  # noqa: E402

DEFAULT_LANDING = REPO.parent / "shared" / "datasets" / "cloud_provider" / "landing"


def _children(pid: int) -> list[int]:
    found = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:  # the process ended meanwhile
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(root: int) -> int:
    """Resident memory of a process and all its descendants (the Spark JVM among them)."""
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += _rss_kib(pid)
        stack += _children(pid)
    return total


def serving_pids() -> list[int]:
    """The servers that work for a run besides its own process: Spark Connect, Cassandra, PostgreSQL."""
    from cpa_resources import local_cassandra

    pids = [local_spark.server().pid(), local_postgres.server().pid(), local_cassandra.running_pid(local_cassandra.local_node())]
    return [pid for pid in pids if pid]


class PeakMemory:
    """Samples the resident memory of a process tree and of the servers, every 0.2 s."""

    def __init__(self, root: int):
        self.root, self.peak, self._stop = root, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            total = tree_rss_kib(self.root) + sum(tree_rss_kib(pid) for pid in serving_pids())
            self.peak = max(self.peak, total)
            time.sleep(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()


def run_once(landing: Path, spark: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="cpa-bench-") as scratch:
        env = {
            **os.environ,
            **INSTANCE_ENV,
            "CPA_LAKE_DIR": f"{scratch}/lake",
            "CPA_LANDING_DIR": str(landing),
            "DAGSTER_HOME": f"{scratch}/dagster",
        }
        # The instance settings `make run` uses, on a database of its own.
        database = scratch_instance(Path(env["DAGSTER_HOME"]))
        if spark == "connect":  # as `make run` runs it: through the local Spark Connect server
            local_spark.start()
            env["CPA_SPARK_REMOTE"] = local_spark.address()
        began = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "cpa_cli.main", "backfill"], cwd=REPO, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        output: list[str] = []
        reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
        reader.start()
        with PeakMemory(process.pid) as memory:
            process.wait()
        reader.join()
        peak = memory.peak
        wall = time.perf_counter() - began
        local_postgres.drop_database(database)
    text = "".join(output)
    layers = re.search(r"seconds per layer (.*)", text)
    slowest = re.search(r"slowest steps \(s\) (.*)", text)
    return {
        "slowest": slowest.group(1) if slowest else "?",
        "ok": process.returncode == 0 and "succeeded" in text,
        "wall_s": wall,
        "layers": layers.group(1) if layers else "?",
        "peak_mib": peak / 1024,
        "tail": text.strip().splitlines()[-5:],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landing", type=Path, default=DEFAULT_LANDING)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--spark", choices=["connect", "local"], default="connect",
                        help="the local Spark Connect server (as `make run`), or Spark in the backfill's own process")
    args = parser.parse_args()
    print(f"bench: cpa backfill from an empty lake, landing {args.landing}, Spark {args.spark}, {os.cpu_count()} cores")
    for run in range(1, args.runs + 1):
        figures = run_once(args.landing, args.spark)
        if not figures["ok"]:
            print("\n".join(figures["tail"]))
            return 1
        print(
            f"run {run}: wall {figures['wall_s']:.1f} s | layers (s): {figures['layers']} | peak RSS of every process"
            f" at work (the backfill, Spark, Cassandra, PostgreSQL) {figures['peak_mib']:.0f} MiB"
        )
        print(f"  slowest steps (s): {figures['slowest']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

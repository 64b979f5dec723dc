"""Benchmark: `cpa backfill` from an empty lake, wall time per layer and peak memory.

Usage: python bench/backfill.py [--landing DIR] [--runs N]
Prints one block of figures per run; the README quotes them. The landing folder defaults to the
course dataset beside the repository."""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LANDING = REPO.parent / "shared" / "datasets" / "cloud_provider" / "landing"


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
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


def cassandra_rss_kib() -> int:
    pid_file = Path(os.environ.get("CPA_CASSANDRA_DIR", REPO / ".cassandra")) / "cassandra.pid"
    try:
        return _rss_kib(int(pid_file.read_text().strip()))
    except (OSError, ValueError):
        return 0


def run_once(landing: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="cpa-bench-") as scratch:
        env = {
            **os.environ,
            "CPA_LAKE_DIR": f"{scratch}/lake",
            "CPA_LANDING_DIR": str(landing),
            "DAGSTER_HOME": f"{scratch}/dagster",
        }
        os.makedirs(env["DAGSTER_HOME"])
        # The instance settings `make run` uses (its event log storage among them).
        shutil.copy(REPO / ".dagster_home" / "dagster.yaml", env["DAGSTER_HOME"])
        began = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "cpa_cli.main", "backfill"], cwd=REPO, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        peak = 0
        output: list[str] = []
        reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
        reader.start()
        while process.poll() is None:
            peak = max(peak, tree_rss_kib(process.pid))
            time.sleep(0.05)
        reader.join()
        wall = time.perf_counter() - began
    text = "".join(output)
    layers = re.search(r"seconds per layer (.*)", text)
    return {
        "ok": process.returncode == 0 and "succeeded" in text,
        "wall_s": wall,
        "layers": layers.group(1) if layers else "?",
        "peak_pipeline_mib": peak / 1024,
        "cassandra_mib": cassandra_rss_kib() / 1024,
        "tail": text.strip().splitlines()[-5:],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landing", type=Path, default=DEFAULT_LANDING)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    print(f"bench: cpa backfill from an empty lake, landing {args.landing}, {os.cpu_count()} cores")
    for run in range(1, args.runs + 1):
        figures = run_once(args.landing)
        if not figures["ok"]:
            print("\n".join(figures["tail"]))
            return 1
        print(
            f"run {run}: wall {figures['wall_s']:.1f} s | layers (s): {figures['layers']} | peak RSS pipeline"
            f" (Python + Spark JVM) {figures['peak_pipeline_mib']:.0f} MiB | Cassandra server"
            f" {figures['cassandra_mib']:.0f} MiB | total {figures['peak_pipeline_mib'] + figures['cassandra_mib']:.0f} MiB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

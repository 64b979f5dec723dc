"""Benchmark: the pipeline at 1×, 10× and 100× the course dataset's size, under `make run`'s
settings (the local Spark Connect server, the project's PostgreSQL instance, the local Cassandra).

Usage: python bench/scale.py [--scales 1,10,100] [--files 5] [--interval 15] [--cache DIR]

For each scale, `cpa generate --scale N` writes the landing data once into the cache folder. Every
event file but the last `--files` is backfilled (`cpa backfill` in a process of its own, as `make
run` runs it): wall time, events per second, and the peak resident memory of every process at work
(the backfill, the Spark Connect server, Cassandra, PostgreSQL; JVMs included). Then `dg dev`
serves the lake, and the held-back files are delivered one every `--interval` seconds: for each,
from its rename into the folder to its rows readable in Cassandra, P1 (`org_daily_usage_by_service`)
and all four usage tables; medians and maxima over the files whose run added events (see
bench/freshness.py: a redelivered file adds none). One table at the end, one row per scale."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.backfill import PeakMemory  # noqa: E402
from bench.freshness import finished_run, freshness_figures, no_event_mark, served_something  # noqa: E402
from bench.stack import LiveStack, wait_for  # noqa: E402
from cpa_assets.landing import landing_calendar  # noqa: E402
from cpa_cli.replay import deliver  # noqa: E402
from cpa_resources import local_spark  # noqa: E402

DEFAULT_CACHE = Path.home() / ".cache" / "cpa" / "bench-scale"


def landing_of(cache: Path, scale: int, seed: int) -> Path:
    """The generated landing folder of a scale, written once."""
    folder = cache / f"scale-{scale}-seed-{seed}"
    if not (folder / "usage_events_stream").is_dir() or (folder / ".incomplete").exists():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".incomplete").touch()
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cpa_cli.main", "generate", "--out", str(folder), "--scale", str(scale),
                        "--seed", str(seed), "--force"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        (folder / ".incomplete").unlink()
        print(f"scale {scale}: landing data generated in {time.perf_counter() - began:.0f} s", flush=True)
    return folder


def linked_landing(source: Path, target: Path, files: list[Path]) -> Path:
    """A landing folder with the source's CSVs and the given event files, hard-linked (no copy of a
    gigabyte of events), so that files can be delivered into it."""
    stream = target / "usage_events_stream"
    stream.mkdir(parents=True)
    for path in [*source.glob("*.csv"), *files]:
        destination = (target if path.suffix == ".csv" else stream) / path.name
        try:
            os.link(path, destination)
        except OSError:
            destination.write_bytes(path.read_bytes())
    return target


def lines_in(files: list[Path]) -> int:
    count = 0
    for path in files:
        with path.open("rb") as handle:
            count += sum(1 for line in handle if line.strip())
    return count


def run_scale(scale: int, args) -> dict:
    source = landing_of(args.cache, scale, args.seed)
    events = sorted((source / "usage_events_stream").glob("*.jsonl"))
    preloaded, held_back = events[: -args.files], events[-args.files:]
    with tempfile.TemporaryDirectory(prefix=f"cpa-scale-{scale}-") as scratch_dir:
        scratch = Path(scratch_dir)
        landing = linked_landing(source, scratch / "landing", preloaded)
        calendar = landing_calendar(source, events)
        stack = LiveStack(scratch / "dagster", scratch / "lake", landing, f"cpa_bench_scale_{scale}",
                          log=Path(tempfile.gettempdir()) / f"cpa-scale-{scale}-dg-dev.log", env=calendar)
        # Each scale starts from a Spark Connect server of its own: its memory is this scale's.
        local_spark.stop()
        stack.prepare()
        n_events = lines_in(preloaded)
        print(f"scale {scale}: backfilling {len(preloaded)} files, {n_events:,} lines ...", flush=True)
        began = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "cpa_cli.main", "backfill"], cwd=REPO, env=stack.env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with PeakMemory(process.pid) as memory:
            process.wait()
        backfill = time.perf_counter() - began
        if process.returncode != 0:
            raise RuntimeError(f"scale {scale}: the backfill failed (exit {process.returncode})")
        print(f"scale {scale}: backfill {backfill:.0f} s, {n_events / backfill:,.0f} events/s,"
              f" peak memory {memory.peak / 1024**2:.1f} GiB", flush=True)
        try:
            stack.start()
            instance = stack.instance()
            stream = landing / "usage_events_stream"
            wait_for(lambda: not instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED,
                                                                           dg.DagsterRunStatus.QUEUED])), 600,
                     "the stack to be idle", interval=1)
            delivered_at = {}
            for number, path in enumerate(held_back):
                if number:
                    time.sleep(max(0.0, delivered_at[held_back[number - 1].name] + args.interval - time.time()))
                deliver(path, stream)
                delivered_at[path.name] = time.time()
            figures = []
            for path in held_back:
                run = wait_for(lambda: finished_run(instance, path.name), 1800, f"the stream run for {path.name}")
                figures.append(freshness_figures(instance, run, delivered_at[path.name]))
                f = figures[-1]
                print(f"scale {scale}: {path.name}: P1 readable {f['p1_readable']:.1f} s | all tables"
                      f" {f['all_tables']:.1f} s | run end {f['run_end']:.1f} s"
                      + no_event_mark(f), flush=True)
        finally:
            stack.close()
            subprocess.run([sys.executable, "-c", "from cpa_resources import CassandraResource; "
                            f"CassandraResource.from_env().session().execute('DROP KEYSPACE IF EXISTS cpa_bench_scale_{scale}')"],
                           cwd=REPO, env=stack.env, check=False)
    counted = served_something(figures)
    p1 = [f["p1_readable"] for f in counted]
    every = [f["all_tables"] for f in counted]
    return {"scale": scale, "events": n_events, "backfill_s": backfill, "events_per_s": n_events / backfill,
            "peak_gib": memory.peak / 1024**2, "p1_p50": statistics.median(p1), "p1_max": max(p1),
            "all_p50": statistics.median(every), "all_max": max(every), "counted": len(counted)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,10,100")
    parser.add_argument("--files", type=int, default=5, help="files delivered on top of the backfilled lake")
    parser.add_argument("--interval", type=float, default=15, help="seconds between deliveries")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where generated landing data is kept")
    args = parser.parse_args()
    print(f"bench: scales {args.scales}, {args.files} files one every {args.interval:g} s; {os.cpu_count()} cores",
          flush=True)
    rows = [run_scale(int(scale), args) for scale in args.scales.split(",")]
    print("\n| scale | events backfilled | backfill | events/s | peak memory (all processes) "
          "| P1 p50 / max | all tables p50 / max | files with new events |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scale']}× | {r['events']:,} | {r['backfill_s']:.0f} s | {r['events_per_s']:,.0f} |"
              f" {r['peak_gib']:.1f} GiB | {r['p1_p50']:.1f} s / {r['p1_max']:.1f} s |"
              f" {r['all_p50']:.1f} s / {r['all_max']:.1f} s | {r['counted']} of {args.files} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

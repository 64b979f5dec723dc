"""Fault harness: the real stack (`dg dev` with the project's dagster.yaml, the sensor, local Spark,
a Cassandra server of its own) is hurt at seeded random moments of a stream run, left to heal on
its own, and compared with a clean run of the same files.

Usage: python bench/faults.py [--kills 10] [--cassandra 2] [--seed 7] [--days 12]

Each kill trial delivers the next event file and SIGKILLs the whole `dg dev` process group at one
of these moments, drawn with the seed:
- `before start`: as soon as the sensor has requested the run (queued, not started);
- `during start`: the run handed to its worker (starting, or started with no step begun);
- `mid-run`: a random delay into the run's steps.
The stack is then started again. Each Cassandra trial delivers a file and stops the server a
random delay into the run, keeps it down for 20–60 s, and starts it again. After every trial the
harness waits until the stream has converged (no stream run queued, going or failed and not yet
repaired) and compares every usage dataset of the lake and every usage serving table with a
backfill of the same files into a fresh lake and keyspace. It prints one line per trial, then
trials passed / total and the time to converge (p50, max) from the stack, or the server, being
back."""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stack import LiveStack, PrivateCassandra, runs_for_file, wait_for  # noqa: E402
from cpa_cli.replay import deliver  # noqa: E402

MOMENTS = ("before start", "during start", "mid-run")
WAITING = (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED)
GOING = (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED)


def stream_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return instance.get_runs(dg.RunsFilter(job_name="usage_stream"))


def converged(instance: dg.DagsterInstance, names: list[str]) -> bool:
    """Nothing queued or going, every failed stream run repaired by a later run (so the last of a
    chain of repairs succeeded), and every delivered file served by a successful run."""
    runs = stream_runs(instance)
    if not runs or any(r.status in WAITING + GOING for r in runs):
        return False
    repaired = {run_id for r in runs for run_id in r.tags.get("cpa/repairs", "").split(",") if run_id}
    if any(r.status == dg.DagsterRunStatus.FAILURE and r.run_id not in repaired for r in runs):
        return False
    return all(any(r.status == dg.DagsterRunStatus.SUCCESS for r in runs_for_file(instance, n)) for n in names)


def step_started(instance: dg.DagsterInstance, run_id: str) -> bool:
    return bool(instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START))


def wait_for_moment(instance: dg.DagsterInstance, name: str, moment: str, rng: random.Random) -> str:
    """Block until the moment of the file's run comes; the run's state then, for the report."""
    def run():
        found = runs_for_file(instance, name)
        return found[0] if found else None

    if moment == "before start":
        found = wait_for(lambda: (r := run()) is not None and r, 120, "the sensor's request", interval=0.005)
        return found.status.value
    if moment == "during start":
        def handed_over():
            r = run()
            return r if r is not None and (r.status == dg.DagsterRunStatus.STARTING or (
                r.status == dg.DagsterRunStatus.STARTED and not step_started(instance, r.run_id))) else None
        return wait_for(handed_over, 300, "the run starting", interval=0.005).status.value
    started = wait_for(lambda: (r := run()) is not None and r.status == dg.DagsterRunStatus.STARTED and r,
                       300, "the run started", interval=0.05)
    time.sleep(rng.uniform(0.5, 20))
    return instance.get_run_by_id(started.run_id).status.value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="SIGKILL trials (default 10)")
    parser.add_argument("--cassandra", type=int, default=2, help="Cassandra stop/start trials (default 2)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--days", type=int, default=12, help="days of generated events (default 12)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    trials = [("kill", MOMENTS[i % len(MOMENTS)]) for i in range(args.kills)] + [("cassandra", "mid-run")] * args.cassandra
    rng.shuffle(trials)

    from cpa_resources import session_from_env
    from tests.streaming import differences_from_a_clean_run, stream_landing

    spark = session_from_env()
    results = []
    with tempfile.TemporaryDirectory(prefix="cpa-faults-") as scratch_dir:
        scratch = Path(scratch_dir)
        server = PrivateCassandra(scratch / "cassandra")
        stack = None
        try:
            server.start()
            cassandra = server.resource("cpa_bench_faults")
            landing, lake, files = stream_landing(scratch, cassandra, seed=args.seed, days=args.days)
            if len(files) < len(trials) + 1:
                raise SystemExit(f"{len(files)} event files for {len(trials)} trials: raise --days")
            log = Path(tempfile.gettempdir()) / "cpa-faults-dg-dev.log"
            log.unlink(missing_ok=True)
            stack = LiveStack(scratch / "dagster", Path(lake.root), landing, cassandra.keyspace, log=log,
                              env={"CPA_CASSANDRA_PORT": str(server.port)})
            print(f"faults: {len(trials)} trials (seed {args.seed}), dg dev log {log}", flush=True)
            delivered: list[str] = []
            stack.start()
            instance = stack.instance()
            deliver(files[0], lake.events_dir())
            delivered.append(files[0].name)
            wait_for(lambda: converged(instance, delivered), 600, "the first file served", interval=1)
            for number, (kind, moment) in enumerate(trials, start=1):
                path = files[number]
                deliver(path, lake.events_dir())
                delivered.append(path.name)
                state = wait_for_moment(instance, path.name, moment, rng)
                if kind == "kill":
                    stack.kill()
                    time.sleep(rng.uniform(0, 3))
                    stack.start()
                else:
                    server.stop()
                    time.sleep(rng.uniform(20, 60))
                    server.start()
                back = time.monotonic()
                wait_for(lambda: converged(instance, delivered), 900, f"trial {number} converging", interval=1)
                seconds = time.monotonic() - back
                differing = differences_from_a_clean_run(scratch, landing, lake, spark, cassandra,
                                                         server.resource("cpa_bench_faults_reference"))
                results.append((kind, moment, seconds, not differing))
                what = "SIGKILL of dg dev" if kind == "kill" else "Cassandra stopped and started"
                print(f"trial {number:2d}: {what} at '{moment}' (run {state}); converged {seconds:.0f} s after it was back;"
                      f" {'equal to a clean run' if not differing else 'DIFFERS: ' + ', '.join(differing)}", flush=True)
        finally:
            if stack is not None:
                stack.stop()
            server.stop()
    passed = sum(ok for *_, ok in results)
    seconds = [s for _, _, s, _ in results]
    print(f"faults: {passed} / {len(trials)} trials equal to a clean run; converged p50 {statistics.median(seconds):.0f} s,"
          f" max {max(seconds):.0f} s")
    return 0 if passed == len(trials) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())

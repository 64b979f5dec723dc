"""The marts after P1 (P2, P5, P6) in a stream run: written now, or left to the next run while
delivered files wait.

A stream run writes P1 first (`serve_first`), then P5, P6, P2 and their tables (≈ 15 s on the
course data), then the ledger. A file that lands meanwhile waits for all of it before its own run
can start. So when a file waits, each of these marts is left to the next run instead: its step
yields nothing (Dagster then skips the table served from it), and the run is tagged with the runs
whose changes are left (`cpa/deferred`). The sensor gives the next run those run ids (its config's
`follows`), and the marts there follow the change feed of their commits and of its own: gold after
any sequence of runs equals a backfill of the same files. They are left only while the first run
that left them started less than CPA_TAIL_LAG_SECONDS ago (90 s; 0: never left), so under any load
no mart lags P1 by much more; a run with no file waiting, a recompute (backfill, repair, UI) and a
run of its own for a left tail never leave them.

Once P1's table is written the run says so (`cpa/p1-served`), and the sensor plans the next file's
run then, while this one is still in its tail: the next run follows this one (and the runs it
follows) before knowing whether it will leave its marts. Following a run whose marts are complete
is safe (cells it merged are recomputed, not added twice) but wasted: each tail step first drops
the runs a run that ended without leaving its marts has completed (`still_to_follow`)."""

import os
import time

import dagster as dg

from cpa_assets.bronze.usage import delivered_files, waiting_files
from cpa_assets.increments import UsageRun
from cpa_assets.partitions import event_date_partitions, single_run
from cpa_resources import LakeResource

DEFERRED_TAG = "cpa/deferred"
FOLLOWS_TAG = "cpa/follows"
P1_SERVED_TAG = "cpa/p1-served"
MAX_TAIL_LAG_SECONDS = float(os.environ.get("CPA_TAIL_LAG_SECONDS", "90"))
# And never more runs in a row than this (the tags that carry them stay short).
MAX_DEFERRED_RUNS = 10


def tail_mart(key: dg.AssetKey, deps: list, check_specs: list[dg.AssetCheckSpec]):
    """A gold mart after P1: one asset whose step may yield nothing (`defer`), checks included."""
    return dg.multi_asset(
        name="__".join(key.path),
        specs=[dg.AssetSpec(key, deps=deps, group_name="gold", kinds={"spark", "delta"}, skippable=True)],
        check_specs=check_specs,
        can_subset=True,
        partitions_def=event_date_partitions,
        backfill_policy=single_run,
    )


def still_to_follow(instance: dg.DagsterInstance, config: UsageRun) -> UsageRun:
    """The run's config less the runs it follows whose marts are complete: everything up to the
    last of them that succeeded without leaving its marts (its tail followed those before it)."""
    for i in range(len(config.follows) - 1, -1, -1):
        run = instance.get_run_by_id(config.follows[i])
        if run is not None and run.status == dg.DagsterRunStatus.SUCCESS and not run.tags.get(DEFERRED_TAG):
            return UsageRun(appended=config.appended, follows=config.follows[i + 1:])
    return config


def lag_allowed(instance: dg.DagsterInstance, follows: list[str], now: float) -> bool:
    """Whether the marts may stay behind a while more: the first run that left them (if any)
    started less than MAX_TAIL_LAG_SECONDS ago, and fewer than MAX_DEFERRED_RUNS runs left them."""
    if MAX_TAIL_LAG_SECONDS <= 0 or len(follows) >= MAX_DEFERRED_RUNS:
        return False
    if not follows:
        return True
    first = instance.get_run_record_by_id(follows[0])
    return first is not None and first.start_time is not None and now - first.start_time < MAX_TAIL_LAG_SECONDS


def defer(context: dg.AssetExecutionContext, config: UsageRun, lake: LakeResource, mart: str) -> bool:
    """Whether this step leaves its mart to the next run (and if so, tag the run for the sensor):
    only a run that appends files, while others wait, and while the marts may lag some more."""
    if not config.appended or not lag_allowed(context.instance, config.follows, time.time()):
        return False
    waiting = waiting_files(lake, set(delivered_files(lake)) | set(config.appended))
    if not waiting:
        return False
    context.instance.add_run_tags(context.run.run_id, {DEFERRED_TAG: ",".join([*config.follows, lake.run_id])})
    context.log.info(f"{len(waiting)} delivered files wait: {mart} is left to the next run, which follows this"
                     f" run's changes ({len(config.follows) + 1} runs in a row, for at most {MAX_TAIL_LAG_SECONDS:g} s)")
    return True

"""Running the per-table work of a subsettable multi-asset side by side, yielding what was selected."""

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import dagster as dg

# Per-table work is mostly waiting on small Spark jobs; a few threads overlap that latency.
WORKERS = 4


def side_by_side(items: Iterable, work: Callable[..., list], *args) -> list[tuple[object, Future]]:
    """Start `work(item, *args)` for every item on a small thread pool and wait for all of them."""
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return [(item, pool.submit(work, item, *args)) for item in items]


def selected_results(context: dg.AssetExecutionContext, results: list) -> Iterator:
    """The materialisations and check results of `results` that this run selected."""
    for result in results:
        if isinstance(result, dg.MaterializeResult):
            wanted = result.asset_key in context.selected_asset_keys
        else:
            wanted = dg.AssetCheckKey(result.asset_key, result.check_name) in context.selected_asset_check_keys
        if wanted:
            yield result

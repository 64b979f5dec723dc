"""Yielding, of a subsettable multi-asset's results, what the run selected."""

from collections.abc import Iterator

import dagster as dg


def selected_results(context: dg.AssetExecutionContext, results: list) -> Iterator:
    """The materialisations and check results of `results` that this run selected."""
    for result in results:
        if isinstance(result, dg.MaterializeResult):
            wanted = result.asset_key in context.selected_asset_keys
        else:
            wanted = dg.AssetCheckKey(result.asset_key, result.check_name) in context.selected_asset_check_keys
        if wanted:
            yield result

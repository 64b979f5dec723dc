"""The code location loads, and every asset carries what the UI shows a user."""

import dagster as dg

from cpa_assets.definitions import defs

LAYERS = {"bronze", "silver", "gold", "serving"}


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("usage_pipeline")


def test_every_asset_is_described_grouped_kinded_and_checked():
    graph = defs.resolve_asset_graph()
    checked = {key.asset_key for key in graph.asset_check_keys}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, key
        assert node.group_name in LAYERS, key
        assert node.kinds & {"spark", "parquet", "cassandra"}, key
        assert key in checked, f"{key.to_user_string()} has no asset check"


def test_event_assets_are_partitioned_by_event_date():
    graph = defs.resolve_asset_graph()
    for name in (["bronze", "usage_events"], ["silver", "usage_events"], ["gold", "org_daily_usage_by_service"],
                 ["gold", "org_top_services_14d"], ["cassandra", "org_daily_usage_by_service"]):
        partitions = graph.get(dg.AssetKey(name)).partitions_def
        assert isinstance(partitions, dg.DailyPartitionsDefinition), name

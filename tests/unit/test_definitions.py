"""The code location loads, and every asset carries what the UI shows a user."""

import os
import re
import sys
from pathlib import Path

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from cpa_assets.definitions import defs
from cpa_assets.silver.usage import SilverUsageEvent

REPO = Path(__file__).resolve().parents[2]
LAYERS = {"bronze", "silver", "gold", "serving"}


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("usage_pipeline")


def test_spark_is_dagster_pysparks_resource_configured_from_the_environment(monkeypatch):
    from cpa_assets.definitions import build_definitions

    assert isinstance(defs.resources["spark"], LazyPySparkResource)
    assert defs.resources["spark"].spark_config["spark.master"] == "local[2]"
    # Python workers run this interpreter (the one with the project's packages) unless told otherwise.
    monkeypatch.delenv("PYSPARK_PYTHON", raising=False)
    build_definitions()
    assert os.environ["PYSPARK_PYTHON"] == sys.executable
    monkeypatch.setenv("PYSPARK_PYTHON", "/opt/python3")
    build_definitions()
    assert os.environ["PYSPARK_PYTHON"] == "/opt/python3"
    monkeypatch.setenv("CPA_SPARK_REMOTE", "sc://spark-connect:15002")
    assert build_definitions().resources["spark"].spark_config == {"spark.remote": "sc://spark-connect:15002"}
    monkeypatch.delenv("CPA_SPARK_REMOTE")
    monkeypatch.setenv("CPA_SPARK_MASTER", "spark://master:7077")
    assert build_definitions().resources["spark"].spark_config["spark.master"] == "spark://master:7077"


def test_no_private_dagster_name_anywhere_in_the_product():
    r"""Private Dagster modules change without notice in patch releases: the product (and its
    benchmarks) name none of them, in code or in a string (what `grep -rn "dagster\._"` finds)."""
    found = [
        f"{path.relative_to(REPO)}:{number}"
        for package in ("cpa_assets", "cpa_resources", "cpa_cli", "bench")
        for path in (REPO / package).rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "dagster._" in line
    ]
    assert found == []


def test_every_asset_is_described_grouped_kinded_and_checked():
    graph = defs.resolve_asset_graph()
    checked = {key.asset_key for key in graph.asset_check_keys}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, key
        assert node.group_name in LAYERS, key
        assert node.kinds & {"spark", "delta", "cassandra"}, key
        assert key in checked, f"{key.to_user_string()} has no asset check"


def test_event_assets_are_partitioned_by_event_date():
    graph = defs.resolve_asset_graph()
    for name in (["bronze", "usage_events"], ["silver", "usage_events"], ["gold", "org_daily_usage_by_service"],
                 ["gold", "org_top_services_14d"], ["cassandra", "org_daily_usage_by_service"]):
        partitions = graph.get(dg.AssetKey(name)).partitions_def
        assert isinstance(partitions, dg.DailyPartitionsDefinition), name


def test_every_asset_shows_its_columns_table_owners_and_code_version():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        schema = node.metadata["dagster/column_schema"]
        assert isinstance(schema, dg.TableSchema) and schema.columns, key
        table = node.metadata["dagster/table_name"]
        if node.group_name == "serving":
            assert table == f"cloud_provider.{key.path[-1]}", key
        else:
            assert table.endswith(f"/{key.path[0]}/{key.path[-1]}"), key
        assert node.owners and all(o.startswith("team:") for o in node.owners), key
        assert node.code_version, key


def test_columns_come_from_the_tables_own_schemas():
    graph = defs.resolve_asset_graph()
    columns = {c.name: c for c in graph.get(dg.AssetKey(["silver", "usage_events"])).metadata["dagster/column_schema"].columns}
    assert list(columns)[:3] == ["event_id", "timestamp", "org_id"] and columns["dq_flags"].type == "array<string>"
    model = SilverUsageEvent.to_schema().columns
    assert list(columns) == list(model)
    assert all(columns[name].constraints.nullable == column.nullable for name, column in model.items())
    assert not columns["org_id"].constraints.nullable and columns["service"].constraints.nullable


def test_serving_tables_show_their_primary_key_and_the_ddl_types():
    from cpa_assets.serving.tables import SERVING_TABLES

    graph = defs.resolve_asset_graph()
    for table in SERVING_TABLES:
        metadata = graph.get(table.key).metadata
        assert metadata["primary_key"] == f"(({', '.join(table.partition_key)}), {', '.join(table.clustering)})"
        ddl = (REPO / "cql" / f"{table.name}.cql").read_text()
        assert f"PRIMARY KEY {metadata['primary_key']}" in ddl, table.name
        for column in metadata["dagster/column_schema"].columns:
            assert re.search(rf"^\s+{column.name} {column.type},$", ddl, re.M), (table.name, column.name)

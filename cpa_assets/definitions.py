"""The cpa code location: every asset, resource and job, run by the in-process executor."""

import dagster as dg

from cpa_assets.bronze.batch import bronze_csv_sources
from cpa_assets.bronze.usage import bronze_usage_events, usage_events_ledger
from cpa_assets.gold.usage import org_daily_usage_by_service, org_top_services_14d
from cpa_assets.serving.tables import serving_assets
from cpa_assets.silver.usage import silver_usage_events
from cpa_resources import CassandraResource, LakeResource, SparkResource

# Everything a usage date needs, from landing to Cassandra, plus the snapshots it joins with.
usage_pipeline_job = dg.define_asset_job(
    "usage_pipeline",
    selection=dg.AssetSelection.all(),
    description="Landing → bronze → silver → gold → Cassandra for a range of event dates.",
)

ASSETS = [
    bronze_csv_sources,
    bronze_usage_events,
    usage_events_ledger,
    silver_usage_events,
    org_daily_usage_by_service,
    org_top_services_14d,
    *serving_assets,
]


def build_definitions(
    lake: LakeResource | None = None,
    spark: SparkResource | None = None,
    cassandra: CassandraResource | None = None,
) -> dg.Definitions:
    """The code location; resources default to their environment configuration."""
    return dg.Definitions(
        assets=ASSETS,
        jobs=[usage_pipeline_job],
        resources={
            "spark": spark or SparkResource.from_env(),
            "lake": lake or LakeResource.from_env(),
            "cassandra": cassandra or CassandraResource.from_env(),
        },
        # Steps share one process and so one SparkSession; one JVM per step would cost seconds each.
        executor=dg.in_process_executor,
    )


defs = build_definitions()

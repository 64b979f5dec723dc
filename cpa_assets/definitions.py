"""The cpa code location: every asset, resource and job, run by the in-process executor."""

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from cpa_assets.bronze.batch import bronze_csv_assets
from cpa_assets.bronze.usage import bronze_usage_events, usage_events_ledger
from cpa_assets.gold.anomalies import cost_anomalies
from cpa_assets.gold.batch import batch_gold_assets
from cpa_assets.gold.genai import genai_tokens_by_org_date
from cpa_assets.gold.usage import org_daily_usage_by_service, org_top_services_14d
from cpa_assets.metadata import with_definition_metadata
from cpa_assets.jobs import daily_batch_job, monthly_billing_job, usage_pipeline_job, usage_stream_job
from cpa_assets.schedules import daily_batch_schedule, monthly_billing_schedule
from cpa_assets.sensors import usage_events_sensor
from cpa_assets.serving.tables import serving_assets
from cpa_assets.silver.batch import silver_csv_assets
from cpa_assets.silver.usage import silver_usage_events

from cpa_resources import CassandraResource, LakeResource, spark_from_env

ASSETS = [
    *bronze_csv_assets,
    *silver_csv_assets,
    bronze_usage_events,
    usage_events_ledger,
    silver_usage_events,
    org_daily_usage_by_service,
    org_top_services_14d,
    genai_tokens_by_org_date,
    cost_anomalies,
    *batch_gold_assets,
    *serving_assets,
]


def build_definitions(
    lake: LakeResource | None = None,
    spark: LazyPySparkResource | None = None,
    cassandra: CassandraResource | None = None,
) -> dg.Definitions:
    """The code location; resources default to their environment configuration."""
    lake = lake or LakeResource.from_env()
    cassandra = cassandra or CassandraResource.from_env()
    return dg.Definitions(
        assets=with_definition_metadata(ASSETS, lake, cassandra),
        jobs=[usage_pipeline_job, usage_stream_job, daily_batch_job, monthly_billing_job],
        sensors=[usage_events_sensor],
        schedules=[daily_batch_schedule, monthly_billing_schedule],
        resources={
            "spark": spark or spark_from_env(),
            "lake": lake,
            "cassandra": cassandra,
        },
        # Steps share one process and so one SparkSession; one JVM per step would cost seconds each.
        executor=dg.in_process_executor,
    )


defs = build_definitions()

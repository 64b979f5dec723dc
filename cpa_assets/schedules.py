"""Schedules of the batch sources: the daily CSVs every morning, billing once a month.

Each tick asks for one run over every partition the landing CSV holds, so a snapshot that changes
old rows (a ticket resolved late, a corrected invoice) updates every date it touches."""

import dagster as dg

from cpa_assets.batch_partitions import billing_month_partitions, ticket_date_partitions
from cpa_assets.jobs import daily_batch_job, monthly_billing_job
from cpa_assets.landing import csv_partition_range
from cpa_resources import LakeResource


def range_request(lake: LakeResource, file_name: str, column: str, partitions: dg.PartitionsDefinition):
    found = csv_partition_range(lake.landing_dir() / file_name, column, partitions)
    if found is None:
        return dg.SkipReason(f"no dated rows in {lake.landing_dir() / file_name}")
    return dg.RunRequest(tags={"dagster/asset_partition_range_start": found[0], "dagster/asset_partition_range_end": found[1]})


@dg.schedule(job=daily_batch_job, cron_schedule="0 6 * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING)
def daily_batch_schedule(context: dg.ScheduleEvaluationContext, lake: LakeResource):
    """Every day at 06:00 UTC: reload the six daily CSVs and rebuild the ticket marts."""
    return range_request(lake, "support_tickets.csv", "created_at", ticket_date_partitions)


@dg.schedule(job=monthly_billing_job, cron_schedule="0 7 1 * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING)
def monthly_billing_schedule(context: dg.ScheduleEvaluationContext, lake: LakeResource):
    """On the 1st of each month at 07:00 UTC: reload billing and rebuild the revenue marts."""
    return range_request(lake, "billing_monthly.csv", "month", billing_month_partitions)

"""Partitions of the batch marts: tickets by the day they were opened, invoices by billing month."""

import datetime as dt

import dagster as dg

from cpa_assets.partitions import FIRST_EVENT_DATE

# Tickets share the events' calendar, so a ticket day and a usage day are the same partition key.
ticket_date_partitions = dg.DailyPartitionsDefinition(start_date=FIRST_EVENT_DATE, timezone="UTC", end_offset=1)

FIRST_BILLING_MONTH = dt.date.fromisoformat(FIRST_EVENT_DATE).replace(day=1).isoformat()

# Keys are the first day of the month (YYYY-MM-01), as billing_monthly.csv writes `month`; the
# current month is included so that an invoice issued early is not left without a partition.
billing_month_partitions = dg.MonthlyPartitionsDefinition(
    start_date=FIRST_BILLING_MONTH, timezone="UTC", end_offset=1
)

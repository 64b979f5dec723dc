"""Partitions of the batch marts: tickets by the day they were opened, invoices by billing month."""

import datetime as dt
import os

import dagster as dg

from cpa_assets.partitions import FIRST_EVENT_DATE, LAST_EVENT_DATE, daily_partitions

# Tickets share the events' calendar (a ticket day and a usage day are the same partition key) but
# may start earlier: tickets are opened before the usage window a dataset holds.
FIRST_TICKET_DATE = os.environ.get("CPA_FIRST_TICKET_DATE") or FIRST_EVENT_DATE
ticket_date_partitions = daily_partitions(FIRST_TICKET_DATE)

FIRST_BILLING_MONTH = os.environ.get("CPA_FIRST_BILLING_MONTH") or (
    dt.date.fromisoformat(min(FIRST_EVENT_DATE, FIRST_TICKET_DATE)).replace(day=1).isoformat()
)


def _billing_end() -> dict:
    if LAST_EVENT_DATE is None:
        # The current month is included so that an invoice issued early is not left without a partition.
        return {"end_offset": 1}
    last = dt.date.fromisoformat(LAST_EVENT_DATE)
    return {"end_date": (last.replace(day=1) + dt.timedelta(days=32)).replace(day=1).isoformat()}


# Keys are the first day of the month (YYYY-MM-01), as billing_monthly.csv writes `month`.
billing_month_partitions = dg.MonthlyPartitionsDefinition(start_date=FIRST_BILLING_MONTH, timezone="UTC", **_billing_end())

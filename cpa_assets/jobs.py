"""Jobs: one per partitioning of the graph, each a selection of assets run in a single run."""

import dagster as dg

from cpa_assets.gold.batch import REVENUE_BY_MONTH, TICKETS_BY_DATE

TICKET_MARTS = dg.AssetSelection.assets(TICKETS_BY_DATE).downstream()
BILLING_MARTS = dg.AssetSelection.assets(REVENUE_BY_MONTH).downstream()


def snapshots(*tables: str) -> dg.AssetSelection:
    """Bronze and silver (with their rejects and quarantine) of the given landing CSVs."""
    return dg.AssetSelection.assets(
        *[dg.AssetKey([layer, f"{table}{suffix}"]) for table in tables for layer, suffix in
          (("bronze", ""), ("bronze", "_rejects"), ("silver", ""), ("silver", "_quarantine"))]
    )


DAILY_SOURCES = ("customers_orgs", "users", "resources", "support_tickets", "marketing_touches", "nps_surveys")

# Everything a range of event dates needs, from landing to Cassandra, plus every CSV snapshot.
usage_pipeline_job = dg.define_asset_job(
    "usage_pipeline",
    selection=dg.AssetSelection.all() - TICKET_MARTS - BILLING_MARTS,
    description="Landing → bronze → silver → gold → Cassandra for a range of event dates, with the CSV snapshots.",
)
# The daily CSV batch and the ticket marts, over a range of ticket days.
daily_batch_job = dg.define_asset_job(
    "daily_batch",
    selection=snapshots(*DAILY_SOURCES) | TICKET_MARTS,
    description="Customers, users, resources, tickets, marketing and NPS → bronze → silver; tickets_by_org_date → Cassandra.",
)
# The monthly billing batch and the revenue marts, over a range of billing months.
monthly_billing_job = dg.define_asset_job(
    "monthly_billing",
    selection=snapshots("billing_monthly") | BILLING_MARTS,
    description="billing_monthly → bronze → silver; revenue_by_org_month → Cassandra.",
)

# Stream runs write the same tables: at most two launched (dagster.yaml's limit on this tag), the
# second waiting for the lake's lock while the first keeps its books; the usage sensor plans a run
# only when none is short of its ledger, so the files that arrive meanwhile go together in the next.
STREAM_TAGS = {"cpa/lake": "usage"}

ALL_SOURCES = (*DAILY_SOURCES, "billing_monthly")

# The bronze snapshots that silver usage events join with (orgs and resources).
STREAM_SNAPSHOTS = dg.AssetSelection.assets(
    *[dg.AssetKey(["bronze", f"{table}{suffix}"]) for table in ("customers_orgs", "resources") for suffix in ("", "_rejects")]
)
USAGE_ASSETS = dg.AssetSelection.all() - snapshots(*ALL_SOURCES) - TICKET_MARTS - BILLING_MARTS

# What a new usage-events file changes: bronze events and the ledger, then every usage mart and
# table. The CSV snapshots it joins with are left as the batch schedules keep them; the job holds
# the two that silver needs so that the first stream run on a fresh lake loads them itself.
usage_stream_job = dg.define_asset_job(
    "usage_stream",
    selection=USAGE_ASSETS | STREAM_SNAPSHOTS,
    description="A range of event dates from landing events to Cassandra, without the CSV snapshots (run by the sensor).",
    tags=STREAM_TAGS,
)

"""Gold batch marts: every column of tickets_by_org_date and revenue_by_org_month, their partitions."""

import datetime as dt

import dagster as dg
import pytest

from cpa_assets.batch_partitions import billing_month_partitions, ticket_date_partitions
from cpa_assets.gold.batch import BATCH_MARTS, revenue_by_org_month, tickets_by_org_date, unplaced_rows
from cpa_assets.partitions import FIRST_EVENT_DATE
from cpa_assets.silver.batch import SILVER_TABLES_BY_NAME

D = dt.date(2025, 8, 1)


def silver_frame(spark, table: str, rows: list[dict]):
    """Silver rows of `table`: the lineage of one CSV row, every other column null unless given
    (gold reads only a few)."""
    schema = SILVER_TABLES_BY_NAME[table].schema
    lineage = {"dq_flags": [], "row_no": 1, "source_file": f"{table}.csv", "ingest_ts": dt.datetime(2025, 8, 2)}
    return spark.createDataFrame([tuple({**lineage, **row}.get(c) for c in schema.fieldNames()) for row in rows], schema)


def ticket(**values) -> dict:
    row = {"ticket_id": "t", "org_id": "org_a", "severity": "low", "created_at": D, "resolved_at": D,
           "csat_valid": None, "resolution_hours": 0.0, "sla_breached": False, "dq_flags": []}
    return {**row, **values}


def test_tickets_by_org_date_counts_rates_and_averages(spark):
    rows = [
        ticket(ticket_id="1", severity="critical", sla_breached=True, csat_valid=5.0, resolution_hours=24.0),
        ticket(ticket_id="2", severity="critical", csat_valid=2.0, resolution_hours=72.0),
        # csat 7 is invalid (TK-01): silver leaves csat_valid null, so it does not count.
        ticket(ticket_id="3", resolved_at=None, resolution_hours=None, csat=7.0, csat_valid=None, sla_breached=None),
        ticket(ticket_id="4", severity="high", resolved_at=None, resolution_hours=None, sla_breached=True),
        ticket(ticket_id="5", created_at=D + dt.timedelta(days=1), resolved_at=None, resolution_hours=None),
        ticket(ticket_id="6", org_id="org_b"),
        ticket(ticket_id="7", created_at=None),
    ]
    out = tickets_by_org_date(silver_frame(spark, "support_tickets", rows)).toPandas()
    out = out.set_index(["org_id", "ticket_date"]).sort_index()
    assert len(out) == 3
    day = out.loc[("org_a", D)]
    assert (day.tickets, day.critical_tickets, day.sla_breaches, day.open_tickets) == (4, 2, 2, 2)
    assert day.sla_breach_rate == 0.5 and day.csat_avg == 3.5 and day.avg_resolution_hours == 48.0
    next_day = out.loc[("org_a", D + dt.timedelta(days=1))]
    assert (next_day.tickets, next_day.open_tickets, next_day.sla_breach_rate) == (1, 1, 0.0)
    assert next_day.isna()[["csat_avg", "avg_resolution_hours"]].all()
    assert out.loc[("org_b", D)].tickets == 1 and out.loc[("org_b", D)].avg_resolution_hours == 0.0


def invoice(**values) -> dict:
    row = {"invoice_id": "i", "org_id": "org_a", "month": D, "subtotal": 1000.0, "credits": 50.0, "taxes": 210.0,
           "currency": "EUR", "exchange_rate_to_usd": 1.1, "fx_to_usd": 1.1, "dq_flags": []}
    return {**row, **values}


def revenue(spark, *rows):
    out = revenue_by_org_month(silver_frame(spark, "billing_monthly", list(rows))).toPandas()
    return out.set_index(["org_id", "month"]).sort_index()


def test_revenue_of_one_invoice_is_converted_with_its_rate(spark):
    out = revenue(
        spark,
        invoice(),
        # BI-02 already set fx_to_usd to 1.0 for USD; the original rate plays no part.
        invoice(invoice_id="j", org_id="org_b", currency="USD", exchange_rate_to_usd=0.97, fx_to_usd=1.0),
        invoice(invoice_id="k", month=dt.date(2025, 7, 15)),
    )
    a = out.loc[("org_a", D)]
    assert (a.currency, a.subtotal, a.credits, a.taxes, a.fx_to_usd, a.invoices) == ("EUR", 1000.0, 50.0, 210.0, 1.1, 1)
    assert a.revenue_usd == pytest.approx((1000.0 - 50.0 + 210.0) * 1.1)
    b = out.loc[("org_b", D)]
    assert (b.currency, b.fx_to_usd, b.revenue_usd) == ("USD", 1.0, 1160.0)
    assert ("org_a", dt.date(2025, 7, 1)) in out.index, "a month is keyed by its first day"


def test_invoices_in_one_currency_and_rate_add_up_in_that_currency(spark):
    out = revenue(spark, invoice(), invoice(invoice_id="j", subtotal=500.0, credits=0.0, taxes=105.0))
    row = out.loc[("org_a", D)]
    assert (row.currency, row.subtotal, row.credits, row.taxes, row.fx_to_usd, row.invoices) == (
        "EUR", 1500.0, 50.0, 315.0, 1.1, 2)
    assert row.revenue_usd == pytest.approx(1765.0 * 1.1)


def test_invoices_in_several_currencies_are_converted_to_usd_first(spark):
    out = revenue(
        spark,
        invoice(),
        invoice(invoice_id="j", subtotal=100000.0, credits=0.0, taxes=21000.0, currency="ARS",
                exchange_rate_to_usd=0.0015, fx_to_usd=0.0015),
    )
    assert len(out) == 1
    row = out.loc[("org_a", D)]
    assert (row.currency, row.fx_to_usd, row.invoices) == ("USD", 1.0, 2)
    assert row.subtotal == pytest.approx(1100.0 + 150.0) and row.credits == pytest.approx(55.0)
    assert row.taxes == pytest.approx(231.0 + 31.5)
    assert row.revenue_usd == pytest.approx(row.subtotal - row.credits + row.taxes)
    assert row.revenue_usd == pytest.approx((1000 - 50 + 210) * 1.1 + 121000 * 0.0015)


def test_same_currency_at_different_rates_also_converts_to_usd(spark):
    out = revenue(spark, invoice(), invoice(invoice_id="j", fx_to_usd=1.2, exchange_rate_to_usd=1.2))
    row = out.loc[("org_a", D)]
    assert (row.currency, row.fx_to_usd) == ("USD", 1.0)
    assert row.revenue_usd == pytest.approx(1160.0 * 1.1 + 1160.0 * 1.2)


def test_an_unknown_rate_or_amount_leaves_revenue_unknown(spark):
    out = revenue(
        spark,
        invoice(fx_to_usd=None, exchange_rate_to_usd=None),
        invoice(invoice_id="j", org_id="org_b", taxes=None),
    )
    assert out.loc[("org_a", D)].isna()[["fx_to_usd", "revenue_usd"]].all()
    assert out.loc[("org_a", D)].subtotal == 1000.0
    assert out.loc[("org_b", D)].isna()[["taxes", "revenue_usd"]].all()


def test_partition_definitions():
    assert isinstance(ticket_date_partitions, dg.DailyPartitionsDefinition)
    assert ticket_date_partitions.get_first_partition_key() == FIRST_EVENT_DATE
    assert isinstance(billing_month_partitions, dg.MonthlyPartitionsDefinition)
    keys = billing_month_partitions.get_partition_keys()
    assert keys[0] == FIRST_EVENT_DATE[:8] + "01" and all(k.endswith("-01") for k in keys)
    assert [m.partitions_def for m in BATCH_MARTS] == [ticket_date_partitions, billing_month_partitions]


def test_rows_dated_outside_every_partition_are_counted(spark):
    mart = BATCH_MARTS[0]
    first = dt.date.fromisoformat(FIRST_EVENT_DATE)
    rows = spark.createDataFrame(
        [(first,), (first - dt.timedelta(days=1),), (None,), (dt.date(2999, 1, 1),)], "ticket_date date"
    )
    assert unplaced_rows(mart, rows) == 3

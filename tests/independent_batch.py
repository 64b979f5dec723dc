"""The contract's P3 and P4, computed again from the landing CSVs with plain Python and pandas, sharing
no code with the pipeline, so that the Cassandra tables can be compared with something independent.

Bronze keeps a CSV row when its key is present and every typed column is empty or parses; the first
such row of a key wins. Silver drops rows whose org is not in bronze customers (RI-01) and tickets
resolved before they were created (TK-02)."""

import csv
import datetime as dt
import re
from pathlib import Path

import pandas as pd

NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(nan|inf|infinity)", re.IGNORECASE)
TRUE, FALSE = {"t", "true", "y", "yes", "1"}, {"f", "false", "n", "no", "0"}

TYPES = {
    "customers_orgs": {"is_enterprise": "boolean", "signup_date": "date", "nps_score": "double"},
    "billing_monthly": {"month": "date", "subtotal": "double", "credits": "double", "taxes": "double",
                        "exchange_rate_to_usd": "double"},
    "support_tickets": {"created_at": "date", "resolved_at": "date", "csat": "double", "sla_breached": "boolean"},
}
KEYS = {"customers_orgs": "org_id", "billing_monthly": "invoice_id", "support_tickets": "ticket_id"}

TICKET_COLUMNS = ["org_id", "ticket_date", "tickets", "critical_tickets", "sla_breaches", "sla_breach_rate",
                  "open_tickets", "csat_avg", "avg_resolution_hours"]
REVENUE_COLUMNS = ["org_id", "month", "currency", "subtotal", "credits", "taxes", "fx_to_usd", "revenue_usd",
                   "invoices"]


def _parse(value: str | None, kind: str):
    """The typed value, or raises ValueError when bronze would reject the row."""
    if value is None:
        return None
    if kind == "double":
        if not NUMBER.fullmatch(value):
            raise ValueError(value)
        return float(value)
    if kind == "boolean":
        if value.lower() not in TRUE | FALSE:
            raise ValueError(value)
        return value.lower() in TRUE
    if kind == "date":
        return dt.date.fromisoformat(value)
    return value


def bronze_rows(landing: Path, table: str) -> list[dict]:
    """The rows bronze keeps, typed: first usable row per key, in file order."""
    types, key = TYPES[table], KEYS[table]
    kept: dict[str, dict] = {}
    with (landing / f"{table}.csv").open(newline="", encoding="utf-8-sig") as handle:
        for raw in csv.DictReader(handle):
            row = {name.strip(): (None if value in ("", None) else value.strip())
                   for name, value in raw.items() if name is not None}
            if not row.get(key):
                continue
            try:
                typed = {name: _parse(value, types.get(name, "string")) for name, value in row.items()}
            except ValueError:
                continue
            kept.setdefault(typed[key], typed)
    return list(kept.values())


def silver_tickets(landing: Path) -> list[dict]:
    orgs = {row["org_id"] for row in bronze_rows(landing, "customers_orgs")}
    tickets = []
    for t in bronze_rows(landing, "support_tickets"):
        resolved, created = t["resolved_at"], t["created_at"]
        if resolved is not None and created is not None and resolved < created:
            continue
        if t["org_id"] not in orgs:
            continue
        tickets.append(t)
    return tickets


def silver_invoices(landing: Path) -> list[dict]:
    orgs = {row["org_id"] for row in bronze_rows(landing, "customers_orgs")}
    invoices = []
    for inv in bronze_rows(landing, "billing_monthly"):
        if inv["org_id"] not in orgs:
            continue
        fx = 1.0 if inv["currency"] == "USD" else inv["exchange_rate_to_usd"]
        invoices.append({**inv, "credits": inv["credits"] if inv["credits"] is not None else 0.0, "fx_to_usd": fx})
    return invoices


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def p3_tickets_by_org_date(landing: Path) -> pd.DataFrame:
    """Per org and creation day: counts, the breach rate over all tickets, valid csat (1..5) and
    resolution hours of resolved tickets averaged."""
    groups: dict[tuple, list[dict]] = {}
    for t in silver_tickets(landing):
        if t["created_at"] is not None:
            groups.setdefault((t["org_id"], t["created_at"]), []).append(t)
    rows = []
    for (org_id, day), tickets in groups.items():
        breaches = sum(1 for t in tickets if t["sla_breached"] is True)
        csat = [t["csat"] for t in tickets if t["csat"] is not None and 1 <= t["csat"] <= 5]
        hours = [(t["resolved_at"] - t["created_at"]).days * 24.0 for t in tickets if t["resolved_at"] is not None]
        rows.append((
            org_id, day, len(tickets), sum(1 for t in tickets if t["severity"] == "critical"), breaches,
            breaches / len(tickets), sum(1 for t in tickets if t["resolved_at"] is None), _mean(csat), _mean(hours),
        ))
    return pd.DataFrame(rows, columns=TICKET_COLUMNS)


def _total(values: list) -> float | None:
    return None if any(v is None for v in values) else sum(values)


def p4_revenue_by_org_month(landing: Path) -> pd.DataFrame:
    """Per org and month: amounts in the invoice currency when every invoice shares one currency and
    rate, otherwise each invoice converted to USD first (currency "USD", fx 1.0)."""
    groups: dict[tuple, list[dict]] = {}
    for inv in silver_invoices(landing):
        groups.setdefault((inv["org_id"], inv["month"].replace(day=1)), []).append(inv)
    rows = []
    for (org_id, month), invoices in groups.items():
        rates = {(inv["currency"], inv["fx_to_usd"]) for inv in invoices}
        if len(rates) == 1:
            (currency, fx), = rates
            amounts = [_total([inv[a] for inv in invoices]) for a in ("subtotal", "credits", "taxes")]
        else:
            currency, fx = "USD", 1.0
            amounts = [
                _total([None if inv[a] is None or inv["fx_to_usd"] is None else inv[a] * inv["fx_to_usd"]
                        for inv in invoices])
                for a in ("subtotal", "credits", "taxes")
            ]
        subtotal, credits, taxes = amounts
        known = None not in (subtotal, credits, taxes, fx)
        revenue = (subtotal - credits + taxes) * fx if known else None
        rows.append((org_id, month, currency, subtotal, credits, taxes, fx, revenue, len(invoices)))
    return pd.DataFrame(rows, columns=REVENUE_COLUMNS)

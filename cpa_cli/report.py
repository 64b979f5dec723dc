"""`cpa report [--out FILE]`: one self-contained HTML page with the answers P1–P6 and their charts,
for a reader who never opens Dagster. It reads the gold tables (and silver's quarantine) of the
lake with pandas: no Spark, no Cassandra, a few seconds."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import html
from pathlib import Path

import pandas as pd

from cpa_assets import charts
from cpa_assets.preview import format_value
from cpa_resources import LakeResource

TOP = 10
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.4rem; border-bottom: 1px solid #ddd; }
p.meta { color: #666; margin-top: 0; } img { max-width: 100%; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
"""


def read_table(lake: LakeResource, layer: str, table: str, date_column: str | None = None) -> pd.DataFrame:
    """A table of the lake as it is now (its partition column included); empty when absent."""
    if not lake.exists(layer, table):
        return pd.DataFrame()
    frame = lake.table(layer, table).to_pandas()
    if date_column and date_column in frame:
        frame[date_column] = pd.to_datetime(frame[date_column].astype(str)).dt.date
    return frame


def _table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "<p><em>no rows</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(format_value(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _image(png: bytes, title: str) -> str:
    return f'<img alt="{html.escape(title)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def build_report(lake: LakeResource) -> tuple[str, list[str]]:
    """The page and the titles of the charts it holds."""
    daily = read_table(lake, "gold", "org_daily_usage_by_service", "usage_date")
    top = read_table(lake, "gold", "org_top_services_14d", "as_of_date")
    tickets = read_table(lake, "gold", "tickets_by_org_date", "ticket_date")
    revenue = read_table(lake, "gold", "revenue_by_org_month", "month")
    genai = read_table(lake, "gold", "genai_tokens_by_org_date", "usage_date")
    anomalies = read_table(lake, "gold", "cost_anomalies", "usage_date")
    quarantine = read_table(lake, "silver", "usage_events_quarantine", "event_date")
    sections, titles = [], []

    def chart(png: bytes, title: str) -> str:
        titles.append(title)
        return _image(png, title)

    if daily.empty:
        raise SystemExit(f"no gold data in {lake.root}: run `cpa backfill` first")
    first, last = daily.usage_date.min(), daily.usage_date.max()
    summary = pd.DataFrame(
        [("usage dates", f"{first} … {last} ({daily.usage_date.nunique()} days)"),
         ("organisations with usage", daily.org_id.nunique()),
         ("total cost (USD)", round(daily.daily_cost_usd.sum(), 2)),
         ("events", int(daily.event_count.sum()))],
        columns=["", "value"],
    )
    sections.append(f"<h2>Summary</h2>{_table(summary)}")

    per_service = daily.groupby(["usage_date", "service"], as_index=False).daily_cost_usd.sum()
    by_service = daily.groupby("service", as_index=False).agg(
        total_cost_usd=("daily_cost_usd", "sum"), requests=("requests", "sum"), cpu_hours=("cpu_hours", "sum"),
        storage_gb_hours=("storage_gb_hours", "sum")).sort_values("total_cost_usd", ascending=False)
    by_org = daily.groupby("org_id", as_index=False).daily_cost_usd.sum().nlargest(TOP, "daily_cost_usd")
    sections.append(
        "<h2>P1 — cost and usage per service and day</h2>"
        + chart(charts.daily_cost_per_service(per_service), "P1 daily cost per service (USD)")
        + f"<h3>Per service, {first} … {last}</h3>{_table(by_service)}"
        + f"<h3>The {TOP} orgs with the highest cost</h3>{_table(by_org.rename(columns={'daily_cost_usd': 'total_cost_usd'}))}"
    )

    if not top.empty:
        as_of = top.as_of_date.max()
        latest = top[top.as_of_date == as_of]
        leaders = latest[latest["rank"] == 1].nlargest(TOP, "total_cost_usd").org_id
        table = (latest[latest.org_id.isin(leaders) & (latest["rank"] <= 3)]
                 .sort_values(["org_id", "rank"])[["org_id", "rank", "service", "total_cost_usd"]])
        sections.append(
            f"<h2>P2 — top services over the 14 days ending {as_of}</h2>"
            f"<p>The three most expensive services of the {TOP} orgs whose first service costs most.</p>{_table(table)}"
        )

    if not tickets.empty:
        per_day = tickets.groupby("ticket_date", as_index=False)[["tickets", "critical_tickets", "sla_breaches"]].sum()
        per_day["sla_breach_rate"] = per_day.sla_breaches / per_day.tickets
        end = tickets.ticket_date.max()
        recent = tickets[tickets.ticket_date > end - dt.timedelta(days=30)]
        worst = recent.groupby("org_id", as_index=False)[["tickets", "critical_tickets", "sla_breaches"]].sum()
        worst["sla_breach_rate"] = worst.sla_breaches / worst.tickets
        sections.append(
            "<h2>P3 — tickets, critical tickets and SLA breaches</h2>"
            + chart(charts.line_chart(per_day, "ticket_date", ["tickets", "critical_tickets", "sla_breaches"],
                                      "P3 tickets per day (all orgs)", "tickets"), "P3 tickets per day (all orgs)")
            + f"<h3>The {TOP} orgs with the most SLA breaches over the 30 days ending {end}</h3>"
            + _table(worst.sort_values(["sla_breaches", "tickets"], ascending=False).head(TOP))
        )

    if not revenue.empty:
        months = revenue.groupby("month", as_index=False).agg(
            invoices=("invoices", "sum"), revenue_usd=("revenue_usd", "sum"), orgs=("org_id", "nunique"))
        last_month = revenue.month.max()
        best = revenue[revenue.month == last_month].nlargest(TOP, "revenue_usd")[
            ["org_id", "currency", "subtotal", "credits", "taxes", "fx_to_usd", "revenue_usd"]]
        sections.append(
            "<h2>P4 — revenue in USD per month</h2>"
            + chart(charts.bar_chart(months, "month", "revenue_usd", "P4 revenue per billing month (USD)", "USD"),
                    "P4 revenue per billing month (USD)")
            + _table(months) + f"<h3>The {TOP} orgs with the highest revenue in {last_month}</h3>{_table(best)}"
        )

    if not genai.empty:
        per_day = genai.groupby("usage_date", as_index=False)[["genai_tokens", "genai_cost_usd"]].sum()
        orgs = genai.groupby("org_id", as_index=False)[["genai_tokens", "genai_cost_usd", "genai_events"]].sum()
        sections.append(
            "<h2>P5 — GenAI tokens and their cost</h2>"
            + chart(charts.line_chart(per_day, "usage_date", ["genai_tokens"], "P5 GenAI tokens per day", "tokens"),
                    "P5 GenAI tokens per day")
            + f"<h3>The {TOP} orgs with the most tokens</h3>{_table(orgs.nlargest(TOP, 'genai_tokens'))}"
        )

    if not anomalies.empty:
        flags = list(charts.DETECTOR_STYLE)
        flagged = anomalies[anomalies[flags].any(axis=1)].sort_values("robust_zscore", ascending=False)
        flagged = flagged.assign(detectors=flagged[flags].apply(
            lambda row: ", ".join(charts.DETECTOR_STYLE[f][0] for f in flags if row[f]), axis=1))
        sections.append(
            "<h2>P6 — cost anomalies</h2>"
            + chart(charts.cost_with_anomalies(anomalies), "P6 daily cost with the anomaly flags")
            + f"<h3>{len(flagged)} flagged org × service × days</h3>"
            + _table(flagged[["usage_date", "org_id", "service", "daily_cost_usd", "baseline_median", "robust_zscore",
                              "zscore", "p99_ratio", "detectors"]])
        )

    if not quarantine.empty:
        counts = quarantine.groupby(["event_date", "dq_rule"], as_index=False).size().rename(columns={"size": "rows"})
        sections.append(
            "<h2>Data quality — quarantined usage events</h2>"
            + chart(charts.quarantine_by_rule(counts), "Quarantined usage events per day, by rule")
            + _table(counts.groupby("dq_rule", as_index=False).rows.sum())
        )

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Cloud Provider Analytics report</title>"
        f"<style>{STYLE}</style></head><body><h1>Cloud Provider Analytics</h1>"
        f"<p class='meta'>Generated {stamp} from the gold tables in {html.escape(str(lake.root))}</p>"
        + "".join(sections) + "</body></html>"
    )
    return page, titles


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("report.html"), help="HTML file to write (default report.html)")


def run(args: argparse.Namespace) -> int:
    page, titles = build_report(LakeResource.from_env())
    args.out.write_text(page, encoding="utf-8")
    print(f"wrote {args.out}: {len(page) / 1024:.0f} KiB, {len(titles)} charts ({'; '.join(titles)})")
    return 0

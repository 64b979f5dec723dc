"""`cpa report` and the previews: numbers rounded, charts embedded, every question answered."""

import datetime as dt
import re

import numpy as np
import pandas as pd
from deltalake import write_deltalake

from cpa_assets import charts
from cpa_assets.preview import format_value, markdown_table
from cpa_cli.report import build_report
from cpa_resources import LakeResource


def test_previews_round_numbers():
    assert [format_value(v) for v in (3.4938000000000002, 1230.0, -0.00001, None, float("nan"), 12, np.array(["a"]))] == [
        "3.4938", "1230", "0", "", "", "12", "[a]"]
    assert markdown_table(pd.DataFrame({"cost": [0.1 + 0.2]})) == "| cost |\n|---|\n| 0.3 |"


def _write(lake: LakeResource, layer: str, table: str, frame: pd.DataFrame, date_column: str) -> None:
    write_deltalake(lake.path(layer, table), frame, partition_by=[date_column])


def test_the_report_answers_p1_to_p6_with_charts(tmp_path):
    lake = LakeResource(root=str(tmp_path))
    days = [dt.date(2025, 7, 3) + dt.timedelta(days=i) for i in range(20)]
    daily = pd.DataFrame([
        {"org_id": org, "service": service, "usage_date": day, "daily_cost_usd": 1.5 + i, "requests": 3.0, "cpu_hours": 1.0,
         "storage_gb_hours": 2.0, "genai_tokens": 10, "carbon_kg": 0.1, "event_count": 4}
        for i, day in enumerate(days) for org in ("org_a", "org_b") for service in ("compute", "genai")])
    _write(lake, "gold", "org_daily_usage_by_service", daily, "usage_date")
    top = daily.groupby(["org_id", "usage_date", "service"], as_index=False).daily_cost_usd.sum().rename(
        columns={"usage_date": "as_of_date", "daily_cost_usd": "total_cost_usd"})
    top["rank"] = top.groupby(["org_id", "as_of_date"]).total_cost_usd.rank(ascending=False, method="first").astype(int)
    _write(lake, "gold", "org_top_services_14d", top, "as_of_date")
    tickets = pd.DataFrame({"org_id": "org_a", "ticket_date": days, "tickets": 2, "critical_tickets": 1, "sla_breaches": 1,
                            "sla_breach_rate": 0.5, "open_tickets": 0, "csat_avg": 4.0, "avg_resolution_hours": 24.0})
    _write(lake, "gold", "tickets_by_org_date", tickets, "ticket_date")
    revenue = pd.DataFrame({"org_id": ["org_a"], "month": [dt.date(2025, 7, 1)], "currency": ["USD"], "subtotal": [10.0],
                            "credits": [1.0], "taxes": [2.0], "fx_to_usd": [1.0], "revenue_usd": [11.0], "invoices": [1]})
    _write(lake, "gold", "revenue_by_org_month", revenue, "month")
    genai = pd.DataFrame({"org_id": "org_a", "usage_date": days, "genai_tokens": 100, "genai_cost_usd": 0.5, "genai_events": 2})
    _write(lake, "gold", "genai_tokens_by_org_date", genai, "usage_date")
    anomalies = daily.assign(baseline_median=1.0, robust_zscore=2.0, zscore=1.0, p99_ratio=1.0,
                             is_anomaly_zscore=False, is_anomaly_mad=daily.daily_cost_usd > 20, is_anomaly_p99=False)
    _write(lake, "gold", "cost_anomalies", anomalies, "usage_date")
    quarantine = pd.DataFrame({"event_id": ["e1", "e2"], "dq_rule": ["EV-05", "RI-01"], "event_date": days[:2]})
    _write(lake, "silver", "usage_events_quarantine", quarantine, "event_date")

    page, titles = build_report(lake)
    assert len(titles) == 6 and "P1 daily cost per service (USD)" in titles and "P6 daily cost with the anomaly flags" in titles
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', page)) == 6
    for question in ("P1", "P2", "P3", "P4", "P5", "P6"):
        assert f"<h2>{question} — " in page, question
    assert "<h2>Data quality — quarantined usage events</h2>" in page
    assert "2025-07-03 … 2025-07-22" in page and "<td>org_b</td>" in page
    assert "flagged org × service × days" in page and "robust z &gt; 10" in page


def test_charts_are_png_even_without_rows():
    for png in (charts.daily_cost_per_service(pd.DataFrame()), charts.quarantine_by_rule(pd.DataFrame({"rows": []}))):
        assert png.startswith(b"\x89PNG")

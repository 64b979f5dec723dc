"""Partition bounds fitted to the landing data: a historical dataset ends on its last date, a live one today."""

import datetime as dt
import json

from cpa_assets.landing import landing_calendar
from cpa_assets.partitions import daily_partitions


def _landing(tmp_path, days: list[str]):
    events = tmp_path / "usage_events_stream"
    events.mkdir(parents=True)
    lines = [json.dumps({"event_id": f"e{i}", "timestamp": f"{d}T10:00:00Z"}) for i, d in enumerate(days)]
    (events / "part.jsonl").write_text("\n".join([*lines, "{broken", '{"timestamp": "2025-07-32T00:00:00Z"}']) + "\n")
    (tmp_path / "support_tickets.csv").write_text("ticket_id,created_at\nt1,2025-05-09\nt2,2025-08-31\nt3,2025-02-30\n")
    (tmp_path / "billing_monthly.csv").write_text("invoice_id,month\ni1,2025-06-01\n")
    return tmp_path, [events / "part.jsonl"]


def test_a_historical_dataset_gets_exactly_its_dates(tmp_path):
    calendar = landing_calendar(*_landing(tmp_path, ["2025-07-03", "2025-08-30"]), today=dt.date(2026, 12, 2))
    assert calendar == {
        "CPA_FIRST_EVENT_DATE": "2025-07-03",
        "CPA_LAST_EVENT_DATE": "2025-08-31",  # the last ticket day is later than the last event
        "CPA_FIRST_TICKET_DATE": "2025-05-09",
        "CPA_FIRST_BILLING_MONTH": "2025-06-01",
    }
    keys = daily_partitions(calendar["CPA_FIRST_EVENT_DATE"], calendar["CPA_LAST_EVENT_DATE"]).get_partition_keys()
    assert (keys[0], keys[-1], len(keys)) == ("2025-07-03", "2025-08-31", 60)


def test_a_live_stream_runs_through_today(tmp_path):
    today = dt.datetime.now(dt.timezone.utc).date()
    calendar = landing_calendar(*_landing(tmp_path, [(today - dt.timedelta(days=5)).isoformat(), today.isoformat()]))
    assert "CPA_LAST_EVENT_DATE" not in calendar
    keys = daily_partitions(calendar["CPA_FIRST_EVENT_DATE"], None).get_partition_keys()
    assert keys[-1] == today.isoformat() and len(keys) == 6

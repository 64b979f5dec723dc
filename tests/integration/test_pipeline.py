"""The whole graph on generated landing data with every known defect, against the real Cassandra."""

import datetime as dt
import json
import math
import shutil

import dagster as dg
import pandas as pd
import pytest

from cpa_assets.definitions import build_definitions
from cpa_assets.jobs import ALL_SOURCES, snapshots
from cpa_assets.serving.tables import SERVING_TABLES
from cpa_cli import ask
from cpa_cli.generate import generate
from cpa_cli.main import main
from cpa_resources import LakeResource
from tests.cassandra_tables import assert_same_rows, read_table
from tests.conftest import failed_checks, latest_metadata, metadata_by_partition, summed
from tests.independent import p1_daily_usage, p2_top_services
from tests.independent_genai import p5_genai_tokens

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def landing(tmp_path_factory):
    folder = tmp_path_factory.mktemp("landing")
    generate(folder, scale=1, seed=11, start=dt.date(2025, 7, 3), days=30)
    return folder


def test_defective_landing_is_served_exactly(pipeline, landing, cassandra, spark):
    result, lake = pipeline(landing)
    assert result.success and failed_checks(result) == []

    rejects = lake.read(spark, "bronze", "usage_events_rejects").toPandas()
    for reason in ("malformed_json", "missing_event_id", "bad_timestamp"):
        rows = rejects[rejects.reason == reason]
        assert len(rows) > 0, reason
        for row in rows.itertuples():
            line = (landing / "usage_events_stream" / row.source_file).read_text().splitlines()[row.line_no - 1]
            assert line == row.raw_line

    ledger = latest_metadata(result, dg.AssetKey(["bronze", "usage_events_file_counts"]))
    assert ledger["duplicates"] > 0 and ledger["rejects"] == len(rejects)
    assert ledger["lines_read"] == ledger["bronze_rows"] + ledger["rejects"] + ledger["duplicates"]
    rules = summed(metadata_by_partition(result, dg.AssetKey(["silver", "usage_events"])), "quarantined_by_rule")
    assert all(rules[rule] > 0 for rule in ("EV-02", "EV-05", "RI-01", "RI-02")), rules

    daily = p1_daily_usage(landing)
    assert_same_rows(read_table(cassandra, "org_daily_usage_by_service"), daily, ["org_id", "usage_date", "service"])
    top = p2_top_services(daily, daily.usage_date.min(), daily.usage_date.max())
    assert_same_rows(read_table(cassandra, "org_top_services_14d"), top, ["org_id", "as_of_date", "rank"])
    genai = p5_genai_tokens(landing)
    assert_same_rows(read_table(cassandra, "genai_tokens_by_org_date"), genai, ["org_id", "usage_date"])

    # A value that does not exist is null in Cassandra, never NaN: P3's averages over no rows.
    for table in SERVING_TABLES:
        rows = cassandra.session().execute(f"SELECT * FROM {cassandra.table(table.name)}")
        assert not [v for row in rows for v in row if isinstance(v, float) and math.isnan(v)], table.name
    p3 = list(cassandra.session().execute(f"SELECT csat_avg, avg_resolution_hours FROM {cassandra.table('tickets_by_org_date')}"))
    assert any(r.csat_avg is None for r in p3) and any(r.avg_resolution_hours is None for r in p3)


def test_a_csv_with_a_missing_or_unknown_column_fails_that_source_alone(landing, cassandra, tmp_path, spark):
    copy = tmp_path / "landing"
    shutil.copytree(landing, copy, ignore=shutil.ignore_patterns("usage_events_stream"))
    lake = LakeResource(root=str(tmp_path / "lake"), landing=str(copy))
    defs = build_definitions(lake=lake, cassandra=cassandra)
    keys = list(snapshots(*ALL_SOURCES).resolve(defs.resolve_asset_graph()))

    def load():
        return defs.resolve_job_def("usage_pipeline").execute_in_process(
            instance=dg.DagsterInstance.ephemeral(), asset_selection=keys, raise_on_error=False)

    assert load().success
    def versions():
        return {f"{layer}/{table}": lake.version(layer, table)
                for layer in ("bronze", "silver") for table in ("users", "support_tickets")}

    before = versions()
    header, *rows = (copy / "users.csv").read_text().splitlines()
    (copy / "users.csv").write_text("\n".join([header.replace(",role,", ",rôle,"), *rows]) + "\n")

    result = load()
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [e.step_key for e in failures] == ["bronze_users"]
    message = failures[0].event_specific_data.error.message
    assert "users.csv" in message and "missing column(s) role" in message and "unknown column(s) rôle" in message
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "silver_users" not in started and "silver_support_tickets" in started
    materialized = {e.asset_key.to_user_string() for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}
    assert "silver/support_tickets" in materialized and not {"bronze/users", "silver/users"} & materialized
    # Nothing of users was written: its tables are still at the last snapshot's version.
    after = versions()
    assert after["bronze/users"] == before["bronze/users"] and after["silver/users"] == before["silver/users"]
    assert after["bronze/support_tickets"] != before["bronze/support_tickets"]


def test_rematerialising_a_date_replaces_exactly_that_date(pipeline, landing, cassandra, tmp_path):
    copy = tmp_path / "landing"
    shutil.copytree(landing, copy)
    pipeline(copy)
    before = read_table(cassandra, "org_daily_usage_by_service")
    day = dt.date(2025, 7, 20)
    org = before[before.usage_date == day].org_id.iloc[0]

    # The org's events of that day disappear from landing: its rows for the day must go, nothing else changes.
    for path in (copy / "usage_events_stream").glob("*.jsonl"):
        kept = [line for line in path.read_text().splitlines() if not _is(line, org, day)]
        path.write_text("".join(line + "\n" for line in kept))
    result, _ = pipeline(copy, start=day.isoformat(), end=day.isoformat())
    assert result.success

    after = read_table(cassandra, "org_daily_usage_by_service")
    assert after[(after.usage_date == day) & (after.org_id == org)].empty
    others = before[(before.usage_date != day)].sort_values(["org_id", "usage_date", "service"]).reset_index(drop=True)
    same = after[(after.usage_date != day)].sort_values(["org_id", "usage_date", "service"]).reset_index(drop=True)
    assert others.equals(same)
    unchanged_orgs = before[(before.usage_date == day) & (before.org_id != org)].sort_values(["org_id", "service"])
    now = after[after.usage_date == day].sort_values(["org_id", "service"])
    assert unchanged_orgs.reset_index(drop=True).equals(now.reset_index(drop=True))


def test_a_bad_load_is_rolled_back_with_cpa_restore(pipeline, landing, tmp_path, spark, monkeypatch, capsys):
    copy = tmp_path / "landing"
    shutil.copytree(landing, copy)
    day = "2025-07-20"
    # Landing holds that day's events only, so a run of the one date accounts for every line.
    for path in (copy / "usage_events_stream").glob("*.jsonl"):
        path.write_text("".join(line + "\n" for line in path.read_text().splitlines() if _on(line, day)))
    result, lake = pipeline(copy, start=day, end=day)
    assert result.success
    tables = [("bronze", "usage_events"), ("silver", "usage_events")]
    good = {t: lake.read(spark, *t).toPandas().sort_values("event_id").reset_index(drop=True) for t in tables}
    good_versions = {t: lake.version(*t) for t in tables}

    # A file of well-formed events with costs a thousand times too high lands, and is loaded.
    sample = [json.loads(line) for line in next((copy / "usage_events_stream").glob("*.jsonl")).read_text().splitlines()
              if _on(line, day)][:50]
    bad = [{**event, "event_id": f"bad_{n}", "cost_usd_increment": 1000 * (event.get("cost_usd_increment") or 1)}
           for n, event in enumerate(sample)]
    (copy / "usage_events_stream" / "zz_bad.jsonl").write_text("".join(json.dumps(e) + "\n" for e in bad))
    result, _ = pipeline(copy, start=day, end=day)
    assert result.success
    assert len(lake.read(spark, "bronze", "usage_events").toPandas()) == len(good[tables[0]]) + len(bad)

    monkeypatch.setenv("CPA_LAKE_DIR", lake.root)
    for layer, table in tables:
        assert main(["restore", f"{layer}/{table}", "--version", str(good_versions[(layer, table)])]) == 0
        restored = lake.read(spark, layer, table).toPandas().sort_values("event_id").reset_index(drop=True)
        pd.testing.assert_frame_equal(restored, good[(layer, table)], obj=f"{layer}/{table}")
        # The restore is a new version; the bad load stays in the history.
        assert lake.version(layer, table) > good_versions[(layer, table)] + 1
    capsys.readouterr()
    assert main(["history", "silver/usage_events"]) == 0
    listed = capsys.readouterr().out
    assert "RESTORE" in listed and f"  {good_versions[tables[1]]}  " in listed


def _on(line: str, day: str) -> bool:
    try:
        return str(json.loads(line).get("timestamp", ""))[:10] == day
    except ValueError:
        return False


def _is(line: str, org: str, day: dt.date) -> bool:
    try:
        event = json.loads(line)
        return event.get("org_id") == org and str(event.get("timestamp", ""))[:10] == day.isoformat()
    except ValueError:
        return False


def test_ask_reads_one_partition_per_question(pipeline, landing, cassandra):
    pipeline(landing)
    daily = read_table(cassandra, "org_daily_usage_by_service")
    org = daily.org_id.iloc[0]
    first, last = dt.date(2025, 7, 10), dt.date(2025, 7, 12)

    columns, rows = ask.query(cassandra, "p1", org, first, last)
    expected = daily[(daily.org_id == org) & daily.usage_date.between(first, last)]
    assert len(rows) == len(expected) and columns[:2] == ["usage_date", "service"]

    columns, rows = ask.query(cassandra, "p2", org, last, 2)
    assert [r[0] for r in rows] == [1, 2][: len(rows)] and columns == ["rank", "service", "total_cost_usd"]
    table = ask.format_table(columns, rows)
    assert table.splitlines()[0].split() == ["rank", "service", "total_cost_usd"]

    tickets = read_table(cassandra, "tickets_by_org_date")
    org, day = tickets.org_id.iloc[0], tickets.ticket_date.iloc[0]
    _, rows = ask.query(cassandra, "p3", org, day - dt.timedelta(days=29), day)
    assert len(rows) == len(tickets[(tickets.org_id == org) & tickets.ticket_date.between(day - dt.timedelta(days=29), day)])
    revenue = read_table(cassandra, "revenue_by_org_month")
    _, rows = ask.query(cassandra, "p4", revenue.org_id.iloc[0])
    assert len(rows) == (revenue.org_id == revenue.org_id.iloc[0]).sum()
    anomalies = read_table(cassandra, "cost_anomalies_by_date")
    if len(anomalies):
        _, rows = ask.query(cassandra, "p6", anomalies.usage_date.iloc[0])
        assert len(rows) == (anomalies.usage_date == anomalies.usage_date.iloc[0]).sum()

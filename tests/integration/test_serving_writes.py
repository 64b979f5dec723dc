"""Serving writes against the real Cassandra: a replaced date range holds exactly the new rows,
whatever way the rows were packed into batches."""

import datetime as dt

import pandas as pd
import pytest

from cpa_assets.gold.usage import DAILY_USAGE, MEASURES
from cpa_assets.serving.tables import BATCH_ROWS, SERVING_TABLES, apply_changes, read_dates, replace_dates, serve_increment
from tests.cassandra_tables import assert_same_rows, read_table

pytestmark = pytest.mark.integration

P1 = next(t for t in SERVING_TABLES if t.name == "org_daily_usage_by_service")
P2 = next(t for t in SERVING_TABLES if t.name == "org_top_services_14d")
DAYS = [dt.date(2025, 7, 1) + dt.timedelta(days=i) for i in range(5)]


def _p2(org: str, day: dt.date, services: list[str]) -> list[dict]:
    return [{"org_id": org, "as_of_date": day, "rank": rank, "service": service, "total_cost_usd": 10.0 - rank}
            for rank, service in enumerate(services, 1)]


def _p1(org: str, day: dt.date, service: str, cost: float) -> dict:
    return {"org_id": org, "usage_date": day, "service": service, "daily_cost_usd": cost, "requests": 1.0,
            "cpu_hours": 0.0, "storage_gb_hours": 0.0, "genai_tokens": 0, "carbon_kg": None, "event_count": 1}


def _frame(table, rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=table.columns)


def test_replacing_dates_keeps_exactly_the_new_rows_of_many_small_partitions(cassandra):
    session, name = cassandra.session(), cassandra.table(P2.name)
    cassandra.apply_cql(P2.name)
    before = [row for org in range(30) for day in DAYS for row in _p2(f"org_{org:02d}", day, ["compute", "storage", "genai"])]
    replace_dates(session, P2, name, _frame(P2, before), DAYS)
    assert len(read_table(cassandra, P2.name)) == len(before)

    # Days 2 and 3 again: org_00 lost a service (a written partition with a stale rank), org_01
    # has no row left (a partition not written at all), the others change their costs.
    again = DAYS[1:3]
    after = [row for org in range(2, 30) for day in again for row in _p2(f"org_{org:02d}", day, ["genai", "compute", "storage"])]
    after += [row for day in again for row in _p2("org_00", day, ["storage", "compute"])]
    written = replace_dates(session, P2, name, _frame(P2, after), again)

    kept = [row for row in before if row["as_of_date"] not in again]
    assert_same_rows(read_table(cassandra, P2.name), _frame(P2, kept + after), P2.primary_key)
    assert_same_rows(read_dates(session, P2, name, again), _frame(P2, after), P2.primary_key)
    # 58 partitions of 3 rows and 2 of 2: rows of several partitions share a batch.
    assert written["batches"] < 2 * len(again) * 30 and written["partitions_cleared_of_older_rows"] == 60


def test_a_partition_larger_than_a_batch_is_written_whole_and_its_stale_rows_go(cassandra):
    session, name = cassandra.session(), cassandra.table(P1.name)
    cassandra.apply_cql(P1.name)
    services = [f"service_{i:03d}" for i in range(BATCH_ROWS * 2 + 5)]
    before = [_p1("org_big", day, service, 1.0) for day in DAYS for service in services]
    before += [_p1("org_small", day, "compute", 2.0) for day in DAYS]
    replace_dates(session, P1, name, _frame(P1, before), DAYS)

    after = [_p1("org_big", day, service, 3.0) for day in DAYS[:2] for service in services[: BATCH_ROWS + 1]]
    after += [_p1("org_small", DAYS[0], "compute", 4.0)]
    replace_dates(session, P1, name, _frame(P1, after), DAYS[:3])

    kept = [row for row in before if row["usage_date"] not in DAYS[:3]]
    assert_same_rows(read_table(cassandra, P1.name), _frame(P1, kept + after), P1.primary_key)

    # A stream run's changes: one row upserted, one deleted, in the same packed batches.
    gone = _frame(P1, [after[0]])[P1.primary_key]
    changed = _frame(P1, [_p1("org_small", DAYS[4], "compute", 9.0)])
    apply_changes(session, P1, name, changed, gone)
    expected = [row for row in kept + after if row is not after[0] and not (row["org_id"] == "org_small" and row["usage_date"] == DAYS[4])]
    assert_same_rows(read_table(cassandra, P1.name), _frame(P1, expected + [changed.iloc[0].to_dict()]), P1.primary_key)


def test_an_increment_served_ahead_adds_the_new_sums_to_the_cells_served(cassandra):
    session, name = cassandra.session(), cassandra.table(P1.name)
    cassandra.apply_cql(P1.name)
    # As gold has them: a measure of a cell is never null.
    before = [{**_p1("org_a", day, "compute", 2.5), "carbon_kg": 0.0} for day in DAYS]
    before += [{**_p1("org_b", DAYS[0], "storage", 1.25), "carbon_kg": 0.0}]
    replace_dates(session, P1, name, _frame(P1, before), DAYS)
    # The new events' sums of three cells: two served already, one not yet.
    sums = _frame(P1, [
        {**_p1("org_a", DAYS[1], "compute", 0.5), "requests": 3.0, "genai_tokens": 40, "carbon_kg": 0.0, "event_count": 2},
        {**_p1("org_b", DAYS[0], "storage", 0.75), "carbon_kg": 0.0},
        {**_p1("org_c", DAYS[2], "genai", 4.0), "genai_tokens": 7, "carbon_kg": 0.5},
    ]).astype({"genai_tokens": "int64", "event_count": "int32"})

    figures = serve_increment(cassandra, DAILY_USAGE, sums, MEASURES)

    assert figures["cells"] == 3 and figures["new_cells"] == 1
    expected = [row for row in before if (row["org_id"], row["usage_date"]) not in {("org_a", DAYS[1]), ("org_b", DAYS[0])}]
    expected += [
        {**_p1("org_a", DAYS[1], "compute", 3.0), "requests": 4.0, "genai_tokens": 40, "carbon_kg": 0.0, "event_count": 3},
        {**_p1("org_b", DAYS[0], "storage", 2.0), "requests": 2.0, "carbon_kg": 0.0, "event_count": 2},
        {**_p1("org_c", DAYS[2], "genai", 4.0), "genai_tokens": 7, "carbon_kg": 0.5},
    ]
    assert_same_rows(read_table(cassandra, P1.name), _frame(P1, expected), P1.primary_key)

"""Serving rows: a missing value goes to Cassandra as null, and the read-back check rejects NaN."""

import math

import pandas as pd

from cpa_assets.serving.tables import SERVING_TABLES, _to_python, final_state

TICKETS = next(t for t in SERVING_TABLES if t.name == "tickets_by_org_date")


def test_missing_averages_are_written_as_null_not_nan():
    # Spark's nulls in a double column reach pandas as NaN.
    gold = pd.DataFrame({"org_id": ["org_a", "org_b"], "csat_avg": [4.5, float("nan")], "tickets": [2, 1]})
    rows = _to_python(gold)
    assert rows == [("org_a", 4.5, 2), ("org_b", None, 1)]
    assert not any(isinstance(v, float) and math.isnan(v) for row in rows for v in row)


def test_the_read_back_check_rejects_nan_and_accepts_null():
    row = {column: None for column in TICKETS.columns} | {"org_id": "org_a", "ticket_date": pd.Timestamp("2025-07-03").date()}
    served = pd.DataFrame([row], dtype=object)
    TICKETS.pandera_schema().validate(served)
    served.loc[0, "csat_avg"] = float("nan")
    try:
        TICKETS.pandera_schema().validate(served, lazy=True)
    except Exception as exc:  # pandera's SchemaErrors
        assert "not_nan" in str(exc)
    else:
        raise AssertionError("a NaN passed the serving check")


P6 = next(t for t in SERVING_TABLES if t.name == "cost_anomalies_by_date")


def _anomaly(org, flagged, cost, change, version):
    row = {column: None for column in P6.columns}
    flags = {"is_anomaly_zscore": flagged, "is_anomaly_mad": False, "is_anomaly_p99": False}
    return row | flags | {"usage_date": "2025-08-01", "org_id": org, "service": "compute", "daily_cost_usd": cost,
                          "_change_type": change, "_commit_version": version}


def test_a_change_feed_writes_what_is_served_and_deletes_what_stopped_being_served():
    feed = pd.DataFrame([
        _anomaly("new", True, 9.0, "insert", 5),                                           # newly flagged
        _anomaly("calm", True, 9.0, "delete", 5), _anomaly("calm", False, 2.0, "insert", 5),  # no longer flagged
        _anomaly("same", True, 7.0, "delete", 5), _anomaly("same", True, 7.0, "insert", 5),   # replaced, unchanged
        _anomaly("more", True, 7.0, "delete", 5), _anomaly("more", True, 8.0, "insert", 5),   # still flagged, new cost
        _anomaly("quiet", False, 1.0, "delete", 5), _anomaly("quiet", False, 1.5, "insert", 5),  # never served
        _anomaly("gone", True, 7.0, "delete", 5),                                            # its row vanished
        _anomaly("late", True, 3.0, "insert", 4), _anomaly("late", True, 3.0, "delete", 5),  # the last commit decides
    ])
    written, deleted = final_state(P6, feed)
    assert sorted(written.org_id) == ["more", "new", "same"] and written.set_index("org_id").daily_cost_usd["more"] == 8.0
    assert sorted(deleted.org_id) == ["calm", "gone", "late"]  # "quiet" was never served: nothing to delete

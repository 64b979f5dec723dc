"""Serving rows: a missing value goes to Cassandra as null, and the read-back check rejects NaN."""

import math

import pandas as pd

from cpa_assets.serving.tables import SERVING_TABLES, _to_python

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

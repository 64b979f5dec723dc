"""Read whole serving tables back from Cassandra, and compare tables row by row."""

import pandas as pd
from cassandra.query import SimpleStatement
from cassandra.util import Date


def read_table(cassandra, table: str, consistency: int | None = None) -> pd.DataFrame:
    """Every row of a table, at the session's consistency level or the given one."""
    query = SimpleStatement(f"SELECT * FROM {cassandra.table(table)}", consistency_level=consistency)
    result = cassandra.session().execute(query)
    rows = [[v.date() if isinstance(v, Date) else v for v in row] for row in result]
    return pd.DataFrame(rows, columns=list(result.column_names))


def assert_same_rows(actual: pd.DataFrame, expected: pd.DataFrame, key: list[str], rel: float = 1e-9):
    """Every row and column equal: keys and text exactly, numbers within a relative rounding tolerance."""
    assert sorted(actual.columns) == sorted(expected.columns)
    actual = actual.sort_values(key).reset_index(drop=True)
    expected = expected[actual.columns].sort_values(key).reset_index(drop=True)
    assert len(actual) == len(expected), f"{len(actual)} rows served, {len(expected)} expected"
    pd.testing.assert_frame_equal(actual, expected, check_dtype=False, rtol=rel, atol=1e-9)

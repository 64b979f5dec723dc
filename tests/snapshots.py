"""Everything a pipeline leaves behind, read into sorted frames: to compare two lakes and keyspaces."""

import pandas as pd

from cpa_assets.serving.tables import SERVING_TABLES
from tests.cassandra_tables import read_table


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in one order whatever order they were read in: sorted by every column that holds plain
    values (a table's key is not always in its first columns: a partition column is read last)."""
    def plain(column: str) -> bool:
        values = frame[column].dropna()
        return values.empty or not isinstance(values.iloc[0], (list, tuple, dict)) and not hasattr(values.iloc[0], "__len__") \
            or isinstance(values.iloc[0], str)
    return frame.sort_values([c for c in frame.columns if plain(c)], na_position="first").reset_index(drop=True)


def snapshot(lake, spark, cassandra, datasets: list[str] | None = None, tables: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Every lake table (or the named `layer/table` ones) and every serving table (or the named ones)."""
    if datasets is None:
        datasets = lake_tables(lake)
    frames = {name: _sorted(lake.read(spark, *name.split("/")).toPandas()) for name in datasets}
    for table in tables if tables is not None else [t.name for t in SERVING_TABLES]:
        frames[f"cassandra/{table}"] = _sorted(read_table(cassandra, table))
    return frames


def lake_tables(lake) -> list[str]:
    """`layer/table` of every folder of a local lake's layers (each should be a Delta table)."""
    root = lake.local_root()
    return [f"{layer}/{folder.name}" for layer in ("bronze", "silver", "gold") if (root / layer).is_dir()
            for folder in sorted((root / layer).iterdir()) if folder.is_dir()]

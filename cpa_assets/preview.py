"""A few rows of a DataFrame as a markdown table, for the asset's page in the UI."""

import math

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame

PREVIEW_ROWS = 5
# Costs are in dollars and the usage units are hours, GB-hours and requests: 4 decimals keep every
# figure readable (3.4938, not 3.4938000000000002) and still show a cent's fraction.
DECIMALS = 4


def format_value(value) -> str:
    if isinstance(value, (list, tuple, np.ndarray)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return str(value)
        text = f"{value:.{DECIMALS}f}".rstrip("0").rstrip(".")
        return "0" if text == "-0" else text
    return str(value)


def markdown_header(columns) -> str:
    return "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)


def markdown_row(values) -> str:
    return "| " + " | ".join(format_value(v) for v in values) + " |"


def markdown_table(sample: pd.DataFrame) -> str:
    if sample.empty:
        return "_no rows_"
    return "\n".join([markdown_header(sample.columns), *map(markdown_row, sample.itertuples(index=False, name=None))])


def markdown_preview(df: DataFrame | pd.DataFrame, rows: int = PREVIEW_ROWS) -> str:
    """The first rows of a Spark frame, or of rows already collected."""
    return markdown_table(df.head(rows) if isinstance(df, pd.DataFrame) else df.limit(rows).toPandas())

"""A few rows of a DataFrame as a markdown table, for the asset's page in the UI."""

from pyspark.sql import DataFrame


def markdown_preview(df: DataFrame, rows: int = 5) -> str:
    sample = df.limit(rows).toPandas()
    if sample.empty:
        return "_no rows_"
    header = "| " + " | ".join(sample.columns) + " |"
    rule = "|" + "---|" * len(sample.columns)
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in sample.itertuples(index=False)]
    return "\n".join([header, rule, *body])

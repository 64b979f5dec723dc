"""The contract's P5 computed again from landing files with plain Python and pandas, on top of the
landing parsing and silver rules of tests/independent.py, sharing no code with the pipeline."""

from pathlib import Path

import pandas as pd

from tests.independent import silver_events

P5_COLUMNS = ["org_id", "usage_date", "genai_tokens", "genai_cost_usd", "genai_events"]


def p5_genai_tokens(landing: Path) -> pd.DataFrame:
    """GenAI tokens, cost and token-carrying events per org × usage_date, from `genai` events only
    (tokens reported on other services are EV-06 strays, not GenAI usage)."""
    events = silver_events(landing)
    genai = events[events["service"] == "genai"].copy()
    if genai.empty:
        return pd.DataFrame(columns=P5_COLUMNS)
    tokens = genai["genai_tokens"] if "genai_tokens" in genai else pd.Series(None, index=genai.index)
    genai["tokens"] = pd.to_numeric(tokens).fillna(0).astype("int64")
    genai["cost"] = genai["cost_usd_increment"].fillna(0.0).astype(float)
    genai["with_tokens"] = (genai["tokens"] > 0).astype("int64")
    grouped = genai.groupby(["org_id", "usage_date"], as_index=False).agg(
        genai_tokens=("tokens", "sum"),
        genai_cost_usd=("cost", "sum"),
        genai_events=("with_tokens", "sum"),
    )
    return grouped[P5_COLUMNS]

"""`python -m tests.cluster.serve_usage FIRST LAST`: rewrite only the usage serving tables (P1, P2, P5,
P6) of event dates FIRST … LAST from the gold tables a backfill left, configured by the environment
like `cpa backfill`. Exits 0 when the run and its checks succeeded."""

import sys

import dagster as dg

from cpa_assets.definitions import defs
from cpa_assets.jobs import BILLING_MARTS, TICKET_MARTS
from cpa_cli.backfill import failed_checks, run_range

USAGE_SERVING = dg.AssetSelection.groups("serving") - TICKET_MARTS - BILLING_MARTS


def main(first: str, last: str) -> int:
    result = run_range(defs, "usage_pipeline", first, last, dg.DagsterInstance.get(), USAGE_SERVING)
    failed = failed_checks(result)
    print(f"serve_usage: {'succeeded' if result.success and not failed else 'FAILED'} {failed}", flush=True)
    return 0 if result.success and not failed else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))

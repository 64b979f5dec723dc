"""A stream on a scratch stack: generated landing data, the CSV snapshots in a fresh lake, event
files to deliver, and the check that what the stream left equals a clean run of the same files."""

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd

from bench.stack import runs_for_file
from cpa_assets.definitions import build_definitions
from cpa_assets.jobs import ALL_SOURCES, snapshots
from cpa_cli.generate import generate
from cpa_resources import CassandraResource, LakeResource
from tests.conftest import run_pipeline
from tests.snapshots import snapshot

USAGE_DATASETS = [
    "bronze/usage_events", "bronze/usage_events_rejects", "bronze/usage_events_duplicates",
    "bronze/usage_events_file_counts", "silver/usage_events", "silver/usage_events_quarantine",
    "gold/org_daily_usage_by_service", "gold/org_top_services_14d", "gold/genai_tokens_by_org_date",
    "gold/cost_anomalies",
]
USAGE_TABLES = ["org_daily_usage_by_service", "org_top_services_14d", "genai_tokens_by_org_date", "cost_anomalies_by_date"]


def stream_landing(folder: Path, cassandra: CassandraResource, seed: int, days: int = 20):
    """(landing, lake, event files to deliver): the generated CSVs in a landing folder with an
    empty stream, and their snapshots in a fresh lake, as the batch schedules would have left them."""
    produced = folder / "produced"
    generate(produced, scale=1, seed=seed, start=dt.date(2025, 7, 3), days=days)
    landing = folder / "landing"
    (landing / "usage_events_stream").mkdir(parents=True)
    for csv_file in produced.glob("*.csv"):
        shutil.copy(csv_file, landing / csv_file.name)
    lake = LakeResource(root=str(folder / "lake"), landing=str(landing))
    defs = build_definitions(lake=lake, cassandra=cassandra)
    snapshot_keys = list(snapshots(*ALL_SOURCES).resolve(defs.resolve_asset_graph()))
    assert defs.resolve_job_def("usage_pipeline").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), asset_selection=snapshot_keys
    ).success
    return landing, lake, sorted((produced / "usage_events_stream").glob("*.jsonl"))


def succeeded(instance: dg.DagsterInstance, name: str, repair: bool | None = False) -> bool:
    """A stream run over the file (a repair, a plain run, or either when None) succeeded."""
    runs = [r for r in runs_for_file(instance, name) if repair is None or ("cpa/repairs" in r.tags) == repair]
    return any(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)


def differences_from_a_clean_run(folder: Path, landing: Path, lake: LakeResource, spark, cassandra: CassandraResource,
                                 reference: CassandraResource) -> list[str]:
    """The usage datasets and serving tables in which the stream's lake and keyspace differ from a
    backfill of the same landing files into a fresh lake and the `reference` keyspace."""
    streamed = snapshot(lake, spark, cassandra, USAGE_DATASETS, USAGE_TABLES)
    reference.session().execute(f"DROP KEYSPACE IF EXISTS {reference.keyspace}")
    shutil.rmtree(folder / "clean_lake", ignore_errors=True)
    result, clean_lake = run_pipeline(landing, folder / "clean_lake", reference)
    assert result.success
    clean = snapshot(clean_lake, spark, reference, USAGE_DATASETS, USAGE_TABLES)
    assert len(clean["bronze/usage_events"]) > 0 and len(clean["cassandra/org_daily_usage_by_service"]) > 0
    differing = []
    for name in clean:
        try:
            pd.testing.assert_frame_equal(streamed[name], clean[name], obj=name)
        except AssertionError:
            differing.append(name)
    return differing

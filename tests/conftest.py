"""Shared fixtures: one local SparkSession, the real Cassandra server, isolated lakes and keyspaces."""

import os
import re
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
from pyspark.sql import SparkSession

from cpa_assets.definitions import build_definitions
from cpa_cli.backfill import run_backfill
from cpa_resources import CassandraResource, LakeResource, local_cassandra, session_from_env
from cpa_resources.cassandra import shutdown_sessions

REPO = Path(__file__).resolve().parents[1]
# The course dataset is read where it lies (never copied into the repo): beside the checkout, or
# wherever CPA_COURSE_LANDING says.
REAL_LANDING = Path(
    os.environ.get("CPA_COURSE_LANDING") or REPO / ".." / "shared" / "datasets" / "cloud_provider" / "landing"
).resolve()


def require_real_landing() -> Path:
    """The course dataset's landing folder; its absence fails the test that needs it, never skips it."""
    assert REAL_LANDING.is_dir(), f"the course dataset is expected at {REAL_LANDING} (set CPA_COURSE_LANDING)"
    return REAL_LANDING


@pytest.fixture(scope="session")
def spark():
    return session_from_env()


@pytest.fixture(autouse=True, scope="module")
def _release_cached_frames():
    """Frames a module's tests cached go with the module: one session serves the whole suite."""
    yield
    session = SparkSession.getActiveSession()
    if session is not None:
        session.catalog.clearCache()


@pytest.fixture(autouse=True, scope="session")
def _close_cassandra_sessions():
    """The pooled driver sessions close before the interpreter does: a cluster left open has its
    scheduler thread submit work to executors Python has already shut down, and print that."""
    yield
    shutdown_sessions()


@pytest.fixture(scope="session")
def cassandra_server():
    """The project's own Cassandra, unless CPA_CASSANDRA_HOSTS points at another cluster."""
    if not os.environ.get("CPA_CASSANDRA_HOSTS"):
        local_cassandra.start()


@contextmanager
def fresh_keyspace(name: str):
    """A keyspace of its own on the test cluster, dropped afterwards."""
    keyspace = "cpa_test_" + re.sub(r"\W", "_", name.lower())[:36]
    resource = CassandraResource.from_env().with_keyspace(keyspace)
    resource.session().execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
    yield resource
    resource.session().execute(f"DROP KEYSPACE IF EXISTS {keyspace}")


class Runs:
    """The runs of one `cpa backfill`, read as one: all succeeded, and their events in order."""

    def __init__(self, results):
        self.results = results
        self.success = bool(results) and all(r.success for r in results)
        self.all_events = [e for r in results for e in r.all_events]


def run_pipeline(landing: Path, lake_dir: Path, cassandra: CassandraResource, start=None, end=None):
    """Run `cpa backfill` over a landing folder into the given lake and keyspace."""
    lake = LakeResource(root=str(lake_dir), landing=str(landing))
    defs = build_definitions(lake=lake, cassandra=cassandra)
    return Runs(run_backfill(defs, start, end, instance=dg.DagsterInstance.ephemeral())), lake


@pytest.fixture
def cassandra(cassandra_server, request):
    with fresh_keyspace(request.node.name) as resource:
        yield resource


@pytest.fixture
def pipeline(tmp_path, cassandra):
    def run(landing: Path, lake_dir: Path | None = None, start: str | None = None, end: str | None = None):
        return run_pipeline(landing, lake_dir or tmp_path / "lake", cassandra, start, end)

    return run


def failed_checks(result) -> list[str]:
    return [
        e.asset_check_evaluation_data.asset_check_key.to_user_string()
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.asset_check_evaluation_data.passed
    ]


def latest_metadata(result, asset_key: dg.AssetKey) -> dict:
    """Metadata of the last materialisation of an asset in a run, as plain values."""
    events = [
        e.event_specific_data.materialization
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION" and e.asset_key == asset_key
    ]
    return {k: v.value for k, v in events[-1].metadata.items()}


def metadata_by_partition(result, asset_key: dg.AssetKey) -> dict[str, dict]:
    """Metadata of the last materialisation of each partition of an asset in a run, as plain values."""
    latest: dict[str, dict] = {}
    for e in result.all_events:
        if e.event_type_value == "ASSET_MATERIALIZATION" and e.asset_key == asset_key:
            materialization = e.event_specific_data.materialization
            latest[materialization.partition] = {k: v.value for k, v in materialization.metadata.items()}
    return latest


def summed(by_partition: dict[str, dict], key: str) -> dict[str, int]:
    """A per-partition dict of counts (e.g. quarantined_by_rule) added up over the partitions."""
    total: dict[str, int] = {}
    for metadata in by_partition.values():
        for name, n in metadata[key].items():
            total[name] = total.get(name, 0) + n
    return total

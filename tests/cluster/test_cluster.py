"""The pipeline on a real cluster (Spark standalone, three Cassandra nodes, replication factor 3),
configured by its settings alone: it serves what local mode serves, and survives a node's crash."""

import datetime as dt
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from cassandra import ConsistencyLevel, InvalidRequest, OperationTimedOut, ReadFailure, ReadTimeout, Unavailable
from cassandra.cluster import NoHostAvailable

from cpa_assets.serving.tables import SERVING_TABLES
from cpa_cli.generate import generate
from cpa_resources import CassandraResource, local_cluster
from tests.cassandra_tables import assert_same_rows, read_table
from tests.cluster.conftest import REPO, log_tail, pipeline_env, start_python
from tests.conftest import fresh_keyspace, run_pipeline

pytestmark = pytest.mark.cluster

FIRST, LAST = dt.date(2025, 7, 28), dt.date(2025, 7, 31)
USAGE_TABLES = ["org_daily_usage_by_service", "org_top_services_14d", "genai_tokens_by_org_date", "cost_anomalies_by_date"]
KEYS = {table.name: table.primary_key for table in SERVING_TABLES}


@pytest.fixture(scope="module")
def landing(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cluster_landing")
    generate(folder, scale=1, seed=11, start=FIRST, days=(LAST - FIRST).days + 1)
    return folder


@dataclass
class Backfills:
    local: dict[str, pd.DataFrame]  # every serving table as local mode serves it
    env: dict[str, str]  # the cluster backfill's environment
    log: Path
    cassandra: CassandraResource  # the cluster backfill's keyspace


@pytest.fixture(scope="module")
def backfills(loopback_cluster, landing, cassandra_server, tmp_path_factory) -> Backfills:
    """`cpa backfill` on the cluster, in a process of its own pointed at it by its settings alone;
    meanwhile the same backfill in local mode in this process (local Spark, the single node)."""
    folder = tmp_path_factory.mktemp("backfills")
    keyspace = "cpa_test_cluster_backfill"
    env = pipeline_env(loopback_cluster, landing, folder / "cluster_lake", keyspace, folder / "dagster_home")
    log = folder / "backfill.log"
    started = time.monotonic()
    on_cluster = start_python(["cpa_cli.main", "backfill"], env, log)
    try:
        with fresh_keyspace("cluster_reference") as reference:
            result, _ = run_pipeline(landing, folder / "local_lake", reference)
            assert result.success
            local = {table.name: read_table(reference, table.name) for table in SERVING_TABLES}
        print(f"local-mode backfill: {time.monotonic() - started:.1f} s")
        assert on_cluster.wait(timeout=900) == 0, log_tail(log)
        print(f"cluster backfill: {time.monotonic() - started:.1f} s")
    finally:
        if on_cluster.poll() is None:
            on_cluster.kill()
    return Backfills(local, env, log, cluster_cassandra(loopback_cluster, keyspace))


def cluster_cassandra(cluster, keyspace: str) -> CassandraResource:
    return CassandraResource(hosts=",".join(cluster.hosts), keyspace=keyspace,
                             replication=cluster.settings()["CPA_CASSANDRA_REPLICATION"])


def test_backfill_on_the_cluster_serves_what_local_mode_serves(loopback_cluster, backfills):
    cassandra = backfills.cassandra
    assert "cpa backfill: succeeded" in backfills.log.read_text()
    keyspace = cassandra.session().execute(
        "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (cassandra.keyspace,)).one()
    assert keyspace.replication["replication_factor"] == "3"
    # Both workers ran executors of the backfill's application: the work was done on the cluster.
    for worker in range(1, loopback_cluster.workers + 1):
        work = loopback_cluster.base / "spark" / f"worker-{worker}"
        assert list(work.glob("app-*/*/stderr")), f"no executor ran on worker {worker}"

    for table in SERVING_TABLES:
        expected = backfills.local[table.name]
        assert len(expected) > 0 or table.name == "cost_anomalies_by_date", table.name
        assert_same_rows(read_table(cassandra, table.name), expected, KEYS[table.name])


def test_a_node_killed_during_the_serving_writes(loopback_cluster, backfills, tmp_path):
    """The usage tables are served again from the backfill's gold into a new keyspace; one node is
    SIGKILLed as soon as the first rows land. The run succeeds, every row reads back at QUORUM and,
    once the node is back, at ALL."""
    keyspace = "cpa_test_cluster_node_killed"
    env = {**backfills.env, "CPA_CASSANDRA_KEYSPACE": keyspace, "DAGSTER_HOME": str(tmp_path)}
    cassandra = cluster_cassandra(loopback_cluster, keyspace)
    cassandra.session().execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
    log = tmp_path / "serve.log"
    started = time.monotonic()
    run = start_python(["tests.cluster.serve_usage", FIRST.isoformat(), LAST.isoformat()], env, log)
    try:
        _wait_for_first_rows(cassandra, run, log)
        victim = loopback_cluster.nodes[-1]
        local_cluster.kill_node(victim)
        print(f"node {victim.address} killed {time.monotonic() - started:.1f} s into the serving run")
        assert run.wait(timeout=600) == 0, log_tail(log)
    finally:
        if run.poll() is None:
            run.kill()
    assert "serve_usage: succeeded" in log.read_text()

    for table in USAGE_TABLES:
        assert_same_rows(_read_answered(cassandra, table, ConsistencyLevel.QUORUM), backfills.local[table], KEYS[table])

    local_cluster.start_node(victim, loopback_cluster.nodes[0])
    for table in USAGE_TABLES:
        assert_same_rows(_read_answered(cassandra, table, ConsistencyLevel.ALL), backfills.local[table], KEYS[table])


def _wait_for_first_rows(cassandra: CassandraResource, run: subprocess.Popen, log, timeout: float = 600) -> None:
    session = cassandra.session()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert run.poll() is None, f"the serving run ended before writing a row\n{log_tail(log)}"
        tables = {row.table_name for row in session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (cassandra.keyspace,))}
        for table in tables & set(USAGE_TABLES):
            try:
                if session.execute(f"SELECT * FROM {cassandra.table(table)} LIMIT 1").one() is not None:
                    return
            except (InvalidRequest, ReadFailure, ReadTimeout):  # a table just created, not yet known to every node
                pass
        time.sleep(0.05)
    raise TimeoutError("no serving table received a row")


def _read_answered(cassandra: CassandraResource, table: str, consistency: int, timeout: float = 120):
    """A whole table at the given consistency, asked again while the cluster cannot answer yet.

    ALL needs every replica: the coordinators mark the restarted node up a few seconds after it
    answers CQL and refuse the read as unavailable until then. QUORUM needs both live replicas of
    every range: with three JVMs on two cores a loaded one can miss the range read's deadline, and
    a coordinator that has not yet convicted the killed node may still wait on it. A timeout says
    nothing about the rows; a read that answers must hold every one of them."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read_table(cassandra, table, consistency)
        except (Unavailable, ReadTimeout, ReadFailure, OperationTimedOut, NoHostAvailable, InvalidRequest) as exc:
            if time.monotonic() > deadline:
                raise
            print(f"{table} at {ConsistencyLevel.value_to_name[consistency]}: not answered ({type(exc).__name__}), asked again")
            time.sleep(1)


def test_the_default_hosts_name_the_single_local_server_in_the_way(cassandra_server):
    """With the single local server on 127.0.0.1:9042, the default cluster cannot start, and says why."""
    if os.environ.get("CPA_CASSANDRA_HOSTS"):
        pytest.skip("the suite uses a cluster of its own, not the single local server")
    problems = local_cluster.collisions(local_cluster.LoopbackCluster(base=REPO / ".cluster" / "unused"))
    assert "127.0.0.1:9042 is already taken" in problems
    assert any("cpa cassandra stop" in p and "CPA_CLUSTER_HOSTS" in p for p in problems)

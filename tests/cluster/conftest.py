"""One real cluster for the cluster tests: a Spark standalone master with two workers and three
Cassandra nodes, started once per session and stopped at its end. Its nodes listen on 127.0.0.2–4
(CPA_TEST_CLUSTER_HOSTS), beside the single local server on 127.0.0.1 that the rest of the suite
uses; its files are in .cluster/test, so a session interrupted before its end is cleaned up by the
next one."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cpa_resources import local_cassandra, local_cluster
from cpa_resources.local_cluster import LoopbackCluster

REPO = Path(__file__).resolve().parents[2]

TEST_CLUSTER = LoopbackCluster(
    hosts=tuple(h.strip() for h in os.environ.get("CPA_TEST_CLUSTER_HOSTS", "127.0.0.2,127.0.0.3,127.0.0.4").split(",")),
    base=REPO / ".cluster" / "test",
    # Not the ports of a `cpa cluster` a developer may be running; the master's UI on any free port.
    spark_port=7177,
    spark_ui_port=0,
    jmx_port=7300,
)


@pytest.fixture(scope="session")
def loopback_cluster():
    local_cluster.stop(TEST_CLUSTER)  # whatever an interrupted session left running
    shutil.rmtree(TEST_CLUSTER.base, ignore_errors=True)
    try:
        local_cluster.start(TEST_CLUSTER)
        yield TEST_CLUSTER
    finally:
        local_cluster.stop(TEST_CLUSTER)


def pipeline_env(cluster: LoopbackCluster, landing: Path, lake: Path, keyspace: str, dagster_home: Path) -> dict[str, str]:
    """The environment of a `cpa` process pointed at the cluster by its settings alone."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CPA_SPARK_", "CPA_CASSANDRA_"))}
    return {
        **env,
        **cluster.settings(),
        "CPA_CASSANDRA_KEYSPACE": keyspace,
        "CPA_LANDING_DIR": str(landing),
        "CPA_LAKE_DIR": str(lake),
        "DAGSTER_HOME": str(dagster_home),
        "JAVA_HOME": str(local_cassandra.java_home()),
    }


def start_python(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """`python -m ARGS` in the repository, in the background, its output in `log`."""
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def log_tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

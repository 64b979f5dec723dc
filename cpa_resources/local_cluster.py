"""A real cluster on one machine's loopback addresses: a Spark standalone master with workers, and
a Cassandra 5.0 cluster of one node per address.

pip's pyspark ships `bin/spark-class` but not the `sbin/` scripts, so the master and workers are
started as `spark-class org.apache.spark.deploy.{master.Master,worker.Worker}` in the background.
The Cassandra nodes are `local_cassandra.Node`s: the same install, yaml and JVM command as the
single local server, one loopback address, folder and JMX port each, the first node as seed,
started one after another (each has joined the ring before the next starts).

Everything lives in one git-ignored folder (`.cluster/`): per process a pid file and a log.

Environment (all optional):

| variable | default |
|---|---|
| `CPA_CLUSTER_HOSTS` | `127.0.0.1,127.0.0.2,127.0.0.3` (one Cassandra node per address, the first is the seed) |
| `CPA_CLUSTER_DIR` | `<repo>/.cluster` |
| `CPA_CLUSTER_SPARK_HOST`, `CPA_CLUSTER_SPARK_PORT`, `CPA_CLUSTER_SPARK_UI_PORT` | `127.0.0.1`, `7077`, `8080` |
| `CPA_CLUSTER_WORKERS`, `CPA_CLUSTER_WORKER_CORES`, `CPA_CLUSTER_WORKER_MEMORY` | `2`, `1`, `1g` |
| `CPA_CLUSTER_CASSANDRA_HEAP` | `640M` per node |
| `CPA_CLUSTER_JMX_PORT` | `7200`: node i (from 1) listens on 127.0.0.1:7200+i |
"""

from __future__ import annotations

import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyspark

from cpa_resources import local_cassandra
from cpa_resources.daemon import Daemon
from cpa_resources.local_cassandra import Node

REPO_ROOT = Path(__file__).resolve().parents[1]
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
CLUSTER_NAME = "cpa-cluster"  # not the local server's: nodes of one never gossip with the other
TOKEN_SPACE = 2**64


@dataclass(frozen=True)
class LoopbackCluster:
    """Where the cluster's processes listen and keep their files."""

    hosts: tuple[str, ...] = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
    base: Path = REPO_ROOT / ".cluster"
    spark_host: str = "127.0.0.1"
    spark_port: int = 7077
    spark_ui_port: int = 8080
    workers: int = 2
    worker_cores: int = 1
    worker_memory: str = "1g"
    cassandra_heap: str = "640M"
    jmx_port: int = 7200

    @classmethod
    def from_env(cls) -> LoopbackCluster:
        env = os.environ.get
        hosts = tuple(h.strip() for h in env("CPA_CLUSTER_HOSTS", ",".join(cls.hosts)).split(",") if h.strip())
        return cls(
            hosts=hosts,
            base=Path(env("CPA_CLUSTER_DIR") or cls.base).expanduser().resolve(),
            spark_host=env("CPA_CLUSTER_SPARK_HOST", cls.spark_host),
            spark_port=int(env("CPA_CLUSTER_SPARK_PORT", cls.spark_port)),
            spark_ui_port=int(env("CPA_CLUSTER_SPARK_UI_PORT", cls.spark_ui_port)),
            workers=int(env("CPA_CLUSTER_WORKERS", cls.workers)),
            worker_cores=int(env("CPA_CLUSTER_WORKER_CORES", cls.worker_cores)),
            worker_memory=env("CPA_CLUSTER_WORKER_MEMORY", cls.worker_memory),
            cassandra_heap=env("CPA_CLUSTER_CASSANDRA_HEAP", cls.cassandra_heap),
            jmx_port=int(env("CPA_CLUSTER_JMX_PORT", cls.jmx_port)),
        )

    @property
    def master_url(self) -> str:
        return f"spark://{self.spark_host}:{self.spark_port}"

    @property
    def nodes(self) -> list[Node]:
        # One token per node, spread evenly over the ring; with replication factor 3 on three nodes
        # every node holds every row anyway.
        return [
            Node(
                host=host,
                base=self.base / "cassandra" / host,
                jmx_port=self.jmx_port + index + 1,
                seeds=self.hosts[:1],
                heap=self.cassandra_heap,
                cluster_name=CLUSTER_NAME,
                native_port=local_cassandra.native_port(),
                storage_port=local_cassandra.storage_port(),
                initial_token=-(2**63) + index * (TOKEN_SPACE // len(self.hosts)),
            )
            for index, host in enumerate(self.hosts)
        ]

    def settings(self) -> dict[str, str]:
        """The pipeline's settings that point it at this cluster."""
        replication = min(3, len(self.hosts))
        return {
            "CPA_SPARK_MASTER": self.master_url,
            "CPA_CASSANDRA_HOSTS": ",".join(self.hosts),
            "CPA_CASSANDRA_REPLICATION": f"{{'class': 'SimpleStrategy', 'replication_factor': {replication}}}",
        }


# --- Spark standalone ------------------------------------------------------------------------


def spark_class() -> Path:
    """pip's pyspark ships `bin/spark-class` (not the `sbin/` scripts): it runs any Spark main class."""
    return Path(pyspark.__file__).parent / "bin" / "spark-class"


def spark_env(bind: str) -> dict[str, str]:
    """What a Spark JVM started here needs: pip's pyspark as SPARK_HOME, the project's JDK 17, the
    address it binds (its UI and the executors it launches too), the project's Python for tasks."""
    return {
        "SPARK_HOME": str(Path(pyspark.__file__).parent),
        "JAVA_HOME": str(local_cassandra.java_home()),
        "SPARK_LOCAL_IP": bind,
        "SPARK_DAEMON_MEMORY": "256m",
        # Python tasks run in the project's virtualenv, which has pyspark, pandas and pyarrow.
        "PYSPARK_PYTHON": sys.executable,
    }


def spark_daemons(cluster: LoopbackCluster) -> list[Daemon]:
    folder = cluster.base / "spark"
    env = spark_env(cluster.spark_host)
    master = Daemon("master", (str(spark_class()), MASTER_CLASS,
                               "--host", cluster.spark_host, "--port", str(cluster.spark_port),
                               "--webui-port", str(cluster.spark_ui_port)), folder, MASTER_CLASS, env)
    workers = [
        Daemon(f"worker-{i}", (str(spark_class()), WORKER_CLASS,
                               "--host", cluster.spark_host, "--cores", str(cluster.worker_cores),
                               "--memory", cluster.worker_memory, "--work-dir", str(folder / f"worker-{i}"),
                               "--webui-port", "0", cluster.master_url), folder, WORKER_CLASS, env)
        for i in range(1, cluster.workers + 1)
    ]
    return [master, *workers]


def start_spark(cluster: LoopbackCluster) -> None:
    master, *workers = spark_daemons(cluster)
    started = time.monotonic()
    if master.pid() is None and local_cassandra.port_open(cluster.spark_host, cluster.spark_port):
        raise RuntimeError(f"{cluster.spark_host}:{cluster.spark_port} is taken by a process this folder "
                           f"did not start; set CPA_CLUSTER_SPARK_PORT")
    master.start()
    master.wait_until(lambda: master.logged("I have been elected leader"), "elected leader")
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.wait_until(lambda: worker.logged("Successfully registered with master"), "registered with the master")
    print(f"Spark master {cluster.master_url} with {len(workers)} workers of {cluster.worker_cores} "
          f"core(s) and {cluster.worker_memory} up after {time.monotonic() - started:.1f} s", flush=True)


def stop_spark(cluster: LoopbackCluster) -> None:
    for daemon in reversed(spark_daemons(cluster)):
        pid = daemon.stop()
        if pid is not None:
            print(f"Spark {daemon.name} stopped (pid {pid})", flush=True)


# --- Cassandra -------------------------------------------------------------------------------


def collisions(cluster: LoopbackCluster) -> list[str]:
    """Why the cluster cannot start: its addresses' ports are taken by servers it did not start."""
    problems = []
    local_server_in_the_way = False
    for node in cluster.nodes:
        if local_cassandra.running_pid(node) is not None:
            continue
        for port in (node.native_port, node.storage_port):
            if local_cassandra.port_open(node.host, port):
                problems.append(f"{node.host}:{port} is already taken")
                local_server_in_the_way |= node.host == local_cassandra.HOST
        if node.jmx_port and local_cassandra.port_open("127.0.0.1", node.jmx_port):
            problems.append(f"JMX port 127.0.0.1:{node.jmx_port} (of {node.host}) is already taken")
    if local_server_in_the_way:
        problems.append(
            "the single local server (`cpa cassandra start`) uses 127.0.0.1:9042 and 7000: stop it with "
            "`cpa cassandra stop`, or put the cluster on other addresses, e.g. "
            "CPA_CLUSTER_HOSTS=127.0.0.2,127.0.0.3,127.0.0.4")
    return problems


def _joined(seed: Node, node: Node) -> bool:
    """The seed lists the node as a peer with its token (it is part of the ring), and both hold the
    same schema: a node back from a crash has pulled the tables created while it was down."""
    if node == seed:
        return True
    peers = local_cassandra.cql_rows(seed.host, seed.native_port, "SELECT peer, tokens FROM system.peers_v2")
    if not any(str(row.peer) == node.host and row.tokens for row in peers or []):
        return False
    versions = [local_cassandra.cql_rows(n.host, n.native_port, "SELECT schema_version FROM system.local")
                for n in (seed, node)]
    return all(versions) and versions[0][0].schema_version == versions[1][0].schema_version


def start_node(node: Node, seed: Node, timeout: float = 240) -> None:
    """Start one node (no-op when it runs) and wait until it answers CQL and has joined the ring."""
    pid = local_cassandra.running_pid(node)
    if pid is None:
        pid = local_cassandra.launch(node)
        print(f"starting Cassandra node {node.address} (pid {pid}, data in {node.base}) ...", flush=True)
    local_cassandra.wait_until_up(node, pid, timeout)
    deadline = time.monotonic() + timeout
    while not _joined(seed, node):
        if time.monotonic() > deadline:
            raise TimeoutError(f"Cassandra node {node.address} did not join {seed.address}'s ring")
        time.sleep(1)


def _check_free(cluster: LoopbackCluster) -> None:
    problems = collisions(cluster)
    if problems:
        raise RuntimeError("cannot start the Cassandra cluster:\n  " + "\n  ".join(problems))


def start_cassandra(cluster: LoopbackCluster) -> None:
    _check_free(cluster)
    local_cassandra.install()
    started = time.monotonic()
    seed = cluster.nodes[0]
    for node in cluster.nodes:
        start_node(node, seed)
    print(f"Cassandra cluster of {len(cluster.nodes)} nodes up after {time.monotonic() - started:.1f} s",
          flush=True)


def kill_node(node: Node) -> int:
    """SIGKILL a node, as a crash would; its pid."""
    pid = local_cassandra.running_pid(node)
    if pid is None:
        raise RuntimeError(f"Cassandra node {node.address} is not running")
    os.kill(pid, signal.SIGKILL)
    local_cassandra.wait_for_exit(pid, 30)
    return pid


# --- the whole cluster -----------------------------------------------------------------------


def start(cluster: LoopbackCluster | None = None) -> None:
    """Start Spark beside the Cassandra nodes, which start one by one; whatever runs is left as it is."""
    cluster = cluster or LoopbackCluster.from_env()
    _check_free(cluster)
    with ThreadPoolExecutor(1) as pool:
        spark = pool.submit(start_spark, cluster)
        start_cassandra(cluster)
        spark.result()
    print("point the pipeline at it with:\n" + "\n".join(f"  export {k}=\"{v}\"" for k, v in cluster.settings().items()),
          flush=True)


def stop(cluster: LoopbackCluster | None = None) -> None:
    cluster = cluster or LoopbackCluster.from_env()
    stop_spark(cluster)
    for node in reversed(cluster.nodes):
        local_cassandra.stop_node(node)


def describe_status(cluster: LoopbackCluster | None = None) -> str:
    cluster = cluster or LoopbackCluster.from_env()
    lines = [f"cluster folder {cluster.base}"]
    for daemon in spark_daemons(cluster):
        pid = daemon.pid()
        where = cluster.master_url if daemon.marker == MASTER_CLASS else f"worker of {cluster.master_url}"
        state = f"running (pid {pid})" if pid else "not running"
        lines.append(f"Spark {daemon.name:<9} {where:<32} {state}  log {daemon.log}")
    for node in cluster.nodes:
        pid = local_cassandra.running_pid(node)
        release = local_cassandra.cql_release_version(node.host, node.native_port) if pid else None
        state = (f"Cassandra {release} (pid {pid})" if release else
                 f"starting (pid {pid})" if pid else "not running")
        lines.append(f"Cassandra {node.address:<21} jmx 127.0.0.1:{node.jmx_port:<6} {state}  data {node.base}")
    return "\n".join(lines)

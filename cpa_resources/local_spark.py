"""A warm Spark: a Spark Connect server in local mode, started once, that every run talks to.

Dagster starts a new process for each run. A run that started its own local Spark would pay the
JVM's start and its first queries' compilation (≈ 10–15 s here) before it read a line; a stream run
lasts seconds. The Spark Connect server keeps one local-mode Spark (the same `local[2]` master,
Delta Lake extensions and tuning as an in-process session) up between runs, and a run's process
holds only a thin client (`CPA_SPARK_REMOTE=sc://127.0.0.1:15002`, through dagster-pyspark's
resource). `make run` starts it; `cpa spark start|stop|status` does so by hand.

It is started as pip's pyspark starts any Spark application: `spark-class
org.apache.spark.deploy.SparkSubmit --class org.apache.spark.sql.connect.service.SparkConnectServer`
(its jar ships with pyspark), with Delta Lake's jars from Maven Central and the session settings of
`cpa_resources.spark.spark_config`.

Environment (all optional):

| variable | default |
|---|---|
| `CPA_SPARK_CONNECT_PORT` | `15002` (bound to 127.0.0.1) |
| `CPA_SPARK_CONNECT_DIR` | `<repo>/.spark-connect` (pid file, log, scratch space) |
| `CPA_SPARK_DRIVER_MEMORY`, `CPA_SPARK_SHUFFLE_PARTITIONS` | as for an in-process session |
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from cpa_resources.daemon import Daemon
from cpa_resources.local_cassandra import port_open
from cpa_resources.local_cluster import spark_class, spark_env

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
# A client session left by a run that died keeps what it cached until it expires; an operation
# whose client is gone (its run killed) is interrupted after this long without it.
SESSION_TIMEOUT = "5min"
DETACHED_TIMEOUT = "30s"
QUICK_START_JIT = "-XX:TieredStopAtLevel=1"


def port() -> int:
    return int(os.environ.get("CPA_SPARK_CONNECT_PORT", "15002"))


def address() -> str:
    """The server's address, as `CPA_SPARK_REMOTE` takes it."""
    return f"sc://{HOST}:{port()}"


def server_dir() -> Path:
    return Path(os.environ.get("CPA_SPARK_CONNECT_DIR") or REPO_ROOT / ".spark-connect").expanduser()


def server() -> Daemon:
    from cpa_resources.spark import local_settings

    settings = {
        **local_settings(),
        "spark.connect.grpc.binding.address": HOST,
        "spark.connect.grpc.binding.port": str(port()),
        "spark.connect.session.manager.defaultSessionTimeout": SESSION_TIMEOUT,
        "spark.connect.execute.manager.detachedTimeout": DETACHED_TIMEOUT,
        "spark.local.dir": str(server_dir() / "scratch"),
    }
    memory = settings.pop("spark.driver.memory")
    # A run's own local-mode JVM lives for one run and starts faster with the C1 compiler alone; this
    # server lives for many, and with C2 as well its steps take ≈ 15 % less (docs/figures.md).
    options = " ".join(o for o in settings.pop("spark.driver.extraJavaOptions").split() if o != QUICK_START_JIT)
    command = [str(spark_class()), "org.apache.spark.deploy.SparkSubmit", "--class", SERVER_CLASS,
               "--driver-memory", memory, "--driver-java-options", options]
    for key, value in sorted(settings.items()):
        command += ["--conf", f"{key}={value}"]
    command.append("spark-internal")  # SparkSubmit's name for a main class already on its classpath
    env = {key: value for key, value in spark_env(HOST).items() if key != "SPARK_DAEMON_MEMORY"}
    return Daemon("spark-connect", tuple(command), server_dir(), SERVER_CLASS, {**env, "SPARK_PRINT_LAUNCH_COMMAND": "1"})


def start(timeout: float = 180) -> None:
    daemon = server()
    freed_by = time.monotonic() + 10  # a server just stopped may hold its port a moment longer
    while daemon.pid() is None and port_open(HOST, port()):
        if time.monotonic() > freed_by:
            raise RuntimeError(f"{HOST}:{port()} is taken by a process this folder did not start; set CPA_SPARK_CONNECT_PORT")
        time.sleep(0.2)
    began = time.monotonic()
    running = daemon.pid() is not None
    pid = daemon.start()
    if not running:
        print(f"starting a Spark Connect server on {address()} (pid {pid}, log {daemon.log}) ...", flush=True)
    daemon.wait_until(lambda: port_open(HOST, port()), f"listening on {HOST}:{port()}", timeout)
    if not running:
        print(f"Spark Connect is up on {address()} after {time.monotonic() - began:.1f} s", flush=True)


def stop() -> None:
    pid = server().stop(timeout=60)
    print(f"Spark Connect server stopped (pid {pid})" if pid else "Spark Connect server was not running", flush=True)


def describe_status() -> str:
    daemon = server()
    pid = daemon.pid()
    if pid is None:
        return f"Spark Connect: not running (would listen on {address()})"
    state = "answering" if port_open(HOST, port()) else "starting"
    return f"Spark Connect: {state} on {address()} (pid {pid}, log {daemon.log})"

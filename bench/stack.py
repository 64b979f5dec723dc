"""`dg dev` as `make run` serves it (the project's dagster.yaml, sensor and schedules on), on a
scratch instance, lake and keyspace: for the freshness benchmark and the kill-and-restart test."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from unittest.mock import patch

import dagster as dg

from cpa_resources import local_postgres, local_spark
from cpa_resources.local_postgres import INSTANCE_ENV

REPO = Path(__file__).resolve().parents[1]



def scratch_landing(source: Path, scratch: Path, preloaded: list[Path]) -> tuple[Path, Path]:
    """A landing folder in `scratch` with the CSVs of `source` and the `preloaded` event files:
    (landing, its usage_events_stream folder)."""
    landing = scratch / "landing"
    stream = landing / "usage_events_stream"
    stream.mkdir(parents=True)
    for csv_file in source.glob("*.csv"):
        shutil.copy(csv_file, landing / csv_file.name)
    for path in preloaded:
        shutil.copy(path, stream / path.name)
    return landing, stream

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scratch_instance(home: Path) -> str:
    """A Dagster instance folder with the project's dagster.yaml, its runs and events in a
    PostgreSQL database of its own (created on the local server): the database's name."""
    database = "cpa_" + hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]
    home.mkdir(parents=True, exist_ok=True)
    settings = (REPO / ".dagster_home" / "dagster.yaml").read_text()
    (home / "dagster.yaml").write_text(settings.replace(local_postgres.url(), local_postgres.url(database)))
    local_postgres.start()
    local_postgres.create_database(database)
    return database


class LiveStack:
    """The Dagster webserver, daemon and code server of `make run`, as one process group: the
    project's dagster.yaml with a PostgreSQL database of its own, every run talking to the local
    Spark Connect server."""

    def __init__(self, home: Path, lake: Path, landing: Path, keyspace: str, log: Path | None = None,
                 env: dict[str, str] | None = None):
        self.home, self.port, self.process = home, free_port(), None
        self.log = log or home / "dg-dev.log"
        self.database = ""
        self.env = {
            **os.environ,
            **INSTANCE_ENV,
            "DAGSTER_HOME": str(home),
            "CPA_LAKE_DIR": str(lake),
            "CPA_LANDING_DIR": str(landing),
            "CPA_CASSANDRA_KEYSPACE": keyspace,
            "CPA_SPARK_REMOTE": local_spark.address(),
            **(env or {}),
        }

    def prepare(self) -> None:
        """The servers the stack uses, up: PostgreSQL with the instance's database, Spark Connect."""
        self.database = scratch_instance(self.home)
        if self.env.get("CPA_SPARK_REMOTE") == local_spark.address():
            local_spark.start()

    def start(self, timeout: float = 180) -> None:
        self.prepare()
        dg_cli = Path(sys.executable).parent / "dg"
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [str(dg_cli), "dev", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=REPO, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # one process group: webserver, daemon, code server, run workers, JVMs
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dg dev exited with {self.process.returncode}; see {self.log}")
            try:
                if self.graphql("{ version }")["data"]["version"]:
                    return
            except (OSError, KeyError, TypeError, ValueError):
                time.sleep(1)
        raise TimeoutError(f"dg dev did not answer on 127.0.0.1:{self.port} within {timeout:.0f} s; see {self.log}")

    def graphql(self, query: str) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/graphql", data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def kill(self) -> None:
        """SIGKILL to every process of the stack at once, as a crash or an OOM killer would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()

    def close(self) -> None:
        """Stop the stack and drop its instance's database."""
        self.stop()
        if self.database:
            local_postgres.drop_database(self.database)

    def instance(self) -> dg.DagsterInstance:
        """The stack's instance, read from this process."""
        return dg.DagsterInstance.from_config(str(self.home))

    def __enter__(self) -> LiveStack:
        self.start()
        return self

    def __exit__(self, *_) -> None:
        self.close()


def runs_for_file(instance: dg.DagsterInstance, name: str) -> list[dg.DagsterRun]:
    """Stream runs whose `cpa/files` tag names the file (the sensor tags each run with its files)."""
    runs = instance.get_runs(dg.RunsFilter(job_name="usage_stream"))
    return [r for r in runs if name in r.tags.get("cpa/files", "").split(",")]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


class PrivateCassandra:
    """A Cassandra server of its own (its folder, ports and a small heap) on 127.0.0.1, to stop and
    start under a running stack without touching the server other tests use."""

    def __init__(self, folder: Path, heap: str = "512M"):
        self.port = free_port()
        self.env = {
            "CPA_CASSANDRA_DIR": str(folder),
            "CPA_CASSANDRA_PORT": str(self.port),
            "CPA_CASSANDRA_STORAGE_PORT": str(free_port()),
            "CPA_CASSANDRA_JMX_PORT": "0",
            "CPA_CASSANDRA_HEAP": heap,
        }

    def _call(self, action: str) -> None:
        from cpa_resources import local_cassandra

        with patch.dict(os.environ, self.env):
            getattr(local_cassandra, action)()

    def start(self) -> None:
        self._call("start")

    def stop(self) -> None:
        self._call("stop")

    def resource(self, keyspace: str):
        from cpa_resources import CassandraResource

        return CassandraResource(hosts="127.0.0.1", port=self.port, keyspace=keyspace)

"""Cassandra: a local server, a cluster of your own, or AstraDB, chosen by configuration."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import dagster as dg
from cassandra import ConsistencyLevel
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable, Session
from cassandra.policies import ConstantReconnectionPolicy, DCAwareRoundRobinPolicy, TokenAwarePolicy

CQL_DIR = Path(__file__).resolve().parents[1] / "cql"
DDL_KEYSPACE = "cloud_provider"

_sessions: dict[tuple, Session] = {}
_lock = threading.Lock()

# The driver's default waits twice as long after every failed reconnection, up to 10 minutes: a
# server back after a 2-minute outage would stay "down" to a long-lived process for minutes more.
RECONNECT_SECONDS = 1.0


class CassandraUnavailable(RuntimeError):
    """No Cassandra host of the configuration answers."""


class CassandraResource(dg.ConfigurableResource):
    """Connection settings for the serving keyspace; sessions are pooled per process."""

    hosts: str = "127.0.0.1"
    port: int = 9042
    keyspace: str = DDL_KEYSPACE
    username: str = ""
    password: str = ""
    secure_connect_bundle: str = ""
    replication: str = ""
    protocol_version: int = 5
    # Of every read and write. LOCAL_QUORUM: a majority of the replicas in the local data centre (2 of 3
    # with replication factor 3, so one node may be down); on a single node with factor 1 it is ONE.
    consistency: str = "LOCAL_QUORUM"

    @classmethod
    def from_env(cls) -> CassandraResource:
        env = os.environ.get
        return cls(
            hosts=env("CPA_CASSANDRA_HOSTS", "127.0.0.1"),
            port=int(env("CPA_CASSANDRA_PORT", "9042")),
            keyspace=env("CPA_CASSANDRA_KEYSPACE", DDL_KEYSPACE),
            username=env("CPA_CASSANDRA_USERNAME", ""),
            # AstraDB takes the literal user "token" and the application token as password.
            password=env("CPA_CASSANDRA_PASSWORD", "") or env("CPA_ASTRA_TOKEN", ""),
            secure_connect_bundle=env("CPA_ASTRA_BUNDLE", ""),
            replication=env("CPA_CASSANDRA_REPLICATION", ""),
            protocol_version=int(env("CPA_CASSANDRA_PROTOCOL_VERSION", "5")),
            consistency=env("CPA_CASSANDRA_CONSISTENCY", "LOCAL_QUORUM"),
        )

    def with_keyspace(self, keyspace: str) -> "CassandraResource":
        return CassandraResource(**{**self._config_values(), "keyspace": keyspace})

    def _config_values(self) -> dict:
        return {name: getattr(self, name) for name in CassandraResource.model_fields}

    def table(self, name: str) -> str:
        """A table name qualified with the keyspace, as prepared statements should name it."""
        return f"{self.keyspace}.{name}"

    def _cluster(self) -> Cluster:
        auth = None
        if self.password:
            auth = PlainTextAuthProvider(self.username or "token", self.password)
        consistency = ConsistencyLevel.name_to_value[self.consistency.upper()]
        if self.secure_connect_bundle:
            return Cluster(cloud={"secure_connect_bundle": self.secure_connect_bundle}, auth_provider=auth,
                           execution_profiles={EXEC_PROFILE_DEFAULT: ExecutionProfile(consistency_level=consistency)})
        hosts = [h.strip() for h in self.hosts.split(",") if h.strip()]
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
            request_timeout=60,
            consistency_level=consistency,
        )
        return Cluster(
            hosts,
            port=self.port,
            auth_provider=auth,
            connect_timeout=15,
            reconnection_policy=ConstantReconnectionPolicy(RECONNECT_SECONDS, max_attempts=None),
            protocol_version=self.protocol_version,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        )

    def where(self) -> str:
        return "AstraDB (secure-connect bundle)" if self.secure_connect_bundle else f"{self.hosts} port {self.port}"

    def session(self) -> Session:
        """A pooled session; the keyspace is created first if it does not exist.

        A session whose cluster has no host up (the server was restarted or is down) is dropped and
        made anew, so no session outlives its cluster in a long-lived process; when no host answers,
        `CassandraUnavailable` says where it looked."""
        key = (self.hosts, self.port, self.keyspace, self.username, self.secure_connect_bundle)
        with _lock:
            cached = _sessions.get(key)
            if cached is not None and not any(host.is_up for host in cached.cluster.metadata.all_hosts()):
                cached.cluster.shutdown()
                del _sessions[key]
            if key not in _sessions:
                cluster = self._cluster()
                try:
                    session = cluster.connect()
                    for statement in self._statements("keyspace"):
                        session.execute(statement)
                except NoHostAvailable as exc:
                    cluster.shutdown()
                    raise CassandraUnavailable(
                        f"Cassandra is not reachable at {self.where()}: {exc}. Start the local server with "
                        "`cpa cassandra start`, or point CPA_CASSANDRA_HOSTS/CPA_CASSANDRA_PORT at your cluster."
                    ) from exc
                _sessions[key] = session
            return _sessions[key]

    def _statements(self, name: str) -> list[str]:
        """The statements of `cql/<name>.cql`, aimed at the configured keyspace and replication."""
        text = re.sub(r"--[^\n]*", "", (CQL_DIR / f"{name}.cql").read_text())
        text = re.sub(rf"\b{DDL_KEYSPACE}\b", self.keyspace, text)
        if self.replication:
            text = re.sub(r"replication = \{[^}]*\}", f"replication = {self.replication}", text)
        return [s.strip() for s in text.split(";") if s.strip()]

    def apply_cql(self, name: str) -> None:
        """Create the keyspace and the table of `cql/<name>.cql` if they do not exist yet."""
        for statement in self._statements("keyspace") + self._statements(name):
            self.session().execute(statement)


def shutdown_sessions() -> None:
    with _lock:
        for session in _sessions.values():
            session.cluster.shutdown()
        _sessions.clear()

"""A real single-node Apache Cassandra 5.0 server for laptops and CI.

Apache publishes the server jar (`cassandra-all`) and all its dependencies on Maven Central, but
not the binary tarball, so the server is assembled from Maven artifacts with `mvn` and launched
as a plain JVM: `org.apache.cassandra.service.CassandraDaemon` with the jars in `lib/` on the
classpath and a generated `cassandra.yaml` / `logback.xml`.

The jars are cached outside the repository (shared by every clone); data, logs and the pid
file live in a project-local folder. The server binds to 127.0.0.1 only.

A server is a `Node` (address, folder, JMX port, seeds): the local server is one, and
`local_cluster` starts several on loopback addresses from the same install, yaml and JVM command.

Environment (all optional):

| variable | default |
|---|---|
| `CPA_CASSANDRA_VERSION` | `5.0.6` |
| `CPA_CASSANDRA_CACHE` | `~/.cache/cpa/cassandra` (jars go to `<cache>/<version>/lib`) |
| `CPA_CASSANDRA_DIR` | `<repo>/.cassandra` (conf, data, commitlog, hints, logs, pid) |
| `CPA_CASSANDRA_PORT` | `9042` (CQL native transport) |
| `CPA_CASSANDRA_STORAGE_PORT` | `7000` (inter-node) |
| `CPA_CASSANDRA_JMX_PORT` | `7199` (local-only JMX; `0` disables it) |
| `CPA_CASSANDRA_HEAP` | `1G` (`-Xmx`) |
| `CPA_JAVA_HOME` | a JDK 17 under `/usr/lib/jvm`, else `JAVA_HOME` if it is a JDK 17 |
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any
from xml.sax.saxutils import escape

from cpa_resources import maven

HOST = "127.0.0.1"
MAIN_CLASS = "org.apache.cassandra.service.CassandraDaemon"
REPO_ROOT = Path(__file__).resolve().parents[1]
JAVA_RELEASES = ("17",)  # Cassandra 5.0 supports Java 11 and 17 only; 17 is the one we test.

# From Cassandra 5.0's conf/jvm17-server.options: the server reaches into JDK internals
# (Unsafe, direct buffers, jamm object sizing, chronicle queue) and fails without these.
JDK17_MODULE_OPTIONS = [
    "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports=java.sql/java.sql=ALL-UNNAMED",
    "--add-exports=java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports=jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
]

LOGBACK = Template("""<configuration scan="false">
  <appender name="SYSTEMLOG" class="ch.qos.logback.core.rolling.RollingFileAppender">
    <file>$logs/system.log</file>
    <rollingPolicy class="ch.qos.logback.core.rolling.SizeAndTimeBasedRollingPolicy">
      <fileNamePattern>$logs/system.log.%d{yyyy-MM-dd}.%i.gz</fileNamePattern>
      <maxFileSize>20MB</maxFileSize>
      <maxHistory>3</maxHistory>
      <totalSizeCap>100MB</totalSizeCap>
    </rollingPolicy>
    <encoder>
      <pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern>
    </encoder>
  </appender>
  <root level="INFO">
    <appender-ref ref="SYSTEMLOG"/>
  </root>
</configuration>
""")


# --- configuration ---------------------------------------------------------------------------


def version() -> str:
    return os.environ.get("CPA_CASSANDRA_VERSION", "5.0.6")


def install_dir() -> Path:
    cache = os.environ.get("CPA_CASSANDRA_CACHE") or Path.home() / ".cache" / "cpa" / "cassandra"
    return Path(cache).expanduser() / version()


def server_dir() -> Path:
    return Path(os.environ.get("CPA_CASSANDRA_DIR") or REPO_ROOT / ".cassandra").expanduser()


def native_port() -> int:
    return int(os.environ.get("CPA_CASSANDRA_PORT", "9042"))


def storage_port() -> int:
    return int(os.environ.get("CPA_CASSANDRA_STORAGE_PORT", "7000"))


def jmx_port() -> int:
    return int(os.environ.get("CPA_CASSANDRA_JMX_PORT", "7199"))


def heap_size() -> str:
    return os.environ.get("CPA_CASSANDRA_HEAP", "1G")


def java_home() -> Path:
    """The JDK that runs both Maven and the server."""
    explicit = os.environ.get("CPA_JAVA_HOME")
    if explicit:
        home = Path(explicit)
        if not (home / "bin" / "java").exists():
            raise RuntimeError(f"CPA_JAVA_HOME={explicit} has no bin/java")
        return home
    candidates = sorted(Path("/usr/lib/jvm").glob("*")) if Path("/usr/lib/jvm").is_dir() else []
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]))
    for home in candidates:
        if _java_release(home) in JAVA_RELEASES and (home / "bin" / "java").exists():
            return home.resolve()
    raise RuntimeError(
        "Apache Cassandra 5.0 needs a JDK 17 and none was found under /usr/lib/jvm or in "
        "JAVA_HOME; install one (apt-get install openjdk-17-jdk-headless) or set CPA_JAVA_HOME"
    )


def _java_release(home: Path) -> str | None:
    """Feature release ("17") read from the JDK's `release` file, without starting a JVM."""
    try:
        text = (home / "release").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("JAVA_VERSION="):
            return line.split("=", 1)[1].strip('"').split(".")[0]
    return None


# --- install ---------------------------------------------------------------------------------


def _server_jar(lib: Path) -> Path:
    return lib / f"cassandra-all-{version()}.jar"


def install() -> Path:
    """Fetch the server and its runtime dependencies from Maven Central, once."""
    target = install_dir()
    maven.fetch("org.apache.cassandra", "cassandra-all", version(), target, java_home())
    return target


# --- a node ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """One Cassandra server: the address it binds, its own folder, and whom it gossips with.

    Nodes of one cluster share the ports (each on its own loopback address) and differ in address,
    folder, JMX port (JMX always binds 127.0.0.1) and token."""

    host: str
    base: Path
    jmx_port: int
    seeds: tuple[str, ...]
    heap: str
    cluster_name: str = "cpa-local"
    native_port: int = 9042
    storage_port: int = 7000
    initial_token: int = -(2**63)

    @property
    def pid_file(self) -> Path:
        return self.base / "cassandra.pid"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.native_port}"


def local_node() -> Node:
    """The single local server, configured from the environment."""
    return Node(host=HOST, base=server_dir(), jmx_port=jmx_port(), seeds=(HOST,), heap=heap_size(),
                native_port=native_port(), storage_port=storage_port())


# --- server configuration --------------------------------------------------------------------


def _write_config(node: Node) -> Path:
    """(Re)write conf/ from the node, so a changed port or heap applies on next start."""
    conf = node.base / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (node.base / "logs").mkdir(exist_ok=True)
    (conf / "cassandra.yaml").write_text(_cassandra_yaml(node))
    (conf / "logback.xml").write_text(LOGBACK.substitute(logs=escape(str(node.base / "logs"))))
    return conf


def _cassandra_yaml(node: Node) -> str:
    def path(name: str) -> str:
        return json.dumps(str(node.base / name))  # a JSON string is a valid, safely quoted YAML scalar

    seeds = ",".join(f"{seed}:{node.storage_port}" for seed in node.seeds)
    return f"""\
# Generated by cpa_resources/local_cassandra.py on every start; edits are overwritten.
# Stock Cassandra 5.0 defaults, except: a loopback address, project-local directories, one token
# per node, no bootstrap streaming (every node of these clusters starts empty or with its own
# data), and no snapshot on DROP/TRUNCATE (tests and re-runs recreate tables constantly).
cluster_name: {node.cluster_name}
num_tokens: 1
initial_token: {node.initial_token}
auto_bootstrap: false
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "{seeds}"
listen_address: {node.host}
rpc_address: {node.host}
storage_port: {node.storage_port}
native_transport_port: {node.native_port}
start_native_transport: true
data_file_directories:
  - {path("data")}
commitlog_directory: {path("commitlog")}
hints_directory: {path("hints")}
saved_caches_directory: {path("saved_caches")}
cdc_raw_directory: {path("cdc_raw")}
commitlog_sync: periodic
commitlog_sync_period: 10000ms
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
auto_snapshot: false
"""


def _jvm_command(lib: Path, conf: Path, node: Node) -> list[str]:
    jmx = [f"-Dcassandra.jmx.local.port={node.jmx_port}"] if node.jmx_port else []
    jamm = sorted(lib.glob("jamm-*.jar"))
    # A lone seed has no peers to tell that it is going down; a cluster node tells them (2 s by default).
    lone = node.seeds == (node.host,)
    announce = ["-Dcassandra.shutdown_announce_in_ms=0"] if lone else []
    return [
        str(java_home() / "bin" / "java"),
        # No -Xms: Cassandra mlockall()s its memory at boot (effective when run as root), so a
        # fixed initial heap would stay resident; the JVM grows the heap up to -Xmx on demand.
        f"-Xmx{node.heap}",
        "-Xss256k",
        # G1 settings from jvm17-server.options; no AlwaysPreTouch, so an idle server stays small.
        "-XX:+UseG1GC", "-XX:+ParallelRefProcEnabled", "-XX:MaxTenuringThreshold=1",
        "-XX:G1RSetUpdatingPauseTimePercent=5", "-XX:MaxGCPauseMillis=300",
        "-XX:InitiatingHeapOccupancyPercent=70",
        "-XX:+UseThreadPriorities", "-XX:+PerfDisableSharedMem", "-XX:+ExitOnOutOfMemoryError",
        "-ea", "-da:net.openhft...",
        "-Djava.net.preferIPv4Stack=true",
        "-Djdk.attach.allowAttachSelf=true",
        "-Dio.netty.tryReflectionSetAccessible=true",
        "-Dio.netty.allocator.useCacheForAllThreads=true",
        "-Dio.netty.allocator.maxOrder=11",
        *JDK17_MODULE_OPTIONS,
        *[f"-javaagent:{jar}" for jar in jamm[:1]],  # measures object sizes for memtable accounting
        *jmx,
        f"-Dcassandra.config={(conf / 'cassandra.yaml').as_uri()}",
        f"-Dlogback.configurationFile={(conf / 'logback.xml').as_uri()}",
        f"-Dcassandra.logdir={node.base / 'logs'}",
        f"-Dcassandra.storagedir={node.base}",
        # Waiting for gossip to settle at boot only adds seconds: a lone seed has nobody to gossip
        # with, and a cluster's start waits for each node to join before starting the next.
        "-Dcassandra.skip_wait_for_gossip_to_settle=0",
        *announce,
        "-cp", os.pathsep.join([str(conf), str(lib / "*")]),
        MAIN_CLASS,
    ]


# --- process control -------------------------------------------------------------------------


def running_pid(node: Node) -> int | None:
    """Pid of the server started from the node's folder, if that process is still a live Cassandra."""
    try:
        pid = int(node.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_alive(pid) else None


def _is_alive(pid: int) -> bool:
    try:
        # When this very process launched the server, reap it so a dead child is not a zombie.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no procfs: trust kill(0)
    except OSError:
        return False
    # Guards against a recycled pid. The cmdline reads empty for a moment while the
    # process execs java, so empty counts as ours.
    return not cmdline or MAIN_CLASS.encode() in cmdline


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def cql_rows(host: str, port: int, query: str, timeout: float = 5.0) -> list | None:
    """The rows of a query sent to exactly one server, or None when it does not answer."""
    if not port_open(host, port):
        return None  # skips the driver's connection-error logging while the server boots
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy

    profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([host]),
                               request_timeout=timeout)
    cluster = Cluster([host], port=port, protocol_version=5, connect_timeout=timeout,
                      control_connection_timeout=timeout,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    try:
        return list(cluster.connect().execute(query))
    except Exception:
        return None
    finally:
        cluster.shutdown()


def cql_release_version(host: str = HOST, port: int | None = None,
                        timeout: float = 5.0) -> str | None:
    """`release_version` of the server answering CQL at host:port, or None."""
    rows = cql_rows(host, port or native_port(), "SELECT release_version FROM system.local", timeout)
    return rows[0].release_version if rows else None


def _log_tail(node: Node, lines: int = 30) -> str:
    logs = node.base / "logs"
    parts = []
    for name in ("system.log", "stdout.log"):
        log = logs / name
        if log.exists():
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log} (last {len(tail)} lines) ---\n" + "\n".join(tail))
    return "\n".join(parts) or f"(no logs in {logs})"


def launch(node: Node) -> int:
    """Start the node's JVM in the background (installing the server first if needed); its pid."""
    lib = install() / "lib"
    node.base.mkdir(parents=True, exist_ok=True)
    conf = _write_config(node)
    for name in ("data", "commitlog", "hints", "saved_caches", "cdc_raw"):
        (node.base / name).mkdir(exist_ok=True)
    with open(node.base / "logs" / "stdout.log", "wb") as out:  # this run only; system.log rolls
        process = subprocess.Popen(
            _jvm_command(lib, conf, node),
            cwd=node.base,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the CLI, Ctrl-C and pytest that started it
            env={**os.environ, "MALLOC_ARENA_MAX": "4"},  # as cassandra-env.sh: caps glibc arenas
        )
    node.pid_file.write_text(f"{process.pid}\n")
    return process.pid


def start(timeout: float = 240) -> None:
    """Start the local server (installing it first if needed) and wait until CQL answers."""
    node = local_node()
    if cql_release_version(node.host, node.native_port):
        print(f"Cassandra already running on {node.address}", flush=True)
        return
    pid = running_pid(node)
    if pid is None:
        if port_open(node.host, node.native_port):
            raise RuntimeError(f"port {node.address} is taken by something that does not answer CQL")
        pid = launch(node)
        print(f"starting Apache Cassandra {version()} on {node.address} "
              f"(pid {pid}, data in {node.base}) ...", flush=True)
    else:
        print(f"Cassandra (pid {pid}) is already starting; waiting for it ...", flush=True)
    wait_until_up(node, pid, timeout)


def wait_until_up(node: Node, pid: int, timeout: float) -> None:
    started = time.monotonic()
    next_report = started + 15
    while time.monotonic() - started < timeout:
        if not _is_alive(pid):
            node.pid_file.unlink(missing_ok=True)
            raise RuntimeError(f"Cassandra (pid {pid}) exited during startup\n{_log_tail(node)}")
        release = cql_release_version(node.host, node.native_port)
        if release:
            print(f"Cassandra {release} is up on {node.address} after "
                  f"{time.monotonic() - started:.1f} s", flush=True)
            return
        if time.monotonic() >= next_report:
            print(f"  still starting ({time.monotonic() - started:.0f} s) ...", flush=True)
            next_report += 15
        time.sleep(1)
    raise TimeoutError(f"Cassandra (pid {pid}) did not answer CQL on {node.address} within "
                       f"{timeout:.0f} s; it is still running (pid file {node.pid_file})\n"
                       f"{_log_tail(node)}")


def stop(timeout: float = 60) -> None:
    """Stop the local server."""
    stop_node(local_node(), timeout)


def stop_node(node: Node, timeout: float = 60) -> None:
    """Stop the server started from the node's folder: SIGTERM (it flushes), SIGKILL if it hangs."""
    pid = running_pid(node)
    if pid is None:
        node.pid_file.unlink(missing_ok=True)
        print(f"Cassandra on {node.address} is not running", flush=True)
        return
    print(f"stopping Cassandra on {node.address} (pid {pid}) ...", flush=True)
    os.kill(pid, signal.SIGTERM)
    if not wait_for_exit(pid, timeout):
        print(f"Cassandra did not stop within {timeout:.0f} s; killing it", flush=True)
        os.kill(pid, signal.SIGKILL)
        wait_for_exit(pid, 10)
    node.pid_file.unlink(missing_ok=True)
    print(f"Cassandra on {node.address} stopped", flush=True)


def wait_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _is_alive(pid):
            return True
        time.sleep(0.2)
    return False


# --- status ----------------------------------------------------------------------------------


def status() -> dict[str, Any]:
    release = cql_release_version(HOST, native_port())
    return {
        "running": release is not None,
        "pid": running_pid(local_node()),
        "version": release,
        "host": HOST,
        "port": native_port(),
        "data_dir": str(server_dir()),
        "install_dir": str(install_dir()),
        "installed": _server_jar(install_dir() / "lib").exists(),
    }


def describe_status(info: dict[str, Any] | None = None) -> str:
    info = info or status()
    if info["running"]:
        owner = f"pid {info['pid']}" if info["pid"] else "not started by cpa"
        state = f"running Cassandra {info['version']} on {info['host']}:{info['port']} ({owner})"
    elif info["pid"]:
        state = (f"starting (pid {info['pid']}), "
                 f"CQL not answering yet on {info['host']}:{info['port']}")
    else:
        state = f"not running (CQL port {info['host']}:{info['port']})"
    installed = "" if info["installed"] else " (not installed yet)"
    return (f"Cassandra: {state}\n"
            f"  data:    {info['data_dir']}\n"
            f"  install: {info['install_dir']}{installed}")

"""A PostgreSQL server for the Dagster instance (`dagster-postgres` storage), on 127.0.0.1.

Dagster's SQLite storage opens a connection for every event and stores each on its own; a stream
run over 60 event dates records hundreds of them (one materialisation per asset and date). The
PostgreSQL storage stores a step's per-date materialisations as one batch
(`DAGSTER_EVENT_BATCH_SIZE`) and serves the webserver, the daemon and every run process at once.

The server is Debian's PostgreSQL (`postgresql` package: `initdb` and `postgres` under
`/usr/lib/postgresql/<version>/bin`), run from a project-local folder: data, socket, log and pid
file in `.postgres/`, trust authentication for the `cpa` role on 127.0.0.1 only. PostgreSQL refuses
to run as root: as root, the folder is handed to the `postgres` user the package creates and the
server runs as that user (`setpriv`).

Environment (all optional):

| variable | default |
|---|---|
| `CPA_POSTGRES_PORT` | `5433` (the machine's own PostgreSQL keeps 5432) |
| `CPA_POSTGRES_DIR` | `<repo>/.postgres` |
| `CPA_POSTGRES_BIN` | the newest `/usr/lib/postgresql/*/bin` |
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from cpa_resources.daemon import Daemon
from cpa_resources.local_cassandra import port_open

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
ROLE = "cpa"
DATABASE = "dagster"
SERVICE_USER = "postgres"  # created by Debian's package; the server's owner when we are root

# Dagster settings read from the environment of every process of the instance (webserver, daemon,
# code server, runs; `make run` and `cpa` set them): a step's per-date materialisations stored as
# one batch, and one "planned" event per asset for a range of dates instead of one per date. (With
# the latter, a failed run's dates keep their last materialisation instead of showing as failed;
# the run itself shows as failed and the usage sensor repairs it.)
INSTANCE_ENV = {"DAGSTER_EVENT_BATCH_SIZE": "1000", "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1"}


def port() -> int:
    return int(os.environ.get("CPA_POSTGRES_PORT", "5433"))


def server_dir() -> Path:
    return Path(os.environ.get("CPA_POSTGRES_DIR") or REPO_ROOT / ".postgres").expanduser().resolve()


def url(database: str = DATABASE) -> str:
    """The connection URL of a database of the local server, as dagster-postgres takes it (the
    driver named: SQLAlchemy 2.1 would otherwise pick psycopg 3, which dagster-postgres does not bring)."""
    return f"postgresql+psycopg2://{ROLE}@{HOST}:{port()}/{database}"


def bin_dir() -> Path | None:
    explicit = os.environ.get("CPA_POSTGRES_BIN")
    if explicit:
        return Path(explicit)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def install() -> Path:
    """The server's binaries; installed from Debian's packages when they are missing and we may."""
    found = bin_dir()
    if found is not None and (found / "postgres").exists():
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing PostgreSQL from Debian's packages (apt-get install postgresql) ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdin=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], check=True, env=env, stdin=subprocess.DEVNULL)
        found = bin_dir()
    if found is None or not (found / "postgres").exists():
        raise RuntimeError("PostgreSQL's server is not installed: `apt-get install postgresql` (or set CPA_POSTGRES_BIN)")
    return found


def _as_owner() -> list[str]:
    """The command prefix that runs a program as the server's owner: nothing unless we are root."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", f"--reuid={SERVICE_USER}", f"--regid={SERVICE_USER}", "--init-groups", "--"]


def server(binaries: Path | None = None) -> Daemon:
    folder = server_dir()
    command = (*_as_owner(), str((binaries or bin_dir() or Path("/usr/bin")) / "postgres"), "-D", str(folder / "data"),
               "-p", str(port()), "-k", str(folder), "-c", f"listen_addresses={HOST}",
               # A crash loses at most the last few commits, never the database's consistency.
               "-c", "synchronous_commit=off", "-c", "max_connections=200")
    return Daemon("postgres", command, folder, "postgres")


def _initialise(binaries: Path) -> None:
    folder = server_dir()
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "data" / "PG_VERSION").exists():
        return
    if os.geteuid() == 0:
        owner = pwd.getpwnam(SERVICE_USER)
        for path in (folder, *folder.rglob("*")):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    shutil.rmtree(folder / "data", ignore_errors=True)  # a half-made one from an interrupted initdb
    result = subprocess.run(
        [*_as_owner(), str(binaries / "initdb"), "-D", str(folder / "data"), "-U", ROLE, "-A", "trust",
         "-E", "UTF8", "--locale=C"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed:\n{(result.stdout + result.stderr)[-3000:]}")


def ready() -> bool:
    if not port_open(HOST, port()):
        return False
    import psycopg2

    try:
        psycopg2.connect(host=HOST, port=port(), user=ROLE, dbname="postgres", connect_timeout=2).close()
        return True
    except psycopg2.OperationalError:
        return False


def create_database(name: str) -> None:
    """Create a database of the local server unless it exists."""
    import psycopg2

    connection = psycopg2.connect(host=HOST, port=port(), user=ROLE, dbname="postgres")
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()


def drop_database(name: str) -> None:
    import psycopg2

    connection = psycopg2.connect(host=HOST, port=port(), user=ROLE, dbname="postgres")
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        connection.close()


def start(timeout: float = 120) -> None:
    """Start the server (once) and make sure the instance's database exists."""
    binaries = install()
    daemon = server(binaries)
    if daemon.pid() is None:
        if port_open(HOST, port()):
            raise RuntimeError(f"{HOST}:{port()} is taken by a process this folder did not start; set CPA_POSTGRES_PORT")
        _initialise(binaries)
        began = time.monotonic()
        pid = daemon.start()
        print(f"starting PostgreSQL on {HOST}:{port()} (pid {pid}, data in {server_dir()}) ...", flush=True)
        daemon.wait_until(ready, f"accepting connections on {HOST}:{port()}", timeout)
        print(f"PostgreSQL is up on {HOST}:{port()} after {time.monotonic() - began:.1f} s", flush=True)
    else:
        daemon.wait_until(ready, f"accepting connections on {HOST}:{port()}", timeout)
    create_database(DATABASE)


def stop() -> None:
    pid = server().stop(signal.SIGINT, timeout=60)  # SIGINT: PostgreSQL's fast shutdown
    print(f"PostgreSQL stopped (pid {pid})" if pid else "PostgreSQL was not running", flush=True)


def describe_status() -> str:
    daemon = server()
    pid = daemon.pid()
    if pid is None:
        return f"PostgreSQL: not running (would listen on {HOST}:{port()}, data in {server_dir()})"
    state = "accepting connections" if ready() else "starting"
    return f"PostgreSQL: {state} on {HOST}:{port()} (pid {pid}, data in {server_dir()}, log {daemon.log})"

"""A server the project starts in the background: its command, pid file and log in a folder of its
own, started once (a second start finds it running), stopped by signal, and told apart from a
process that merely reuses its pid by a word of its command line.

The Spark standalone master and workers (`local_cluster`), the Spark Connect server
(`local_spark`) and PostgreSQL (`local_postgres`) are such daemons; Cassandra has its own (a
`local_cassandra.Node`)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Daemon:
    """A background process: `command` run in `folder`, its pid in `<name>.pid`, its output in
    `<name>.log`; `marker` is a word of its command line (the main class, the program)."""

    name: str
    command: tuple[str, ...]
    folder: Path
    marker: str
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def pid_file(self) -> Path:
        return self.folder / f"{self.name}.pid"

    @property
    def log(self) -> Path:
        return self.folder / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid of the running daemon, or None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if alive_with(pid, self.marker) else None

    def start(self) -> int:
        """Start it unless it runs; its pid."""
        pid = self.pid()
        if pid is not None:
            return pid
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            process = subprocess.Popen(
                list(self.command), cwd=self.folder, env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.pid_file.write_text(f"{process.pid}\n")
        return process.pid

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float = 120) -> None:
        """Wait for `ready()`, failing early (with the log's tail) when the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            pid = self.pid()
            if pid is None:
                raise RuntimeError(f"{self.name} exited during startup; see {self.log}\n{tail(self.log)}")
            time.sleep(0.3)
        raise TimeoutError(f"{self.name} was not {what} within {timeout:.0f} s; see {self.log}\n{tail(self.log)}")

    def logged(self, text: str) -> bool:
        return self.log.exists() and text in self.log.read_text(errors="replace")

    def stop(self, how: signal.Signals = signal.SIGTERM, timeout: float = 30) -> int | None:
        """Stop it (SIGKILL when `how` has not ended it within `timeout`); the pid it had."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, how)
            if not wait_gone(pid, self.marker, timeout):
                os.kill(pid, signal.SIGKILL)
                wait_gone(pid, self.marker, 10)
        self.pid_file.unlink(missing_ok=True)
        return pid


def alive_with(pid: int, marker: str) -> bool:
    """The process lives (a zombie child is reaped and counts as gone) and its command line names
    `marker`; an empty command line (a process between fork and exec) counts as ours."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X") and (not cmdline or marker.encode() in cmdline)


def wait_gone(pid: int, marker: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive_with(pid, marker):
            return True
        time.sleep(0.2)
    return False


def tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

"""A run launcher that keeps one warm worker for the usage stream.

Dagster's default launcher starts a new Python process for every run: imports and code loading
(≈ 2 s for this code location alone), then ≈ 7–10 s for the Spark JVM to start and run its first
job, before a stream run reads its first file. The usage stream runs every time a file lands, so
it would pay that for every file.

`WarmStreamRunLauncher` runs the runs that carry a chosen tag (`cpa/lake: usage`, every run the
sensor requests) one after another in a worker thread of the process that launches them (the
Dagster daemon under `dg dev`), where the SparkSession and the loaded code stay up between runs.
Every other run goes to a new process, exactly as with `DefaultRunLauncher`.

What the warm worker does not do, and why it is acceptable for the stream:
- It keeps the code it first loaded: after editing the project, restart `make run`.
- A run cannot be terminated from the UI while it runs; it ends on its own within a minute.
- A process killed mid-run leaves the run marked started; the usage sensor finds such runs by the
  pid recorded in their "Started process for run" event, marks them failed and runs them again."""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Mapping
from typing import Any

from dagster import Field
from dagster._core.events import EngineEventData
from dagster._core.launcher import DefaultRunLauncher, LaunchRunContext
from dagster._grpc.impl import core_execute_run
from dagster._serdes.config_class import ConfigurableClassData
from dagster._utils.error import serializable_error_info_from_exc_info
from dagster._utils.hosted_user_process import recon_job_from_origin

DEFAULT_WARM_TAG = "cpa/lake=usage"


class WarmStreamRunLauncher(DefaultRunLauncher):
    """Runs tagged `warm_tag` (key=value) execute in this process's warm worker; others as usual."""

    # Read by the warm-up sensor (cpa_assets/warm_up.py): a run of it stays warm here.
    keeps_a_warm_worker = True

    def __init__(self, inst_data: ConfigurableClassData | None = None, warm_tag: str = DEFAULT_WARM_TAG):
        super().__init__(inst_data=inst_data)
        self._warm_key, _, self._warm_value = warm_tag.partition("=")
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()

    @classmethod
    def config_type(cls):
        return {"warm_tag": Field(str, is_required=False, default_value=DEFAULT_WARM_TAG)}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]):
        return cls(inst_data=inst_data, **config_value)

    def is_warm(self, tags: Mapping[str, str]) -> bool:
        return tags.get(self._warm_key) == self._warm_value

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        if not self.is_warm(run.tags) or run.job_code_origin is None:
            super().launch_run(context)
            return
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="cpa-warm-runs", daemon=True)
                self._worker.start()
        self._queue.put((run.run_id, run.job_code_origin))

    def _work(self) -> None:
        while True:
            run_id, origin = self._queue.get()
            try:
                self._execute(run_id, origin)
            except Exception:  # the run is marked failed below; the worker stays up for the next one
                run = self._instance.get_run_by_id(run_id)
                if run is not None and not run.is_finished:
                    self._instance.report_run_failed(run, "the warm worker could not execute it")
                if run is not None:
                    error = serializable_error_info_from_exc_info(sys.exc_info())
                    self._instance.report_engine_event("Warm worker error.", run, EngineEventData.engine_error(error))

    def _execute(self, run_id: str, origin) -> None:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return
        pid = os.getpid()
        # The same words and metadata as Dagster's own run worker, so the usage sensor can tell a
        # run whose process died from one still going.
        self._instance.report_engine_event(f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid))
        for _ in core_execute_run(recon_job_from_origin(origin), run, self._instance, inject_env_vars=True):
            pass
        self._instance.report_engine_event(f"Warm worker finished the run (pid: {pid}).", run)

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is not None and self.is_warm(run.tags):
            self._instance.report_engine_event(
                "A run in the warm stream worker cannot be interrupted; it ends on its own.", run
            )
            return False
        return super().terminate(run_id)

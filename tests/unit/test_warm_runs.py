"""The warm stream run launcher as `make run` configures it."""

from pathlib import Path

import dagster as dg
import yaml

from cpa_resources.warm_runs import WarmStreamRunLauncher

PROJECT_INSTANCE = Path(__file__).resolve().parents[2] / ".dagster_home" / "dagster.yaml"


def test_the_project_instance_runs_stream_runs_warm_and_the_rest_in_processes(tmp_path):
    settings = yaml.safe_load(PROJECT_INSTANCE.read_text())
    instance = dg.DagsterInstance.local_temp(str(tmp_path), overrides={"run_launcher": settings["run_launcher"]})
    launcher = instance.run_launcher
    assert isinstance(launcher, WarmStreamRunLauncher)
    assert launcher.is_warm({"cpa/lake": "usage", "dagster/backfill": "x"})
    assert not launcher.is_warm({"cpa/lake": "batch"})
    assert not launcher.is_warm({})

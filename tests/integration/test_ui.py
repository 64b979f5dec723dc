"""`dg dev` (what `make run` serves) lists every asset with its partitions on 127.0.0.1."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cpa_assets.definitions import defs

pytestmark = pytest.mark.integration

QUERY = "{ assetNodes { assetKey { path } groupName isPartitioned } }"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_dg_dev_serves_the_asset_graph_with_partitions(tmp_path):
    port = _free_port()
    dg = Path(sys.executable).parent / "dg"
    server = subprocess.Popen(
        [str(dg), "dev", "--host", "127.0.0.1", "--port", str(port)],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline, nodes = time.monotonic() + 180, None
        while time.monotonic() < deadline and nodes is None:
            try:
                nodes = _graphql(port, QUERY)["data"]["assetNodes"]
            except (OSError, KeyError, TypeError, ValueError):
                time.sleep(2)
        assert nodes, "the UI did not answer within 180 s"
    finally:
        # As LiveStack stops it: a shutdown slower than a minute (a loaded machine) is killed.
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=60)

    served = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    expected = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert set(served) == expected
    assert served["bronze/usage_events"]["isPartitioned"] and served["cassandra/org_top_services_14d"]["isPartitioned"]
    assert not served["bronze/customers_orgs"]["isPartitioned"]
    assert {n["groupName"] for n in nodes} == {"bronze", "silver", "gold", "serving"}

"""The project-managed Cassandra server: generated config, and a real start/status/round trip."""

import dataclasses
import uuid

import pytest
import yaml

from cpa_resources import local_cassandra


def test_config_binds_loopback_and_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CPA_CASSANDRA_PORT", "19042")
    monkeypatch.setenv("CPA_CASSANDRA_STORAGE_PORT", "17000")

    config = yaml.safe_load(local_cassandra._cassandra_yaml(dataclasses.replace(local_cassandra.local_node(), base=tmp_path)))

    assert config["listen_address"] == config["rpc_address"] == "127.0.0.1"
    assert config["native_transport_port"] == 19042
    assert config["storage_port"] == 17000
    assert config["seed_provider"][0]["parameters"][0]["seeds"] == "127.0.0.1:17000"
    assert config["data_file_directories"] == [str(tmp_path / "data")]
    assert config["commitlog_directory"] == str(tmp_path / "commitlog")


@pytest.fixture(scope="module")
def local_server():
    """Starts the server if needed, and stops it afterwards only if this test started it."""
    already_running = local_cassandra.status()["running"]
    local_cassandra.start()
    yield
    if not already_running:
        local_cassandra.stop()


@pytest.mark.integration
def test_status_reflects_running_server(local_server):
    info = local_cassandra.status()

    assert info["running"] is True
    assert info["version"] == local_cassandra.version()
    assert (info["host"], info["port"]) == ("127.0.0.1", local_cassandra.native_port())
    assert f"running Cassandra {info['version']}" in local_cassandra.describe_status(info)


@pytest.mark.integration
def test_write_then_read_through_cassandra_driver(local_server):
    from cassandra.cluster import Cluster

    keyspace = "cpa_local_cassandra_test"
    key, value = uuid.uuid4(), f"value-{uuid.uuid4()}"
    cluster = Cluster([local_cassandra.HOST], port=local_cassandra.native_port(),
                      protocol_version=5)
    session = cluster.connect()
    try:
        session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {keyspace} "
            "WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        session.execute(f"CREATE TABLE IF NOT EXISTS {keyspace}.kv (k uuid PRIMARY KEY, v text)")
        session.execute(f"INSERT INTO {keyspace}.kv (k, v) VALUES (%s, %s)", (key, value))

        row = session.execute(f"SELECT v FROM {keyspace}.kv WHERE k = %s", (key,)).one()

        assert row is not None and row.v == value
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
        cluster.shutdown()

"""The loopback cluster's layout: one Cassandra node per address, each with its own folder, JMX port
and token, all seeded by the first; the settings that point the pipeline at it."""

from pathlib import Path

import yaml

from cpa_resources import local_cassandra
from cpa_resources.local_cluster import MASTER_CLASS, LoopbackCluster, spark_daemons


def test_nodes_share_ports_and_differ_in_address_folder_jmx_and_token(tmp_path, monkeypatch):
    monkeypatch.setenv("CPA_CLUSTER_HOSTS", "127.0.0.2, 127.0.0.3,127.0.0.4")
    monkeypatch.setenv("CPA_CLUSTER_DIR", str(tmp_path))
    monkeypatch.setenv("CPA_CLUSTER_JMX_PORT", "7300")
    cluster = LoopbackCluster.from_env()

    configs = [yaml.safe_load(local_cassandra._cassandra_yaml(node)) for node in cluster.nodes]

    assert [c["listen_address"] for c in configs] == [c["rpc_address"] for c in configs] == list(cluster.hosts)
    assert {c["native_transport_port"] for c in configs} == {9042}
    assert {c["storage_port"] for c in configs} == {7000}
    assert {c["seed_provider"][0]["parameters"][0]["seeds"] for c in configs} == {"127.0.0.2:7000"}
    assert {c["cluster_name"] for c in configs} == {"cpa-cluster"}
    assert len({c["initial_token"] for c in configs}) == 3
    assert [node.jmx_port for node in cluster.nodes] == [7301, 7302, 7303]
    assert [c["data_file_directories"][0] for c in configs] == [str(tmp_path / "cassandra" / h / "data") for h in cluster.hosts]


def test_settings_point_the_pipeline_at_the_cluster():
    cluster = LoopbackCluster(spark_port=7177)

    assert cluster.settings() == {
        "CPA_SPARK_MASTER": "spark://127.0.0.1:7177",
        "CPA_CASSANDRA_HOSTS": "127.0.0.1,127.0.0.2,127.0.0.3",
        "CPA_CASSANDRA_REPLICATION": "{'class': 'SimpleStrategy', 'replication_factor': 3}",
    }
    master, *workers = spark_daemons(cluster)
    assert master.command[1:6] == (MASTER_CLASS, "--host", "127.0.0.1", "--port", "7177")
    assert len(workers) == 2 and all(w.command[-1] == "spark://127.0.0.1:7177" for w in workers)
    assert all(Path(w.command[w.command.index("--work-dir") + 1]).parent == cluster.base / "spark" for w in workers)

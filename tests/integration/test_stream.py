"""Files delivered one at a time through the sensor end in the same Cassandra tables as a backfill."""

import datetime as dt
import copy
import json
import shutil

import dagster as dg
import pandas as pd
import pytest

from cpa_assets.definitions import build_definitions
from cpa_assets.gold.anomalies import COST_ANOMALIES_SCHEMA
from cpa_assets.jobs import ALL_SOURCES, snapshots
from cpa_assets.bronze.usage import KEEPING_BOOKS_TAG
from cpa_assets.gold import anomalies, genai, usage as gold_usage
from cpa_assets.gold.tail import DEFERRED_TAG, FOLLOWS_TAG, P1_SERVED_TAG
from cpa_assets.sensors import TAIL_ASSETS, TAIL_OPS, usage_events_sensor
from cpa_assets.serving import tables as serving_tables
from cpa_assets.silver import usage as silver_usage
from cpa_cli.generate import generate
from cpa_cli.replay import deliver
from cpa_resources import LakeResource
from cpa_resources.lake import MAX_FILES_PER_PARTITION
from tests.cassandra_tables import read_table
from tests.conftest import fresh_keyspace, run_pipeline
from tests.snapshots import snapshot
from tests.streaming import USAGE_DATASETS

pytestmark = pytest.mark.integration

TABLES = ("org_daily_usage_by_service", "org_top_services_14d", "genai_tokens_by_org_date", "cost_anomalies_by_date")


def _tables(cassandra) -> dict[str, pd.DataFrame]:
    frames = {}
    for table in TABLES:
        frame = read_table(cassandra, table)
        frames[table] = frame.sort_values(list(frame.columns[:3])).reset_index(drop=True)
    return frames


def _late_events(stream, org: str, service: str, day: dt.date) -> str:
    """Five extra requests of 50 USD for an org × service on one old day, on one of its own resources."""
    for path in sorted(stream.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("org_id") == org and event.get("service") == service and event.get("resource_id"):
                break
        else:
            continue
        break
    lines = []
    for n in range(5):
        late = {**event, "event_id": f"evt_late{n:08d}", "timestamp": f"{day.isoformat()}T10:0{n}:00Z",
                "metric": "requests", "value": 1.0, "unit": "count", "cost_usd_increment": 50.0}
        lines.append(json.dumps(late))
    return "\n".join(lines) + "\n"


def _dies(*_args, **_kwargs):
    raise RuntimeError("the process died here")


def test_sensor_delivery_one_file_at_a_time_equals_a_backfill(tmp_path, cassandra, spark, monkeypatch):
    produced = tmp_path / "produced"
    generate(produced, scale=1, seed=3, start=dt.date(2025, 7, 3), days=20)
    files = sorted((produced / "usage_events_stream").glob("*.jsonl"))[:4]
    landing = tmp_path / "landing"
    stream = landing / "usage_events_stream"
    stream.mkdir(parents=True)
    for csv_file in produced.glob("*.csv"):
        shutil.copy(csv_file, landing / csv_file.name)

    lake = LakeResource(root=str(tmp_path / "lake"), landing=str(landing))
    defs = build_definitions(lake=lake, cassandra=cassandra)
    instance = dg.DagsterInstance.ephemeral()
    snapshot_keys = list(snapshots(*ALL_SOURCES).resolve(defs.resolve_asset_graph()))
    assert defs.resolve_job_def("usage_pipeline").execute_in_process(instance=instance, asset_selection=snapshot_keys).success

    state = {"cursor": None}

    def deliver_and_tick(source, name, succeeds=True, meanwhile=None, follows=()):
        if source is not None:
            target = deliver(source, tmp_path / "outbox")
            target.rename(stream / name)
        with dg.build_sensor_context(instance=instance, resources={"lake": lake}, cursor=state["cursor"]) as context:
            tick = usage_events_sensor(context)
        state["cursor"] = tick.cursor
        assert len(tick.run_requests) == 1
        request = tick.run_requests[0]
        if meanwhile is not None:  # a file that lands while the run works
            deliver(meanwhile[0], tmp_path / "outbox").rename(stream / meanwhile[1])
        run_config = copy.deepcopy(request.run_config)
        for op in TAIL_OPS if follows else ():
            run_config["ops"][op]["config"]["follows"] = list(follows)
        result = defs.resolve_job_def("usage_stream").execute_in_process(
            instance=instance, tags=request.tags, asset_selection=request.asset_selection, run_config=run_config,
            raise_on_error=False,
        )
        assert result.success == succeeds
        if not succeeds:
            return request
        state["steps"] = [event.step_key for event in result.all_events if event.is_step_start]
        state["tags"] = instance.get_run_by_id(result.run_id).tags
        state["run_id"] = result.run_id
        state["materialized"] = {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}
        state["served_ahead"] = [event.step_key for event in result.all_events if event.is_asset_observation
                                 and event.asset_key == gold_usage.P1_TABLE]
        bronze = result.asset_materializations_for_node("bronze__usage_events")
        state["written_as"] = {m.metadata["written_as"].value for m in bronze}
        state["followed"] = {m.metadata["written_as"].value for node in ("gold__org_daily_usage_by_service",
                             "gold__cost_anomalies", "cassandra__org_daily_usage_by_service")
                             for m in result.asset_materializations_for_node(node)}
        ledger = result.asset_materializations_for_node("bronze_usage_events_ledger")
        state["ledger"] = {m.metadata["written_as"].value for m in ledger if "written_as" in m.metadata}
        return request

    for number, source in enumerate(files):
        if number == 1:
            # The next file lands while this one's run works: the marts after P1 are left to its run.
            deliver_and_tick(source, f"{number:02d}_{source.name}", meanwhile=(files[2], f"02_{files[2].name}"))
            assert state["tags"][DEFERRED_TAG] == state["run_id"]
            assert state["tags"][KEEPING_BOOKS_TAG] == "1"  # the sensor could plan the next run from the ledger on
            assert {"gold/org_daily_usage_by_service", "cassandra/org_daily_usage_by_service"} <= state["materialized"]
            assert not state["materialized"] & {key.to_user_string() for key in TAIL_ASSETS}
            left = state["tags"][DEFERRED_TAG]
        elif number == 2:
            request = deliver_and_tick(None, None)  # the file is there already
            assert request.tags[FOLLOWS_TAG] == left and DEFERRED_TAG not in state["tags"]
            assert {key.to_user_string() for key in TAIL_ASSETS} <= state["materialized"]
            assert state["tags"][P1_SERVED_TAG] == "1"  # the sensor could plan the next run from P1 on
            # An appended file's P1 cells were served by the daily mart's step, ahead of its MERGE.
            assert state["served_ahead"] == ["gold__org_daily_usage_by_service"]
        elif number == 3:
            # The run before wrote its marts; a run that follows it anyway (planned while it was in
            # its tail, and its completion not seen) recomputes the cells both reach, adding nothing twice.
            with monkeypatch.context() as patched:
                for module in (gold_usage, genai, anomalies, serving_tables):
                    patched.setattr(module, "still_to_follow", lambda _instance, config: config)
                deliver_and_tick(source, f"{number:02d}_{source.name}", follows=[state["run_id"]])
        else:
            deliver_and_tick(source, f"{number:02d}_{source.name}")
    # Each file after the first sorts after every earlier one: its events were appended, and gold
    # and the serving tables updated only what they reached.
    assert state["written_as"] == {"1 files appended"}
    assert state["followed"] == {"rows the run's changes reach", "the rows this run's gold commits changed"}
    # P1 is served before the other marts are computed.
    steps = state["steps"]
    later_marts = ["gold__org_top_services_14d", "gold__genai_tokens_by_org_date", "gold__cost_anomalies"]
    assert steps.index("cassandra__org_daily_usage_by_service") < min(steps.index(step) for step in later_marts)
    # The landing ledger, which no table reads, goes last.
    assert steps[-1] == "bronze_usage_events_ledger"
    before_duplicate = _tables(cassandra)

    # The same file a second time under another name changes nothing: appended after the others,
    # or named before one already seen, which recomputes its dates.
    for name, written_as in ((f"10_{files[1].name}", "1 files appended"), (f"00b_{files[1].name}", "dates recomputed")):
        deliver_and_tick(files[1], name)
        assert state["written_as"] == {written_as}
        for table, frame in _tables(cassandra).items():
            pd.testing.assert_frame_equal(before_duplicate[table], frame, obj=f"duplicate file {name} changed {table}")

    # A run that dies after bronze appended its file, before silver conformed it, leaves the lake
    # half-written: the next file's run takes the failed one in and recomputes both ranges.
    with monkeypatch.context() as patched:
        patched.setattr(silver_usage, "conform_events", _dies)
        deliver_and_tick(files[2], f"11_{files[2].name}", succeeds=False)
    # …and the next delivery is a file rewritten in place: the dates of its old and new content
    # are recomputed with the failed run's.
    rewritten = stream / f"01_{files[1].name}"
    lines = rewritten.read_text().splitlines()
    rewritten.write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    repair = deliver_and_tick(None, None)
    assert "cpa/repairs" in repair.tags and state["written_as"] == {"dates recomputed"}

    # A late file whose events all lie on an old day: that day and the anomaly baselines that
    # read it (the next 28 days) are brought up to date.
    daily = before_duplicate["org_daily_usage_by_service"]
    day = dt.date(2025, 7, 5)
    org, service = daily[daily.usage_date == day].sort_values("daily_cost_usd").iloc[-1][["org_id", "service"]]
    late = tmp_path / "late.jsonl"
    late.write_text(_late_events(stream, org, service, day))

    def baselines():
        gold = lake.read(spark, "gold", "cost_anomalies", COST_ANOMALIES_SCHEMA, "usage_date").toPandas()
        cell = gold[(gold.org_id == org) & (gold.service == service) & (gold.usage_date > day)]
        return cell.set_index("usage_date").baseline_mean.dropna()

    before = baselines()
    request = deliver_and_tick(late, "20_late.jsonl")
    # The late file sorts after every other: the ledger took it in without parsing the others again.
    assert state["ledger"] == {"extended by 1 files"}
    assert request.tags["dagster/asset_partition_range_start"] == day.isoformat()
    after = baselines()
    within = [d for d in before.index if d <= day + dt.timedelta(days=28)]
    assert within and all(after[d] > before[d] for d in within)
    streamed = _tables(cassandra)
    # Appended files sit beside the recomputed ones, never more than the lake allows.
    files_per_partition = lake.files_per_partition("bronze", "usage_events", "event_date")
    assert files_per_partition and max(files_per_partition.values()) <= MAX_FILES_PER_PARTITION

    with fresh_keyspace("stream_reference") as reference:
        result, reference_lake = run_pipeline(landing, tmp_path / "reference_lake", reference)
        assert result.success
        backfilled = _tables(reference)
    for table in TABLES:
        assert len(streamed[table]) > 0 or table == "cost_anomalies_by_date"
        pd.testing.assert_frame_equal(streamed[table], backfilled[table], obj=table)
    # Every usage table the files went through one by one (bronze, the ledger extended file by
    # file, silver, gold updated cell by cell) equals the one a backfill computes from every file.
    extended, parsed = snapshot(lake, spark, None, USAGE_DATASETS, []), snapshot(reference_lake, spark, None, USAGE_DATASETS, [])
    assert len(parsed["bronze/usage_events_duplicates"]) > 0
    for name in USAGE_DATASETS:
        pd.testing.assert_frame_equal(extended[name], parsed[name], obj=name)

"""The landing generator: deterministic, shaped like the real dataset, and damaged with
every defect of the contract. Defects are counted by parsing the output, never by
trusting the generator's own summary."""

import argparse
import csv
import hashlib
import json
import os
import statistics
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from cpa_cli.generate import add_arguments, event_file_name, generate, run
from tests.conftest import require_real_landing

REPO = Path(__file__).parents[1]
STREAM = "usage_events_stream"
START = date(2025, 7, 3)
WARMUP_DAYS = 14
ANOMALIES = 6

KEYS = {
    "customers_orgs.csv": ("org_id",), "users.csv": ("user_id",),
    "resources.csv": ("resource_id",), "billing_monthly.csv": ("invoice_id",),
    "support_tickets.csv": ("ticket_id",), "marketing_touches.csv": ("touch_id",),
    "nps_surveys.csv": ("org_id", "survey_date"),
}
DATE_COLUMNS = {
    "customers_orgs.csv": "signup_date", "users.csv": "created_at",
    "resources.csv": "created_at", "billing_monthly.csv": "month",
    "support_tickets.csv": "created_at", "marketing_touches.csv": "timestamp",
    "nps_surveys.csv": "survey_date",
}
CATEGORICAL = {
    "customers_orgs.csv": ("industry", "hq_region", "plan_tier", "sales_rep",
                           "lifecycle_stage", "marketing_source"),
    "users.csv": ("role",), "resources.csv": ("service", "region", "state"),
    "billing_monthly.csv": ("currency",), "support_tickets.csv": ("category", "severity"),
    "marketing_touches.csv": ("campaign", "channel"),
}


def _rows(folder: Path, name: str) -> list:
    with (folder / name).open(newline="") as handle:
        return list(csv.DictReader(handle))


def _header(path: Path) -> list:
    with path.open(newline="") as handle:
        return next(csv.reader(handle))


def _event_files(folder: Path) -> list:
    return sorted((folder / STREAM).glob("*.jsonl"))


def _digest(folder: Path) -> dict:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


@pytest.fixture(scope="module")
def real() -> Path:
    return require_real_landing()


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple:
    out = tmp_path_factory.mktemp("landing")
    return out, generate(out, anomalies=ANOMALIES)


@pytest.fixture(scope="module")
def landing(generated) -> Path:
    return generated[0]


@pytest.fixture(scope="module")
def stream(landing, real) -> dict:
    """Census of the usage stream, classified the way bronze and silver will see it."""
    orgs = {row["org_id"] for row in _rows(landing, "customers_orgs.csv")}
    owner = {row["resource_id"]: row["org_id"] for row in _rows(landing, "resources.csv")}
    regions = {row["region"] for row in _rows(real, "resources.csv")}
    census, first_file, clean = Counter(), {}, []
    for path in _event_files(landing):
        for line in path.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                census["malformed_json"] += 1
                continue
            if "event_id" not in event:
                census["event_id_missing"] += 1
                continue
            if event["event_id"] in first_file:
                same = first_file[event["event_id"]] == path.name
                census["duplicate_in_file" if same else "duplicate_across_files"] += 1
                continue
            first_file[event["event_id"]] = path.name
            try:
                datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%SZ")
            except ValueError:
                census["timestamp_unparseable"] += 1
                continue
            kinds = _event_kinds(event, orgs, owner, regions)
            census.update(kinds)
            if not kinds & {"value_not_numeric", "cost_below_minus_0_01",
                            "org_not_in_customers", "resource_unknown",
                            "resource_of_other_org"}:
                clean.append(event)
    return {"census": census, "clean": clean}


def _event_kinds(event: dict, orgs: set, owner: dict, regions: set) -> set:
    kinds = {f"schema_v{event['schema_version']}"}
    value = event["value"]
    if value is None:
        kinds.add("value_null")
    elif isinstance(value, str):
        try:
            float(value)
            kinds.add("value_as_text")
        except ValueError:
            kinds.add("value_not_numeric")
    if value is not None and event["unit"] is None:
        kinds.add("unit_null_value_present")
    cost = event["cost_usd_increment"]
    if cost < -0.01:
        kinds.add("cost_below_minus_0_01")
    elif cost < 0:
        kinds.add("cost_negative_small")
    elif cost > 100:
        kinds.add("cost_spike")
    if event["schema_version"] == 1 and "carbon_kg" not in event:
        kinds.add("schema_v1_without_carbon")
    if set(event) - {"event_id", "timestamp", "org_id", "resource_id", "service", "region",
                     "metric", "value", "unit", "cost_usd_increment", "schema_version",
                     "carbon_kg", "genai_tokens"}:
        kinds.add("unknown_key")
    if "genai_tokens" in event and event["service"] != "genai":
        kinds.add("genai_tokens_off_genai")
    if "genai_tokens" in event and event["schema_version"] == 1:
        kinds.add("genai_tokens_on_v1")
    if event["org_id"] not in orgs:
        kinds.add("org_not_in_customers")
    elif event["resource_id"] not in owner:
        kinds.add("resource_unknown")
    elif owner[event["resource_id"]] != event["org_id"]:
        kinds.add("resource_of_other_org")
    if event["region"] not in regions:
        kinds.add("region_outside_set")
    return kinds


def _daily_cost(events: list) -> dict:
    """org x service -> usage_date -> cost, from events silver would keep."""
    cost = defaultdict(lambda: defaultdict(float))
    for event in events:
        pair = (event["org_id"], event["service"])
        cost[pair][event["timestamp"][:10]] += event["cost_usd_increment"]
    return cost


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes(tmp_path):
    generate(tmp_path / "a", seed=3, days=20, anomalies=2)
    generate(tmp_path / "b", seed=3, days=20, anomalies=2)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def test_other_seed_gives_other_data(tmp_path):
    generate(tmp_path / "a", seed=3, days=20)
    generate(tmp_path / "b", seed=4, days=20)
    first, second = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert all(first[name] != second[name] for name in first if name in second)


def test_output_does_not_depend_on_hash_randomisation(tmp_path):
    script = ("import sys; from cpa_cli.generate import generate; "
              "generate(sys.argv[1], seed=5, days=16, anomalies=1)")
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        subprocess.run([sys.executable, "-c", script, str(tmp_path / hash_seed)],
                       cwd=REPO, env=env, check=True)
    assert _digest(tmp_path / "1") == _digest(tmp_path / "2")


# --------------------------------------------------------------------------- shape


def test_same_files_and_headers_as_the_real_landing(landing, real):
    real_csvs = sorted(path.name for path in real.glob("*.csv"))
    assert sorted(path.name for path in landing.glob("*.csv")) == sorted(
        real_csvs + ["anomaly_labels.csv"])
    for name in real_csvs:
        assert _header(landing / name) == _header(real / name), name
    assert all(path.name.startswith("events_part_") for path in _event_files(landing))


def test_event_keys_follow_the_real_schemas(landing, real, stream):
    def key_orders(folder):
        orders = Counter()
        for path in _event_files(folder):
            for line in path.read_text().splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("schema_version") in (1, 2) and "event_id" in event:
                    orders[tuple(event)] += 1
        return orders

    real_orders = set(key_orders(real))
    with_stray_tokens = {order + ("genai_tokens",) for order in real_orders}  # EV-06
    assert real_orders <= set(key_orders(landing)) <= real_orders | with_stray_tokens
    assert stream["census"]["schema_v1_without_carbon"] > 0


def test_every_event_file_mixes_the_whole_window(landing):
    for path in _event_files(landing):
        lines = path.read_text().splitlines()
        if len(lines) < 300:
            continue
        days = sorted({line.split('"timestamp": "')[1][:10] for line in lines
                       if '"timestamp": "20' in line})
        assert days[0] <= str(START + timedelta(days=6)), path.name
        assert days[-1] >= str(START + timedelta(days=53)), path.name


def test_scale_multiplies_the_data(tmp_path):
    one = generate(tmp_path / "one", days=3)
    two = generate(tmp_path / "two", scale=2, days=3)
    for name in ("customers_orgs.csv", "resources.csv", STREAM):
        assert 1.8 < two["rows"][name] / one["rows"][name] < 2.2, name


def test_summary_row_counts_match_the_files(generated):
    landing, summary = generated
    for name in KEYS:
        assert summary["rows"][name] == len(_rows(landing, name))
    lines = sum(len(path.read_text().splitlines()) for path in _event_files(landing))
    assert summary["rows"][STREAM] == lines
    assert summary["event_files"] == len(_event_files(landing))


# --------------------------------------------------------------------------- event defects


@pytest.mark.parametrize("defect", [
    "value_as_text", "value_null", "value_not_numeric", "unit_null_value_present",
    "cost_negative_small", "cost_below_minus_0_01", "cost_spike", "schema_v1", "schema_v2",
    "schema_v3", "unknown_key", "genai_tokens_off_genai", "genai_tokens_on_v1",
    "org_not_in_customers", "resource_unknown", "resource_of_other_org",
    "region_outside_set", "duplicate_in_file", "duplicate_across_files", "malformed_json",
    "event_id_missing", "timestamp_unparseable",
])
def test_event_defect_is_present(stream, defect):
    assert stream["census"][defect] > 0


def test_delivery_defects(landing):
    contents = [path.read_bytes() for path in _event_files(landing)]
    assert contents.count(b"") == 1
    truncated = [text for text in contents if text and not text.endswith(b"\n")]
    assert len(truncated) == 1
    with pytest.raises(ValueError):
        json.loads(truncated[0].splitlines()[-1])
    non_empty = Counter(text for text in contents if text)
    assert sorted(non_empty.values())[-1] == 2  # one file delivered twice, byte for byte


# --------------------------------------------------------------------------- CSV defects


@pytest.mark.parametrize("name", [name for name in KEYS if name != "customers_orgs.csv"])
def test_org_not_in_customers(landing, name):
    orgs = {row["org_id"] for row in _rows(landing, "customers_orgs.csv")}
    assert any(row["org_id"] not in orgs for row in _rows(landing, name))


@pytest.mark.parametrize("name", list(KEYS))
def test_duplicate_keys(landing, name):
    keys = Counter(tuple(row[c] for c in KEYS[name]) for row in _rows(landing, name))
    assert max(keys.values()) > 1


@pytest.mark.parametrize("name", list(KEYS))
def test_impossible_date(landing, name):
    assert any(not _is_date(row[DATE_COLUMNS[name]]) for row in _rows(landing, name))


@pytest.mark.parametrize("name", list(CATEGORICAL))
def test_value_outside_documented_set(landing, real, name):
    real_rows, rows = _rows(real, name), _rows(landing, name)
    outside = [row for row in rows
               if any(row[c] not in {r[c] for r in real_rows} for c in CATEGORICAL[name])]
    assert outside


@pytest.mark.parametrize("name", ["customers_orgs.csv", "nps_surveys.csv"])
def test_nps_scale_and_out_of_range(landing, real, name):
    def scores(folder):
        return [float(row["nps_score"]) for row in _rows(folder, name) if row["nps_score"]]

    assert min(scores(real)) < 0  # both files use the -100..100 NPS scale, not 0..10
    assert any(abs(score) > 100 for score in scores(landing))
    assert sum(-100 <= score <= 100 for score in scores(landing)) > 0.9 * len(scores(landing))
    assert any(row["nps_score"] == "" for row in _rows(landing, name))


def test_billing_defects(landing):
    rows = _rows(landing, "billing_monthly.csv")
    assert any(row["credits"] == "" for row in rows)  # BI-01
    usd = [float(row["exchange_rate_to_usd"]) for row in rows if row["currency"] == "USD"]
    assert any(rate != 1.0 for rate in usd) and any(rate == 1.0 for rate in usd)  # BI-02
    assert any((float(row["subtotal"]) < 0) != (float(row["taxes"]) < 0) for row in rows)
    rates = defaultdict(list)
    for row in rows:
        rates[row["currency"]].append(float(row["exchange_rate_to_usd"]))
    assert 0.001 < min(rates["ARS"]) and max(rates["ARS"]) < 0.002
    assert 0.95 < min(rates["EUR"]) and max(rates["EUR"]) < 1.25


def test_ticket_defects(landing):
    rows = _rows(landing, "support_tickets.csv")
    csat = [float(row["csat"]) for row in rows if row["csat"]]
    assert any(not 1 <= score <= 5 for score in csat)  # TK-01
    dated = [row for row in rows if _is_date(row["created_at"]) and row["resolved_at"]]
    assert any(row["resolved_at"] < row["created_at"] for row in dated)  # TK-02
    assert any(row["resolved_at"] == "" for row in rows)


def test_users_have_emails(landing):
    assert all("@" in row["email"] for row in _rows(landing, "users.csv"))


# --------------------------------------------------------------------------- anomalies


def test_anomaly_labels_point_at_spiked_cells(landing, stream):
    labels = _rows(landing, "anomaly_labels.csv")
    cells = {(row["org_id"], row["service"], row["usage_date"]) for row in labels}
    assert len(labels) == len(cells) == ANOMALIES
    cost = _daily_cost(stream["clean"])
    for row in labels:
        assert row["usage_date"] >= str(START + timedelta(days=WARMUP_DAYS))
        days = cost[(row["org_id"], row["service"])]
        spiked = days[row["usage_date"]]
        base = spiked - float(row["injected_cost_usd"])
        assert spiked / base == pytest.approx(float(row["factor"]), abs=0.01)
        usual = statistics.median(c for d, c in days.items() if d != row["usage_date"])
        assert spiked > 2.5 * usual
        assert len(days) >= 0.9 * 60  # the pair has usage on most days


def test_daily_cost_is_steady_outside_anomalies(landing, stream):
    labelled = {(r["org_id"], r["service"], r["usage_date"])
                for r in _rows(landing, "anomaly_labels.csv")}
    after_warmup = str(START + timedelta(days=WARMUP_DAYS))
    variation = []
    for pair, days in _daily_cost(stream["clean"]).items():
        costs = [c for d, c in days.items() if d >= after_warmup and (*pair, d) not in labelled]
        if len(costs) > 40 and statistics.mean(costs) > 1:
            variation.append(statistics.pstdev(costs) / statistics.mean(costs))
    assert len(variation) > 50
    assert statistics.median(variation) < 0.15
    assert max(variation) < 0.4


# --------------------------------------------------------------------------- CLI


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_run_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert run(_args("--out", str(tmp_path), "--days", "2")) == 2
    assert "--force" in capsys.readouterr().err
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_force_replaces_only_generated_files(tmp_path, capsys):
    assert run(_args("--out", str(tmp_path), "--days", "20", "--anomalies", "1")) == 0
    (tmp_path / "notes.txt").write_text("mine")
    stale = tmp_path / STREAM / "events_part_9999.jsonl"
    stale.write_text("{}\n")
    assert run(_args("--out", str(tmp_path), "--days", "2", "--start", "2025-01-01",
                     "--force")) == 0
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert not stale.exists()
    assert not (tmp_path / "anomaly_labels.csv").exists()
    assert "event lines" in capsys.readouterr().out


def test_event_file_names_sort_in_arrival_order_past_ten_thousand_files():
    assert event_file_name(7, 120) == "events_part_0007.jsonl"
    names = [event_file_name(number, 12_003) for number in range(12_003)]
    assert sorted(names) == names and names[-1] == "events_part_12002.jsonl"

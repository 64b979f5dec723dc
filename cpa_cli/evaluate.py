"""`cpa evaluate`: measure the three cost-anomaly detectors against labelled spikes.

For each seed, `cpa generate` data with injected cost anomalies is taken landing → bronze →
silver → gold with the pipeline's own transforms on a local SparkSession, the detectors score
every org × service × day, and their flags are compared with `anomaly_labels.csv`.

Only days the labels cover are scored: from the generator's warm-up end (start + WARMUP_DAYS;
unlabelled spikes live before it) and with at least MIN_BASELINE_DAYS of baseline. A labelled
cell that is not scored still counts as a miss.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cpa_assets.bronze.batch import SOURCES_BY_TABLE, read_csv_rows, split_rows, type_rows
from cpa_assets.bronze.usage import parse_events, read_event_lines, split_events
from cpa_assets.gold.anomalies import (
    ANOMALY_BASELINE_DAYS,
    DETECTORS,
    MIN_BASELINE_DAYS,
    P99_FACTOR,
    ROBUST_Z_THRESHOLD,
    ZSCORE_THRESHOLD,
    detect_cost_anomalies,
)
from cpa_assets.gold.usage import daily_usage
from cpa_assets.partitions import event_date_partitions
from cpa_assets.silver.usage import conform_events, split_silver
from cpa_cli.generate import DEFAULT_START, LABELS_FILE, WARMUP_DAYS, generate
from cpa_resources import LakeResource, session_from_env

CELL = ["org_id", "service", "usage_date"]
RULES = {
    "is_anomaly_zscore": ("zscore", f"z > {ZSCORE_THRESHOLD:g}"),
    "is_anomaly_mad": ("mad", f"robust z > {ROBUST_Z_THRESHOLD:g}"),
    "is_anomaly_p99": ("p99", f"cost > {P99_FACTOR:g} x p99"),
}
TARGET_PRECISION, TARGET_RECALL = 0.8, 0.9


def _bronze_csv(spark: SparkSession, landing: Path, table: str) -> DataFrame:
    source = SOURCES_BY_TABLE[table]
    rows, _ = split_rows(source, type_rows(source, read_csv_rows(spark, source, landing / source.file_name)))
    return rows


def landing_daily_usage(spark: SparkSession, landing: Path) -> DataFrame:
    """The daily usage mart of a landing folder, through the same transforms as the assets."""
    files = LakeResource(root=str(landing.parent / "lake"), landing=str(landing)).event_files()
    bounds = (event_date_partitions.get_first_partition_key(), event_date_partitions.get_last_partition_key())
    events, _, _ = split_events(parse_events(read_event_lines(spark, files), *bounds))
    orgs, resources = (_bronze_csv(spark, landing, table) for table in ("customers_orgs", "resources"))
    conformed = conform_events(events, orgs, resources)
    silver, _ = split_silver(conformed)
    return daily_usage(silver)


def read_labels(landing: Path) -> pd.DataFrame:
    with (landing / LABELS_FILE).open(newline="") as handle:
        labels = pd.DataFrame(list(csv.DictReader(handle)))
    labels["usage_date"] = pd.to_datetime(labels["usage_date"]).dt.date
    return labels[CELL]


def scored_cells(spark: SparkSession, landing: Path, first_scored: date) -> pd.DataFrame:
    """The cells the labels cover, with their flags, and a `labelled` column."""
    scored = detect_cost_anomalies(landing_daily_usage(spark, landing)).where(
        (F.col("usage_date") >= first_scored) & (F.col("baseline_days") >= MIN_BASELINE_DAYS)
    )
    cells = scored.select(*CELL, "zscore", "robust_zscore", "p99_ratio", *DETECTORS).toPandas()
    labels = read_labels(landing).assign(labelled=True)
    merged = cells.merge(labels, on=CELL, how="outer")
    merged["labelled"] = merged["labelled"].astype("boolean").fillna(False).astype(bool)
    for flag in DETECTORS:
        # A labelled cell without a scored row was not flagged: it counts as a miss.
        merged[flag] = merged[flag].astype("boolean").fillna(False).astype(bool)
    return merged


def confusion(cells: pd.DataFrame, flag: str) -> dict:
    tp = int((cells[flag] & cells["labelled"]).sum())
    fp = int((cells[flag] & ~cells["labelled"]).sum())
    fn = int((~cells[flag] & cells["labelled"]).sum())
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
    }


def format_table(by_seed: dict[int, pd.DataFrame]) -> tuple[list[str], list[str]]:
    """Lines of the table and the detectors whose pooled figures meet the target."""
    header = (
        f"{'detector':<8} {'rule':<20} {'seed':>6} {'cells':>7} {'TP':>4} {'FP':>4} {'FN':>4}"
        f" {'precision':>9} {'recall':>7}"
    )
    lines, passing = [header, "-" * len(header)], []
    pooled = pd.concat(by_seed.values(), ignore_index=True)
    for flag, (name, rule) in RULES.items():
        for seed, cells in [*by_seed.items(), ("pooled", pooled)]:
            c = confusion(cells, flag)
            lines.append(
                f"{name:<8} {rule:<20} {seed!s:>6} {len(cells):>7} {c['tp']:>4} {c['fp']:>4} {c['fn']:>4}"
                f" {c['precision']:>9.3f} {c['recall']:>7.3f}"
            )
        if all(
            c["precision"] >= TARGET_PRECISION and c["recall"] >= TARGET_RECALL
            for c in (confusion(cells, flag) for cells in [*by_seed.values(), pooled])
        ):
            passing.append(name)
    return lines, passing


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 11], help="generator seeds to measure on")
    parser.add_argument("--anomalies", type=int, default=20, help="labelled cost spikes injected per seed")
    parser.add_argument("--days", type=int, default=60, help="days of usage events per seed")
    parser.add_argument("--scale", type=int, default=1, help="generator size multiplier")


def run(args: argparse.Namespace) -> int:
    """Print TP/FP/FN, precision and recall per detector and seed; 1 when no detector meets the
    target (recall ≥ 0.9 at precision ≥ 0.8 on every seed and pooled)."""
    spark = session_from_env()
    first_scored = DEFAULT_START + timedelta(days=WARMUP_DAYS)
    by_seed: dict[int, pd.DataFrame] = {}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="cpa-evaluate-") as work:
            landing = Path(work) / "landing"
            generate(landing, scale=args.scale, seed=seed, days=args.days, anomalies=args.anomalies)
            by_seed[seed] = scored_cells(spark, landing, first_scored)
        print(f"seed {seed}: {len(by_seed[seed])} org x service x day cells scored", flush=True)
    lines, passing = format_table(by_seed)
    print()
    print(
        f"Cost-anomaly detectors on `cpa generate` data: {args.anomalies} labelled spikes per seed, scale {args.scale},"
        f" {args.days} days from {DEFAULT_START}."
    )
    print(
        f"Baseline: the {ANOMALY_BASELINE_DAYS} earlier days with a row of the same org x service. Scored: days from"
        f" {first_scored} (after the generator's {WARMUP_DAYS}-day warm-up) whose baseline has at least"
        f" {MIN_BASELINE_DAYS} days; labelled cells outside that count as misses."
    )
    print()
    print("\n".join(lines))
    print()
    target = f"recall >= {TARGET_RECALL} at precision >= {TARGET_PRECISION} on every seed and pooled"
    print(f"target ({target}): " + (f"met by {', '.join(passing)}" if passing else "not met"))
    return 0 if passing else 1

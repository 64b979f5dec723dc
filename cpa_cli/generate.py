"""Deterministic generator of landing data shaped like the course dataset.

`generate` writes the seven CSVs and the JSON-lines usage stream with the same file names,
headers and keys as the real landing folder, damaged with every defect of the data contract
(§1) at small fixed rates, and optionally with labelled cost anomalies for the detectors.

Same arguments, same bytes: all randomness comes from one `random.Random(seed)`, rows and
events are built in list order, and nothing iterates over a set.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import string
import sys
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Callable, NamedTuple

from cpa_assets import contract

DEFAULT_START = date(2025, 7, 3)
HISTORY_DAYS = 60  # orgs sign up and resources appear during the 60 days before the window
WARMUP_DAYS = 14  # anomaly detectors need this much history before a labelled spike
EVENTS_PER_FILE = 360
EVENTS_DIR = "usage_events_stream"
LABELS_FILE = "anomaly_labels.csv"
LABEL_COLUMNS = ("org_id", "service", "usage_date", "injected_cost_usd", "factor")

COLUMNS = {
    "customers_orgs.csv": ("org_id", "org_name", "industry", "hq_region", "plan_tier",
                           "is_enterprise", "signup_date", "sales_rep", "lifecycle_stage",
                           "marketing_source", "nps_score"),
    "users.csv": ("user_id", "org_id", "email", "role", "active", "created_at", "last_login"),
    "resources.csv": ("resource_id", "org_id", "service", "region", "created_at", "state",
                      "tags_json"),
    "billing_monthly.csv": ("invoice_id", "org_id", "month", "subtotal", "credits", "taxes",
                            "currency", "exchange_rate_to_usd"),
    "support_tickets.csv": ("ticket_id", "org_id", "category", "severity", "created_at",
                            "resolved_at", "csat", "sla_breached"),
    "marketing_touches.csv": ("touch_id", "org_id", "campaign", "channel", "timestamp",
                              "clicked", "converted"),
    "nps_surveys.csv": ("org_id", "survey_date", "nps_score", "comment"),
}
UNITS = contract.UNIT_BY_METRIC


def _weighted(values: tuple, weights: tuple) -> tuple:
    """The contract's values with the frequencies observed in the course dataset."""
    assert len(values) == len(weights)
    return tuple(zip(values, weights))


# Every categorical column draws from its contract set (cpa_assets/contract.py); a value outside
# it is DM-02 material.
INDUSTRIES = _weighted(contract.INDUSTRIES, (12, 10, 10, 9, 9, 8, 7, 6, 5, 4))
REGIONS = _weighted(contract.REGIONS, (72, 69, 61, 57, 55, 46, 40))
PLAN_TIERS = _weighted(contract.PLAN_TIERS, (41, 21, 10, 8))
SALES_REPS = _weighted(contract.SALES_REPS, (1, 1, 1, 1, 1))
LIFECYCLE_STAGES = _weighted(contract.LIFECYCLE_STAGES, (54, 11, 6, 6, 3))
MARKETING_SOURCES = _weighted(contract.MARKETING_SOURCES, (21, 17, 16, 14, 12))
ROLES = _weighted(contract.ROLES, (201, 162, 130, 113, 105, 89))
SERVICES = _weighted(contract.SERVICES, (116, 71, 68, 64, 42, 39))
# Running resources report every metric daily, stopped ones only keep storage, terminated
# ones are silent: 0.5 * 3 + 0.3 events per resource-day gives the real 720 events a day.
STATES = _weighted(contract.RESOURCE_STATES, (5, 3, 2))
TAGS = ("env:dev", "env:prod", "team:ml", "team:core", "pii:true", "costcenter:alpha",
        "costcenter:beta", "backup:daily")
CURRENCIES = _weighted(contract.CURRENCIES, (67, 21, 12))
TICKET_CATEGORIES = _weighted(contract.TICKET_CATEGORIES, (1, 1, 1, 1, 1, 1))
SEVERITIES = _weighted(contract.SEVERITIES, (412, 328, 204, 56))
CSAT = ((1, 45), (2, 127), (3, 242), (4, 197), (5, 95))
CAMPAIGNS = _weighted(contract.CAMPAIGNS, (1, 1, 1, 1, 1, 1))
CHANNELS = _weighted(contract.CHANNELS, (1, 1, 1, 1))
COMMENTS = (("Missing features", 20), ("Love genAI features", 14), ("Complex billing", 13),
            ("Stable but slow", 13), ("Too expensive", 12), ("Great support", 10))
ORG_NAME_HEADS = ("Nimbus", "Nova", "Gamma", "Apex", "Delta", "Omega", "Alpha", "Vertex",
                  "Zenith")
ORG_NAME_TAILS = ("Labs", "Tech", "Data", "Digital", "Cloud", "AI")

# The real data prices every metric of a service alike (USD per unit of value).
USD_PER_UNIT = {"compute": 0.08, "genai": 0.12, "analytics": 0.07, "database": 0.05,
                "storage": 0.02, "networking": 0.01}
CARBON_KG_PER_UNIT = 0.0002

IMPOSSIBLE_DATES = ("2025-02-30", "2025-06-31", "2025-04-31", "2025-09-31")
NOT_NUMBERS = ("n/a", "12,5", "unknown", "1.2.3")
BAD_TIMESTAMPS = ("2025-07-32T10:00:00Z", "not-a-timestamp", "17/07/2025 10:61")
REGION_OUTSIDE_SET = "mars-north-1"
MIN_ANOMALY_BASE_USD = 1.0  # below this a several-fold spike is lost in rounding noise

ALPHABET = string.ascii_lowercase + string.digits


DOCUMENTED_VALUES = contract.DOCUMENTED_VALUES


def _values(weighted: tuple) -> tuple:
    return tuple(value for value, _ in weighted)


# --------------------------------------------------------------------------- world state


@dataclass
class _World:
    rng: random.Random
    scale: int
    start: date
    days: int
    taken_ids: set = field(default_factory=set)  # membership only, never iterated
    orgs: list = field(default_factory=list)
    org_weights: list = field(default_factory=list)
    orphans: list = field(default_factory=list)  # org ids that customers never lists
    resources: list = field(default_factory=list)
    usage: list = field(default_factory=list)

    @property
    def end(self) -> date:
        return self.start + timedelta(days=self.days - 1)

    @property
    def history_start(self) -> date:
        return self.start - timedelta(days=HISTORY_DAYS)

    def new_id(self, prefix: str, length: int = 8) -> str:
        while True:
            candidate = prefix + "".join(self.rng.choices(ALPHABET, k=length))
            if candidate not in self.taken_ids:
                self.taken_ids.add(candidate)
                return candidate

    def day(self, first: date, last: date) -> date:
        return first + timedelta(days=self.rng.randint(0, max(0, (last - first).days)))

    def pick(self, weighted: tuple):
        return self.rng.choices(_values(weighted), weights=[w for _, w in weighted])[0]

    def pick_orgs(self, k: int) -> list:
        return self.rng.choices(self.orgs, weights=self.org_weights, k=k)


@dataclass(frozen=True)
class _Usage:
    """How one resource reports usage: which metrics daily, around which levels."""

    resource: dict
    metrics: tuple
    level: dict
    tokens: int


class _Defect(NamedTuple):
    name: str
    rate: float  # share of rows/events damaged; at least one is always damaged
    damage: Callable
    qualifies: Callable = lambda item: True


def _count(n: int, rate: float) -> int:
    return max(1, round(n * rate))


def _score(value: float) -> str:
    return str(float(value))


def _take(order: list, items: list, k: int, qualifies: Callable) -> list:
    """Remove and return the first k positions of `order` whose item qualifies.

    Every defect draws from one shuffled order, so damaged rows are disjoint and each
    defect stays countable on its own.
    """
    picked, skipped = [], []
    for n, position in enumerate(order):
        if len(picked) == k:
            order[:] = skipped + order[n:]
            return picked
        (picked if qualifies(items[position]) else skipped).append(position)
    order[:] = skipped
    return picked


def _apply(w: _World, items: list, order: list, defects: list) -> dict:
    counts = {}
    for defect in defects:
        picked = _take(order, items, _count(len(items), defect.rate), defect.qualifies)
        for i, position in enumerate(picked):
            defect.damage(w, items[position], i)
        counts[defect.name] = len(picked)
    return counts


# --------------------------------------------------------------------------- CSV tables


def _build_orgs(w: _World) -> list:
    rows = []
    for i in range(80 * w.scale):
        rows.append({
            "org_id": w.new_id("org_"),
            "org_name": f"{w.rng.choice(ORG_NAME_HEADS)} {w.rng.choice(ORG_NAME_TAILS)} {i}",
            "industry": w.pick(INDUSTRIES),
            "hq_region": w.pick(REGIONS),
            "plan_tier": w.pick(PLAN_TIERS),
            # Independent of plan_tier, as in the real data.
            "is_enterprise": str(w.rng.random() < 0.21),
            "signup_date": w.day(w.history_start, w.start - timedelta(days=1)).isoformat(),
            "sales_rep": w.pick(SALES_REPS),
            "lifecycle_stage": w.pick(LIFECYCLE_STAGES),
            "marketing_source": w.pick(MARKETING_SOURCES),
            "nps_score": "" if w.rng.random() < 0.14 else _score(w.rng.randint(-40, 85)),
        })
    return rows


def _signup(org: dict) -> date:
    return date.fromisoformat(org["signup_date"])


def _build_users(w: _World) -> list:
    rows = []
    for org in w.pick_orgs(800 * w.scale):
        user_id = w.new_id("user_")
        created = w.day(_signup(org), w.end - timedelta(days=20))
        last_login = "" if w.rng.random() < 0.17 else w.day(created, w.end).isoformat()
        rows.append({
            "user_id": user_id, "org_id": org["org_id"], "email": f"{user_id}@example.com",
            "role": w.pick(ROLES), "active": str(w.rng.random() < 0.91),
            "created_at": created.isoformat(), "last_login": last_login,
        })
    return rows


def _tags(w: _World) -> str:
    if w.rng.random() < 0.21:
        return ""
    return json.dumps(w.rng.sample(TAGS, w.rng.randint(1, 3)))


def _build_resources(w: _World) -> list:
    # Every org rents at least one resource; the rest follow the org's size.
    owners = w.orgs + w.pick_orgs(400 * w.scale - len(w.orgs))
    rows = []
    for org in owners:
        rows.append({
            "resource_id": w.new_id("res_"), "org_id": org["org_id"],
            "service": w.pick(SERVICES), "region": w.pick(REGIONS),
            # Created before the window so that no org x service level steps up inside it.
            "created_at": w.day(_signup(org), w.start - timedelta(days=1)).isoformat(),
            "state": w.pick(STATES), "tags_json": _tags(w),
        })
    w.rng.shuffle(rows)
    return rows


def _months(w: _World) -> list:
    first = (w.start.replace(day=1) - timedelta(days=1)).replace(day=1)
    months = []
    while first <= w.end:
        months.append(first)
        first = (first + timedelta(days=32)).replace(day=1)
    return months


def _exchange_rate(w: _World, currency: str) -> str:
    if currency == "ARS":
        return str(round(w.rng.uniform(0.00133, 0.00162), 5))
    if currency == "EUR":
        return str(round(w.rng.uniform(1.0, 1.2), 5))
    # Half of the USD invoices carry a drifting rate, as all of them do in the real data
    # (0.85..1.12); the other half keep 1.0 so that BI-02 has both sides.
    if w.rng.random() < 0.5:
        return "1.0"
    rate = round(w.rng.gauss(1.0, 0.05), 5)
    return str(rate if rate != 1.0 else 1.00017)


def _build_billing(w: _World) -> list:
    rows = []
    for org in w.orgs:
        for month in _months(w):
            currency = w.pick(CURRENCIES)
            subtotal = round(w.rng.uniform(150, 2200), 2)
            credits = "" if w.rng.random() < 0.5 else str(round(w.rng.uniform(0, 80), 2))
            rows.append({
                "invoice_id": w.new_id("inv_"), "org_id": org["org_id"],
                "month": month.isoformat(), "subtotal": str(subtotal), "credits": credits,
                "taxes": str(round(subtotal * 0.21, 2)), "currency": currency,
                "exchange_rate_to_usd": _exchange_rate(w, currency),
            })
    return rows


def _resolution_days(w: _World) -> int:
    return min(31, int(w.rng.expovariate(1 / 4.5)))


def _build_tickets(w: _World) -> list:
    rows = []
    for org in w.pick_orgs(1000 * w.scale):
        created = w.day(max(_signup(org), w.history_start + timedelta(days=5)), w.end)
        resolved = "" if w.rng.random() < 0.24 else (
            created + timedelta(days=_resolution_days(w))).isoformat()
        csat = "" if w.rng.random() < 0.25 else _score(w.pick(CSAT))
        rows.append({
            "ticket_id": w.new_id("tkt_"), "org_id": org["org_id"],
            "category": w.pick(TICKET_CATEGORIES), "severity": w.pick(SEVERITIES),
            "created_at": created.isoformat(), "resolved_at": resolved, "csat": csat,
            "sla_breached": str(w.rng.random() < 0.095),
        })
    return rows


def _build_touches(w: _World) -> list:
    rows = []
    for org in w.pick_orgs(1500 * w.scale):
        rows.append({
            "touch_id": w.new_id("mkt_"), "org_id": org["org_id"],
            "campaign": w.pick(CAMPAIGNS), "channel": w.pick(CHANNELS),
            "timestamp": w.day(w.history_start, w.end).isoformat(),
            "clicked": str(w.rng.random() < 0.3), "converted": str(w.rng.random() < 0.1),
        })
    return rows


def _build_nps(w: _World) -> list:
    rows = []
    # Three orgs in four answer, once or twice; like the orgs' own nps_score the answers
    # are on the -100..100 NPS scale, not 0..10.
    for org in w.rng.sample(w.orgs, round(len(w.orgs) * 0.75)):
        first = max(_signup(org), w.start - timedelta(days=40))
        dates = sorted({w.day(first, w.end) for _ in range(w.rng.choice((1, 2)))})
        for survey_date in dates:
            score = min(90, max(-30, round(w.rng.gauss(28, 15))))
            rows.append({
                "org_id": org["org_id"], "survey_date": survey_date.isoformat(),
                "nps_score": "" if w.rng.random() < 0.2 else _score(score),
                "comment": "" if w.rng.random() < 0.11 else w.pick(COMMENTS),
            })
    return rows


@dataclass(frozen=True)
class _Table:
    name: str
    build: Callable
    date_column: str
    outside_set: tuple  # (column, value outside the documented set), used in turn
    conflict: tuple  # (column, values) a duplicate with the same key may disagree on
    specific: tuple = ()  # defects only this table has
    eligible: Callable = lambda row: True


def _nps_out_of_range(values: tuple) -> Callable:
    def damage(w, row, i):
        row["nps_score"] = _score(values[i % len(values)])
    return damage


def _set(column: str, value: Callable) -> Callable:
    def damage(w, row, i):
        row[column] = value(w, row, i)
    return damage


def _subtotal_negated(w, row, i):
    # A credit note whose taxes were still booked positive.
    row["subtotal"] = str(-float(row["subtotal"]))


def _currency_outside_set(w, row, i):
    row["currency"], row["exchange_rate_to_usd"] = "GBP", str(round(w.rng.uniform(1.25, 1.3), 5))


def _resolved_before_created(w, row, i):
    created = date.fromisoformat(row["created_at"])
    row["resolved_at"] = (created - timedelta(days=w.rng.randint(1, 5))).isoformat()


TABLES = (
    _Table("customers_orgs.csv", _build_orgs, date_column="signup_date",
           outside_set=(("plan_tier", "platinum"), ("industry", "Aerospace"),
                        ("lifecycle_stage", "dormant"), ("hq_region", REGION_OUTSIDE_SET)),
           conflict=("lifecycle_stage", _values(LIFECYCLE_STAGES)),
           specific=(_Defect("nps_out_of_range", 0.025,
                             _nps_out_of_range((101, -120, 250))),)),
    _Table("users.csv", _build_users, date_column="created_at",
           outside_set=(("role", "superuser"),), conflict=("role", _values(ROLES))),
    # Only silent resources are damaged, so that usage events stay consistent with them.
    _Table("resources.csv", _build_resources, date_column="created_at",
           outside_set=(("state", "deleting"),), conflict=("state", ("stopped", "running")),
           eligible=lambda row: row["state"] == "terminated"),
    _Table("billing_monthly.csv", _build_billing, date_column="month", outside_set=(),
           conflict=("credits", ("", "0.0", "12.5")),
           specific=(_Defect("subtotal_taxes_sign_differ", 0.05, _subtotal_negated),
                     _Defect("currency_outside_set", 0.01, _currency_outside_set))),
    _Table("support_tickets.csv", _build_tickets, date_column="created_at",
           outside_set=(("severity", "urgent"), ("category", "other")),
           conflict=("severity", _values(SEVERITIES)),
           specific=(_Defect("csat_out_of_range", 0.04,
                             _set("csat", lambda w, row, i: _score((0, 6, 7)[i % 3]))),
                     _Defect("resolved_before_created", 0.01, _resolved_before_created,
                             qualifies=lambda row: row["resolved_at"] != ""))),
    _Table("marketing_touches.csv", _build_touches, date_column="timestamp",
           outside_set=(("channel", "sms"), ("campaign", "black_friday")),
           conflict=("channel", _values(CHANNELS))),
    # nps_surveys has no categorical column, hence no DM-02 damage.
    _Table("nps_surveys.csv", _build_nps, date_column="survey_date", outside_set=(),
           conflict=("comment", _values(COMMENTS)),
           specific=(_Defect("nps_out_of_range", 0.03, _nps_out_of_range((150, -101, 130))),)),
)


def _outside_set(table: _Table) -> Callable:
    def damage(w, row, i):
        column, value = table.outside_set[i % len(table.outside_set)]
        row[column] = value
    return damage


def _generic_defects(table: _Table) -> list:
    defects = []
    if "org_id" in COLUMNS[table.name] and table.name != "customers_orgs.csv":
        defects.append(_Defect("org_not_in_customers", 0.01,
                               _set("org_id", lambda w, row, i: w.rng.choice(w.orphans))))
    if table.outside_set:
        defects.append(_Defect("value_outside_set", 0.01, _outside_set(table)))
    defects.append(_Defect("impossible_date", 0.002, _set(
        table.date_column, lambda w, row, i: IMPOSSIBLE_DATES[i % len(IMPOSSIBLE_DATES)])))
    return defects


def _duplicate_keys(w: _World, table: _Table, rows: list, order: list) -> int:
    """Repeat some keys further down the file: even copies are exact, odd ones disagree."""
    picked = _take(order, rows, _count(len(rows), 0.01), lambda row: True)
    inserts = []
    for i, position in enumerate(picked):
        copy = dict(rows[position])
        if i % 2:
            column, values = table.conflict
            copy[column] = w.rng.choice([v for v in values if v != copy[column]])
        inserts.append((w.rng.randint(position + 1, len(rows)), copy))
    # Back to front, so that each insert leaves the earlier targets where they were.
    for target, copy in sorted(inserts, key=lambda item: item[0], reverse=True):
        rows.insert(target, copy)
    return len(picked)


def _damage_table(w: _World, table: _Table, rows: list) -> dict:
    order = [i for i, row in enumerate(rows) if table.eligible(row)]
    w.rng.shuffle(order)
    counts = _apply(w, rows, order, list(table.specific) + _generic_defects(table))
    counts["duplicate_key"] = _duplicate_keys(w, table, rows, order)
    return counts


def _traits(name: str, rows: list) -> dict:
    """Defects the clean data already has at the real dataset's rates."""
    if name == "billing_monthly.csv":
        return {
            "credits_null": sum(row["credits"] == "" for row in rows),
            "usd_rate_not_1": sum(row["currency"] == "USD"
                                  and row["exchange_rate_to_usd"] != "1.0" for row in rows),
            "not_usd": sum(row["currency"] != "USD" for row in rows),
        }
    if name == "support_tickets.csv":
        return {"unresolved": sum(row["resolved_at"] == "" for row in rows),
                "csat_null": sum(row["csat"] == "" for row in rows)}
    if name in ("customers_orgs.csv", "nps_surveys.csv"):
        return {"nps_null": sum(row["nps_score"] == "" for row in rows)}
    return {}


# --------------------------------------------------------------------------- usage events


def _usage_profiles(w: _World) -> list:
    metrics = {"running": tuple(UNITS), "stopped": ("storage_gb_hours",), "terminated": ()}
    profiles = []
    for resource in w.resources:
        level = {"requests": w.rng.uniform(90, 150), "cpu_hours": w.rng.uniform(0.5, 4),
                 "storage_gb_hours": w.rng.uniform(3, 25)}
        profiles.append(_Usage(resource, metrics[resource["state"]], level,
                               w.rng.randint(200, 1500)))
    return profiles


def _schema_version(w: _World, day: date) -> int:
    # The producer moved to v2 a quarter into the window, as in the real stream.
    return 1 if (day - w.start).days < w.days // 4 else 2


def _carbon(value: float | None) -> float | int:
    # The real stream writes an integer 0 when nothing was used.
    return round(value * CARBON_KG_PER_UNIT, 6) if value else 0


def _event(w: _World, usage: _Usage, day: date, metric: str, value: float, cost: float) -> dict:
    """One event with the real key order: v1 keys, then carbon_kg and genai_tokens in v2."""
    resource, minute = usage.resource, w.rng.randrange(1440)
    event = {
        "event_id": w.new_id("evt_", 12),
        "timestamp": f"{day.isoformat()}T{minute // 60:02d}:{minute % 60:02d}:00Z",
        "org_id": resource["org_id"], "resource_id": resource["resource_id"],
        "service": resource["service"], "region": resource["region"], "metric": metric,
        "value": value, "unit": UNITS[metric], "cost_usd_increment": cost,
        "schema_version": _schema_version(w, day),
    }
    if event["schema_version"] >= 2:
        event["carbon_kg"] = _carbon(value)
        if resource["service"] == "genai":
            event["genai_tokens"] = max(0, round(w.rng.gauss(usage.tokens, usage.tokens * 0.2)))
    return event


def _draw(w: _World, usage: _Usage, metric: str) -> float:
    # Modest noise around a stable level keeps each org x service's daily cost steady,
    # which is the baseline the anomaly detectors need.
    value = usage.level[metric] * max(0.0, w.rng.gauss(1.0, 0.08))
    if metric == "requests":
        return float(round(value))
    if metric == "cpu_hours" and w.rng.random() < 0.05:
        return 0.0  # an idle day
    return round(value, 4)


def _base_events(w: _World) -> list:
    events = []
    for offset in range(w.days):
        day = w.start + timedelta(days=offset)
        for usage in w.usage:
            for metric in usage.metrics:
                value = _draw(w, usage, metric)
                rate = USD_PER_UNIT[usage.resource["service"]]
                cost = round(value * rate * w.rng.uniform(0.93, 1.07), 4)
                events.append(_event(w, usage, day, metric, value, cost))
    return events


def _cell(event: dict) -> tuple:
    return event["org_id"], event["service"], event["timestamp"][:10]


def _near(cell: tuple, other: tuple) -> bool:
    """Same org x service within a week: one spike would pollute the other's baseline."""
    gap = abs((date.fromisoformat(cell[2]) - date.fromisoformat(other[2])).days)
    return cell[:2] == other[:2] and gap < 7


def _choose_anomalies(w: _World, events: list, n: int) -> list:
    """Pick n cells after the warm-up, on org x service pairs used on most days."""
    if n == 0:
        return []
    cost, active_days = {}, {}
    for event in events:
        cost[_cell(event)] = cost.get(_cell(event), 0.0) + event["cost_usd_increment"]
    for cell in cost:
        active_days[cell[:2]] = active_days.get(cell[:2], 0) + 1
    first = (w.start + timedelta(days=WARMUP_DAYS)).isoformat()
    candidates = [cell for cell, base in cost.items()
                  if cell[2] >= first and base >= MIN_ANOMALY_BASE_USD
                  and active_days[cell[:2]] >= 0.9 * w.days]
    w.rng.shuffle(candidates)
    chosen = []
    for cell in candidates:
        if len(chosen) == n:
            break
        if not any(_near(cell, other) for other in chosen):
            chosen.append(cell)
    if len(chosen) < n:
        raise ValueError(f"only {len(chosen)} org x service x day cells can hold an anomaly")
    return [(cell, cost[cell], round(w.rng.uniform(3, 8), 1)) for cell in sorted(chosen)]


def _split(w: _World, total: float, parts: int) -> list:
    weights = [w.rng.uniform(0.5, 1.5) for _ in range(parts)]
    shares = [round(total * weight / sum(weights), 4) for weight in weights[:-1]]
    return shares + [round(total - sum(shares), 4)]


def _anomaly_events(w: _World, anomalies: list) -> tuple:
    """Extra high-cost events that lift a cell's cost to `factor` times its base."""
    by_pair = {}
    for usage in w.usage:
        if usage.metrics:
            pair = (usage.resource["org_id"], usage.resource["service"])
            by_pair.setdefault(pair, []).append(usage)
    events, labels = [], []
    for (org_id, service, day), base, factor in anomalies:
        costs = _split(w, base * (factor - 1), w.rng.randint(2, 4))
        for cost in costs:
            usage = w.rng.choice(by_pair[(org_id, service)])
            # More of what the resource already reports: requests, or storage if stopped.
            metric = usage.metrics[0]
            value = round(cost / USD_PER_UNIT[service], 4)
            value = float(round(value)) if metric == "requests" else value
            events.append(_event(w, usage, date.fromisoformat(day), metric, value, cost))
        labels.append({"org_id": org_id, "service": service, "usage_date": day,
                       "injected_cost_usd": str(round(sum(costs), 4)), "factor": str(factor)})
    return events, labels


def _value_as_text(w, event, i):
    event["value"] = str(event["value"])


def _value_null(w, event, i):
    event["value"] = None
    if "carbon_kg" in event:
        event["carbon_kg"] = 0


def _value_not_numeric(w, event, i):
    event["value"] = NOT_NUMBERS[i % len(NOT_NUMBERS)]


def _unit_null(w, event, i):
    event["unit"] = None


def _tiny_refund(w, event, i):
    event["cost_usd_increment"] = -round(w.rng.uniform(0.0001, 0.0099), 4)


def _refund(w, event, i):
    # One large reversal like the real -154.46, the rest a few dollars.
    event["cost_usd_increment"] = -round(w.rng.uniform(150, 160) if i == 0
                                         else w.rng.uniform(0.5, 20), 4)


def _cost_spike(w, event, i):
    event["cost_usd_increment"] = round(w.rng.uniform(100, 320), 4)


def _schema_v3(w, event, i):
    event["schema_version"] = 3
    event["pricing_model"] = w.rng.choice(("on_demand", "spot", "reserved"))


def _stray_tokens(w, event, i):
    event["genai_tokens"] = w.rng.randint(50, 2000)


def _unknown_org(w, event, i):
    event["org_id"] = w.rng.choice(w.orphans)


def _unknown_resource(w, event, i):
    event["resource_id"] = w.new_id("res_")


def _foreign_resource(w, event, i):
    while True:
        resource = w.rng.choice(w.usage).resource
        if resource["org_id"] != event["org_id"]:
            event["resource_id"] = resource["resource_id"]
            return


def _region_outside_set(w, event, i):
    event["region"] = REGION_OUTSIDE_SET


def _malformed(w, event, i):
    text = json.dumps(event)
    variants = (text[:-1], text[:-1] + ", }", str(event))  # unclosed, trailing comma, repr
    event["_raw"] = variants[i % len(variants)]


def _no_event_id(w, event, i):
    del event["event_id"]


def _bad_timestamp(w, event, i):
    event["timestamp"] = BAD_TIMESTAMPS[i % len(BAD_TIMESTAMPS)]


def _is_v2(event):
    return event["schema_version"] == 2


def _in_warmup(start: date) -> Callable:
    # Unlabelled spikes stay in the warm-up, before any day the detectors are scored on.
    last = (start + timedelta(days=WARMUP_DAYS - 1)).isoformat()
    return lambda event: event["timestamp"][:10] <= last


def _kept_defects(start: date) -> list:
    """Defects that silver keeps (flagged or not): applied to the event itself."""
    return [
        _Defect("value_as_text", 0.03, _value_as_text),
        _Defect("value_null", 0.02, _value_null),
        _Defect("unit_null_value_present", 0.045, _unit_null),
        _Defect("cost_negative_small", 0.0005, _tiny_refund),
        _Defect("cost_spike", 0.001, _cost_spike, _in_warmup(start)),
        _Defect("schema_v3_unknown_key", 0.001, _schema_v3, _is_v2),
        _Defect("genai_tokens_off_genai", 0.0005, _stray_tokens,
                lambda e: _is_v2(e) and e["service"] != "genai"),
        _Defect("genai_tokens_on_v1", 0.0005, _stray_tokens,
                lambda e: e["schema_version"] == 1 and e["service"] == "genai"),
        _Defect("region_outside_set", 0.0005, _region_outside_set),
    ]


# Defects that bronze rejects or silver quarantines. They are applied to extra copies
# (with a fresh event_id) so that no org x service x day loses cost: a lost request
# event would otherwise look like a sudden drop to the anomaly detectors.
LOST_DEFECTS = (
    _Defect("value_not_numeric", 0.0005, _value_not_numeric),
    _Defect("cost_below_minus_0_01", 0.004, _refund),
    _Defect("org_not_in_customers", 0.001, _unknown_org),
    _Defect("resource_unknown", 0.001, _unknown_resource),
    _Defect("resource_of_other_org", 0.001, _foreign_resource),
    _Defect("malformed_json", 0.0001, _malformed),
    _Defect("event_id_missing", 0.0001, _no_event_id),
    _Defect("timestamp_unparseable", 0.0001, _bad_timestamp),
)


def _lost_copies(w: _World, events: list, order: list, counts: dict) -> list:
    copies = []
    for defect in LOST_DEFECTS:
        picked = _take(order, events, _count(len(events), defect.rate), defect.qualifies)
        for i, position in enumerate(picked):
            copy = dict(events[position], event_id=w.new_id("evt_", 12))
            defect.damage(w, copy, i)
            copies.append(_line(copy))
        counts[defect.name] = len(picked)
    return copies


def _line(event: dict) -> str:
    return event["_raw"] if "_raw" in event else json.dumps(event)


@dataclass
class _Stream:
    """The usage stream as it will be delivered, kept as JSON lines to save memory."""

    lines: list  # one per event, in shuffled order; file i holds lines[i*360:(i+1)*360]
    extras: dict = field(default_factory=dict)  # file -> [(insert position, line)], in order
    sequence: list = field(default_factory=list)  # delivered files: chunk number or None
    truncated: int | None = None  # the chunk that ends with `cut`, a half line
    cut: str = ""

    @property
    def chunks(self) -> int:
        return -(-len(self.lines) // EVENTS_PER_FILE)

    @property
    def line_count(self) -> int:
        return sum(self.size(chunk) + (chunk == self.truncated)
                   for chunk in self.sequence if chunk is not None)

    def size(self, chunk: int) -> int:
        base = len(self.lines[chunk * EVENTS_PER_FILE:(chunk + 1) * EVENTS_PER_FILE])
        return base + len(self.extras.get(chunk, ()))

    def text(self, chunk: int | None) -> str:
        if chunk is None:
            return ""
        lines = self.lines[chunk * EVENTS_PER_FILE:(chunk + 1) * EVENTS_PER_FILE]
        for position, line in self.extras.get(chunk, ()):
            lines.insert(position, line)
        text = "".join(line + "\n" for line in lines)
        return text + self.cut if chunk == self.truncated else text


def _scatter(w: _World, stream: _Stream, lines: list, homes: list | None = None) -> None:
    """Insert each line at a random place of a random file, or of its home file."""
    for n, line in enumerate(lines):
        chunk = homes[n] if homes else w.rng.randrange(stream.chunks)
        extras = stream.extras.setdefault(chunk, [])
        extras.append((w.rng.randint(0, stream.size(chunk)), line))


def _deliver(w: _World, events: list, order: list, counts: dict) -> _Stream:
    """Serialise the shuffled events and add the damaged lines and delivery defects."""
    copies = _lost_copies(w, events, order, counts)
    in_file = _take(order, events, _count(len(events), 0.001), lambda e: True)
    across = _take(order, events, _count(len(events), 0.001), lambda e: True)
    resent = _take(order, events, 1, lambda e: True)[0]
    for position, event in enumerate(events):
        events[position] = _line(event)  # in place: each dict is freed as we go
    stream = _Stream(events)
    _scatter(w, stream, copies)
    homes = [p // EVENTS_PER_FILE for p in in_file]
    _scatter(w, stream, [events[p] for p in in_file], homes)
    others = [(p // EVENTS_PER_FILE + w.rng.randint(1, max(1, stream.chunks - 1)))
              % stream.chunks for p in across]
    _scatter(w, stream, [events[p] for p in across], others)
    # A producer crashed mid-line; the whole line still arrives in its own file.
    stream.truncated = w.rng.randrange(stream.chunks)
    stream.cut = events[resent][: len(events[resent]) // 2]
    stream.sequence = list(range(stream.chunks))
    redelivered = w.rng.choice([c for c in stream.sequence if c != stream.truncated]
                               or stream.sequence)
    stream.sequence.insert(w.rng.randint(redelivered + 1, stream.chunks), redelivered)
    stream.sequence.insert(w.rng.randint(0, len(stream.sequence)), None)
    counts.update(duplicate_in_file=len(in_file), duplicate_across_files=len(across),
                  truncated_file=1, duplicated_file=1, empty_file=1)
    return stream


def _usage_stream(w: _World, anomalies: int) -> tuple:
    """Return (stream, anomaly labels, defect counts) of the usage events."""
    events = _base_events(w)
    chosen = _choose_anomalies(w, events, anomalies)
    extra, labels = _anomaly_events(w, chosen)
    events += extra
    w.rng.shuffle(events)  # every file mixes the whole window, like the real stream
    protected = {cell for cell, _, _ in chosen}  # membership only
    order = [p for p, event in enumerate(events) if _cell(event) not in protected]
    w.rng.shuffle(order)
    counts = _apply(w, events, order, _kept_defects(w.start))
    return _deliver(w, events, order, counts), labels, counts


# --------------------------------------------------------------------------- output


def _generated_files(out: Path) -> list:
    files = [out / name for name in (*COLUMNS, LABELS_FILE)]
    files += sorted((out / EVENTS_DIR).glob("events_part_*.jsonl"))
    return [path for path in files if path.exists()]


def _prepare(out: Path, force: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{out} is not empty; pass --force to replace generated files")
        for path in _generated_files(out):
            path.unlink()
    (out / EVENTS_DIR).mkdir(parents=True, exist_ok=True)


def _write_csv(path: Path, columns: tuple, rows: list) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([row[column] for column in columns] for row in rows)


def event_file_name(number: int, count: int) -> str:
    """The name of event file `number` of `count`, numbered wide enough (4 digits at least) that the
    names sort in arrival order at any scale, as a stream's files do."""
    return f"events_part_{number:0{max(4, len(str(count - 1)))}d}.jsonl"


def generate(out: Path, scale: int = 1, seed: int = 7, start: date = DEFAULT_START,
             days: int = 60, anomalies: int = 0, *, force: bool = False) -> dict:
    """Write a landing folder like the course dataset into `out` and summarise it.

    scale 1 is the course dataset's size; scale N has N times the orgs, users, resources,
    invoices, tickets, touches, surveys and events. With anomalies > 0, that many labelled
    cost spikes are injected and listed in anomaly_labels.csv.
    """
    if scale < 1 or days < 1 or anomalies < 0:
        raise ValueError("scale and days must be at least 1, anomalies at least 0")
    if anomalies and days <= WARMUP_DAYS:
        raise ValueError(f"anomalies need more than {WARMUP_DAYS} days of history")
    out = Path(out)
    w = _World(random.Random(seed), scale, start, days)
    w.orgs = _build_orgs(w)
    w.org_weights = [w.rng.lognormvariate(0, 0.6) for _ in w.orgs]
    w.orphans = [w.new_id("org_") for _ in range(3 * scale)]
    tables = {"customers_orgs.csv": w.orgs}
    for table in TABLES[1:]:
        tables[table.name] = table.build(w)
    w.resources = tables["resources.csv"]
    w.usage = _usage_profiles(w)

    stream, labels, event_defects = _usage_stream(w, anomalies)
    defects = {}
    for table in TABLES:
        defects[table.name] = _damage_table(w, table, tables[table.name])
        defects[table.name].update(_traits(table.name, tables[table.name]))
    defects[EVENTS_DIR] = event_defects

    _prepare(out, force)
    for table in TABLES:
        _write_csv(out / table.name, COLUMNS[table.name], tables[table.name])
    for number, chunk in enumerate(stream.sequence):
        path = out / EVENTS_DIR / event_file_name(number, len(stream.sequence))
        path.write_bytes(stream.text(chunk).encode("utf-8"))
    if labels:
        _write_csv(out / LABELS_FILE, LABEL_COLUMNS, labels)

    rows = {name: len(table_rows) for name, table_rows in tables.items()}
    rows[EVENTS_DIR] = stream.line_count
    return {"rows": rows, "event_files": len(stream.sequence), "defects": defects,
            "anomalies": len(labels)}


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="landing folder to write")
    parser.add_argument("--scale", type=int, default=1,
                        help="size multiplier; 1 is the course dataset's size")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", type=date.fromisoformat, default=DEFAULT_START,
                        help="first usage date, YYYY-MM-DD")
    parser.add_argument("--end", type=date.fromisoformat,
                        help="last usage date instead of --start (`make run` ends on today, so the stream looks live)")
    parser.add_argument("--days", type=int, default=60, help="days of usage events")
    parser.add_argument("--anomalies", type=int, default=0,
                        help="labelled cost spikes to inject (written to anomaly_labels.csv)")
    parser.add_argument("--force", action="store_true",
                        help="replace previously generated files in a non-empty --out")


def run(args: argparse.Namespace) -> int:
    try:
        start = args.end - timedelta(days=args.days - 1) if args.end else args.start
        summary = generate(args.out, scale=args.scale, seed=args.seed, start=start,
                           days=args.days, anomalies=args.anomalies, force=args.force)
    except (FileExistsError, ValueError) as error:
        print(f"cpa generate: {error}", file=sys.stderr)
        return 2
    damaged = sum(sum(counts.values()) for counts in summary["defects"].values())
    print(f"wrote {args.out}: {summary['rows']['customers_orgs.csv']} orgs, "
          f"{summary['rows'][EVENTS_DIR]} event lines in {summary['event_files']} files, "
          f"{damaged} defects, {summary['anomalies']} labelled anomalies")
    for name, count in summary["rows"].items():
        print(f"  {name:<24} {count:>9}")
    return 0

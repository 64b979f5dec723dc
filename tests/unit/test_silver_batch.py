"""Silver rules of the CSV sources (RI-01, BI-01..03, TK-01/02, DM-01/02), masking and parsing: each
bronze row is flagged or quarantined, never dropped."""

import datetime as dt
import hashlib

import pytest

from cpa_assets.bronze.batch import SOURCES_BY_TABLE
from cpa_assets.silver.batch import (
    EMAIL_SALT,
    SILVER_TABLES,
    SILVER_TABLES_BY_NAME,
    conform_table,
    split_silver,
    with_dq,
)
from cpa_assets.contract import DOCUMENTED_VALUES
from cpa_resources import LakeResource

INGEST_TS = dt.datetime(2025, 9, 1, 8)
D = dt.date(2025, 7, 1)

DEFAULTS = {
    "customers_orgs": {
        "org_id": "org_a", "org_name": "Acme", "industry": "Retail", "hq_region": "us-east", "plan_tier": "pro",
        "is_enterprise": False, "signup_date": D, "sales_rep": "rep_a", "lifecycle_stage": "active",
        "marketing_source": "ads", "nps_score": 10.0,
    },
    "users": {
        "user_id": "u", "org_id": "org_a", "email": "Ann@Example.COM", "role": "admin", "active": True,
        "created_at": D, "last_login": None,
    },
    "resources": {
        "resource_id": "r", "org_id": "org_a", "service": "compute", "region": "us-east", "created_at": D,
        "state": "running", "tags_json": '["env:prod", "team:ml"]',
    },
    "billing_monthly": {
        "invoice_id": "i", "org_id": "org_a", "month": D, "subtotal": 100.0, "credits": 5.0, "taxes": 21.0,
        "currency": "EUR", "exchange_rate_to_usd": 1.1,
    },
    "support_tickets": {
        "ticket_id": "t", "org_id": "org_a", "category": "billing", "severity": "low", "created_at": D,
        "resolved_at": D + dt.timedelta(days=2), "csat": 4.0, "sla_breached": False,
    },
    "marketing_touches": {
        "touch_id": "m", "org_id": "org_a", "campaign": "welcome", "channel": "email",
        "timestamp": dt.datetime(2025, 7, 1, 9), "clicked": True, "converted": False,
    },
    "nps_surveys": {"org_id": "org_a", "survey_date": D, "nps_score": 30.0, "comment": "Great support"},
}


@pytest.fixture
def conform(spark):
    """Run a table's conform + split on rows given as overrides of its defaults, keyed by `key`."""
    orgs = spark.createDataFrame(
        [tuple(DEFAULTS["customers_orgs"][c] for c, _ in SOURCES_BY_TABLE["customers_orgs"].columns)
         + (1, "customers_orgs.csv", INGEST_TS)],
        SOURCES_BY_TABLE["customers_orgs"].schema,
    )

    def run(table: str, *rows: dict, as_spark: bool = False):
        source, silver_table = SOURCES_BY_TABLE[table], SILVER_TABLES_BY_NAME[table]
        full = [{**DEFAULTS[table], **row} for row in rows]
        bronze = spark.createDataFrame(
            [tuple(r[c] for c, _ in source.columns) + (n, f"{table}.csv", INGEST_TS) for n, r in enumerate(full, 1)],
            source.schema,
        )
        silver, quarantine = split_silver(silver_table, silver_table.conform(bronze, orgs))
        if as_spark:
            return silver, quarantine
        return silver.toPandas().set_index("row_no"), quarantine.toPandas().set_index("row_no")

    return run


def flags_of(frame, row_no: int) -> list[str]:
    return sorted(frame.loc[row_no, "dq_flags"])


@pytest.mark.parametrize("table", [t.table for t in SILVER_TABLES if t.table != "customers_orgs"])
def test_ri01_an_org_missing_from_customers_is_quarantined(conform, table):
    key = SOURCES_BY_TABLE[table].key[-1]
    other = {key: D + dt.timedelta(days=1)} if key == "survey_date" else {key: "other"}
    silver, quarantine = conform(table, {}, {"org_id": "org_zzz", **other})
    assert list(silver.index) == [1] and flags_of(silver, 1) == []
    assert quarantine.loc[2, "dq_rule"] == "RI-01"
    assert quarantine.loc[2, "rejected_ts"] == INGEST_TS


def test_customers_are_the_reference_and_never_quarantined(conform):
    silver, quarantine = conform("customers_orgs", {}, {"org_id": "org_new", "plan_tier": "platinum"})
    assert quarantine.empty and len(silver) == 2
    assert flags_of(silver, 2) == ["unknown_plan_tier"]


@pytest.mark.parametrize(
    ("table", "column"),
    [(t.table, c) for t in SILVER_TABLES for c in t.categorical],
)
def test_dm02_a_categorical_value_outside_its_documented_set_is_flagged(conform, table, column):
    assert DEFAULTS[table][column] in DOCUMENTED_VALUES[column]
    key = SOURCES_BY_TABLE[table].key[-1]
    silver, quarantine = conform(table, {}, {key: "x2", column: "zzz"}, {key: "x3", column: None})
    assert quarantine.empty
    assert flags_of(silver, 1) == []
    assert flags_of(silver, 2) == flags_of(silver, 3) == [f"unknown_{column}"]


def test_bi01_null_credits_count_as_zero_and_are_flagged(conform):
    silver, _ = conform("billing_monthly", {}, {"invoice_id": "j", "credits": None})
    assert silver.loc[1, "credits"] == 5.0 and flags_of(silver, 1) == []
    assert silver.loc[2, "credits"] == 0.0 and flags_of(silver, 2) == ["credits_missing"]


def test_bi02_usd_uses_rate_one_and_keeps_the_original(conform):
    silver, _ = conform(
        "billing_monthly",
        {"currency": "USD", "exchange_rate_to_usd": 0.97684},
        {"invoice_id": "j", "currency": "USD", "exchange_rate_to_usd": 1.0},
        {"invoice_id": "k"},
    )
    assert silver.loc[1, "fx_to_usd"] == 1.0 and silver.loc[1, "exchange_rate_to_usd"] == 0.97684
    assert flags_of(silver, 1) == ["usd_rate_not_1"]
    assert silver.loc[2, "fx_to_usd"] == 1.0 and flags_of(silver, 2) == []
    assert silver.loc[3, "fx_to_usd"] == 1.1 and flags_of(silver, 3) == []


def test_a_foreign_invoice_without_a_rate_is_flagged_and_has_no_fx(conform):
    silver, _ = conform("billing_monthly", {"exchange_rate_to_usd": None})
    assert flags_of(silver, 1) == ["missing_exchange_rate"]
    assert silver["fx_to_usd"].isna().all()


def test_bi03_subtotal_and_taxes_of_opposite_signs_are_flagged(conform):
    silver, quarantine = conform(
        "billing_monthly",
        {"subtotal": -100.0, "taxes": 21.0},
        {"invoice_id": "j", "subtotal": 100.0, "taxes": 0.0},
        {"invoice_id": "k", "subtotal": -100.0, "taxes": -21.0},
    )
    assert quarantine.empty
    assert flags_of(silver, 1) == ["subtotal_taxes_sign_differ"]
    assert flags_of(silver, 2) == flags_of(silver, 3) == []


def test_tk01_csat_outside_1_to_5_is_flagged_and_left_out_of_csat_valid(conform):
    silver, _ = conform(
        "support_tickets",
        {"csat": 0.0}, {"ticket_id": "b", "csat": 6.0}, {"ticket_id": "c", "csat": 5.0},
        {"ticket_id": "d", "csat": 1.0}, {"ticket_id": "e", "csat": None},
    )
    assert flags_of(silver, 1) == flags_of(silver, 2) == ["csat_out_of_range"]
    assert silver.loc[1, "csat"] == 0.0 and silver.loc[[1, 2], "csat_valid"].isna().all()
    assert list(silver.loc[[3, 4], "csat_valid"]) == [5.0, 1.0]
    assert flags_of(silver, 5) == [] and silver.loc[[5], "csat_valid"].isna().all()


def test_tk02_resolved_before_created_is_quarantined_before_ri01(conform):
    before = D - dt.timedelta(days=1)
    silver, quarantine = conform(
        "support_tickets",
        {"resolved_at": before},
        {"ticket_id": "b", "resolved_at": before, "org_id": "org_zzz"},
        {"ticket_id": "c", "resolved_at": D},
    )
    assert list(quarantine.sort_index().dq_rule) == ["TK-02", "TK-02"]
    assert list(silver.index) == [3] and silver.loc[3, "resolution_hours"] == 0.0


def test_resolution_hours_and_unresolved_tickets(conform):
    silver, _ = conform("support_tickets", {}, {"ticket_id": "b", "resolved_at": None})
    assert silver.loc[1, "resolution_hours"] == 48.0
    assert silver.loc[[2], "resolution_hours"].isna().all() and flags_of(silver, 2) == []


@pytest.mark.parametrize("table", ["customers_orgs", "nps_surveys"])
def test_dm01_nps_outside_minus_100_to_100_is_flagged_and_classes_follow_the_thresholds(conform, table):
    key = SOURCES_BY_TABLE[table].key[-1]
    scores = [101.0, -120.0, 100.0, 50.0, 49.5, 0.0, -1.0, -100.0, None]

    def distinct(i):
        return {key: D + dt.timedelta(days=i)} if key == "survey_date" else {key: f"org_{i}"}

    rows = [{"nps_score": s, **(distinct(i) if i else {})} for i, s in enumerate(scores)]
    orgs_rows = conform(table, *rows)[0]
    got = orgs_rows.sort_index()
    assert [flags_of(got, n) for n in (1, 2)] == [["nps_out_of_range"], ["nps_out_of_range"]]
    assert all(flags_of(got, n) == [] for n in range(3, 10))
    assert got.nps_valid.isna().tolist() == [True, True, False, False, False, False, False, False, True]
    assert got.nps_class.tolist() == [None, None, "promoter", "promoter", "passive", "passive", "detractor",
                                      "detractor", None]


def test_emails_are_masked_irreversibly_and_consistently(conform):
    silver, quarantine = conform(
        "users", {}, {"user_id": "v", "email": " ann@example.com"}, {"user_id": "w", "org_id": "org_zzz"}
    )
    expected = hashlib.sha256((EMAIL_SALT + "ann@example.com").encode()).hexdigest()
    assert "email" not in silver.columns and "email" not in quarantine.columns
    assert list(silver.email_hash) == [expected, expected] and quarantine.email_hash.iloc[0] == expected
    assert list(silver.email_domain) == ["example.com", "example.com"]
    values = " ".join(str(v) for v in [*silver.to_numpy().ravel(), *quarantine.to_numpy().ravel()]).lower()
    assert "ann@" not in values


def test_tags_are_parsed_into_an_array(conform):
    silver, _ = conform(
        "resources", {}, {"resource_id": "b", "tags_json": None}, {"resource_id": "c", "tags_json": "[env:prod"}
    )
    assert list(silver.loc[1, "tags"]) == ["env:prod", "team:ml"] and flags_of(silver, 1) == []
    assert list(silver.loc[2, "tags"]) == [] and flags_of(silver, 2) == []
    assert silver.loc[3, "tags"] is None and flags_of(silver, 3) == ["tags_unparseable"]


def test_undeclared_flags_are_refused(spark):
    table = SILVER_TABLES_BY_NAME["marketing_touches"]
    bronze = spark.createDataFrame([], table.source.schema)
    with pytest.raises(ValueError, match="differ from its declaration"):
        with_dq("marketing_touches", bronze, bronze, flags={"surprise": bronze.clicked})


def test_pandera_schemas_accept_conformed_rows_and_refuse_a_raw_email(conform):
    table = SILVER_TABLES_BY_NAME["users"]
    silver, quarantine = conform("users", {}, {"user_id": "w", "org_id": "org_zzz"}, as_spark=True)
    assert not table.pandera_schema.validate(silver).pandera.errors
    assert not table.quarantine_pandera_schema.validate(quarantine).pandera.errors
    leaked = silver.withColumn("email", silver.email_domain)
    assert "COLUMN_NOT_IN_SCHEMA" in str(dict(table.pandera_schema.validate(leaked).pandera.errors))


def test_asset_step_writes_silver_and_quarantine_and_conserves_rows(spark, tmp_path):
    lake = LakeResource(root=str(tmp_path / "lake"), landing=str(tmp_path / "landing"))
    tickets = SOURCES_BY_TABLE["support_tickets"]
    rows = [
        {**DEFAULTS["support_tickets"], "ticket_id": "a"},
        {**DEFAULTS["support_tickets"], "ticket_id": "b", "csat": 7.0, "severity": "urgent"},
        {**DEFAULTS["support_tickets"], "ticket_id": "c", "org_id": "org_zzz"},
        {**DEFAULTS["support_tickets"], "ticket_id": "d", "resolved_at": D - dt.timedelta(days=3)},
    ]
    lake.write(spark.createDataFrame(
        [tuple(r[c] for c, _ in tickets.columns) + (n, "t.csv", INGEST_TS) for n, r in enumerate(rows, 1)],
        tickets.schema,
    ), "bronze", "support_tickets")
    orgs = SOURCES_BY_TABLE["customers_orgs"]
    lake.write(spark.createDataFrame(
        [tuple(DEFAULTS["customers_orgs"][c] for c, _ in orgs.columns) + (1, "o.csv", INGEST_TS)], orgs.schema
    ), "bronze", "customers_orgs")

    results = conform_table(SILVER_TABLES_BY_NAME["support_tickets"], spark, lake)
    silver_md = results[0].metadata
    assert silver_md["dagster/row_count"] == 2 and silver_md["rows_in"] == 4 and silver_md["rows_quarantined"] == 2
    assert silver_md["quarantined_by_rule"].data == {"TK-02": 1, "RI-01": 1}
    assert silver_md["flags"].data == {
        "csat_out_of_range": 1, "missing_created_at": 0, "missing_sla_breached": 0,
        "unknown_category": 0, "unknown_severity": 1,
    }
    checks = {(r.asset_key.to_user_string(), r.check_name): r.passed for r in results[2:]}
    assert checks == {
        ("silver/support_tickets", "pandera_schema"): True,
        ("silver/support_tickets_quarantine", "pandera_schema"): True,
        ("silver/support_tickets", "conservation"): True,
    }
    held = lake.read(spark, "silver", "support_tickets_quarantine").toPandas()
    assert sorted(held.ticket_id) == ["c", "d"] and (held.rejected_ts == INGEST_TS).all()

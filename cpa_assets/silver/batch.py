"""Silver batch sources: the seven bronze CSV snapshots conformed under the contract's RI-01, BI-*,
TK-*, DM-* rules. Every bronze row lands either in silver (with `dq_flags`) or in quarantine (with
`dq_rule` and `rejected_ts`); one multi-asset serves all seven, table by table."""

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg
import pandera.pyspark as pa
import pyspark.sql.types as T
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from cpa_assets.bronze.batch import SOURCES_BY_TABLE, CsvSource, bronze_key, read_bronze
from cpa_assets.checks import equality_result, schema_spec, spark_schema, spark_schema_result
from cpa_assets.contract import DOCUMENTED_VALUES
from cpa_assets.metadata import collect_and_write_pair
from cpa_assets.preview import markdown_preview
from cpa_assets.subsets import selected_results

from cpa_resources import LakeResource

LINEAGE = ("row_no", "source_file", "ingest_ts")

# Emails become a stable pseudonym: equal addresses hash alike (so users can still be counted and
# joined) but the address cannot be read back. Production sets a secret salt in CPA_EMAIL_SALT.
EMAIL_SALT = os.environ.get("CPA_EMAIL_SALT", "cpa-cloud-provider-analytics")

CSAT_RANGE = (1, 5)
NPS_RANGE = (-100, 100)
# The scores are organisation-level NPS (% promoters − % detractors, −100..100), not one
# respondent's 0..10 answer. Below 0 an org has more detractors than promoters; from 50 on the
# score is conventionally "excellent", i.e. promoters clearly dominate; in between it is passive.
NPS_PROMOTER_FROM = 50
NPS_PASSIVE_FROM = 0
NPS_CLASSES = ("promoter", "passive", "detractor")


@dataclass(frozen=True)
class SilverTable:
    """How one bronze CSV snapshot becomes silver: its rules, flags and the columns it adds or drops.

    `rules` are the quarantine rules in precedence order (a row failing several is held under the
    first); `flags` are the `dq_flags` values besides DM-02's `unknown_<column>` ones."""

    table: str
    conform: Callable[[DataFrame, DataFrame], DataFrame]
    rules: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    added: tuple[T.StructField, ...] = ()
    dropped: tuple[str, ...] = ()
    checks: dict[str, list[pa.Check]] = field(default_factory=dict, compare=False)

    @property
    def source(self) -> CsvSource:
        return SOURCES_BY_TABLE[self.table]

    @property
    def categorical(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.source.columns if name in DOCUMENTED_VALUES)

    @property
    def all_flags(self) -> tuple[str, ...]:
        return self.flags + tuple(f"unknown_{name}" for name in self.categorical)

    @property
    def silver_key(self) -> dg.AssetKey:
        return dg.AssetKey(["silver", self.table])

    @property
    def quarantine_key(self) -> dg.AssetKey:
        return dg.AssetKey(["silver", f"{self.table}_quarantine"])

    @property
    def schema(self) -> T.StructType:
        return spark_schema(self.pandera_schema)

    @property
    def quarantine_schema(self) -> T.StructType:
        return spark_schema(self.quarantine_pandera_schema)

    def _columns(self, checked: bool) -> dict[str, pa.Column]:
        """The bronze columns kept, those the table adds, its flags, then the bronze lineage."""
        bronze = self.source.schema
        fields = [
            *(f for f in bronze.fields if f.name not in LINEAGE + self.dropped),
            *self.added,
            T.StructField("dq_flags", T.ArrayType(T.StringType())),
            *(bronze[name] for name in LINEAGE),
        ]
        not_null = {*self.source.key, "org_id", "dq_flags", *LINEAGE}
        return {
            f.name: pa.Column(
                f.dataType, nullable=f.name not in not_null, checks=self.checks.get(f.name, []) if checked else []
            )
            for f in fields
        }

    @property
    def pandera_schema(self) -> pa.DataFrameSchema:
        """Exactly the silver columns (strict, so a dropped raw column cannot come back), keys and
        org_id never null, plus the table's own value checks."""
        return pa.DataFrameSchema(self._columns(checked=True), strict=True)

    @property
    def quarantine_pandera_schema(self) -> pa.DataFrameSchema:
        """The silver columns without silver's value promises (quarantined rows break them), a known rule."""
        columns = self._columns(checked=False) | {
            "org_id": pa.Column(T.StringType(), nullable=True),
            "dq_rule": pa.Column(T.StringType(), nullable=False, checks=[pa.Check.isin(list(self.rules))]),
            "rejected_ts": pa.Column(T.TimestampType(), nullable=False),
        }
        return pa.DataFrameSchema(columns, strict=True)


def with_dq(
    name: str,
    bronze: DataFrame,
    orgs: DataFrame,
    rules: dict[str, Column] | None = None,
    flags: dict[str, Column] | None = None,
) -> DataFrame:
    """Bronze rows with `dq_rule` (null unless quarantined) and `dq_flags`.

    RI-01 closes the rule list of every table but customers_orgs (the reference itself); DM-02 adds
    `unknown_<column>` for each categorical column whose value (null included) is outside its
    documented set. `rules`/`flags` must name exactly the table's declared ones."""
    table = SILVER_TABLES_BY_NAME[name]
    rules, flags = dict(rules or {}), dict(flags or {})
    if table.table != "customers_orgs":
        known = orgs.select(F.col("org_id").alias("_known_org")).distinct()
        bronze = bronze.join(F.broadcast(known), bronze.org_id == known._known_org, "left")
        rules["RI-01"] = F.col("_known_org").isNull()
    for column in table.categorical:
        flags[f"unknown_{column}"] = ~F.coalesce(F.col(column).isin(*DOCUMENTED_VALUES[column]), F.lit(False))
    if tuple(rules) != table.rules or tuple(flags) != table.all_flags:
        raise ValueError(f"{table.table}: rules {tuple(rules)} / flags {tuple(flags)} differ from its declaration")
    rule = F.lit(None).cast("string")
    for rule_name, condition in reversed(rules.items()):
        rule = F.when(condition, F.lit(rule_name)).otherwise(rule)
    flagged = F.filter(
        F.array(*[F.when(condition, F.lit(flag)) for flag, condition in flags.items()]).cast("array<string>"),
        lambda flag: flag.isNotNull(),
    )
    return bronze.select(*table.source.schema.fieldNames(), rule.alias("dq_rule"), flagged.alias("dq_flags"))


def valid_nps(column: str = "nps_score") -> Column:
    return F.when(F.col(column).between(*NPS_RANGE), F.col(column))


def nps_class(valid: Column) -> Column:
    """promoter from 50, passive from 0, detractor below 0; null when the score is missing or invalid."""
    return (
        F.when(valid >= NPS_PROMOTER_FROM, F.lit("promoter"))
        .when(valid >= NPS_PASSIVE_FROM, F.lit("passive"))
        .when(valid.isNotNull(), F.lit("detractor"))
    )


def _nps_out_of_range() -> Column:
    return F.col("nps_score").isNotNull() & ~F.col("nps_score").between(*NPS_RANGE)


def conform_orgs(bronze: DataFrame, orgs: DataFrame) -> DataFrame:
    """DM-01 (nps_score outside −100..100: flagged, `nps_valid` null), DM-02; `nps_class`."""
    checked = with_dq("customers_orgs", bronze, orgs, flags={"nps_out_of_range": _nps_out_of_range()})
    return checked.withColumn("nps_valid", valid_nps()).withColumn("nps_class", nps_class(F.col("nps_valid")))


def conform_users(bronze: DataFrame, orgs: DataFrame) -> DataFrame:
    """RI-01, DM-02 (role); the email replaced by a salted SHA-256 of its lower-cased form and its domain."""
    email = F.lower(F.trim(F.col("email")))
    checked = with_dq("users", bronze, orgs)
    return checked.withColumn("email_hash", F.sha2(F.concat(F.lit(EMAIL_SALT), email), 256)).withColumn(
        "email_domain", F.when(email.contains("@"), F.substring_index(email, "@", -1))
    )


def conform_resources(bronze: DataFrame, orgs: DataFrame) -> DataFrame:
    """RI-01, DM-02 (service, region, state); `tags` parsed from `tags_json` (no tags → empty array,
    unparseable → null and flagged `tags_unparseable`)."""
    parsed = F.from_json(F.col("tags_json"), "array<string>")
    checked = with_dq(
        "resources", bronze, orgs, flags={"tags_unparseable": F.col("tags_json").isNotNull() & parsed.isNull()}
    )
    return checked.withColumn(
        "tags", F.when(F.col("tags_json").isNull(), F.array().cast("array<string>")).otherwise(parsed)
    )


def conform_billing(bronze: DataFrame, orgs: DataFrame) -> DataFrame:
    """BI-01 (null credits → 0, flagged), BI-02 (USD with a rate ≠ 1: `fx_to_usd` 1.0, the rate kept in
    `exchange_rate_to_usd`, flagged), BI-03 (subtotal and taxes of opposite signs, flagged), RI-01,
    DM-02 (currency). A non-USD invoice without a rate is flagged and has no `fx_to_usd`."""
    usd = F.col("currency") == "USD"
    rate = F.col("exchange_rate_to_usd")
    checked = with_dq(
        "billing_monthly", bronze, orgs,
        flags={
            "credits_missing": F.col("credits").isNull(),
            "usd_rate_not_1": usd & (rate != 1.0),
            "subtotal_taxes_sign_differ": F.signum("subtotal") * F.signum("taxes") < 0,
            "missing_exchange_rate": ~F.coalesce(usd, F.lit(False)) & rate.isNull(),
        },
    )
    return checked.withColumn("credits", F.coalesce(F.col("credits"), F.lit(0.0))).withColumn(
        "fx_to_usd", F.when(usd, F.lit(1.0)).otherwise(rate)
    )


def conform_tickets(bronze: DataFrame, orgs: DataFrame) -> DataFrame:
    """TK-02 (resolved before created → quarantine), RI-01, TK-01 (csat outside 1..5: flagged and
    `csat_valid` null, so averages skip it), DM-02 (category, severity); `resolution_hours`
    (null while unresolved)."""
    csat = F.col("csat")
    checked = with_dq(
        "support_tickets", bronze, orgs,
        rules={"TK-02": F.col("resolved_at") < F.col("created_at")},
        flags={
            "csat_out_of_range": csat.isNotNull() & ~csat.between(*CSAT_RANGE),
            "missing_created_at": F.col("created_at").isNull(),
            "missing_sla_breached": F.col("sla_breached").isNull(),
        },
    )
    return checked.withColumn("csat_valid", F.when(csat.between(*CSAT_RANGE), csat)).withColumn(
        "resolution_hours", (F.datediff("resolved_at", "created_at") * 24).cast("double")
    )


def conform_touches(bronze: DataFrame, orgs: DataFrame) -> DataFrame:
    """RI-01, DM-02 (campaign, channel)."""
    return with_dq("marketing_touches", bronze, orgs)


def conform_nps(bronze: DataFrame, orgs: DataFrame) -> DataFrame:
    """RI-01, DM-01 (nps_score outside −100..100: flagged, `nps_valid` null); `nps_class`."""
    checked = with_dq("nps_surveys", bronze, orgs, flags={"nps_out_of_range": _nps_out_of_range()})
    return checked.withColumn("nps_valid", valid_nps()).withColumn("nps_class", nps_class(F.col("nps_valid")))


_NPS_COLUMNS = (T.StructField("nps_valid", T.DoubleType()), T.StructField("nps_class", T.StringType()))
_NPS_CHECKS = {"nps_valid": [pa.Check.in_range(*NPS_RANGE)], "nps_class": [pa.Check.isin(list(NPS_CLASSES))]}

SILVER_TABLES = (
    SilverTable("customers_orgs", conform_orgs, flags=("nps_out_of_range",), added=_NPS_COLUMNS, checks=_NPS_CHECKS),
    SilverTable(
        "users", conform_users, rules=("RI-01",), dropped=("email",),
        added=(T.StructField("email_hash", T.StringType()), T.StructField("email_domain", T.StringType())),
        checks={"email_hash": [pa.Check.str_matches(r"^[0-9a-f]{64}$")]},
    ),
    SilverTable(
        "resources", conform_resources, rules=("RI-01",), flags=("tags_unparseable",),
        added=(T.StructField("tags", T.ArrayType(T.StringType())),),
    ),
    SilverTable(
        "billing_monthly", conform_billing, rules=("RI-01",),
        flags=("credits_missing", "usd_rate_not_1", "subtotal_taxes_sign_differ", "missing_exchange_rate"),
        added=(T.StructField("fx_to_usd", T.DoubleType()),),
    ),
    SilverTable(
        "support_tickets", conform_tickets, rules=("TK-02", "RI-01"),
        flags=("csat_out_of_range", "missing_created_at", "missing_sla_breached"),
        added=(T.StructField("csat_valid", T.DoubleType()), T.StructField("resolution_hours", T.DoubleType())),
        checks={"csat_valid": [pa.Check.in_range(*CSAT_RANGE)], "resolution_hours": [pa.Check.ge(0)]},
    ),
    SilverTable("marketing_touches", conform_touches, rules=("RI-01",)),
    SilverTable(
        "nps_surveys", conform_nps, rules=("RI-01",), flags=("nps_out_of_range",), added=_NPS_COLUMNS,
        checks=_NPS_CHECKS,
    ),
)
SILVER_TABLES_BY_NAME = {table.table: table for table in SILVER_TABLES}


def split_silver(table: SilverTable, conformed: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(silver, quarantine) from conformed rows; both carry the conformed (masked) columns."""
    silver = conformed.where(F.col("dq_rule").isNull())
    # The delivery time of the file decides the quarantine time, so re-running changes nothing.
    quarantine = conformed.where(F.col("dq_rule").isNotNull()).withColumn("rejected_ts", F.col("ingest_ts"))
    return silver.select(*table.schema.fieldNames()), quarantine.select(*table.quarantine_schema.fieldNames())


def read_silver(spark: SparkSession, lake: LakeResource, table: str) -> DataFrame:
    return lake.read(spark, "silver", table, SILVER_TABLES_BY_NAME[table].schema)


def conform_table(table: SilverTable, spark: SparkSession, lake: LakeResource) -> list:
    """Silver and quarantine for one table: its materialisations and check results. The conformed
    rows are split once, collected once (a few thousand rows) for the figures, previews and checks,
    and the two tables written side by side; the rows each table holds are counted from its log."""
    bronze = read_bronze(spark, lake, table.table)
    orgs = read_bronze(spark, lake, "customers_orgs")
    conformed = table.conform(bronze, orgs).cache()
    silver, quarantine = split_silver(table, conformed)
    written, held, silver_path, quarantine_path = collect_and_write_pair(
        lake, "silver", (table.table, f"{table.table}_quarantine"), (silver, quarantine), conformed)
    n_bronze = lake.row_count("bronze", table.table)
    n_silver, n_held = lake.row_count("silver", table.table), lake.row_count("silver", f"{table.table}_quarantine")
    by_rule = {rule: 0 for rule in table.rules} | {k: int(n) for k, n in held["dq_rule"].value_counts().items()}
    by_flag = {flag: 0 for flag in table.all_flags} | {
        k: int(n) for k, n in written["dq_flags"].explode().dropna().value_counts().items()}
    return [
        dg.MaterializeResult(
            asset_key=table.silver_key,
            metadata={
                "dagster/row_count": n_silver,
                "rows_in": n_bronze,
                "rows_quarantined": n_held,
                "flags": dg.MetadataValue.json(by_flag),
                "quarantined_by_rule": dg.MetadataValue.json(by_rule),
                **lake.location(silver_path),
                "preview": dg.MetadataValue.md(markdown_preview(written)),
            },
        ),
        dg.MaterializeResult(
            asset_key=table.quarantine_key,
            metadata={
                "dagster/row_count": n_held,
                "by_rule": dg.MetadataValue.json(by_rule),
                **lake.location(quarantine_path),
            },
        ),
        spark_schema_result(table.pandera_schema, written, table.silver_key),
        spark_schema_result(table.quarantine_pandera_schema, held, table.quarantine_key),
        equality_result("conservation", table.silver_key, {table.table: n_bronze}, {table.table: n_silver + n_held}),
    ]


def _specs(table: SilverTable) -> list[dg.AssetSpec]:
    reference = dg.AssetKey(["bronze", "customers_orgs"])
    bronze = bronze_key(table.source)
    rules = ", ".join(table.rules) or "none: it is the reference of RI-01"
    return [
        dg.AssetSpec(
            table.silver_key,
            deps=list(dict.fromkeys([bronze, reference])),
            group_name="silver",
            kinds={"spark", "delta"},
            description=f"`{table.table}` conformed: {(table.conform.__doc__ or '').strip()} "
            f"Quarantine rules: {rules}. Flags in `dq_flags`: {', '.join(table.all_flags)}.",
            skippable=True,
        ),
        dg.AssetSpec(
            table.quarantine_key,
            deps=[bronze],
            group_name="silver",
            kinds={"spark", "delta"},
            description=f"Rows of `{table.table}` held back from silver, conformed like silver, with the first "
            f"rule they fail (`dq_rule`: {rules}) and `rejected_ts` (the bronze `ingest_ts`).",
            skippable=True,
        ),
    ]


def _check_specs(table: SilverTable) -> list[dg.AssetCheckSpec]:
    return [
        schema_spec(table.silver_key),
        schema_spec(table.quarantine_key),
        dg.AssetCheckSpec(
            "conservation",
            asset=table.silver_key,
            blocking=True,
            description="Bronze rows = silver rows + quarantined rows.",
        ),
    ]


def build_silver_csv(table: SilverTable) -> dg.AssetsDefinition:
    """One step per CSV source: a source whose bronze failed skips its own silver alone."""

    @dg.multi_asset(
        name=f"silver_{table.table}",
        specs=_specs(table),
        check_specs=_check_specs(table),
        can_subset=True,
    )
    def _asset(context: dg.AssetExecutionContext, spark: LazyPySparkResource, lake: LakeResource):
        results = conform_table(table, spark.spark_session, lake)
        yield from selected_results(context, results)
        rows = results[0].metadata
        context.log.info(
            f"silver {table.table}: {rows['rows_in']} bronze = {rows['dagster/row_count']} silver"
            f" + {rows['rows_quarantined']} quarantined {rows['quarantined_by_rule'].data}"
        )

    _asset.__doc__ = f"Silver snapshot of `{table.table}`: conformed, flagged, and its quarantine."
    return _asset


silver_csv_assets = [build_silver_csv(table) for table in SILVER_TABLES]

"""Bronze CSV ingestion: header by name, BOM, unknown and missing columns, impossible dates, duplicates."""

import pytest

from cpa_assets.bronze.batch import SOURCES_BY_TABLE, LandingColumnsError, ingest_csv
from cpa_resources import LakeResource

HEADER = "org_id,org_name,industry,hq_region,plan_tier,is_enterprise,signup_date,sales_rep,lifecycle_stage,marketing_source,nps_score"
ROWS = [
    "org_a,Acme,Retail,us-east,pro,True,2025-05-26,rep_a,active,ads,12.0",
    "org_b,Beta,Health,eu-west,free,False,2025-02-30,rep_b,lead,event,",
    "org_a,Acme again,Retail,us-east,pro,True,2025-05-27,rep_a,active,ads,3.0",
    ",Nobody,Retail,us-east,pro,True,2025-05-26,rep_a,active,ads,1.0",
    'org_c,"Gamma, Inc.",Retail,us-east,pro,False,2025-06-01,rep_c,active,ads,-4.0',
]


@pytest.fixture
def lake(tmp_path):
    (tmp_path / "landing").mkdir()
    return LakeResource(root=str(tmp_path / "lake"), landing=str(tmp_path / "landing"))


def land(lake, text: str, encoding: str = "utf-8"):
    (lake.landing_dir() / "customers_orgs.csv").write_text(text, encoding=encoding)


def ingest(spark, lake):
    results = ingest_csv(SOURCES_BY_TABLE["customers_orgs"], spark, lake)
    rows = lake.read(spark, "bronze", "customers_orgs").toPandas().set_index("org_id")
    rejects = lake.read(spark, "bronze", "customers_orgs_rejects").toPandas()
    return results, rows, rejects


def test_rows_are_typed_deduplicated_and_rejected_with_reasons(spark, lake):
    land(lake, "\n".join([HEADER, *ROWS]) + "\n")
    results, rows, rejects = ingest(spark, lake)

    assert sorted(rows.index) == ["org_a", "org_c"]
    assert rows.loc["org_a", "org_name"] == "Acme" and rows.loc["org_c", "org_name"] == "Gamma, Inc."
    assert bool(rows.loc["org_a", "is_enterprise"]) is True and rows.loc["org_c", "nps_score"] == -4.0
    assert sorted(zip(rejects.row_no, rejects.reason)) == [
        (2, "bad_date:signup_date"), (3, "duplicate_key"), (4, "missing_key")
    ]
    assert '"signup_date":"2025-02-30"' in rejects.set_index("row_no").loc[2, "raw_row"]
    assert all(r.passed for r in results if hasattr(r, "passed")), "checks must pass, conservation included"


def test_a_bom_and_any_column_order_are_tolerated(spark, lake):
    columns = HEADER.split(",")
    reordered = ",".join(reversed(columns))
    row = ",".join(reversed(ROWS[0].split(",")))
    land(lake, "\ufeff" + "\n".join([reordered, row]) + "\n", encoding="utf-8")
    _, rows, _ = ingest(spark, lake)
    assert list(rows.index) == ["org_a"] and rows.loc["org_a", "nps_score"] == 12.0


def test_a_missing_column_names_file_and_column_and_writes_nothing(spark, lake):
    land(lake, "\n".join([HEADER.replace(",sales_rep", ""), "org_a,Acme,Retail,us-east,pro,True,2025-05-26,active,ads,1"]))
    with pytest.raises(LandingColumnsError, match=r"customers_orgs\.csv: missing column\(s\) sales_rep"):
        ingest_csv(SOURCES_BY_TABLE["customers_orgs"], spark, lake)
    assert not lake.exists("bronze", "customers_orgs")


def test_an_unknown_column_names_file_and_column_and_writes_nothing(spark, lake):
    land(lake, "\n".join([HEADER + ",favourite_colour", ROWS[0] + ",blue"]))
    with pytest.raises(LandingColumnsError, match=r"customers_orgs\.csv: unknown column\(s\) favourite_colour"):
        ingest_csv(SOURCES_BY_TABLE["customers_orgs"], spark, lake)
    assert not lake.exists("bronze", "customers_orgs")

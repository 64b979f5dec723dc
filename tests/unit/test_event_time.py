"""One definition of an event's date and of a blank line, shared by the sensor and bronze."""

import base64
import json

from pyspark.sql import functions as F

from cpa_assets.event_time import is_blank, line_dates, spark_timestamp, utc_date
from tests.unit.test_bronze_usage import event, split

STAMPS = {
    "2025-07-10T01:30:00+02:00": "2025-07-09",
    "2025-07-09T23:30:00-02:00": "2025-07-10",
    "2025-07-10T01:30:00+0200": "2025-07-09",
    "2025-07-10T01:30:00Z": "2025-07-10",
    "2025-07-10T23:59:59.999999Z": "2025-07-10",
    "2025-07-10T23:59:59.5-00:30": "2025-07-11",
    "2025-07-10T12:00:00": "2025-07-10",
    "2025-07-10 12:00": "2025-07-10",
    "2025-07-10": "2025-07-10",
    "2025-07-32T10:00:00Z": None,
    "2025-02-29T10:00:00Z": None,
    "17/07/2025 10:61": None,
    "not-a-timestamp": None,
    " 2025-07-10T01:30:00Z": None,
    "2025-07-10T25:00:00Z": None,
}


def test_the_sensor_dates_an_event_by_the_utc_date_of_its_instant():
    assert {stamp: utc_date(stamp) for stamp in STAMPS} == STAMPS
    assert utc_date(1752111000) is None and utc_date(None) is None


def test_spark_stores_every_timestamp_under_the_date_the_sensor_plans(spark):
    frame = spark.createDataFrame([(s,) for s in STAMPS], "text string")
    stored = {r.text: (str(r.day) if r.day else None)
              for r in frame.select("text", F.to_date(spark_timestamp(F.col("text"))).alias("day")).collect()}
    assert stored == STAMPS


def test_a_line_gives_every_date_it_may_be_stored_under_even_when_python_cannot_parse_it():
    assert line_dates(json.dumps(event(timestamp="2025-07-10T01:30:00+02:00")).encode()) == {"2025-07-09"}
    # Not JSON to Python, but a timestamp is there: planned all the same (a superset is harmless).
    assert line_dates(b'{"Timestamp": "2025-07-10T00:10:00Z", "event_id": "e1",}') == {"2025-07-10"}
    assert line_dates(b'{"event_id": "e1", "timestamp": "soon"}') == set()


def test_blank_lines_are_the_same_for_the_ledger_and_the_readers(spark, tmp_path):
    lines = [b"\t", b" \r", b"\x0b\x0c", b"", "\u00a0".encode(), json.dumps(event("e1")).encode()]
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    _, rejects, _ = split(spark, [path])
    # The no-break space is not blank: it is counted and rejected, as the ledger counts it.
    assert [is_blank(line) for line in lines] == [True, True, True, True, False, False]
    assert list(rejects.reason) == ["malformed_json"] and list(rejects.line_no) == [5]


def test_invalid_utf8_is_rejected_with_its_bytes_and_never_merges_two_ids(spark, tmp_path):
    first = b'{"event_id": "evt_\xff1", "timestamp": "2025-08-18T14:04:00Z", "org_id": "org_a"}'
    second = b'{"event_id": "evt_\xfe1", "timestamp": "2025-08-18T14:04:00Z", "org_id": "org_a"}\r'
    fine = json.dumps(event("evt_\u00e91")).encode()
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"\n".join([first, fine, second]) + b"\n")

    events, rejects, duplicates = split(spark, [path])

    assert list(events.event_id) == ["evt_\u00e91"] and duplicates.empty
    assert list(rejects.reason) == ["invalid_utf8", "invalid_utf8"] and list(rejects.line_no) == [1, 3]
    assert [base64.b64decode(b) for b in rejects.raw_base64] == [first, second]
    assert rejects.raw_line.isna().all()

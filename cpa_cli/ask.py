"""`cpa ask`: answer a serving question by reading one Cassandra partition with a prepared statement."""

import argparse
import datetime as dt

from cpa_resources import CassandraResource

QUESTIONS = {
    "p1": (
        "SELECT usage_date, service, daily_cost_usd, requests, cpu_hours, storage_gb_hours, genai_tokens,"
        " carbon_kg, event_count FROM {keyspace}.org_daily_usage_by_service"
        " WHERE org_id = ? AND usage_date >= ? AND usage_date <= ?"
    ),
    "p2": (
        "SELECT rank, service, total_cost_usd FROM {keyspace}.org_top_services_14d"
        " WHERE org_id = ? AND as_of_date = ? LIMIT ?"
    ),
}


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {text!r}") from exc


def query(cassandra: CassandraResource, question: str, *args) -> tuple[list[str], list[tuple]]:
    session = cassandra.session()
    result = session.execute(session.prepare(QUESTIONS[question].format(keyspace=cassandra.keyspace)), args)
    return list(result.column_names), [tuple(row) for row in result]


def format_table(columns: list[str], rows: list[tuple]) -> str:
    def cell(value) -> str:
        return f"{value:,.4f}" if isinstance(value, float) else str(value)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths))) for row in cells]
    return "\n".join(lines + [f"({len(rows)} rows)"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    questions = parser.add_subparsers(dest="question", required=True)
    p1 = questions.add_parser("p1", help="cost and requests of an org per service and day over a date range")
    p1.add_argument("--org", required=True)
    p1.add_argument("--from", dest="start", type=_date, required=True)
    p1.add_argument("--to", dest="end", type=_date, required=True)
    p2 = questions.add_parser("p2", help="the N services of an org with the highest cost over 14 days ending on a date")
    p2.add_argument("--org", required=True)
    p2.add_argument("--date", type=_date, required=True)
    p2.add_argument("--top", type=int, default=3)


def run(args: argparse.Namespace) -> int:
    cassandra = CassandraResource.from_env()
    if args.question == "p1":
        columns, rows = query(cassandra, "p1", args.org, args.start, args.end)
    else:
        columns, rows = query(cassandra, "p2", args.org, args.date, args.top)
    print(format_table(columns, rows))
    return 0

"""`cpa ask`: answer a serving question by reading one Cassandra partition with a prepared statement."""

import argparse
import datetime as dt
from dataclasses import dataclass

from cpa_resources import CassandraResource


@dataclass(frozen=True)
class Question:
    """A contract question: the statement that reads its one partition, and its arguments."""

    help: str
    cql: str


QUESTIONS = {
    "p1": Question(
        "cost and usage of an org per service and day over a date range",
        "SELECT usage_date, service, daily_cost_usd, requests, cpu_hours, storage_gb_hours, genai_tokens,"
        " carbon_kg, event_count FROM {keyspace}.org_daily_usage_by_service"
        " WHERE org_id = ? AND usage_date >= ? AND usage_date <= ?",
    ),
    "p2": Question(
        "the N services of an org with the highest cost over the 14 days ending on a date",
        "SELECT rank, service, total_cost_usd FROM {keyspace}.org_top_services_14d"
        " WHERE org_id = ? AND as_of_date = ? LIMIT ?",
    ),
    "p3": Question(
        "an org's daily tickets, critical tickets and SLA-breach rate over the 30 days ending on a date",
        "SELECT ticket_date, tickets, critical_tickets, sla_breaches, sla_breach_rate, open_tickets, csat_avg,"
        " avg_resolution_hours FROM {keyspace}.tickets_by_org_date"
        " WHERE org_id = ? AND ticket_date >= ? AND ticket_date <= ?",
    ),
    "p4": Question(
        "an org's monthly revenue with credits and taxes, in USD",
        "SELECT month, currency, subtotal, credits, taxes, fx_to_usd, revenue_usd, invoices"
        " FROM {keyspace}.revenue_by_org_month WHERE org_id = ?",
    ),
    "p5": Question(
        "an org's daily GenAI tokens and their estimated cost over a date range",
        "SELECT usage_date, genai_tokens, genai_cost_usd, genai_events FROM {keyspace}.genai_tokens_by_org_date"
        " WHERE org_id = ? AND usage_date >= ? AND usage_date <= ?",
    ),
    "p6": Question(
        "the cost anomalies of a day: org × service rows that at least one detector flags",
        "SELECT org_id, service, daily_cost_usd, baseline_days, baseline_median, zscore, robust_zscore, p99_ratio,"
        " is_anomaly_zscore, is_anomaly_mad, is_anomaly_p99 FROM {keyspace}.cost_anomalies_by_date"
        " WHERE usage_date = ?",
    ),
}


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {text!r}") from exc


def query(cassandra: CassandraResource, question: str, *args) -> tuple[list[str], list[tuple]]:
    session = cassandra.session()
    statement = session.prepare(QUESTIONS[question].cql.format(keyspace=cassandra.keyspace))
    result = session.execute(statement, args)
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
    for name, question in QUESTIONS.items():
        sub = questions.add_parser(name, help=question.help)
        if name in ("p1", "p2", "p3", "p4", "p5"):
            sub.add_argument("--org", required=True)
        if name in ("p1", "p5"):
            sub.add_argument("--from", dest="start", type=_date, required=True)
            sub.add_argument("--to", dest="end", type=_date, required=True)
        if name in ("p2", "p3", "p6"):
            sub.add_argument("--date", type=_date, required=True)
        if name == "p2":
            sub.add_argument("--top", type=int, default=3)


def arguments_of(args: argparse.Namespace) -> tuple:
    """The bound values of the question's statement, in order."""
    if args.question in ("p1", "p5"):
        return (args.org, args.start, args.end)
    if args.question == "p2":
        return (args.org, args.date, args.top)
    if args.question == "p3":
        return (args.org, args.date - dt.timedelta(days=29), args.date)
    if args.question == "p4":
        return (args.org,)
    return (args.date,)


def run(args: argparse.Namespace) -> int:
    columns, rows = query(CassandraResource.from_env(), args.question, *arguments_of(args))
    print(format_table(columns, rows))
    return 0

"""Entry point of the `cpa` command."""

import argparse
import importlib
import os
import sys

from cpa_resources.lake import REPO_ROOT
from cpa_resources.local_postgres import INSTANCE_ENV


def _server(module_name: str):
    """The handler of `cpa cassandra|postgres|spark start|stop|status`: one local server's module."""

    def handle(args: argparse.Namespace) -> int:
        module = importlib.import_module(f"cpa_resources.{module_name}")
        try:
            if args.action == "start":
                module.start()
            elif args.action == "stop":
                module.stop()
            else:
                print(module.describe_status())
        except RuntimeError as problem:  # a port taken, a server that died at start: say why, no traceback
            print(f"cpa: {problem}", file=sys.stderr)
            return 1
        return 0

    return handle


def _cluster(args: argparse.Namespace) -> int:
    from cpa_resources import local_cluster

    if args.action == "start":
        try:
            local_cluster.start()
        except RuntimeError as problem:  # addresses taken, a process that died at start: say why, no traceback
            print(f"cpa cluster start: {problem}", file=sys.stderr)
            return 1
    elif args.action == "stop":
        local_cluster.stop()
    else:
        print(local_cluster.describe_status())
    return 0


def build_parser() -> argparse.ArgumentParser:
    from cpa_cli import ask, backfill, calendar_env, evaluate, generate, replay, report, versions

    parser = argparse.ArgumentParser(prog="cpa", description="Cloud Provider Analytics pipeline")
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="write deterministic landing data with every known defect")
    generate.add_arguments(gen)
    gen.set_defaults(handler=generate.run)

    for name, module, what in (
        ("cassandra", "local_cassandra", "the local Apache Cassandra server (serving tables)"),
        ("postgres", "local_postgres", "the local PostgreSQL server (the Dagster instance's storage)"),
        ("spark", "local_spark", "the local Spark Connect server (a warm local-mode Spark for every run)"),
    ):
        server = commands.add_parser(name, help=what)
        server.add_argument("action", choices=["start", "stop", "status"])
        server.set_defaults(handler=_server(module))

    clu = commands.add_parser("cluster", help="a Spark standalone cluster and a 3-node Cassandra cluster on loopback")
    clu.add_argument("action", choices=["start", "stop", "status"])
    clu.set_defaults(handler=_cluster)

    back = commands.add_parser("backfill", help="materialise every asset for every event date in landing")
    backfill.add_arguments(back)
    back.set_defaults(handler=backfill.run)

    bounds = commands.add_parser("calendar", help="print the partition bounds that fit the landing data, as export lines")
    calendar_env.add_arguments(bounds)
    bounds.set_defaults(handler=calendar_env.run)

    judge = commands.add_parser("evaluate", help="measure the cost-anomaly detectors on generated labelled spikes")
    evaluate.add_arguments(judge)
    judge.set_defaults(handler=evaluate.run)

    deliver = commands.add_parser("replay", help="deliver event files one by one, atomically, at a given rate")
    replay.add_arguments(deliver)
    deliver.set_defaults(handler=replay.run)

    page = commands.add_parser("report", help="write one HTML page with the answers P1–P6 and their charts")
    report.add_arguments(page)
    page.set_defaults(handler=report.run)

    versions_of = commands.add_parser("history", help="list a lake table's versions (Delta Lake commits)")
    versions.add_arguments(versions_of, restoring=False)
    versions_of.set_defaults(handler=versions.history)

    back_to = commands.add_parser("restore", help="make an earlier version of a lake table current again")
    versions.add_arguments(back_to, restoring=True)
    back_to.set_defaults(handler=versions.restore)

    question = commands.add_parser("ask", help="answer a serving question from Cassandra")
    ask.add_arguments(question)
    question.set_defaults(handler=ask.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Runs started here show up in the UI that `make run` serves from the same instance folder.
    os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / ".dagster_home"))
    for name, value in INSTANCE_ENV.items():
        os.environ.setdefault(name, value)
    os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

"""Entry point of the `cpa` command."""

import argparse
import os
import sys

from cpa_resources.lake import REPO_ROOT


def _cassandra(args: argparse.Namespace) -> int:
    from cpa_resources import local_cassandra

    if args.action == "start":
        local_cassandra.start()
    elif args.action == "stop":
        local_cassandra.stop()
    else:
        print(local_cassandra.describe_status())
    return 0


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

    cas = commands.add_parser("cassandra", help="the local Apache Cassandra server")
    cas.add_argument("action", choices=["start", "stop", "status"])
    cas.set_defaults(handler=_cassandra)

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
    os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

"""`cpa replay`: deliver event files one by one into a stream folder, as a producer would.

Each file is written under a hidden temporary name and then renamed, so a watcher never sees a
half-written file."""

import argparse
import os
import shutil
import time
from pathlib import Path


def deliver(source: Path, stream: Path) -> Path:
    """Copy one file into the stream folder atomically (same-folder rename)."""
    stream.mkdir(parents=True, exist_ok=True)
    temporary = stream / f".{source.name}.tmp"
    shutil.copyfile(source, temporary)
    target = stream / source.name
    os.replace(temporary, target)
    return target


def replay(source_dir: Path, stream: Path, rate_per_min: float, limit: int | None = None) -> int:
    files = sorted(p for p in source_dir.glob("*.jsonl") if not p.name.startswith("."))[:limit]
    pause = 60.0 / rate_per_min if rate_per_min > 0 else 0.0
    for number, source in enumerate(files, 1):
        deliver(source, stream)
        print(f"cpa replay: {number}/{len(files)} {source.name} delivered at {time.strftime('%H:%M:%S')}", flush=True)
        if number < len(files):
            time.sleep(pause)
    return len(files)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", type=Path, required=True, help="folder holding *.jsonl files")
    parser.add_argument("--to", dest="stream", type=Path, required=True, help="the usage-events folder to deliver into")
    parser.add_argument("--rate", type=float, default=6.0, help="files per minute (0: as fast as possible)")
    parser.add_argument("--limit", type=int, default=None, help="deliver only the first N files")


def run(args: argparse.Namespace) -> int:
    if not args.source.is_dir():
        print(f"cpa replay: {args.source} is not a folder")
        return 2
    replay(args.source, args.stream, args.rate, args.limit)
    return 0

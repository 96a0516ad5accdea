"""Command-line options of `python -m bench` and the workload sizes they select."""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.results import GIB, MIB

__all__ = ["Options", "parse_options", "parse_size"]

_UNITS = {"": 1, "K": 1024, "M": MIB, "G": GIB}
FULL_SIZES = (64 * MIB, GIB, 4 * GIB)
QUICK_SIZES = (1 * MIB, 8 * MIB)
FULL_REPEAT = 5


@dataclass(frozen=True)
class Options:
    """What one run measures; sizes in bytes, durations in seconds."""

    sizes: tuple[int, ...]
    repeat: int
    output: Path
    quick: bool
    command: str
    s3ec_python: str | None
    concurrent_streams: int = 16
    concurrent_size: int = 256 * MIB
    small_size: int = 4096
    small_clients: int = 32
    small_seconds: float = 10.0
    worker_streams: int = 4
    worker_size: int = 256 * MIB
    peer_size: int = GIB
    range_samples: int = 100


def parse_size(text: str) -> int:
    """Parse `64M`, `1G`, `4096` or `512K` (binary units) into bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if match is None or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}; use a positive number with K, M or G, like 64M"
        )
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(parse_size(part) for part in text.split(",") if part.strip())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Start SeaweedFS and byok-proxy on 127.0.0.1, measure the "
        "proxy against direct access and against client-side encryption, "
        "and write benchmarks.md and benchmarks.png.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and one repetition, for a smoke test (under a minute)",
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        help="comma-separated object sizes of the streaming runs, like 64M,1G,4G "
        "(default: 64M,1G,4G; with --quick 1M,8M)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        help=f"repetitions of every measurement (default: {FULL_REPEAT}; "
        "with --quick 1)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("docs"),
        help="directory for benchmarks.md and benchmarks.png (default: docs)",
    )
    parser.add_argument(
        "--s3ec-python",
        help="Python interpreter that has amazon-s3-encryption-client-python; "
        "by default the bench creates a virtual environment for it in its "
        "temporary directory (skipped with --quick)",
    )
    return parser


def parse_options(arguments: Sequence[str]) -> Options:
    """Parse the command line; exit with a usage message when it is invalid."""
    parser = _parser()
    parsed = parser.parse_args(arguments)
    repeat = parsed.repeat or (1 if parsed.quick else FULL_REPEAT)
    if repeat < 1:
        parser.error(f"--repeat must be at least 1, got {repeat}")
    sizes = parsed.sizes or (QUICK_SIZES if parsed.quick else FULL_SIZES)
    if not sizes:
        parser.error("--sizes needs at least one size")
    command = " ".join([".venv/bin/python -m bench", *arguments])
    options = Options(
        sizes=tuple(sorted(set(sizes))),
        repeat=repeat,
        output=parsed.output,
        quick=parsed.quick,
        command=command,
        s3ec_python=parsed.s3ec_python,
    )
    if parsed.quick:
        return _quick(options)
    return options


def _quick(options: Options) -> Options:
    """Shrink every workload so that the whole run takes well under a minute."""
    return dataclasses.replace(
        options,
        concurrent_size=4 * MIB,
        small_seconds=1.0,
        worker_size=4 * MIB,
        peer_size=16 * MIB,
        range_samples=5,
    )

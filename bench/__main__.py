"""`python -m bench`: run every measurement and write benchmarks.md and .png.

Run it from the repository root with the project's virtual environment,
because the bench imports `proxy` and `tests.stack` from the working tree.
A measurement that fails is logged with its traceback and reported as
failed, the others still run, and the exit status is then 1.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import uvloop

from bench.chart import draw_chart
from bench.machine import describe_machine, load_average
from bench.many_streams import measure_concurrent
from bench.markdown import render
from bench.options import Options, parse_options
from bench.payload import Pattern
from bench.peers import measure_peers
from bench.primitives import PrimitiveSpeeds, measure_primitives
from bench.procstat import PeakMemory
from bench.profile import measure_profile
from bench.ranges import measure_range
from bench.report import Report
from bench.results import GIB, MIB
from bench.servers import Lab, running_lab
from bench.small import measure_small
from bench.streaming import measure_streaming, remove_largest
from bench.workers import measure_workers

log = logging.getLogger("bench")

T = TypeVar("T")
# Room for SeaweedFS's metadata and logs on top of the largest objects.
_DISK_MARGIN = GIB


def main(arguments: list[str] | None = None) -> int:
    """Run the bench; return the exit status."""
    options = parse_options(sys.argv[1:] if arguments is None else arguments)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
        datefmt="%H:%M:%S",
    )
    report = Report(
        options=options,
        machine=describe_machine(),
        started=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        load_before=load_average(),
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="byok-bench-") as temporary:
        root = Path(temporary)
        _check_disk(root, options)
        with running_lab(root) as lab:
            report.idle_rss_mib = _resident_mib(lab)
            uvloop.run(_measure_all(lab, options, report))
    report.seconds = time.monotonic() - started
    report.load_after = load_average()
    _write(report, options.output)
    return 1 if report.errors else 0


async def _measure_all(lab: Lab, options: Options, report: Report) -> None:
    pattern = Pattern()
    report.primitives = await _section(
        report, "primitives", lambda: _primitives(options)
    )
    streaming = await _section(
        report, "streaming", lambda: measure_streaming(lab, options, pattern)
    )
    if streaming is not None:
        report.streaming, largest_objects = streaming
        report.range_read = await _section(
            report, "range", lambda: measure_range(lab, options, largest_objects)
        )
        await _section(report, "clean-up", lambda: remove_largest(lab, largest_objects))
    report.profile = await _section(
        report, "profile", lambda: measure_profile(lab, options, pattern)
    )
    # Before the concurrent streams, which leave the proxy's resident set
    # at their higher peak, so that the peers compare with one stream's.
    report.peers = await _section(
        report, "peers", lambda: measure_peers(lab, options, pattern)
    )
    report.concurrent = await _section(
        report, "concurrent", lambda: measure_concurrent(lab, options, pattern)
    )
    report.small = await _section(
        report, "small", lambda: measure_small(lab, options, pattern)
    )
    report.workers = await _section(
        report, "workers", lambda: measure_workers(lab, options, pattern)
    )


async def _primitives(options: Options) -> PrimitiveSpeeds:
    return measure_primitives(options.repeat)


async def _section(
    report: Report, name: str, measure: Callable[[], Awaitable[T]]
) -> T | None:
    """Run one measurement; record its duration, or its error and go on."""
    log.info("%s: starting", name)
    started = time.monotonic()
    try:
        return await measure()
    except Exception as error:
        log.exception("%s: failed", name)
        report.errors[name] = f"{type(error).__name__}: {error}"
        return None
    finally:
        report.durations[name] = time.monotonic() - started


def _check_disk(root: Path, options: Options) -> None:
    """Exit early when the temporary directory cannot hold the largest objects."""
    needed = _DISK_MARGIN + max(
        2 * max(options.sizes),
        2 * options.concurrent_streams * options.concurrent_size,
        4 * options.peer_size,
    )
    free = shutil.disk_usage(root).free
    if free < needed:
        sys.exit(
            f"the bench needs about {needed / GIB:.1f} GiB free in {root.parent}, "
            f"which has {free / GIB:.1f} GiB; set TMPDIR to a larger disk or "
            "pass smaller --sizes"
        )


def _resident_mib(lab: Lab) -> float:
    with PeakMemory(lab.proxy_pid) as peak:
        time.sleep(0.05)
    return peak.peak_bytes / MIB


def _write(report: Report, output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / "benchmarks.md").write_text(render(report))
    draw_chart(report, output / "benchmarks.png")
    log.info("wrote %s and %s", output / "benchmarks.md", output / "benchmarks.png")


if __name__ == "__main__":
    sys.exit(main())

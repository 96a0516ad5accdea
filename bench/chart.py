"""Draw benchmarks.png: throughput and the proxy's peak memory against object size."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bench.report import Report, size_text
from bench.results import MIB, Series
from bench.streaming import OPERATIONS

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["draw_chart"]

_STYLES = {
    ("direct", "PUT"): ("tab:blue", "--", "o"),
    ("proxy", "PUT"): ("tab:blue", "-", "o"),
    ("direct", "GET"): ("tab:orange", "--", "s"),
    ("proxy", "GET"): ("tab:orange", "-", "s"),
}


def draw_chart(report: Report, path: Path) -> None:
    """Write the chart as PNG; raise ImportError if matplotlib is missing."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (speed, memory) = pyplot.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    streaming = report.streaming
    if streaming is not None and streaming.sizes:
        sizes = [result.size / MIB for result in streaming.sizes]
        for operation in OPERATIONS:
            for side in ("direct", "proxy"):
                series = [
                    getattr(result.operations[operation], f"{side}_mibps")
                    for result in streaming.sizes
                ]
                _plot(speed, sizes, series, f"{operation} {side}", (side, operation))
            peaks = [
                result.operations[operation].proxy_peak_mib
                for result in streaming.sizes
            ]
            _plot(
                memory,
                sizes,
                peaks,
                f"{operation} through the proxy",
                ("proxy", operation),
            )
        labels = [size_text(result.size) for result in streaming.sizes]
        for axes in (speed, memory):
            axes.set_xscale("log", base=2)
            axes.set_xticks(sizes, labels)
            axes.minorticks_off()
            axes.set_xlabel("object size")
            axes.grid(True, alpha=0.3)
            axes.legend(fontsize=8)
    speed.set_ylabel("throughput (MiB/s)")
    speed.set_title("One stream: median, bars min to max")
    speed.set_ylim(bottom=0)
    memory.set_ylabel("proxy peak RSS (MiB)")
    memory.set_title("Proxy peak memory during the request")
    memory.set_ylim(bottom=0)
    figure.suptitle(
        f"byok-proxy and SeaweedFS on {report.machine.hardware[0][1]}, "
        f"{report.machine.hardware[1][1]} cores; {report.started}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)


def _plot(
    axes: Axes,
    sizes: list[float],
    series: list[Series],
    label: str,
    style: tuple[str, str],
) -> None:
    colour, line, marker = _STYLES[style]
    medians = [item.median if item.values else float("nan") for item in series]
    below = [
        m - min(item.values) if item.values else 0
        for m, item in zip(medians, series, strict=True)
    ]
    above = [
        max(item.values) - m if item.values else 0
        for m, item in zip(medians, series, strict=True)
    ]
    axes.errorbar(
        sizes,
        medians,
        yerr=[below, above],
        label=label,
        color=colour,
        linestyle=line,
        marker=marker,
        capsize=3,
    )

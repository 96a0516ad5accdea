"""Turn the results of a run into the tables of benchmarks.md, with targets.

Every target is checked against the median: of the paired per-repetition
ratios for throughput comparisons, of the measured values otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.machine import Machine
from bench.many_streams import ConcurrentResult
from bench.options import Options
from bench.peers import PROXY, S3EC, TOOLS, PeersResult
from bench.primitives import PrimitiveSpeeds
from bench.profile import AES_GCM, CATEGORIES, ProfileResult
from bench.ranges import RangeResult
from bench.results import GIB, MIB, Row, Series, Table, paired_ratios
from bench.small import SmallResult
from bench.streaming import OPERATIONS, StreamingResults
from bench.workers import SIDES, WorkersResult

__all__ = ["Report", "build_tables", "size_text"]

SEALED_SEGMENT = 65536 + 16
THROUGHPUT_TARGET = 0.9
MEMORY_GROWTH_TARGET = 1.10
CONCURRENT_MEMORY_TARGET_MIB = 150
RANGE_LATENCY_TARGET = 1.5
SMALL_TARGET = 0.7
# "Far less memory" than a client that buffers whole objects: a quarter.
PEER_MEMORY_FRACTION = 0.25


@dataclass
class Report:
    """Everything one run measured, with what went wrong."""

    options: Options
    machine: Machine
    started: str
    load_before: str
    load_after: str = ""
    seconds: float = 0.0
    idle_rss_mib: float = 0.0
    streaming: StreamingResults | None = None
    range_read: RangeResult | None = None
    profile: ProfileResult | None = None
    concurrent: ConcurrentResult | None = None
    small: SmallResult | None = None
    workers: WorkersResult | None = None
    peers: PeersResult | None = None
    primitives: PrimitiveSpeeds | None = None
    errors: dict[str, str] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)


def size_text(size: int) -> str:
    """Format a byte count in the largest binary unit that divides it."""
    for unit, name in ((GIB, "GiB"), (MIB, "MiB"), (1024, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} B"


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def _at_least(series: Series, target: float) -> str:
    return _verdict(bool(series.values) and series.median >= target)


def build_tables(report: Report) -> dict[str, Table]:
    """Return the report's tables by section name, skipping sections not run."""
    tables: dict[str, Table] = {}
    if report.streaming is not None:
        tables["streaming"] = _streaming_table(report.streaming)
        tables["memory"] = _memory_table(report.streaming)
    if report.profile is not None:
        tables["profile"] = _profile_table(report.profile)
    if report.concurrent is not None:
        tables["concurrent"] = _concurrent_table(report.concurrent)
    if report.range_read is not None:
        tables["range"] = _range_table(report.range_read)
    if report.small is not None:
        tables["small"] = _small_table(report.small)
    if report.streaming is not None or report.small is not None:
        tables["limits"] = _limits_table(report)
    if report.workers is not None:
        tables["workers"] = _workers_table(report.workers)
    if report.peers is not None:
        tables["peers"] = _peers_table(report.peers)
    return tables


def _streaming_table(results: StreamingResults) -> Table:
    table = Table(
        "Streaming PUT and GET, one stream at a time",
        [
            "operation",
            "direct (MiB/s)",
            "proxy (MiB/s)",
            "proxy / direct",
            "target",
            "result",
        ],
    )
    for size_result in results.sizes:
        for operation in OPERATIONS:
            measured = size_result.operations[operation]
            ratio = paired_ratios(measured.proxy_mibps, measured.direct_mibps)
            table.add(
                Row(
                    f"{operation} {size_text(size_result.size)}",
                    {
                        "direct (MiB/s)": measured.direct_mibps,
                        "proxy (MiB/s)": measured.proxy_mibps,
                        "proxy / direct": ratio,
                    },
                    f"≥ {THROUGHPUT_TARGET:.2f}",
                    _at_least(ratio, THROUGHPUT_TARGET),
                )
            )
    return table


def _memory_table(results: StreamingResults) -> Table:
    table = Table(
        "Proxy CPU time and peak memory by object size",
        [
            "operation",
            "proxy CPU (s/GiB)",
            "proxy peak RSS (MiB)",
            "vs. smallest size",
            "target",
            "result",
        ],
    )
    smallest = results.sizes[0]
    largest = results.sizes[-1]
    for size_result in results.sizes:
        for operation in OPERATIONS:
            measured = size_result.operations[operation]
            base = smallest.operations[operation].proxy_peak_mib
            growth = Series(
                [value / base.median for value in measured.proxy_peak_mib.values], 2
            )
            target = verdict = ""
            if size_result is largest and largest is not smallest:
                target = f"≤ {MEMORY_GROWTH_TARGET:.2f}"
                verdict = _verdict(growth.median <= MEMORY_GROWTH_TARGET)
            table.add(
                Row(
                    f"{operation} {size_text(size_result.size)} proxy cost",
                    {
                        "proxy CPU (s/GiB)": measured.proxy_cpu_per_gib,
                        "proxy peak RSS (MiB)": measured.proxy_peak_mib,
                        "vs. smallest size": growth,
                    },
                    target,
                    verdict,
                )
            )
    return table


def _profile_table(result: ProfileResult) -> Table:
    columns = ["where the time goes", "PUT", "GET"]
    table = Table(
        f"Where the proxy's CPU time goes, one {size_text(result.size)} PUT and GET",
        columns,
    )
    if result.skipped:
        table.notes.append(result.skipped)
        return table
    for category in CATEGORIES:
        cells: dict[str, Series | str] = {
            operation: f"{result.shares[operation][category] * 100:.1f} %"
            for operation in ("PUT", "GET")
        }
        table.add(Row(category, cells))
    samples = {op: str(result.samples[op]) for op in ("PUT", "GET")}
    table.add(Row("py-spy samples", dict(samples)))
    return table


def _concurrent_table(result: ConcurrentResult) -> Table:
    table = Table(
        f"{result.streams} concurrent streams of {size_text(result.size)}",
        [
            "operation",
            "direct (MiB/s)",
            "proxy (MiB/s)",
            "proxy CPU (s/GiB)",
            "proxy peak RSS (MiB)",
            "target",
            "result",
        ],
    )
    for operation in OPERATIONS:
        measured = result.operations[operation]
        peak = measured.proxy_peak_mib
        table.add(
            Row(
                f"{result.streams} x {size_text(result.size)} {operation}",
                {
                    "direct (MiB/s)": measured.direct_mibps,
                    "proxy (MiB/s)": measured.proxy_mibps,
                    "proxy CPU (s/GiB)": measured.proxy_cpu_per_gib,
                    "proxy peak RSS (MiB)": peak,
                },
                f"peak < {CONCURRENT_MEMORY_TARGET_MIB} MiB",
                _verdict(
                    bool(peak.values) and peak.median < CONCURRENT_MEMORY_TARGET_MIB
                ),
            )
        )
    return table


def _range_table(result: RangeResult) -> Table:
    table = Table(
        f"One-byte range read at offset {result.offset} of a "
        f"{size_text(result.object_size)} object",
        ["measurement", "direct", "proxy", "proxy / direct", "target", "result"],
    )
    limit = 2 * SEALED_SEGMENT
    fetched = result.body_bytes
    table.add(
        Row(
            "body bytes fetched from the backend",
            {"direct": "1", "proxy": fetched, "proxy / direct": ""},
            f"≤ {limit} (two sealed segments)",
            _verdict(bool(fetched.values) and max(fetched.values) <= limit),
        )
    )
    table.add(
        Row(
            "all bytes from the backend, headers included",
            {"proxy": result.total_bytes, "direct": "", "proxy / direct": ""},
        )
    )
    table.add(
        Row(
            "responses from the backend",
            {"proxy": result.responses, "direct": "1", "proxy / direct": ""},
        )
    )
    ratio = paired_ratios(result.proxy_ms, result.direct_ms)
    table.add(
        Row(
            "range read latency (ms)",
            {
                "direct": result.direct_ms,
                "proxy": result.proxy_ms,
                "proxy / direct": ratio,
            },
            f"≤ {RANGE_LATENCY_TARGET:.1f}",
            _verdict(bool(ratio.values) and ratio.median <= RANGE_LATENCY_TARGET),
        )
    )
    table.add(
        Row(
            "proxy CPU per range read (ms)",
            {"proxy": result.proxy_cpu_ms, "direct": "", "proxy / direct": ""},
        )
    )
    return table


def _small_table(result: SmallResult) -> Table:
    table = Table(
        "Small objects (4 KiB), 32 concurrent clients",
        ["measurement", "direct", "proxy", "proxy / direct", "target", "result"],
    )
    for operation in ("PUT", "GET"):
        direct = result.sides[operation, "direct"]
        proxy = result.sides[operation, "proxy"]
        ratio = paired_ratios(proxy.requests_per_second, direct.requests_per_second)
        table.add(
            Row(
                f"small {operation} requests/s",
                {
                    "direct": direct.requests_per_second,
                    "proxy": proxy.requests_per_second,
                    "proxy / direct": ratio,
                },
                f"≥ {SMALL_TARGET:.2f}",
                _at_least(ratio, SMALL_TARGET),
            )
        )
        table.add(
            Row(
                f"small {operation} proxy CPU per request (ms)",
                {"direct": "", "proxy": proxy.cpu_ms_per_request, "proxy / direct": ""},
            )
        )
        for name in ("p50", "p99"):
            direct_ms: Series = getattr(direct, f"{name}_ms")
            proxy_ms: Series = getattr(proxy, f"{name}_ms")
            table.add(
                Row(
                    f"small {operation} {name} latency (ms)",
                    {
                        "direct": direct_ms,
                        "proxy": proxy_ms,
                        "proxy / direct": paired_ratios(proxy_ms, direct_ms),
                    },
                )
            )
    return table


def _limits_table(report: Report) -> Table:
    table = Table(
        "CPU cost of the request path, and the ceiling it sets on the ratio",
        [
            "measurement",
            "direct path CPU",
            "proxy path CPU",
            "ceiling: direct / proxy path CPU",
            "measured proxy / direct",
        ],
    )
    if report.streaming is not None:
        for size_result in report.streaming.sizes:
            for operation in OPERATIONS:
                measured = size_result.operations[operation]
                table.add(
                    _limit_row(
                        f"{operation} {size_text(size_result.size)} (s/GiB)",
                        measured.direct_path_cpu_per_gib,
                        measured.proxy_path_cpu_per_gib,
                        paired_ratios(measured.proxy_mibps, measured.direct_mibps),
                    )
                )
    if report.small is not None:
        for operation in ("PUT", "GET"):
            direct = report.small.sides[operation, "direct"]
            proxy = report.small.sides[operation, "proxy"]
            table.add(
                _limit_row(
                    f"small {operation} (ms/request)",
                    direct.path_cpu_ms_per_request,
                    proxy.path_cpu_ms_per_request,
                    paired_ratios(
                        proxy.requests_per_second, direct.requests_per_second
                    ),
                )
            )
    if report.primitives is not None:
        table.notes.append(
            "On one core of this machine, in the same run, AES-256-GCM sealed "
            f"64 KiB segments at {report.primitives.aes_gcm_mibps.text()} MiB/s "
            f"and MD5 hashed at {report.primitives.md5_mibps.text()} MiB/s."
        )
    return table


def _limit_row(label: str, direct: Series, proxy: Series, measured: Series) -> Row:
    return Row(
        label,
        {
            "direct path CPU": direct,
            "proxy path CPU": proxy,
            "ceiling: direct / proxy path CPU": paired_ratios(direct, proxy),
            "measured proxy / direct": measured,
        },
    )


def _workers_table(result: WorkersResult) -> Table:
    table = Table(
        f"Worker processes: {result.streams} concurrent streams of "
        f"{size_text(result.size)}",
        ["operation", *(f"{side} (MiB/s)" for side in SIDES), "2 / 1 workers"],
    )
    for operation in OPERATIONS:
        cells: dict[str, Series | str] = {
            f"{side} (MiB/s)": result.mibps[operation, side] for side in SIDES
        }
        if result.skipped:
            cells = {column: "skipped" for column in table.columns[1:]}
        else:
            cells["2 / 1 workers"] = paired_ratios(
                result.mibps[operation, "2 workers"],
                result.mibps[operation, "1 worker"],
            )
        table.add(Row(f"workers {operation}", cells))
    if result.skipped:
        table.notes.append(result.skipped)
    return table


def _peers_table(result: PeersResult) -> Table:
    table = Table(
        f"Peers on the same {size_text(result.size)} file and backend",
        ["measurement", *TOOLS, "target", "result"],
    )
    rows = (
        ("upload time (s)", "upload_seconds"),
        ("download time (s)", "download_seconds"),
        ("upload peak memory (MiB)", "upload_peak_mib"),
        ("download peak memory (MiB)", "download_peak_mib"),
    )
    for label, attribute in rows:
        cells: dict[str, Series | str] = {}
        for name, tool in result.tools.items():
            cells[name] = "skipped" if tool.skipped else getattr(tool, attribute)
        target, verdict = _peer_target(result, attribute)
        table.add(Row(f"peers {label}", cells, target, verdict))
    for name, tool in result.tools.items():
        if tool.skipped:
            table.notes.append(f"{name}: {tool.skipped}")
    return table


def _peer_target(result: PeersResult, attribute: str) -> tuple[str, str]:
    proxy: Series = getattr(result.tools[PROXY], attribute)
    others = [
        getattr(tool, attribute)
        for name, tool in result.tools.items()
        if name != PROXY and not tool.skipped
    ]
    if not proxy.values:
        return "", ""
    if attribute.endswith("_seconds"):
        if not others:
            return "proxy fastest", "n/a"
        fastest_other = min(series.median for series in others)
        return "proxy fastest", _verdict(proxy.median < fastest_other)
    if attribute == "download_peak_mib":
        s3ec = result.tools[S3EC]
        target = f"≤ {PEER_MEMORY_FRACTION:.2f} x the S3 Encryption Client's"
        if s3ec.skipped or not s3ec.download_peak_mib.values:
            return target, "n/a"
        limit = PEER_MEMORY_FRACTION * s3ec.download_peak_mib.median
        return target, _verdict(proxy.median <= limit)
    return "", ""


def aes_share(result: ProfileResult, operation: str) -> float:
    """Return AES-GCM's share of the proxy's samples in `operation`."""
    return result.shares[operation][AES_GCM]

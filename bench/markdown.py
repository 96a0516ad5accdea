"""Write benchmarks.md from a finished run."""

from __future__ import annotations

from bench.report import Report, build_tables, size_text
from bench.results import Row, Series, Table

__all__ = ["SECTIONS", "render"]

# Section name, heading, and what the figures mean.
SECTIONS: tuple[tuple[str, str, str], ...] = (
    (
        "streaming",
        "Streaming throughput",
        "One PUT or GET at a time, from a client on the same machine, with "
        "UNSIGNED-PAYLOAD signatures. The ratio is taken per repetition, "
        "between a direct and a proxy request measured one after the other.",
    ),
    (
        "memory",
        "Proxy CPU time and memory",
        "CPU is the proxy process's user plus system time (/proc/PID/stat) "
        "during the timed requests above, per GiB moved. Peak RSS is VmHWM "
        "after a reset (and VmRSS sampled every 10 ms) during each request. "
        "It includes the interpreter and its libraries. The memory target "
        "compares the largest size with the smallest.",
    ),
    (
        "profile",
        "Where the proxy's CPU time goes",
        "py-spy samples of the proxy's Python stacks, 250 per second, idle "
        "stacks left out, classified by the source line on top of the "
        "stack. Time in C code counts for the Python line that called it, "
        "so OpenSSL's AES-GCM shows as the `encrypt_into` and "
        "`decrypt_into` lines of `crypto/stream.py`. A sample counts "
        "whenever the proxy's thread is not waiting for I/O, also while it "
        "is ready to run but another process holds the CPU. On two busy "
        "cores that inflates socket writes, which wake SeaweedFS or the "
        "client, so the shares are of the proxy's busy time rather than of "
        "its CPU time alone.",
    ),
    (
        "concurrent",
        "Many streams at once",
        "All streams start together; throughput is the total bytes over the "
        "time until the last one finished. The memory target holds for the "
        "whole proxy process.",
    ),
    (
        "range",
        "Range read",
        "Bytes fetched are counted by a TCP relay between a second proxy "
        "process and SeaweedFS. It splits the backend's replies into HTTP "
        "responses, so body bytes exclude headers. A sealed segment is "
        "65,552 bytes. Latency is measured on the main proxy, which has no "
        "relay in its path, against the same range read straight from "
        "SeaweedFS. The proxy sends one GET for the covering segments, whose "
        "response also carries the object's header in its metadata. The last "
        "row is the main proxy's CPU time per timed read: verifying the "
        "client's signature, opening the header, signing its own request "
        "and opening one segment. It adds to the object store's latency, "
        "which the direct read shows.",
    ),
    (
        "small",
        "Small objects",
        "Each client is one keep-alive connection that sends its next "
        "request when the previous one completed. All clients run in the "
        "bench's one event loop, which also needs CPU, so the direct rate is "
        "a lower bound of what SeaweedFS can do. Latency is from the first "
        "byte sent to the last byte received.",
    ),
    (
        "limits",
        "What limits the ratios",
        "The CPU seconds that the whole request path spent: SeaweedFS and the "
        "load client for a direct request, and the proxy as well for a "
        "proxied one, read from /proc during the timed requests above. While "
        "these processes keep both cores busy, throughput is inversely "
        "proportional to that cost, so direct over proxied cost is the "
        "highest proxy / direct ratio this machine allows. A measured ratio "
        "close to that ceiling is held back by the proxy's CPU time alone, "
        "not by waiting. A ratio of 0.9 leaves the proxy a ninth of the "
        "direct path's cost. The profile above shows where a PUT's proxy "
        "time goes. Most of it is the MD5 of the plaintext, which S3 clients "
        "expect as the ETag of a single PUT and which runs on one core. Next "
        "come socket reads and writes, which any proxy pays. A GET has no "
        "MD5, so socket "
        "reads and writes lead. Each proxied request also adds a second HTTP "
        "exchange, which dominates the cost of a small object. With the "
        "object store on other machines, the proxy gets the cores to itself "
        "and the ceiling rises.",
    ),
    (
        "workers",
        "Worker processes",
        "The main proxy (one process) against a proxy started with two "
        "workers on the same key store. On two cores that also run SeaweedFS "
        "and the client, a second worker has little idle CPU to use.",
    ),
    (
        "peers",
        "Peers: client-side encryption on the same file",
        "byok-proxy: the bench client uploads the file through the proxy and "
        "downloads it into a discarded buffer. Time is the request's, memory "
        "the proxy process's, whose interpreter and libraries alone take the "
        "resident set after start-up given above. rclone: a `crypt` remote "
        "over an `s3` remote, `rclone copyto` and `rclone cat > /dev/null`. "
        "Time is the process's wall time, memory its VmHWM read every 10 ms. "
        "S3 Encryption Client: `upload_file` and `get_object` read in 1 MiB "
        "chunks, with a KMS keyring on moto. Time is the transfer inside the "
        "script, after imports, memory the script's VmHWM read every 10 ms. "
        "Its `get_object` keeps the whole object in memory before it returns "
        "the first byte.",
    ),
)


def render(report: Report) -> str:
    """Return the whole benchmarks.md text."""
    tables = build_tables(report)
    lines = _header(report)
    for name, heading, explanation in SECTIONS:
        lines += ["", f"## {heading}", "", explanation, ""]
        if name in report.errors:
            lines.append(f"This measurement failed: {report.errors[name]}")
            continue
        table = tables.get(name)
        if table is None:
            lines.append("Not measured in this run.")
            continue
        lines += _table(table)
        if name == "memory" and report.idle_rss_mib:
            lines += [
                "",
                "The proxy's resident set after start-up, before the first "
                f"request, was {report.idle_rss_mib:.1f} MiB.",
            ]
    lines += _footer(report)
    return "\n".join(lines) + "\n"


def _header(report: Report) -> list[str]:
    options = report.options
    repetitions = (
        "one repetition" if options.repeat == 1 else f"{options.repeat} repetitions"
    )
    lines = [
        "# Benchmarks",
        "",
        f"Measured on {report.started} with this command, run from the "
        "repository root:",
        "",
        f"    {options.command}",
        "",
        "It starts SeaweedFS and byok-proxy on 127.0.0.1 and runs every "
        f"measurement with {repetitions}, interleaved: direct, proxy, direct, "
        'proxy. "Direct" is the same request sent straight to SeaweedFS. '
        "Cells show the median and, in brackets, the minimum and maximum. "
        f"The whole run took {report.seconds / 60:.1f} minutes. "
        "bench/README.md explains each measurement.",
        "",
        "![Throughput and proxy peak memory against object size](benchmarks.png)",
        "",
        "**Disturbance.** The machine has two cores shared by SeaweedFS, the "
        f"proxy and the load client. The load average was {report.load_before} "
        f"(1, 5 and 15 minutes) before the run and {report.load_after} after "
        "it, which includes the bench's own load. Other work on the machine "
        "would disturb throughput, latency and requests per second, and "
        "ratios of neighbouring direct and proxy requests less so. Bytes "
        "fetched and peak memory are not timing figures and are not "
        "disturbed, and CPU seconds only a little.",
        "",
        "## Machine and versions",
        "",
        "| | |",
        "|---|---|",
    ]
    for label, value in report.machine.hardware + report.machine.versions:
        lines.append(f"| {label} | {value} |")
    if report.peers is not None:
        for name, tool in report.peers.tools.items():
            if tool.version:
                lines.append(f"| {name} | {tool.version} |")
    return lines


def _table(table: Table) -> list[str]:
    lines = [f"**{table.title}**", ""]
    lines.append("| " + " | ".join(table.columns) + " |")
    lines.append("|" + "---|" * len(table.columns))
    for row in table.rows:
        lines.append("| " + " | ".join(_cells(table, row)) + " |")
    for note in table.notes:
        lines += ["", note]
    return lines


def _cells(table: Table, row: Row) -> list[str]:
    cells = [row.label]
    for column in table.columns[1:]:
        if column == "target":
            cells.append(row.target)
        elif column == "result":
            cells.append(row.verdict)
        else:
            value = row.cells.get(column, "")
            cells.append(value.text() if isinstance(value, Series) else value)
    return cells


def _footer(report: Report) -> list[str]:
    lines = []
    known = {name for name, _, _ in SECTIONS}
    for name, error in report.errors.items():
        if name not in known:
            lines += ["", f"The {name} step failed: {error}"]
    lines += [
        "",
        "## Time per measurement",
        "",
        "| measurement | minutes |",
        "|---|---|",
    ]
    for name, seconds in report.durations.items():
        lines.append(f"| {name} | {seconds / 60:.1f} |")
    if report.options.quick:
        lines += [
            "",
            "This was a `--quick` run with small objects "
            f"({', '.join(size_text(size) for size in report.options.sizes)}); "
            "its figures only show that every measurement works.",
        ]
    return lines

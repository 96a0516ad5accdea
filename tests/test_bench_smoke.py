"""`python -m bench --quick` runs end to end and writes a complete report.

Nothing here checks a figure: a quick run moves a few MiB on a shared
machine, so its numbers only show that each measurement produced its row.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Every row label of a --quick run, whose object sizes are 1 MiB and 8 MiB.
EXPECTED_ROWS = (
    "PUT 1 MiB",
    "GET 1 MiB",
    "PUT 8 MiB",
    "GET 8 MiB",
    "PUT 1 MiB proxy cost",
    "GET 1 MiB proxy cost",
    "PUT 8 MiB proxy cost",
    "GET 8 MiB proxy cost",
    "AES-GCM (OpenSSL, via cryptography)",
    "MD5 of the plaintext (hashlib)",
    "segment buffers and copies (crypto/)",
    "aiohttp: HTTP parsing, body reads and writes",
    "event loop and socket I/O (uvloop, asyncio)",
    "request handling (proxy/)",
    "other (logging, sqlite, standard library)",
    "py-spy samples",
    "16 x 4 MiB PUT",
    "16 x 4 MiB GET",
    "body bytes fetched from the backend",
    "all bytes from the backend, headers included",
    "responses from the backend",
    "range read latency (ms)",
    "proxy CPU per range read (ms)",
    "small PUT requests/s",
    "small PUT proxy CPU per request (ms)",
    "small PUT p50 latency (ms)",
    "small PUT p99 latency (ms)",
    "small GET requests/s",
    "small GET proxy CPU per request (ms)",
    "small GET p50 latency (ms)",
    "small GET p99 latency (ms)",
    "PUT 1 MiB (s/GiB)",
    "GET 1 MiB (s/GiB)",
    "PUT 8 MiB (s/GiB)",
    "GET 8 MiB (s/GiB)",
    "small PUT (ms/request)",
    "small GET (ms/request)",
    "workers PUT",
    "workers GET",
    "peers upload time (s)",
    "peers download time (s)",
    "peers upload peak memory (MiB)",
    "peers download peak memory (MiB)",
)


def row_labels(report: str) -> set[str]:
    """Return the first cell of every table row in a Markdown text."""
    labels = set()
    for line in report.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            labels.add(line.split("|")[1].strip())
    return labels


def test_quick_bench_writes_report(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the bench extra is not installed")
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(tmp_path)],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    report = (tmp_path / "benchmarks.md").read_text()
    chart = tmp_path / "benchmarks.png"
    assert chart.read_bytes()[:8] == PNG_SIGNATURE
    labels = row_labels(report)
    missing = [row for row in EXPECTED_ROWS if row not in labels]
    assert not missing, f"rows missing from benchmarks.md: {missing}"
    assert "This measurement failed" not in report
    assert "AES-256-GCM sealed 64 KiB segments at" in report

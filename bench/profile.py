"""The share of the proxy's busy time per activity in a streaming PUT and GET.

py-spy samples the main proxy's Python stacks (`record --format raw
--nonblocking`, 250 samples per second, idle stacks left out) during one
untimed PUT and one untimed GET. Time inside C code, such as OpenSSL's
AES-GCM or hashlib's MD5, shows as the Python line that called it, so each
sample is classified by the source line at the top of its stack.
"""

from __future__ import annotations

import asyncio
import linecache
import logging
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.client import S3Client
from bench.options import Options
from bench.payload import Pattern
from bench.results import GIB
from bench.servers import Lab

__all__ = ["CATEGORIES", "ProfileResult", "measure_profile"]

log = logging.getLogger("bench.profile")

PROFILE_SIZE = GIB
SAMPLE_RATE = 250
AES_GCM = "AES-GCM (OpenSSL, via cryptography)"
MD5 = "MD5 of the plaintext (hashlib)"
CRYPTO_COPIES = "segment buffers and copies (crypto/)"
AIOHTTP = "aiohttp: HTTP parsing, body reads and writes"
EVENT_LOOP = "event loop and socket I/O (uvloop, asyncio)"
PROXY = "request handling (proxy/)"
OTHER = "other (logging, sqlite, standard library)"
CATEGORIES = (AES_GCM, MD5, CRYPTO_COPIES, AIOHTTP, EVENT_LOOP, PROXY, OTHER)

_REPOSITORY = Path(__file__).resolve().parents[1]
_CRYPTO = str(_REPOSITORY / "crypto") + os.sep
_PROXY = str(_REPOSITORY / "proxy") + os.sep
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*):(?P<line>\d+)\)$")


@dataclass
class ProfileResult:
    """Share of samples per category, for each operation."""

    size: int
    shares: dict[str, dict[str, float]] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)
    skipped: str = ""


async def measure_profile(
    lab: Lab, options: Options, pattern: Pattern
) -> ProfileResult:
    """Profile one PUT and one GET of min(1 GiB, the largest size)."""
    size = min(PROFILE_SIZE, max(options.sizes))
    result = ProfileResult(size)
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        result.skipped = "skipped: py-spy is not installed beside this Python"
        return result
    client = S3Client(lab.via_proxy)
    bucket = "bench-profile"
    try:
        await client.create_bucket(bucket)
        await client.request("PUT", bucket, "object", body=pattern.body(4096))
        for operation in ("PUT", "GET"):
            output = lab.root / f"profile-{operation}.txt"
            async with _Sampler(py_spy, lab.proxy_pid, output):
                if operation == "PUT":
                    await client.request(
                        "PUT", bucket, "object", body=pattern.body(size)
                    )
                else:
                    await client.request("GET", bucket, "object")
            counts = classify(output.read_text())
            total = sum(counts.values())
            result.samples[operation] = total
            result.shares[operation] = {
                name: counts[name] / total if total else 0.0 for name in CATEGORIES
            }
        await client.delete_bucket(bucket, ["object"])
    finally:
        await client.close()
    for operation, shares in result.shares.items():
        log.info("profile %s: AES-GCM %.0f%%", operation, shares[AES_GCM] * 100)
    return result


class _Sampler:
    """py-spy attached to a process for the duration of a `with` block."""

    def __init__(self, py_spy: Path, pid: int, output: Path) -> None:
        self._command = [
            str(py_spy), "record", "--pid", str(pid), "--format", "raw",
            "--rate", str(SAMPLE_RATE), "--nonblocking", "--full-filenames",
            "--output", str(output),
        ]  # fmt: skip
        self._process: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> _Sampler:
        self._process = subprocess.Popen(
            self._command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        # py-spy needs a moment to attach. Samples taken before the request
        # are idle stacks, which it leaves out.
        await asyncio.sleep(1.0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        process = self._process
        assert process is not None
        # SIGINT makes py-spy write its output and exit.
        os.kill(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        if process.returncode not in (0, -signal.SIGINT):
            raise RuntimeError(
                f"py-spy failed ({process.returncode}): {stderr.decode()[-500:]}"
            )


def classify(raw: str) -> Counter[str]:
    """Count py-spy raw samples ("frame;frame;... count") per category."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        counts[_category(leaf)] += int(number)
    return counts


def _category(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return OTHER
    path = match["file"]
    source = linecache.getline(path, int(match["line"]))
    if path.startswith(_CRYPTO):
        if "encrypt_into" in source or "decrypt_into" in source:
            return AES_GCM
        if "md5" in source.lower():
            return MD5
        return CRYPTO_COPIES
    if "md5" in source.lower():
        return MD5
    # uvloop's loop runs in C: socket reads and writes, polling and its own
    # callbacks all show as the line that started the loop.
    if "run_until_complete(" in source or "run_forever(" in source:
        return EVENT_LOOP
    for marker, category in (
        ("/aiohttp/", AIOHTTP),
        ("/multidict/", AIOHTTP),
        ("/yarl/", AIOHTTP),
        ("/asyncio/", EVENT_LOOP),
        ("/uvloop/", EVENT_LOOP),
        (_PROXY, PROXY),
    ):
        if marker in path:
            return category
    return OTHER

"""The machine and software versions a run measured, for the report."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Machine", "describe_machine", "load_average"]

_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Machine:
    """Hardware, kernel and versions, as label and value pairs."""

    hardware: list[tuple[str, str]]
    versions: list[tuple[str, str]]


def describe_machine() -> Machine:
    """Read the CPU, memory and kernel, and the versions of the measured software."""
    hardware = [
        ("CPU", _cpu_model()),
        ("cores", str(os.cpu_count())),
        ("memory", f"{_memory_gib():.1f} GiB"),
        ("kernel", f"{platform.system()} {platform.release()}"),
    ]
    versions = [
        ("Python", platform.python_version()),
        ("aiohttp", _version("aiohttp")),
        ("uvloop", _version("uvloop")),
        ("cryptography", _version("cryptography")),
        ("OpenSSL (cryptography's)", _openssl()),
        ("SeaweedFS", _weed_version()),
        ("py-spy", _version("py-spy")),
        ("moto", _version("moto")),
    ]
    return Machine(hardware, versions)


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages as text."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _openssl() -> str:
    from cryptography.hazmat.backends.openssl.backend import backend

    return str(backend.openssl_version_text())


def _weed_version() -> str:
    weed = _BIN / "weed"
    try:
        output = subprocess.run(
            [str(weed), "version"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    # "version 8000GB 4.48 pypi linux amd64": the third word is the release.
    words = output.split()
    return words[2] if len(words) > 2 else output.strip()

"""CPU time and memory of processes, read from Linux's /proc.

CPU time is utime + stime of /proc/PID/stat. Peak memory comes from two
sources: VmHWM after resetting it (writing 5 to /proc/PID/clear_refs,
Linux 4.0 and later), which is exact, and VmRSS sampled every 10 ms, which
also covers several processes together. For a child that the bench runs
to its end, VmHWM is read every 10 ms until it exits.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = [
    "ChildRun",
    "PeakMemory",
    "cpu_seconds",
    "path_cpu_seconds",
    "process_tree",
    "run_child",
]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SAMPLE_INTERVAL = 0.010


def _stat_fields(pid: int) -> list[str]:
    """Return the fields of /proc/PID/stat after the command name."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name may contain spaces and parentheses, so it ends at
    # the last ")".
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pids: Sequence[int]) -> float:
    """Return the user plus system CPU seconds the processes used so far."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        # utime and stime are fields 14 and 15 of stat, 12 and 13 here.
        total += int(fields[11]) + int(fields[12])
    return total / _CLOCK_TICKS


def path_cpu_seconds(pids: Sequence[int]) -> float:
    """Return the CPU seconds of the processes and of the bench itself so far.

    The bench's own process is the load client, so the sum is what the
    whole machine spent on a request path.
    """
    return cpu_seconds(pids) + time.process_time()


def process_tree(pid: int) -> list[int]:
    """Return `pid` and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat_fields(int(entry.name))[1])
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found = [pid]
    for current in found:
        found.extend(children.get(current, []))
    return found


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(f"{field} is missing from /proc/{pid}/status")


def _reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """Measure the peak resident set of a process and its children over a block.

    For one process whose VmHWM could be reset, the peak is the larger of
    VmHWM and the samples. For several processes it is the largest sampled
    sum, which can miss a peak shorter than the 10 ms interval.
    """

    def __init__(self, pid: int) -> None:
        self._pids = process_tree(pid)
        self._stop = threading.Event()
        self._sampled = 0
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._hwm_reset = False
        self.peak_bytes = 0

    def __enter__(self) -> PeakMemory:
        self._hwm_reset = all(_reset_peak(pid) for pid in self._pids)
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        peak = self._sampled
        if self._hwm_reset and len(self._pids) == 1:
            peak = max(peak, _status_kib(self._pids[0], "VmHWM"))
        self.peak_bytes = peak * 1024

    def _sample(self) -> None:
        while True:
            try:
                total = sum(_status_kib(pid, "VmRSS") for pid in self._pids)
            except (FileNotFoundError, ProcessLookupError):
                return
            self._sampled = max(self._sampled, total)
            if self._stop.wait(SAMPLE_INTERVAL):
                return


@dataclass(frozen=True)
class ChildRun:
    """A finished child process: wall time, peak resident set and exit status."""

    seconds: float
    peak_bytes: int
    returncode: int
    stderr: str


def run_child(
    command: Sequence[str],
    env: Mapping[str, str],
    stdout: IO[bytes] | int = subprocess.DEVNULL,
    timeout: float = 3600,
) -> ChildRun:
    """Run a command to its end, measuring its wall time and peak memory.

    The peak is the child's VmHWM, read every 10 ms until it exits, so
    growth in its last 10 ms can be missed. wait4's ru_maxrss would be
    wrong here: the kernel folds the memory that the child shared with the
    bench before its exec into it, so it never reads below the bench's own
    resident set.
    """
    started = time.perf_counter()
    process = subprocess.Popen(
        list(command), env=dict(env), stdout=stdout, stderr=subprocess.PIPE
    )
    watcher = _HighWaterWatcher(process.pid)
    watcher.start()
    try:
        _, stderr = process.communicate(timeout=timeout)
    finally:
        process.kill()
        process.wait()
        watcher.join()
    return ChildRun(
        time.perf_counter() - started,
        watcher.peak_kib * 1024,
        process.returncode,
        stderr.decode("utf-8", "replace"),
    )


class _HighWaterWatcher(threading.Thread):
    """Read a process's VmHWM every 10 ms until the process is gone."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self._pid = pid
        self.peak_kib = 0

    def run(self) -> None:
        while True:
            try:
                self.peak_kib = max(self.peak_kib, _status_kib(self._pid, "VmHWM"))
            except (FileNotFoundError, ProcessLookupError, LookupError):
                # Gone, or a zombie whose memory is already released.
                return
            time.sleep(SAMPLE_INTERVAL)

"""The proxy raises glibc's malloc thresholds, and leaves other C libraries alone."""

from __future__ import annotations

import platform

from proxy.allocator import keep_buffers_in_heap


def test_thresholds_apply_exactly_on_glibc() -> None:
    assert keep_buffers_in_heap() is (platform.libc_ver()[0] == "glibc")

"""Move an organisation's objects onto its current keys.

Each object gets one of two moves, chosen from its header:

- rewrap: the object's DEK is still the active version of its purpose, but
  the header carries it wrapped by an older organisation key. Only the
  header changes. The DEK is rewrapped under the active organisation key,
  the header is re-tagged, and the object store copies the object onto
  itself with the new metadata, so the ciphertext stays byte for byte.
- re-encrypt: the object's DEK version is no longer the active one, for
  example after a compromise. The body is opened and sealed again under the
  current DEK with a fresh salt, as one stream or as the same parts.

Every write is conditional on the ETag that the scan saw. An object that a
client replaces meanwhile therefore keeps the client's version and counts
as changed. Objects already on current keys are skipped, so a second run
repeats no move, and a checkpoint lets an interrupted run skip the objects
before the one where it stopped.

The object store sees each move as a write: Last-Modified changes, and in
a versioned bucket the previous version, on the old keys, stays until it
is deleted.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from crypto.audit import KeyValue
from crypto.errors import DecryptionFailed
from crypto.header import (
    DataKey,
    Header,
    Purpose,
)
from crypto.keyring import KeyRing
from proxy.catalogue import Catalogue
from proxy.object_moves import MoveFailed, Mover, ObjectChanged, move
from proxy.scan import Kind, Position, Scanned, scan_objects
from proxy.upstream import Upstream

__all__ = [
    "Checkpoint",
    "Outcome",
    "Reencryption",
    "Result",
    "Selection",
    "Summary",
    "plan",
]

log = logging.getLogger("byok.reencrypt")


class Outcome(StrEnum):
    """Result of a run for one listed object."""

    REWRAP = "rewrap"
    REENCRYPT = "reencrypt"
    CURRENT = "current"
    NOT_SELECTED = "not_selected"
    FOREIGN = "foreign"
    INVALID = "invalid"
    GONE = "gone"
    CHANGED = "changed"
    FAILED = "failed"


_SCAN_OUTCOMES = {
    Kind.FOREIGN: Outcome.FOREIGN,
    Kind.INVALID: Outcome.INVALID,
    Kind.GONE: Outcome.GONE,
}


@dataclass(frozen=True)
class Selection:
    """Filter of the objects a run moves; an empty set selects every value."""

    purposes: frozenset[Purpose] = frozenset()
    org_key_versions: frozenset[int] = frozenset()
    dek_versions: frozenset[int] = frozenset()
    bucket: str | None = None

    def selects(self, header: Header) -> bool:
        """Return whether an object with this header is to be moved."""
        return (
            (not self.purposes or header.purpose in self.purposes)
            and (
                not self.org_key_versions
                or header.org_key_version in self.org_key_versions
            )
            and (not self.dek_versions or header.dek_version in self.dek_versions)
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the selection as plain values, stored with a checkpoint."""
        return {
            "purposes": sorted(purpose.label for purpose in self.purposes),
            "org_key_versions": sorted(self.org_key_versions),
            "dek_versions": sorted(self.dek_versions),
            "bucket": self.bucket,
        }


def plan(header: Header, current: DataKey) -> Outcome:
    """Choose the move that brings an object onto the current DEK of its purpose."""
    if header.dek_version != current.dek_version:
        return Outcome.REENCRYPT
    if header.org_key_version != current.org_key_version:
        return Outcome.REWRAP
    return Outcome.CURRENT


@dataclass(frozen=True)
class Result:
    """One object's outcome; `target` is the (org key, DEK) version moved to."""

    scanned: Scanned
    outcome: Outcome
    target: tuple[int, int] | None = None
    problem: str = ""


@dataclass
class Summary:
    """Counts of one run; a dry run counts the moves it would make."""

    dry_run: bool
    resumed_after: Position | None = None
    counts: dict[Outcome, int] = field(
        default_factory=lambda: dict.fromkeys(Outcome, 0)
    )
    moved_bytes: int = 0
    finished: bool = False

    @property
    def examined(self) -> int:
        """Objects listed and looked at by this run."""
        return sum(self.counts.values())

    def add(self, result: Result) -> None:
        """Count one object's outcome and, if it moved, its stored bytes."""
        self.counts[result.outcome] += 1
        if result.outcome in (Outcome.REWRAP, Outcome.REENCRYPT):
            self.moved_bytes += result.scanned.size

    def as_dict(self) -> dict[str, Any]:
        """Return the counts as plain values, for JSON output."""
        resumed = self.resumed_after
        return {
            "dry_run": self.dry_run,
            "finished": self.finished,
            "resumed_after": (
                None
                if resumed is None
                else {"bucket": resumed.bucket, "key": resumed.key}
            ),
            "examined": self.examined,
            **{outcome.value: count for outcome, count in self.counts.items()},
            "moved_bytes": self.moved_bytes,
        }

    def audit_keys(self) -> dict[str, KeyValue]:
        """Return the counts for the audit log, which cannot hold object names."""
        keys: dict[str, KeyValue] = {
            "dry_run": self.dry_run,
            "examined": self.examined,
            "moved_bytes": self.moved_bytes,
        }
        keys.update({outcome.value: count for outcome, count in self.counts.items()})
        return keys


# the run


class Reencryption:
    """One run over an organisation's buckets, object by object in listing order."""

    def __init__(
        self,
        keyring: KeyRing,
        catalogue: Catalogue,
        org_id: bytes,
        buckets: Iterable[str],
        selection: Selection,
        *,
        dry_run: bool = False,
        rate: float | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self._keyring = keyring
        self._catalogue = catalogue
        self._org_id = org_id
        self.buckets = sorted(buckets)
        self._selection = selection
        self._dry_run = dry_run
        self._pace = _Pace(rate)
        self._checkpoint = None if dry_run else checkpoint
        start = self._checkpoint.load() if self._checkpoint else None
        self.summary = Summary(dry_run, resumed_after=start)

    @property
    def start(self) -> Position | None:
        """The object after which this run begins, from the checkpoint."""
        return self.summary.resumed_after

    async def run(
        self, upstream: Upstream, on_result: Callable[[Result], None]
    ) -> Summary:
        """Move every selected object, calling `on_result` with each outcome."""
        mover = Mover(upstream, self._keyring, self._catalogue)
        scanned = scan_objects(upstream, self._org_id, self.buckets, start=self.start)
        async for item in scanned:
            result = await self._handle(mover, item)
            self.summary.add(result)
            if self._checkpoint is not None:
                self._checkpoint.save(item.listed.position)
            on_result(result)
        self.summary.finished = True
        if self._checkpoint is not None:
            self._checkpoint.clear()
        return self.summary

    async def _handle(self, mover: Mover, scanned: Scanned) -> Result:
        header = scanned.header
        if scanned.kind is not Kind.ENCRYPTED or header is None:
            outcome = _SCAN_OUTCOMES[scanned.kind]
            return Result(scanned, outcome, problem=scanned.problem)
        if not self._selection.selects(header):
            return Result(scanned, Outcome.NOT_SELECTED)

        # another process may have rotated a key since the last object
        self._keyring.refresh()
        current = self._keyring.current_dek(self._org_id, header.purpose)
        outcome = plan(header, current)
        target = (current.org_key_version, current.dek_version)
        if outcome is Outcome.CURRENT or self._dry_run:
            return Result(scanned, outcome, target)

        await self._pace.wait()
        try:
            await move(mover, scanned, header, current, outcome is Outcome.REWRAP)
        except ObjectChanged:
            log.info(
                "reencrypt.changed bucket=%s key=%r: replaced or deleted during "
                "the run; the newer write stays",
                scanned.listed.bucket,
                scanned.listed.key,
            )
            return Result(scanned, Outcome.CHANGED, target)
        except (MoveFailed, DecryptionFailed) as error:
            log.warning(
                "reencrypt.failed bucket=%s key=%r: %s",
                scanned.listed.bucket,
                scanned.listed.key,
                error,
            )
            return Result(scanned, Outcome.FAILED, target, str(error))
        return Result(scanned, outcome, target)


class _Pace:
    """Spaces moves at least 1 / rate seconds apart; None means no limit."""

    def __init__(self, rate: float | None) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(
                f"the rate must be positive objects per second, got {rate}"
            )
        self._interval = 1 / rate if rate else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if not self._interval:
            return
        loop = asyncio.get_running_loop()
        delay = self._next - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        self._next = loop.time() + self._interval


class Checkpoint:
    """The last object a run finished, kept in the data directory between runs.

    It is written after every object, and removed when a run reaches the
    end. A checkpoint made with another selection is ignored, because that
    run skipped objects this one selects.
    """

    def __init__(self, data_dir: Path, org_id: bytes, selection: Selection) -> None:
        self._path = data_dir / f"reencrypt-{org_id.hex()}.json"
        self._lock_path = data_dir / f"reencrypt-{org_id.hex()}.lock"
        self._selection = selection.as_dict()
        self.ignored = False

    @property
    def path(self) -> Path:
        """The checkpoint file."""
        return self._path

    def load(self) -> Position | None:
        """Return where the last run stopped, or None to start at the beginning."""
        try:
            saved = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            raise MoveFailed(
                f"the checkpoint {self._path} is unreadable ({error}); delete it "
                "to start from the first object"
            ) from error
        if not isinstance(saved, dict) or saved.get("selection") != self._selection:
            self.ignored = True
            return None
        bucket, key = saved.get("bucket"), saved.get("key")
        if not isinstance(bucket, str) or not isinstance(key, str):
            raise MoveFailed(
                f"the checkpoint {self._path} names no bucket and key; delete it "
                "to start from the first object"
            )
        return Position(bucket, key)

    def save(self, position: Position) -> None:
        """Record `position` as done; the file is replaced in one step."""
        saved = {
            "selection": self._selection,
            "bucket": position.bucket,
            "key": position.key,
        }
        temporary = self._path.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(saved, file)
        os.replace(temporary, self._path)

    def clear(self) -> None:
        """Forget the checkpoint once a run has reached the last object."""
        self._path.unlink(missing_ok=True)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the organisation's run lock; MoveFailed if another run holds it."""
        descriptor = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise MoveFailed(
                    "another reencrypt of this organisation is running on this "
                    "data directory; wait for it to finish"
                ) from None
            yield
        finally:
            os.close(descriptor)

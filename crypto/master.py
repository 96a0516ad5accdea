"""The master key, root of the key hierarchy, behind one small interface.

The master key wraps organisation keys and access key secrets, and nothing
else. The data path only calls `MasterKey.wrap` and `MasterKey.unwrap`, so a
customer-imported key or a PKCS#11 HSM key, which never leaves its token,
can replace the file key without changes elsewhere.

The platform key file `master.key` is rotated in three steps: a new key is
written to `master.key.next`, the key store rewraps everything under it in
one transaction, and `os.replace` then moves the new file onto `master.key`.
`load_platform_key` finishes a rotation that stopped after the second step.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from crypto import wrap as wrapping
from crypto.errors import MasterKeyError

__all__ = [
    "MASTER_KEY_FILE",
    "NEXT_KEY_FILE",
    "FileMasterKey",
    "MasterKey",
    "MemoryMasterKey",
    "install_next_key",
    "key_fingerprint",
    "load_platform_key",
    "rotation_lock",
]

MASTER_KEY_FILE = "master.key"
NEXT_KEY_FILE = "master.key.next"
"""The new platform key of a rotation, until it replaces `master.key`."""
_LOCK_FILE = "master.key.lock"

_FINGERPRINT_LABEL = b"byok-proxy key id"
_FILE_MODE = 0o600


class MasterKey(Protocol):
    """A key that wraps organisation keys and access key secrets.

    `wrap` returns `nonce || ciphertext || tag` of AES-256-GCM or the
    implementation's own format, and `unwrap` raises
    `crypto.errors.DecryptionFailed` for anything it did not wrap under the
    same associated data. `key_id` identifies the key without revealing it;
    the key store records it beside every organisation key.
    """

    @property
    def key_id(self) -> str:
        """Fingerprint of the key, safe to log and store."""
        ...

    def wrap(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """Encrypt and authenticate `plaintext` bound to `associated_data`."""
        ...

    def unwrap(self, wrapped: bytes, associated_data: bytes) -> bytes:
        """Decrypt a value made by `wrap` with the same associated data."""
        ...


def key_fingerprint(key: bytes) -> str:
    """Return a 16-hex-digit key id: HMAC-SHA256(key, label), first 8 bytes.

    The id names the key in the store and in logs without revealing it.
    """
    digest = hmac.new(key, _FINGERPRINT_LABEL, hashlib.sha256).digest()
    return digest[:8].hex()


@dataclass(frozen=True, eq=False)
class MemoryMasterKey:
    """A 256-bit master key held in process memory, e.g. imported by a customer.

    The repr shows the key id, never the key.
    """

    key: bytes = field(repr=False)
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        if len(self.key) != wrapping.KEY_SIZE:
            raise MasterKeyError(
                f"the master key must be {wrapping.KEY_SIZE} bytes, got "
                f"{len(self.key)}; generate one with `head -c 32 /dev/urandom`"
            )
        object.__setattr__(self, "key_id", key_fingerprint(self.key))

    def wrap(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """Wrap `plaintext` with AES-256-GCM under the master key."""
        return wrapping.wrap(self.key, plaintext, associated_data)

    def unwrap(self, wrapped: bytes, associated_data: bytes) -> bytes:
        """Unwrap a value made by `wrap`, or raise DecryptionFailed."""
        return wrapping.unwrap(self.key, wrapped, associated_data)


@dataclass(frozen=True, eq=False)
class FileMasterKey(MemoryMasterKey):
    """The standard-mode master key: 32 random bytes in a mode-0600 file."""

    path: Path = field(kw_only=True)

    @classmethod
    def load_or_create(cls, path: Path) -> FileMasterKey:
        """Load the key file at `path`, creating it on first start.

        Raise MasterKeyError if the file is accessible to group or others,
        is not a regular file or does not contain exactly 32 bytes. A new
        file appears under `path` only complete and with mode 0600, and an
        existing file is never replaced.
        """
        try:
            key = _read_key_file(path)
        except FileNotFoundError:
            key = _create_key_file(path)
        return cls(key, path=path)

    @classmethod
    def load(cls, path: Path) -> FileMasterKey | None:
        """Load the key file at `path`, or return None if there is none.

        Raise MasterKeyError for a file that `load_or_create` rejects.
        """
        try:
            return cls(_read_key_file(path), path=path)
        except FileNotFoundError:
            return None


def load_platform_key(
    directory: Path, committed_key_id: Callable[[], str | None]
) -> FileMasterKey:
    """Load `master.key` from `directory`, creating it on first start.

    A `master.key.next` whose key id `committed_key_id` returns belongs to a
    rotation whose key store transaction committed before the process
    stopped, so it replaces `master.key` first. Any other `.next` file
    stays for the next rotation to reuse.
    """
    path = directory / MASTER_KEY_FILE
    current = FileMasterKey.load_or_create(path)
    if not (directory / NEXT_KEY_FILE).exists():
        return current
    with rotation_lock(directory):
        upcoming = FileMasterKey.load(directory / NEXT_KEY_FILE)
        if upcoming is None or upcoming.key_id != committed_key_id():
            # master.key is the committed key, read again in case another
            # process finished the rotation since the first read.
            return FileMasterKey.load_or_create(path)
        install_next_key(directory, upcoming.key_id)
    return FileMasterKey(upcoming.key, path=path)


@contextmanager
def rotation_lock(directory: Path) -> Iterator[None]:
    """Hold the exclusive rotation lock of the data directory for the block.

    Rotations, and start-ups that finish one, take it, so that no process
    moves `master.key.next` onto `master.key` while another process has not
    yet committed the rewrap under that file's key. The lock is an `flock`
    on `master.key.lock`, released when the descriptor closes, so it also
    ends with a process that dies.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    descriptor = os.open(directory / _LOCK_FILE, flags, _FILE_MODE)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def install_next_key(directory: Path, key_id: str) -> None:
    """Replace `master.key` by `master.key.next`, which contains key `key_id`.

    `os.replace` is atomic, so `master.key` contains the old or the new key
    at every moment, and the directory fsync makes the change durable. The old
    key is gone afterwards. A missing `.next` is accepted when `master.key`
    already contains `key_id`, because another process finished the rotation.
    Call this only under `rotation_lock`.
    """
    path = directory / MASTER_KEY_FILE
    try:
        os.replace(directory / NEXT_KEY_FILE, path)
    except FileNotFoundError:
        installed = FileMasterKey.load(path)
        if installed is None or installed.key_id != key_id:
            raise MasterKeyError(
                f"{NEXT_KEY_FILE} in {directory} is missing, and {path} does not "
                f"contain the new platform key {key_id}; restore both files from "
                "the backup that matches keys.sqlite3"
            ) from None
    _fsync_directory(directory)


def _read_key_file(path: Path) -> bytes:
    """Read and check the key file, or raise FileNotFoundError if it is missing."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise MasterKeyError(
            f"cannot open master key file {path}: {error.strerror}; "
            "run the proxy as the user that owns the file"
        ) from error
    try:
        _check_key_file(path, os.fstat(descriptor))
        key = _read_exactly(descriptor, wrapping.KEY_SIZE + 1)
    finally:
        os.close(descriptor)
    if len(key) != wrapping.KEY_SIZE:
        raise _wrong_size(path, len(key))
    return key


def _check_key_file(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise MasterKeyError(
            f"master key file {path} is not a regular file; "
            "point the data directory at the real key file"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise MasterKeyError(
            f"master key file {path} has mode {mode:04o}, so group or other "
            f"users can access it; run `chmod 600 {path}` and find out who "
            "may have copied it"
        )
    if info.st_size != wrapping.KEY_SIZE:
        raise _wrong_size(path, info.st_size)


def _wrong_size(path: Path, size: int) -> MasterKeyError:
    return MasterKeyError(
        f"master key file {path} must contain exactly {wrapping.KEY_SIZE} "
        f"bytes, found {size}; restore the file from a backup, or delete it "
        "only if no organisation was ever created under it"
    )


def _create_key_file(path: Path) -> bytes:
    """Write a new random key to `path` and return it.

    The key goes to a temporary file created with O_EXCL and mode 0600, so it
    is never readable by others, and `os.link` then publishes it under `path`.
    The link fails if `path` exists, so a process that loses a start-up race
    reads the winner's key instead of replacing it.
    """
    key = secrets.token_bytes(wrapping.KEY_SIZE)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        descriptor = os.open(temporary, flags, _FILE_MODE)
    except FileNotFoundError as error:
        raise MasterKeyError(
            f"directory {path.parent} of the master key file does not exist; "
            "create the data directory first"
        ) from error
    try:
        try:
            _write_all(descriptor, key)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        try:
            os.link(temporary, path)
        except FileExistsError:
            return _read_key_file(path)
        _fsync_directory(path.parent)
    finally:
        temporary.unlink(missing_ok=True)
    return key


def _read_exactly(descriptor: int, limit: int) -> bytes:
    chunks = []
    remaining = limit
    while remaining > 0:
        chunk = os.read(descriptor, remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(descriptor, view)
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)

"""Tests of the master key file and the in-memory master key."""

import hashlib
import hmac
import multiprocessing
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from crypto.errors import DecryptionFailed, MasterKeyError
from crypto.master import FileMasterKey, MasterKey, MemoryMasterKey, key_fingerprint


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    # A umask of 0 would let a careless create make the file world-readable.
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_load_or_create_creates_0600_file(
    tmp_path: Path, permissive_umask: None
) -> None:
    path = tmp_path / "master.key"

    master = FileMasterKey.load_or_create(path)

    assert _mode(path) == 0o600
    assert path.read_bytes() == master.key
    assert len(master.key) == 32
    assert master.path == path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["master.key"]


def test_load_or_create_reuses_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    first = FileMasterKey.load_or_create(path)

    second = FileMasterKey.load_or_create(path)

    assert second.key == first.key
    assert second.key_id == first.key_id


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o660])
def test_load_or_create_rejects_open_mode(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    FileMasterKey.load_or_create(path)
    path.chmod(mode)

    with pytest.raises(MasterKeyError, match=f"mode {mode:04o}") as raised:
        FileMasterKey.load_or_create(path)

    assert f"chmod 600 {path}" in str(raised.value)


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_load_or_create_rejects_wrong_size(tmp_path: Path, size: int) -> None:
    path = tmp_path / "master.key"
    path.write_bytes(bytes(size))
    path.chmod(0o600)

    with pytest.raises(
        MasterKeyError, match=f"exactly 32 bytes, found {size}"
    ) as raised:
        FileMasterKey.load_or_create(path)

    assert "restore the file from a backup" in str(raised.value)
    assert path.read_bytes() == bytes(size)


def test_load_or_create_rejects_directory(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.mkdir(mode=0o700)

    with pytest.raises(MasterKeyError, match="not a regular file"):
        FileMasterKey.load_or_create(path)


def test_load_or_create_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "master.key"

    with pytest.raises(MasterKeyError, match="create the data directory"):
        FileMasterKey.load_or_create(path)


def _load_key_id(path: Path) -> str:
    return FileMasterKey.load_or_create(path).key_id


def test_load_or_create_processes_agree(tmp_path: Path) -> None:
    # Processes that start together must end up with one key, not several.
    path = tmp_path / "master.key"
    context = multiprocessing.get_context("spawn")

    with context.Pool(4) as pool:
        key_ids = pool.map(_load_key_id, [path] * 8)

    assert set(key_ids) == {FileMasterKey.load_or_create(path).key_id}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["master.key"]


def test_master_key_repr_hides_key(tmp_path: Path) -> None:
    file_key = FileMasterKey.load_or_create(tmp_path / "master.key")
    memory_key = MemoryMasterKey(secrets.token_bytes(32))

    for master in (file_key, memory_key):
        for text in (repr(master), str(master)):
            assert master.key.hex() not in text
            assert repr(master.key) not in text
            assert master.key_id in text


def test_key_id_is_fingerprint() -> None:
    key = secrets.token_bytes(32)
    expected = hmac.new(key, b"byok-proxy key id", hashlib.sha256).digest()[:8]

    master = MemoryMasterKey(key)

    assert master.key_id == expected.hex()
    assert master.key_id == key_fingerprint(key)
    assert key.hex()[:16] != master.key_id


def test_memory_master_key_round_trip() -> None:
    master: MasterKey = MemoryMasterKey(secrets.token_bytes(32))

    wrapped = master.wrap(b"k" * 32, b"ad")

    assert master.unwrap(wrapped, b"ad") == b"k" * 32
    with pytest.raises(DecryptionFailed):
        master.unwrap(wrapped, b"other ad")


def test_memory_master_key_rejects_short_key() -> None:
    with pytest.raises(MasterKeyError, match="must be 32 bytes, got 16"):
        MemoryMasterKey(bytes(16))

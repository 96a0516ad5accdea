"""Open the key hierarchy of a data directory (standard mode)."""

from __future__ import annotations

from pathlib import Path

from crypto.keyring import KeyRing
from crypto.master import FileMasterKey
from crypto.sqlite_store import SqliteKeyStore

__all__ = ["open_keyring"]


def open_keyring(data_dir: Path, *, ttl: float = 300.0) -> KeyRing:
    """Open the key store in `data_dir` under its file master key.

    The master key file is created on first use.
    """
    master = FileMasterKey.load_or_create(data_dir / "master.key")
    return KeyRing(SqliteKeyStore.open(data_dir), master, ttl=ttl)

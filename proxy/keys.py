"""Open the key hierarchy of a data directory for the proxy or a CLI command.

The platform master key file, the key store and the audit log live in the
data directory. A PKCS#11 token, when configured, contains the master keys
of organisations moved into it. Its PIN comes from the environment or the
configuration, never from the data directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from crypto.audit import AuditLog, KeyValue
from crypto.hsm import HsmConfig, HsmMasterKey
from crypto.key_agent import KeyAgent
from crypto.keyring import KeyRing
from crypto.master import MasterKey
from crypto.masters import HsmOpener, MasterKeys, PlatformKey
from crypto.operations import KeyOperations
from crypto.sqlite_store import SqliteKeyStore
from proxy.settings import Settings

__all__ = [
    "HsmSettings",
    "KeyServices",
    "hsm_settings",
    "open_keyring",
    "open_keys",
]


@dataclass(frozen=True)
class HsmSettings:
    """The PKCS#11 library, the token's label and its user PIN."""

    library: Path
    token_label: str
    pin: str = field(repr=False)

    def opener(self) -> HsmOpener:
        """Return a function that opens the token key with a given label."""

        def open_key(key_label: str) -> MasterKey:
            config = HsmConfig(self.library, self.token_label, self.pin, key_label)
            return HsmMasterKey(config)

        return open_key


def hsm_settings(settings: Settings) -> HsmSettings | None:
    """Return the proxy's PKCS#11 token settings, or None without a library."""
    if settings.pkcs11_library is None:
        return None
    return HsmSettings(
        settings.pkcs11_library, settings.pkcs11_token, settings.pkcs11_pin
    )


@dataclass(frozen=True)
class KeyServices:
    """The key ring and what comes with it, opened and closed together."""

    keyring: KeyRing
    masters: MasterKeys
    audit: AuditLog
    operations: KeyOperations

    def close(self) -> None:
        """Forget every cached key, then close the key store and the audit log."""
        self.keyring.close()
        self.audit.close()


def open_keys(
    data_dir: Path,
    *,
    ttl: float = 300.0,
    hsm: HsmSettings | None = None,
    actor: str | None = None,
    agent: KeyAgent | None = None,
) -> KeyServices:
    """Open the key store in `data_dir` under its platform master key.

    The master key file is created on first use, and a platform key
    rotation that stopped before it replaced the file is finished here.
    Organisation key unwraps that miss the cache are audited under `actor`,
    by default this process. A worker process passes the `agent` of its
    supervisor, which lends it the imported keys that only the supervisor
    holds.
    """
    # The store comes first, because it names the key that master.key must hold.
    store = SqliteKeyStore.open(data_dir)
    try:
        platform = PlatformKey.open(data_dir, store.platform_key_id)
        audit = AuditLog.open(data_dir)
    except BaseException:
        store.close()
        raise
    masters = MasterKeys(
        platform, hsm.opener() if hsm else None, agent.key if agent else None
    )
    who = actor or f"proxy:{os.getpid()}"

    def observe(org_id: bytes, version: int, key_id: str, outcome: str) -> None:
        keys: dict[str, KeyValue] = {
            "org_key_version": version,
            "master_key_id": key_id,
        }
        audit.append(who, "org_key.unwrap", org_id.hex(), keys, outcome)

    keyring = KeyRing(store, masters, ttl=ttl, on_unwrap=observe)
    return KeyServices(keyring, masters, audit, KeyOperations(keyring, masters, audit))


def open_keyring(data_dir: Path, *, ttl: float = 300.0) -> KeyRing:
    """Open only the key ring of `data_dir`, with unwraps audited."""
    return open_keys(data_dir, ttl=ttl).keyring

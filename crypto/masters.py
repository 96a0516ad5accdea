"""The master keys one process can use, found by key id.

Every organisation key record names the master key that wrapped it. The
platform key comes from the data directory, imported keys exist only in
this process's memory once a customer supplied them, and HSM keys are
opened in their token on first use. A missing key is a `KeyUnavailable`:
the data comes back once the key does.

Another process may rotate the platform key file at any time. `PlatformKey`
therefore reads the files again when a record names a platform key id that
this process has not loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from crypto.errors import DecryptionFailed, KeyUnavailable, MasterKeyError
from crypto.keystore import CredentialRecord, Organisation, OrgKeyRecord
from crypto.master import (
    MASTER_KEY_FILE,
    NEXT_KEY_FILE,
    FileMasterKey,
    MasterKey,
    install_next_key,
    load_platform_key,
    rotation_lock,
)
from crypto.wrap import org_key_associated_data, secret_associated_data

__all__ = [
    "HsmOpener",
    "ImportedLender",
    "MasterKeys",
    "PlatformKey",
    "rewrap_org_key",
    "rewrap_secret",
]

HsmOpener = Callable[[str], MasterKey]
"""Opens the token key with a label; raises KeyUnavailable if it cannot."""

ImportedLender = Callable[[str], MasterKey]
"""Returns a stand-in for an imported key that another process holds."""


_Result = TypeVar("_Result")


class PlatformKey:
    """The platform master key of this process, which a rotation can replace.

    A key given as an object stays as it is. A key loaded from a data
    directory is looked up again in `master.key.next` and `master.key` when
    a record names a key id that this process has not loaded, so a rotation
    by another process needs no restart here.
    """

    def __init__(self, master: MasterKey, directory: Path | None = None) -> None:
        self._current = master
        self._directory = directory

    @classmethod
    def open(
        cls, directory: Path, committed_key_id: Callable[[], str | None]
    ) -> PlatformKey:
        """Load the key file of `directory`, finishing an interrupted rotation.

        `committed_key_id` returns the platform key id that the key store names.
        """
        return cls(load_platform_key(directory, committed_key_id), directory)

    @property
    def current(self) -> MasterKey:
        """The key that wraps new organisation keys and access key secrets."""
        return self._current

    def find(self, key_id: str) -> MasterKey | None:
        """Return the platform key with `key_id`, or None if no key file contains it.

        A key id other than the current one makes this read the key files
        again, once per call. A key found there becomes the current key,
        because only a committed rotation makes a record name it.
        """
        if key_id != self._current.key_id and self._directory is not None:
            # The new file first: a rotation that replaces master.key between
            # the two reads then cannot hide the new key from both.
            for name in (NEXT_KEY_FILE, MASTER_KEY_FILE):
                found = FileMasterKey.load(self._directory / name)
                if found is not None and found.key_id == key_id:
                    self._current = found
                    break
        return self._current if self._current.key_id == key_id else None

    def rotate(
        self, rewrap: Callable[[MasterKey, MasterKey], _Result]
    ) -> tuple[MasterKey, MasterKey, _Result]:
        """Replace the key file by a new key; return the old and new keys.

        Under the rotation lock, the new key is written to `master.key.next`,
        or read from there if an interrupted rotation left it. Then
        `rewrap(old, new)` moves the key store onto it in one transaction,
        and its result is returned third. Last, the file replaces
        `master.key`. A failure at any step leaves files that the next start
        and the next rotation continue from.
        """
        if self._directory is None:
            raise MasterKeyError(
                "the platform master key was given in memory, not loaded from "
                "a data directory, so there is no key file to rotate"
            )
        directory = self._directory
        with rotation_lock(directory):
            old = FileMasterKey.load_or_create(directory / MASTER_KEY_FILE)
            new = FileMasterKey.load_or_create(directory / NEXT_KEY_FILE)
            result = rewrap(old, new)
            install_next_key(directory, new.key_id)
        self._current = FileMasterKey(new.key, path=directory / MASTER_KEY_FILE)
        return old, self._current, result


class MasterKeys:
    """The platform key, the imported keys and the opened HSM keys."""

    def __init__(
        self,
        platform: MasterKey | PlatformKey,
        hsm: HsmOpener | None = None,
        lender: ImportedLender | None = None,
    ) -> None:
        """`lender` reaches the imported keys of a supervisor process, if any."""
        if not isinstance(platform, PlatformKey):
            platform = PlatformKey(platform)
        self._platform = platform
        self._hsm = hsm
        self._lender = lender
        self._imported: dict[str, MasterKey] = {}
        self._hsm_keys: dict[str, MasterKey] = {}

    @property
    def platform(self) -> MasterKey:
        """The standard-mode key, which also wraps access key secrets."""
        return self._platform.current

    @property
    def platform_source(self) -> PlatformKey:
        """Where the platform key comes from, for lookups and rotation."""
        return self._platform

    def platform_key(self, key_id: str) -> MasterKey:
        """Return the platform key with `key_id`, re-reading the key files if needed.

        Raise MasterKeyError when neither the loaded key nor a key file has it.
        """
        master = self._platform.find(key_id)
        if master is None:
            raise MasterKeyError(
                f"the key store names platform master key {key_id}, but the "
                f"loaded key is {self.platform.key_id} and no key file contains "
                f"{key_id}; start with the master key that wrapped this key store"
            )
        return master

    def add_imported(self, master: MasterKey) -> None:
        """Hold a customer's key in memory until `forget` or the process ends."""
        self._imported[master.key_id] = master

    def imported_key(self, key_id: str) -> MasterKey | None:
        """Return the imported key with that id, if this process has it."""
        return self._imported.get(key_id)

    def forget(self, key_id: str) -> None:
        """Drop an imported or opened HSM key from memory."""
        self._imported.pop(key_id, None)
        for label, master in list(self._hsm_keys.items()):
            if master.key_id == key_id:
                del self._hsm_keys[label]

    def hsm_key(self, label: str) -> MasterKey:
        """Open, or return the opened, token key with that label."""
        master = self._hsm_keys.get(label)
        if master is None:
            if self._hsm is None:
                raise KeyUnavailable(
                    "no PKCS#11 token is configured; start the proxy with "
                    "--pkcs11-library, --pkcs11-token and the PIN"
                )
            master = self._hsm(label)
            self._hsm_keys[label] = master
        return master

    def for_record(self, organisation: Organisation, key_id: str) -> MasterKey:
        """Return the master key with `key_id` that wraps this organisation's keys.

        Raise KeyUnavailable when this process does not hold it: an imported
        key not supplied since the last start, or a token key that cannot
        be opened. Raise MasterKeyError when the platform key loaded is not
        the one that wrapped them, a configuration error.
        """
        if key_id == self.platform.key_id:
            return self.platform
        imported = self._imported.get(key_id)
        if imported is not None:
            return imported
        if organisation.key_source == "imported" and self._lender is not None:
            return self._lender(key_id)
        if organisation.key_source == "hsm":
            master = self.hsm_key(organisation.hsm_key_label)
            if master.key_id == key_id:
                return master
        if organisation.key_source == "platform":
            platform = self._platform.find(key_id)
            if platform is not None:
                return platform
        raise _not_held(organisation, key_id)


def rewrap_org_key(
    record: OrgKeyRecord, old: MasterKey, new: MasterKey
) -> OrgKeyRecord:
    """Return the organisation key record wrapped by `new` instead of `old`.

    Raise MasterKeyError if `old` does not open it.
    """
    if record.wrapped is None:
        raise ValueError("a destroyed organisation key cannot be rewrapped")
    associated_data = org_key_associated_data(record.org_id, record.version)
    try:
        key = old.unwrap(record.wrapped, associated_data)
    except DecryptionFailed:
        raise MasterKeyError(
            f"organisation key version {record.version} of organisation "
            f"{record.org_id.hex()} does not open under master key {old.key_id}; "
            "restore the key store and master.key from the same backup"
        ) from None
    wrapped = new.wrap(key, associated_data)
    return replace(record, wrapped=wrapped, master_key_id=new.key_id)


def rewrap_secret(
    record: CredentialRecord, old: MasterKey, new: MasterKey
) -> CredentialRecord:
    """Return the credentials with the secret wrapped by `new` instead of `old`.

    Raise MasterKeyError if `old` does not open it.
    """
    if record.wrapped_secret is None:
        raise ValueError("a destroyed access key secret cannot be rewrapped")
    associated_data = secret_associated_data(record.access_key_id)
    try:
        secret = old.unwrap(record.wrapped_secret, associated_data)
    except DecryptionFailed:
        raise MasterKeyError(
            f"the secret of access key {record.access_key_id} does not open "
            f"under the platform master key {old.key_id}; restore the key "
            "store and master.key from the same backup"
        ) from None
    return replace(record, wrapped_secret=new.wrap(secret, associated_data))


def _not_held(
    organisation: Organisation, key_id: str
) -> KeyUnavailable | MasterKeyError:
    if organisation.key_source == "platform":
        return MasterKeyError(
            f"organisation {organisation.name!r} has keys wrapped by master key "
            f"{key_id}, but the loaded master key is a different one; start "
            "with the master key that created this key store"
        )
    if organisation.key_source == "imported":
        return KeyUnavailable(
            f"organisation {organisation.name!r} uses an imported master key "
            f"({key_id}) that this process does not hold; the customer must "
            "supply it again after every restart"
        )
    return KeyUnavailable(
        f"organisation {organisation.name!r} has keys wrapped by master key "
        f"{key_id}, which this process cannot reach"
    )

"""The master keys one process can use, found by key id.

Every organisation key record names the master key that wrapped it. The
platform key comes from the data directory, imported keys exist only in
this process's memory once a customer supplied them, and HSM keys are
opened in their token on first use. A missing key is a `KeyUnavailable`:
the data comes back once the key does.
"""

from __future__ import annotations

from collections.abc import Callable

from crypto.errors import KeyUnavailable, MasterKeyError
from crypto.keystore import Organisation
from crypto.master import MasterKey

__all__ = ["HsmOpener", "ImportedLender", "MasterKeys"]

HsmOpener = Callable[[str], MasterKey]
"""Opens the token key with a label; raises KeyUnavailable if it cannot."""

ImportedLender = Callable[[str], MasterKey]
"""Returns a stand-in for an imported key that another process holds."""


class MasterKeys:
    """The platform key, the imported keys and the opened HSM keys."""

    def __init__(
        self,
        platform: MasterKey,
        hsm: HsmOpener | None = None,
        lender: ImportedLender | None = None,
    ) -> None:
        """`lender` reaches the imported keys of a supervisor process, if any."""
        self._platform = platform
        self._hsm = hsm
        self._lender = lender
        self._imported: dict[str, MasterKey] = {}
        self._hsm_keys: dict[str, MasterKey] = {}

    @property
    def platform(self) -> MasterKey:
        """The standard-mode key, which also wraps access key secrets."""
        return self._platform

    def add_imported(self, master: MasterKey) -> None:
        """Hold a customer's key in memory until `forget` or the process ends."""
        self._imported[master.key_id] = master

    def imported_key(self, key_id: str) -> MasterKey | None:
        """Return the imported key with that id, if this process holds it."""
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
        if key_id == self._platform.key_id:
            return self._platform
        imported = self._imported.get(key_id)
        if imported is not None:
            return imported
        if organisation.key_source == "imported" and self._lender is not None:
            return self._lender(key_id)
        if organisation.key_source == "hsm":
            master = self.hsm_key(organisation.hsm_key_label)
            if master.key_id == key_id:
                return master
        raise _not_held(organisation, key_id)


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

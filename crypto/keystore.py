"""The key store interface and its records.

A key store keeps organisations, their wrapped organisation keys and DEKs,
and access key secrets wrapped by the master key. It stores and returns only
wrapped keys. `crypto.sqlite_store.SqliteKeyStore` serves one host, and a PostgreSQL
store for many proxy hosts can implement the same `KeyStore` protocol.

Methods that change several rows run them in one transaction, which either
commits all of them or none. Such a method checks the state it expects (the
organisation is active, the current versions are the ones the caller read)
inside its transaction and raises if another process changed it meanwhile.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from crypto.header import Purpose
from crypto.wrap import ORG_ID_SIZE

__all__ = [
    "CredentialRecord",
    "DekRecord",
    "DekState",
    "KeySource",
    "KeyStore",
    "OrgKeyRecord",
    "OrgKeyState",
    "OrgState",
    "Organisation",
    "parse_organisation_id",
    "validate_organisation_name",
]

OrgState = Literal["active", "revoked"]
OrgKeyState = Literal["active", "rotated", "destroyed"]
DekState = Literal["active", "rotated"]
KeySource = Literal["platform", "imported", "hsm"]
"""The location of an organisation's master key: the platform's key file, a
key the customer imported (kept in memory only), or a key in a PKCS#11 token."""

_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")
_ORG_ID_PATTERN = re.compile(r"[0-9a-f]{32}")


def validate_organisation_name(name: str) -> None:
    """Raise ValueError unless `name` is a valid organisation name.

    A name is 2 to 63 characters of lowercase letters, digits and hyphens,
    starting with a letter or digit. A name of 32 hexadecimal digits is
    rejected because it would read as an organisation id.
    """
    if not _NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"organisation name {name!r} is invalid; use 2 to 63 lowercase "
            "letters, digits and hyphens, starting with a letter or digit"
        )
    if _ORG_ID_PATTERN.fullmatch(name):
        raise ValueError(
            f"organisation name {name!r} looks like an organisation id; "
            "choose a name that is not 32 hexadecimal digits"
        )


def parse_organisation_id(text: str) -> bytes | None:
    """Return the id written as 32 hexadecimal digits, or None for other text."""
    if _ORG_ID_PATTERN.fullmatch(text):
        return bytes.fromhex(text)
    return None


@dataclass(frozen=True)
class Organisation:
    """A tenant: the owner of one organisation key and one DEK per purpose.

    `key_source` names the master key that wraps its organisation keys;
    `hsm_key_label` names the token key when that source is "hsm".
    `max_key_age` is the rotation policy in seconds, or None for none.
    """

    id: bytes
    name: str
    state: OrgState
    created_at: datetime
    revoked_at: datetime | None = None
    key_source: KeySource = "platform"
    hsm_key_label: str = ""
    max_key_age: float | None = None

    def __post_init__(self) -> None:
        _check_org_id(self.id)

    @property
    def id_hex(self) -> str:
        """The id as 32 hexadecimal digits, as the CLI shows and accepts it."""
        return self.id.hex()

    @property
    def active(self) -> bool:
        """Whether the organisation's keys may be used."""
        return self.state == "active"


@dataclass(frozen=True)
class OrgKeyRecord:
    """One version of an organisation key, wrapped by the master key.

    `wrapped` is None once the organisation is revoked and the key destroyed.
    `master_key_id` is the fingerprint of the master key that wrapped it.
    """

    org_id: bytes
    version: int
    wrapped: bytes | None
    state: OrgKeyState
    master_key_id: str
    created_at: datetime


@dataclass(frozen=True)
class DekRecord:
    """One version of a purpose DEK, wrapped by organisation key `org_key_version`.

    Rotating the organisation key rewraps the active DEK of each purpose, so
    its `org_key_version` and `wrapped` change while `version` stays.
    """

    org_id: bytes
    purpose: Purpose
    version: int
    org_key_version: int
    wrapped: bytes
    state: DekState
    created_at: datetime


@dataclass(frozen=True)
class CredentialRecord:
    """An access key id and its secret wrapped by the master key.

    `wrapped_secret` is None once the organisation is revoked.
    """

    access_key_id: str
    org_id: bytes
    wrapped_secret: bytes | None
    created_at: datetime


class KeyStore(Protocol):
    """Persistent storage of the key hierarchy, which contains only wrapped keys.

    Lookups return None when nothing matches. Write methods raise
    `UnknownOrganisation`, `KeyRevoked` or `OrganisationExists` for the
    organisation's state and `KeyUnavailable` when a concurrent change made
    the caller's versions stale, in which case a retry may succeed.
    """

    def revision(self) -> int:
        """Return a number that changes when another process changed the keys.

        Called before every request, so it must be cheap when nothing changed.
        """
        ...

    def create_organisation(
        self,
        organisation: Organisation,
        org_key: OrgKeyRecord,
        deks: Sequence[DekRecord],
    ) -> None:
        """Insert an organisation, its first organisation key and its DEKs.

        Under the platform key, `org_key.master_key_id` must be the platform
        key id that the store names, if it names one.
        """
        ...

    def organisation(self, org_id: bytes) -> Organisation | None:
        """Return the organisation with that id."""
        ...

    def organisation_named(self, name: str) -> Organisation | None:
        """Return the organisation with that name."""
        ...

    def organisations(self) -> list[Organisation]:
        """Return every organisation, revoked ones included, ordered by name."""
        ...

    def org_key(self, org_id: bytes, version: int) -> OrgKeyRecord | None:
        """Return one version of an organisation key."""
        ...

    def org_keys(self, org_id: bytes) -> list[OrgKeyRecord]:
        """Return every version of an organisation key, oldest first."""
        ...

    def active_dek(self, org_id: bytes, purpose: Purpose) -> DekRecord | None:
        """Return the DEK that new writes of that purpose use."""
        ...

    def deks(self, org_id: bytes) -> list[DekRecord]:
        """Return every DEK of an organisation by purpose and version."""
        ...

    def rotate_org_key(
        self, org_id: bytes, org_key: OrgKeyRecord, rewrapped: Sequence[DekRecord]
    ) -> None:
        """Make `org_key` the active organisation key and store rewrapped DEKs.

        The previous active version becomes "rotated". `org_key.version` must
        follow the active version, and `rewrapped` must contain exactly the
        active DEKs, wrapped under `org_key`. Under the platform key,
        `org_key.master_key_id` must be the platform key id that the store
        names, if it names one.
        """
        ...

    def rotate_dek(self, dek: DekRecord) -> None:
        """Make `dek` the active DEK of its purpose and rotate the previous one.

        `dek.version` must follow the active version and `dek.org_key_version`
        must name the active organisation key.
        """
        ...

    def rewrap_org_keys(
        self, organisation: Organisation, rewrapped: Sequence[OrgKeyRecord]
    ) -> None:
        """Store every organisation key wrapped under a new master key.

        `rewrapped` must contain exactly the versions that are not
        destroyed. The organisation's `key_source` and `hsm_key_label` are
        stored with them, in the same transaction. Under the platform key,
        every record must name the platform key id that the store names, if
        it names one.
        """
        ...

    def platform_key_id(self) -> str | None:
        """Return the id of the platform key, or None before its first rotation.

        `rewrap_platform` records it, so a process that loaded an older key
        file can tell that it must read the key file again.
        """
        ...

    def wrapped_secrets(self) -> list[CredentialRecord]:
        """Return every access key whose secret is not destroyed."""
        ...

    def rewrap_platform(
        self,
        old_key_id: str,
        new_key_id: str,
        org_keys: Sequence[OrgKeyRecord],
        secrets: Sequence[CredentialRecord],
    ) -> None:
        """Store everything the platform key wraps, rewrapped under a new key.

        `org_keys` must contain exactly the organisation key versions that
        are not destroyed and name `old_key_id`, now naming `new_key_id`, and
        `secrets` exactly the access keys whose secret is not destroyed. The
        store then names `new_key_id` as the platform key. All of it happens
        in one transaction.
        """
        ...

    def set_max_key_age(self, org_id: bytes, max_key_age: float | None) -> None:
        """Set the organisation's rotation policy: seconds, or None for none."""
        ...

    def revoke_organisation(self, org_id: bytes, revoked_at: datetime) -> Organisation:
        """Mark the organisation revoked and erase its key material.

        Sets every organisation key to "destroyed" without its wrapped value,
        deletes every DEK and the wrapped access key secrets, then overwrites
        the freed space in the store. Revoking a revoked organisation only
        repeats the overwrite. Returns the revoked organisation.
        """
        ...

    def add_credentials(
        self, credentials: CredentialRecord, *, master_key_id: str | None = None
    ) -> None:
        """Insert an access key of an active organisation.

        `master_key_id` names the platform key that wrapped the secret. If
        given, it must be the platform key id that the store names, if any.
        """
        ...

    def credentials(self, access_key_id: str) -> CredentialRecord | None:
        """Return the access key with that id."""
        ...

    def credential_count(self, org_id: bytes) -> int:
        """Return the number of access keys of an organisation."""
        ...

    def close(self) -> None:
        """Release the connection, after which the store cannot be used."""
        ...


def _check_org_id(org_id: bytes) -> None:
    if len(org_id) != ORG_ID_SIZE:
        raise ValueError(
            f"organisation id must be {ORG_ID_SIZE} bytes, got {len(org_id)}"
        )

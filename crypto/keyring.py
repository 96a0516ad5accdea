"""The key ring: unwraps and caches the keys of the hierarchy for the proxy.

The hierarchy is master key -> organisation key (one active version per
organisation) -> DEK (one active version per organisation and purpose).
Access key secrets are wrapped by the master key. Unwrapped keys and secrets
live only in this process's memory, in TTL caches with LRU eviction, and are
never written anywhere.
"""

from __future__ import annotations

import base64
import re
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, NoReturn

from cachetools import TTLCache

from crypto.errors import (
    DecryptionFailed,
    KeyRevoked,
    KeyStoreError,
    KeyUnavailable,
    MasterKeyError,
    UnknownAccessKey,
    UnknownOrganisation,
)
from crypto.header import DataKey, Purpose
from crypto.keystore import (
    CredentialRecord,
    DekRecord,
    KeySource,
    KeyStore,
    Organisation,
    OrgKeyRecord,
    OrgKeyState,
    OrgState,
    parse_organisation_id,
    validate_organisation_name,
)
from crypto.master import MasterKey
from crypto.masters import MasterKeys, rewrap_org_key, rewrap_secret
from crypto.wrap import (
    KEY_SIZE,
    ORG_ID_SIZE,
    org_key_associated_data,
    secret_associated_data,
    unwrap_dek,
    wrap_dek,
)

__all__ = [
    "KeyRing",
    "KeyRingStatus",
    "OrgRef",
    "OrganisationStatus",
    "PlatformRotation",
]

OrgRef = Organisation | str | bytes
"""An organisation, its name, its id or its id as 32 hexadecimal digits."""

ACCESS_KEY_PREFIX = "BYOK"
SECRET_LENGTH = 40
_ACCESS_KEY_ID_BYTES = 10  # 16 base32 characters
_ACCESS_KEY_PATTERN = re.compile(rf"{ACCESS_KEY_PREFIX}[A-Z2-7]{{16}}")
_SECRET_ALPHABET = string.ascii_letters + string.digits

_DekCacheKey = tuple[bytes, Purpose, int, int, bytes]
_MAX_KEY_AGE = 100 * 365.25 * 86_400.0

UnwrapObserver = Callable[[bytes, int, str, str], None]
"""A callback run after each organisation key unwrap on a cache miss.

It receives the organisation id, the key version, the master key id and
"ok" or "failed: <error>", so the audit log can record the unwrap."""


@dataclass(frozen=True)
class OrganisationStatus:
    """Key versions and states of one organisation, without key material."""

    id_hex: str
    name: str
    state: OrgState
    created_at: datetime
    revoked_at: datetime | None
    org_keys: tuple[tuple[int, OrgKeyState], ...]
    active_deks: tuple[tuple[str, int], ...]
    credentials: int


@dataclass(frozen=True)
class KeyRingStatus:
    """Summary of the store and of this process's caches for the CLI."""

    master_key_id: str
    organisations: tuple[OrganisationStatus, ...]
    cached_org_keys: int
    cached_deks: int
    cached_current_deks: int
    cached_secrets: int

    def as_dict(self) -> dict[str, Any]:
        """Return the summary as nested dicts and lists, e.g. for JSON output."""
        return asdict(self)


@dataclass(frozen=True)
class PlatformRotation:
    """The outcome of a platform master key rotation, without key material.

    `resumed` is true when the key store had already moved to the new key
    in an interrupted rotation, so only the key file was left to replace.
    """

    old_key_id: str
    new_key_id: str
    org_keys: int
    secrets: int
    resumed: bool


class KeyRing:
    """Creates, rotates, revokes and unwraps the keys of every organisation.

    Every method is synchronous, and the proxy calls them on its event loop:
    a cache hit touches no store, and a miss makes a few short queries on
    the store's local connection. One KeyRing serves one thread.

    Revocation by another process takes effect in this one at the next
    `refresh`. The proxy therefore calls `refresh()` and then
    `ensure_active(org_id)` before each request.

    Each of the four caches (organisation keys, DEKs by header, current DEKs
    for writes, access key secrets) keeps at most `maxsize` entries for at
    most `ttl` seconds of `timer`.
    """

    # TODO: a PostgreSQL store shared by many hosts makes network calls, which
    # would block the event loop. It needs an async KeyStore and KeyRing.

    def __init__(
        self,
        store: KeyStore,
        master: MasterKey | MasterKeys,
        *,
        ttl: float = 300.0,
        maxsize: int = 4096,
        timer: Callable[[], float] = time.monotonic,
        on_unwrap: UnwrapObserver | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"key cache TTL must be positive seconds, got {ttl}")
        if maxsize < 1:
            raise ValueError(f"key cache maxsize must be at least 1, got {maxsize}")
        self._store = store
        self._masters = master if isinstance(master, MasterKeys) else MasterKeys(master)
        self._on_unwrap = on_unwrap
        # NOTE: Python cannot overwrite bytes objects, so a purged key stays
        # in freed memory until the allocator reuses it.
        self._org_keys: TTLCache[tuple[bytes, int], bytes] = TTLCache(
            maxsize, ttl, timer
        )
        self._deks: TTLCache[_DekCacheKey, bytes] = TTLCache(maxsize, ttl, timer)
        self._current: TTLCache[tuple[bytes, Purpose], DataKey] = TTLCache(
            maxsize, ttl, timer
        )
        self._secrets: TTLCache[str, tuple[bytes, str]] = TTLCache(maxsize, ttl, timer)
        self._revision = store.revision()
        self._organisations: dict[bytes, Organisation] = {}
        self._load_organisations()

    # organisations

    def create_organisation(self, name: str) -> Organisation:
        """Create an organisation with organisation key v1 and a v1 DEK per purpose.

        Raise ValueError for an invalid name and OrganisationExists for a
        name in use. All rows are written in one transaction.
        """
        validate_organisation_name(name)
        org_id = secrets.token_bytes(ORG_ID_SIZE)
        now = _now()
        org_key = secrets.token_bytes(KEY_SIZE)
        org_key_record = self._wrap_org_key(
            self.platform_master(), org_id, 1, org_key, now
        )
        deks = [
            self._new_dek(org_id, purpose, 1, org_key, 1, now) for purpose in Purpose
        ]
        organisation = Organisation(org_id, name, "active", now)
        self._store.create_organisation(organisation, org_key_record, deks)
        self._organisations[org_id] = organisation
        return organisation

    def organisation(self, name_or_id: str | bytes) -> Organisation:
        """Return the organisation by name, id or hexadecimal id, from the store."""
        return self._resolve(name_or_id)

    def organisations(self) -> list[Organisation]:
        """Return every organisation, revoked ones included, ordered by name."""
        return self._store.organisations()

    def ensure_active(self, org_id: bytes) -> None:
        """Raise KeyRevoked or UnknownOrganisation unless the organisation is active.

        Checks the state loaded by the last `refresh` and queries the store only
        for an organisation this process has not seen yet.
        """
        organisation = self._organisations.get(org_id)
        if organisation is None:
            organisation = self._store.organisation(org_id)
            if organisation is None:
                raise UnknownOrganisation(f"no organisation has id {org_id.hex()}")
            self._organisations[org_id] = organisation
        if not organisation.active:
            raise _revoked(organisation)

    # data keys

    def current_dek(self, org_id: bytes, purpose: Purpose) -> DataKey:
        """Return the active DEK of an organisation and purpose, for new writes.

        Raise KeyRevoked if the organisation is revoked and
        UnknownOrganisation if no organisation has that id.
        """
        self.ensure_active(org_id)
        data_key = self._current.get((org_id, purpose))
        if data_key is not None:
            return data_key
        record = self._store.active_dek(org_id, purpose)
        if record is None:
            self._raise_missing_keys(org_id, f"an active {purpose.label} DEK")
        key = self._unwrap_dek(
            org_id, purpose, record.version, record.org_key_version, record.wrapped
        )
        data_key = DataKey(
            org_id=org_id,
            purpose=purpose,
            org_key_version=record.org_key_version,
            dek_version=record.version,
            key=key,
            wrapped=record.wrapped,
        )
        self._current[(org_id, purpose)] = data_key
        return data_key

    def dek(
        self,
        org_id: bytes,
        purpose: Purpose,
        org_key_version: int,
        dek_version: int,
        wrapped: bytes,
    ) -> bytes:
        """Unwrap the DEK named by an object header, for reads.

        Raise KeyRevoked if the organisation is revoked and DecryptionFailed
        if `wrapped` does not open under organisation key `org_key_version`
        with these names. The cache key includes `wrapped` itself, so a
        different wrapped value never returns a cached DEK.
        """
        self.ensure_active(org_id)
        return self._unwrap_dek(
            org_id, purpose, dek_version, org_key_version, bytes(wrapped)
        )

    # credentials

    def create_credentials(self, org: OrgRef) -> tuple[str, str]:
        """Create an access key for an active organisation and return (id, secret).

        The id is "BYOK" and 16 base32 characters, and the secret is 40
        letters and digits. The store keeps the secret only wrapped by the
        master key, so this is the only time it is shown.
        """
        organisation = self._require_active(org)
        access_key_id = ACCESS_KEY_PREFIX + base64.b32encode(
            secrets.token_bytes(_ACCESS_KEY_ID_BYTES)
        ).decode("ascii")
        secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(SECRET_LENGTH))
        master = self.platform_master()
        wrapped = master.wrap(
            secret.encode("ascii"), secret_associated_data(access_key_id)
        )
        record = CredentialRecord(access_key_id, organisation.id, wrapped, _now())
        self._store.add_credentials(record, master_key_id=master.key_id)
        return access_key_id, secret

    def credentials(self, access_key_id: str) -> tuple[bytes, str]:
        """Return (org_id, secret) of an access key.

        Raise UnknownAccessKey for an unknown id and KeyRevoked if its
        organisation is revoked.
        """
        cached = self._secrets.get(access_key_id)
        if cached is not None:
            self.ensure_active(cached[0])
            return cached
        if not _ACCESS_KEY_PATTERN.fullmatch(access_key_id):
            raise _unknown_access_key(access_key_id)
        record = self._store.credentials(access_key_id)
        if record is None:
            raise _unknown_access_key(access_key_id)
        self.ensure_active(record.org_id)
        if record.wrapped_secret is None:
            self._raise_missing_keys(record.org_id, "a wrapped secret")
        secret = self._unwrap_secret(access_key_id, record.wrapped_secret)
        self._secrets[access_key_id] = (record.org_id, secret)
        return record.org_id, secret

    # key lifecycle

    def revoke(self, org: OrgRef) -> Organisation:
        """Revoke an organisation and destroy its key material for good.

        In one transaction the store marks the organisation revoked, drops
        the wrapped organisation keys, deletes its DEKs and wrapped secrets,
        and then overwrites the freed space. This process's caches forget
        the organisation's keys at once, and other processes do at their
        next `refresh`. Revoking a revoked organisation retries the erasure.
        """
        organisation = self._resolve(org)
        try:
            revoked = self._store.revoke_organisation(organisation.id, _now())
        finally:
            self._purge({organisation.id})
            self._organisations.pop(organisation.id, None)
        self._organisations[revoked.id] = revoked
        return revoked

    def rotate_org_key(self, org: OrgRef) -> int:
        """Create the next organisation key version and rewrap the active DEKs.

        The previous version stays in the store as "rotated", so objects
        whose headers name it still open. Returns the new version.
        """
        organisation = self._require_active(org)
        org_id = organisation.id
        active = self._active_org_key(org_id)
        new_version = active.version + 1
        new_key = secrets.token_bytes(KEY_SIZE)
        master = self._masters.for_record(organisation, active.master_key_id)
        new_record = self._wrap_org_key(master, org_id, new_version, new_key, _now())
        rewrapped = [
            self._rewrap(record, new_key, new_version)
            for record in self._store.deks(org_id)
            if record.state == "active"
        ]
        self._store.rotate_org_key(org_id, new_record, rewrapped)
        self._drop_current(org_id)
        return new_version

    def rotate_dek(self, org: OrgRef, purpose: Purpose) -> int:
        """Create the next DEK version of a purpose for new writes.

        Older versions still open through `dek` with the wrapped value from
        an object header. Returns the new version.
        """
        organisation = self._require_active(org)
        org_id = organisation.id
        current = self._store.active_dek(org_id, purpose)
        if current is None:
            self._raise_missing_keys(org_id, f"an active {purpose.label} DEK")
        org_key_version = self._active_org_key(org_id).version
        org_key = self._org_key(org_id, org_key_version)
        new_version = current.version + 1
        record = self._new_dek(
            org_id, purpose, new_version, org_key, org_key_version, _now()
        )
        self._store.rotate_dek(record)
        self._current.pop((org_id, purpose), None)
        return new_version

    # master keys

    def use_master(
        self,
        org: OrgRef,
        master: MasterKey,
        source: KeySource,
        hsm_key_label: str = "",
    ) -> Organisation:
        """Rewrap every organisation key version under another master key.

        This rotates the master key of one organisation: to a new imported
        key, into a token, or back to the platform key. All versions move in
        one transaction, so older objects stay readable. An imported key is
        then held in this process's memory only.
        """
        organisation = self._require_active(org)
        rewrapped = []
        for record in self._store.org_keys(organisation.id):
            if record.wrapped is None:
                continue
            key = self._org_key(organisation.id, record.version)
            new = self._wrap_org_key(
                master, organisation.id, record.version, key, record.created_at
            )
            rewrapped.append(replace(new, state=record.state))
        moved = replace(organisation, key_source=source, hsm_key_label=hsm_key_label)
        if source == "imported":
            self._masters.add_imported(master)
        self._store.rewrap_org_keys(moved, rewrapped)
        self._organisations[moved.id] = moved
        return moved

    def platform_master(self) -> MasterKey:
        """Return the platform key that the store names, for new wraps.

        After another process rotated the platform key, this reads the key
        files again. Raise MasterKeyError if no key file contains the key
        that the store names.
        """
        key_id = self._store.platform_key_id()
        if key_id is None:
            return self._masters.platform
        return self._masters.platform_key(key_id)

    def rotate_platform_master(self) -> PlatformRotation:
        """Move everything the platform key wraps under a new platform key.

        Every organisation key version wrapped by the platform key, of any
        state but destroyed, and every access key secret are rewrapped in one
        store transaction, and then the new key file replaces the old one,
        which is gone afterwards. Organisations under imported or HSM keys
        keep their organisation keys as they are.
        """
        source = self._masters.platform_source
        old, new, counts = source.rotate(self._rewrap_unless_committed)
        org_keys, secret_count = counts or (0, 0)
        return PlatformRotation(
            old.key_id, new.key_id, org_keys, secret_count, resumed=counts is None
        )

    def supply_master(self, org: OrgRef, master: MasterKey) -> None:
        """Hold an organisation's imported key again, e.g. after a restart.

        Raise MasterKeyError unless it is the key that wraps the
        organisation's active organisation key.
        """
        organisation = self._require_active(org)
        active = self._active_org_key(organisation.id)
        if organisation.key_source != "imported":
            raise MasterKeyError(
                f"organisation {organisation.name!r} does not use an imported "
                "master key; import a key to move it to one"
            )
        if master.key_id != active.master_key_id:
            raise _wrong_master_key(active, master.key_id)
        self._masters.add_imported(master)

    def organisation_active(self, org: OrgRef) -> Organisation:
        """Return the organisation, or raise KeyRevoked or UnknownOrganisation."""
        return self._require_active(org)

    def org_key_records(self, org_id: bytes) -> list[OrgKeyRecord]:
        """Return every organisation key version, wrapped, oldest first."""
        return self._store.org_keys(org_id)

    def holds_master_of(self, organisation: Organisation, master: MasterKey) -> bool:
        """Return whether `master` wraps the organisation's active key."""
        active = self._active_org_key(organisation.id)
        return active.master_key_id == master.key_id

    def key_state(self, org: OrgRef) -> str:
        """Return "active", "unavailable" (retry later) or "revoked"."""
        organisation = self._resolve(org)
        if not organisation.active:
            return "revoked"
        try:
            active = self._active_org_key(organisation.id)
            self._org_key(organisation.id, active.version)
        except KeyUnavailable:
            return "unavailable"
        return "active"

    # rotation policy

    def set_max_key_age(self, org: OrgRef, seconds: float | None) -> None:
        """Set how old the active organisation key may get, or None for no limit."""
        if seconds is not None and not 0 < seconds <= _MAX_KEY_AGE:
            raise ValueError(
                f"maximum key age must be positive and at most {_MAX_KEY_AGE:.0f} "
                f"seconds (100 years), got {seconds}"
            )
        organisation = self._require_active(org)
        self._store.set_max_key_age(organisation.id, seconds)

    def due_for_rotation(self, now: datetime | None = None) -> list[Organisation]:
        """Return the active organisations whose key is older than their policy."""
        moment = now or _now()
        due = []
        for organisation in self._store.organisations():
            if not organisation.active or organisation.max_key_age is None:
                continue
            active = self._active_org_key(organisation.id)
            age = (moment - active.created_at).total_seconds()
            if age >= organisation.max_key_age:
                due.append(organisation)
        return due

    # cross-process state

    def refresh(self) -> bool:
        """Reload organisation states if another process changed the keys.

        When nothing changed this costs one `store.revision()` call. After a
        change it reloads every organisation, purges the cached keys of
        revoked ones and looks up the current DEKs again. Returns whether
        anything changed.
        """
        revision = self._store.revision()
        if revision == self._revision:
            return False
        self._revision = revision
        self._load_organisations()
        self._current.clear()
        return True

    def status(self) -> KeyRingStatus:
        """Summarise organisations, key versions and cache sizes, without keys."""
        return KeyRingStatus(
            master_key_id=self.platform_master().key_id,
            organisations=tuple(
                self._organisation_status(organisation)
                for organisation in self._store.organisations()
            ),
            cached_org_keys=len(self._org_keys),
            cached_deks=len(self._deks),
            cached_current_deks=len(self._current),
            cached_secrets=len(self._secrets),
        )

    def close(self) -> None:
        """Forget every cached key and secret, then close the store."""
        self._org_keys.clear()
        self._deks.clear()
        self._current.clear()
        self._secrets.clear()
        self._store.close()

    # the platform master key

    def _rewrap_unless_committed(
        self, old: MasterKey, new: MasterKey
    ) -> tuple[int, int] | None:
        """Rewrap under `new` unless the store names it already; return the counts.

        The store names `new` when an interrupted rotation committed before
        it could replace the key file, and then this returns None.
        """
        committed = self._store.platform_key_id()
        if committed == new.key_id:
            return None
        if committed not in (None, old.key_id):
            raise MasterKeyError(
                f"the key store names platform master key {committed}, but "
                f"master.key contains {old.key_id}; restore master.key from the "
                "backup that matches keys.sqlite3"
            )
        return self._rewrap_platform(old, new)

    def _rewrap_platform(self, old: MasterKey, new: MasterKey) -> tuple[int, int]:
        """Rewrap under `new` what `old` wraps; return the numbers of records.

        Raise MasterKeyError if an organisation under the platform key has a
        key wrapped by another key, because `old` would then not be the key
        that this store was created with.
        """
        org_keys = []
        for organisation in self._store.organisations():
            for record in self._store.org_keys(organisation.id):
                if record.wrapped is None:
                    continue
                if record.master_key_id == old.key_id:
                    org_keys.append(rewrap_org_key(record, old, new))
                elif organisation.key_source == "platform":
                    raise _not_platform_key(organisation, record, old.key_id)
        credentials = [
            rewrap_secret(record, old, new) for record in self._store.wrapped_secrets()
        ]
        self._store.rewrap_platform(old.key_id, new.key_id, org_keys, credentials)
        return len(org_keys), len(credentials)

    def _unwrap_secret(self, access_key_id: str, wrapped: bytes) -> str:
        """Unwrap an access key secret, following a platform key rotation.

        A secret that the loaded key cannot open may have been rewrapped by
        a rotation in another process. The key that the store names is then
        tried once, and a store that names the loaded key re-raises.
        """
        associated_data = secret_associated_data(access_key_id)
        loaded = self._masters.platform
        try:
            return loaded.unwrap(wrapped, associated_data).decode("ascii")
        except DecryptionFailed:
            latest = self.platform_master()
            if latest.key_id == loaded.key_id:
                raise
        return latest.unwrap(wrapped, associated_data).decode("ascii")

    # unwrapping

    def _org_key(self, org_id: bytes, version: int) -> bytes:
        key = self._org_keys.get((org_id, version))
        if key is not None:
            return key
        record = self._store.org_key(org_id, version)
        if record is None:
            raise DecryptionFailed(
                f"organisation {org_id.hex()} has no organisation key version {version}"
            )
        if record.wrapped is None:
            self._raise_missing_keys(org_id, f"organisation key version {version}")
        organisation = self._organisations.get(org_id) or self._resolve(org_id)
        associated_data = org_key_associated_data(org_id, version)
        try:
            master = self._masters.for_record(organisation, record.master_key_id)
            key = master.unwrap(record.wrapped, associated_data)
        except Exception as error:
            self._observe(org_id, version, record.master_key_id, error)
            raise
        self._observe(org_id, version, record.master_key_id, None)
        self._org_keys[(org_id, version)] = key
        return key

    def _observe(
        self, org_id: bytes, version: int, key_id: str, error: Exception | None
    ) -> None:
        if self._on_unwrap is not None:
            outcome = "ok" if error is None else f"failed: {type(error).__name__}"
            self._on_unwrap(org_id, version, key_id, outcome)

    def _unwrap_dek(
        self,
        org_id: bytes,
        purpose: Purpose,
        dek_version: int,
        org_key_version: int,
        wrapped: bytes,
    ) -> bytes:
        cache_key = (org_id, purpose, dek_version, org_key_version, wrapped)
        key = self._deks.get(cache_key)
        if key is not None:
            return key
        org_key = self._org_key(org_id, org_key_version)
        key = unwrap_dek(
            org_key,
            wrapped,
            org_id=org_id,
            purpose=purpose,
            dek_version=dek_version,
            org_key_version=org_key_version,
        )
        self._deks[cache_key] = key
        return key

    # wrapping

    @staticmethod
    def _wrap_org_key(
        master: MasterKey, org_id: bytes, version: int, key: bytes, now: datetime
    ) -> OrgKeyRecord:
        wrapped = master.wrap(key, org_key_associated_data(org_id, version))
        return OrgKeyRecord(org_id, version, wrapped, "active", master.key_id, now)

    def _new_dek(
        self,
        org_id: bytes,
        purpose: Purpose,
        version: int,
        org_key: bytes,
        org_key_version: int,
        now: datetime,
    ) -> DekRecord:
        wrapped = wrap_dek(
            org_key,
            secrets.token_bytes(KEY_SIZE),
            org_id=org_id,
            purpose=purpose,
            dek_version=version,
            org_key_version=org_key_version,
        )
        return DekRecord(
            org_id, purpose, version, org_key_version, wrapped, "active", now
        )

    def _rewrap(
        self, record: DekRecord, org_key: bytes, org_key_version: int
    ) -> DekRecord:
        dek = self._unwrap_dek(
            record.org_id,
            record.purpose,
            record.version,
            record.org_key_version,
            record.wrapped,
        )
        wrapped = wrap_dek(
            org_key,
            dek,
            org_id=record.org_id,
            purpose=record.purpose,
            dek_version=record.version,
            org_key_version=org_key_version,
        )
        return replace(record, org_key_version=org_key_version, wrapped=wrapped)

    # organisation state

    def _resolve(self, org: OrgRef) -> Organisation:
        if isinstance(org, Organisation):
            org = org.id
        if isinstance(org, bytes):
            found = self._store.organisation(org)
        else:
            found = self._store.organisation_named(org)
            org_id = parse_organisation_id(org)
            if found is None and org_id is not None:
                found = self._store.organisation(org_id)
        if found is None:
            org_text = org.hex() if isinstance(org, bytes) else repr(org)
            raise UnknownOrganisation(f"no organisation has the name or id {org_text}")
        return found

    def _require_active(self, org: OrgRef) -> Organisation:
        organisation = self._resolve(org)
        if not organisation.active:
            self._note_revoked(organisation)
            raise _revoked(organisation)
        return organisation

    def _active_org_key(self, org_id: bytes) -> OrgKeyRecord:
        for record in self._store.org_keys(org_id):
            if record.state == "active":
                return record
        self._raise_missing_keys(org_id, "an active organisation key")

    def _raise_missing_keys(self, org_id: bytes, missing: str) -> NoReturn:
        """Raise KeyRevoked if the store now shows a revocation, else KeyStoreError.

        A key can be missing because another process revoked the organisation
        since this process's last `refresh`.
        """
        organisation = self._store.organisation(org_id)
        if organisation is not None and not organisation.active:
            self._note_revoked(organisation)
            raise _revoked(organisation)
        raise KeyStoreError(
            f"organisation {org_id.hex()} has no {missing}; the key store is "
            "inconsistent, restore it from a backup"
        )

    def _note_revoked(self, organisation: Organisation) -> None:
        self._purge({organisation.id})
        self._organisations[organisation.id] = organisation

    def _load_organisations(self) -> None:
        organisations = {o.id: o for o in self._store.organisations()}
        inactive = {
            org_id
            for org_id, organisation in organisations.items()
            if not organisation.active
        }
        self._purge(inactive | (self._organisations.keys() - organisations.keys()))
        self._organisations = organisations

    def _organisation_status(self, organisation: Organisation) -> OrganisationStatus:
        org_keys = self._store.org_keys(organisation.id)
        active_deks = [
            d for d in self._store.deks(organisation.id) if d.state == "active"
        ]
        return OrganisationStatus(
            id_hex=organisation.id_hex,
            name=organisation.name,
            state=organisation.state,
            created_at=organisation.created_at,
            revoked_at=organisation.revoked_at,
            org_keys=tuple((k.version, k.state) for k in org_keys),
            active_deks=tuple((d.purpose.label, d.version) for d in active_deks),
            credentials=self._store.credential_count(organisation.id),
        )

    # cache maintenance

    def _purge(self, org_ids: set[bytes]) -> None:
        """Drop every cached key and secret of these organisations."""
        if not org_ids:
            return
        _drop_organisations(self._org_keys, org_ids)
        _drop_organisations(self._deks, org_ids)
        _drop_organisations(self._current, org_ids)
        self._secrets.expire()
        for access_key_id in list(self._secrets):
            entry = self._secrets.get(access_key_id)
            if entry is not None and entry[0] in org_ids:
                del self._secrets[access_key_id]

    def _drop_current(self, org_id: bytes) -> None:
        _drop_organisations(self._current, {org_id})


def _drop_organisations(
    cache: TTLCache[tuple[Any, ...], Any], org_ids: set[bytes]
) -> None:
    """Remove expired entries and those whose key starts with one of `org_ids`."""
    cache.expire()
    for key in list(cache):
        if key[0] in org_ids:
            cache.pop(key, None)


def _now() -> datetime:
    return datetime.now(UTC)


def _revoked(organisation: Organisation) -> KeyRevoked:
    return KeyRevoked(
        f"organisation {organisation.name!r} ({organisation.id_hex}) is revoked; "
        "its data can no longer be read or written"
    )


def _unknown_access_key(access_key_id: str) -> UnknownAccessKey:
    return UnknownAccessKey(f"no credentials have access key id {access_key_id!r}")


def _wrong_master_key(record: OrgKeyRecord, offered_key_id: str) -> MasterKeyError:
    return MasterKeyError(
        f"organisation key version {record.version} of organisation "
        f"{record.org_id.hex()} is wrapped by master key {record.master_key_id}, "
        f"but the key offered is {offered_key_id}; supply the key that was "
        "imported for this organisation"
    )


def _not_platform_key(
    organisation: Organisation, record: OrgKeyRecord, platform_key_id: str
) -> MasterKeyError:
    return MasterKeyError(
        f"organisation {organisation.name!r} uses the platform master key, but "
        f"its organisation key version {record.version} is wrapped by master key "
        f"{record.master_key_id}, not by the platform key {platform_key_id}; "
        "start with the master key that created this key store"
    )

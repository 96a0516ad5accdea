"""Key operations as the CLI and the admin API offer them, each one audited.

Every operation runs on the key ring and appends one audit record with the
actor, the organisation, the key ids and versions involved and the outcome,
whether it succeeded or failed. Key material never reaches the record.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from crypto.audit import AuditLog, KeyValue
from crypto.header import Purpose
from crypto.key_import import ImportJob, ImportJobs
from crypto.keyring import KeyRing, OrgRef, PlatformRotation
from crypto.keystore import Organisation
from crypto.master import MemoryMasterKey
from crypto.masters import MasterKeys

__all__ = ["KeyOperations"]

_MAX_ID_LENGTH = 32  # the audit log's limit for a string value


@dataclass
class _Entry:
    """The audit record of one operation, filled in while it runs."""

    action: str
    organisation: str
    keys: dict[str, KeyValue] = field(default_factory=dict)


class KeyOperations:
    """Creates, rotates, imports and revokes keys, and records each change."""

    def __init__(
        self,
        keyring: KeyRing,
        masters: MasterKeys,
        audit: AuditLog,
        imports: ImportJobs | None = None,
    ) -> None:
        self.keyring = keyring
        self._masters = masters
        self._audit = audit
        self._imports = imports or ImportJobs()

    # organisations and credentials

    def create_organisation(self, actor: str, name: str) -> Organisation:
        """Create an organisation under the platform master key."""
        with self._recorded(actor, "org.create", "") as entry:
            organisation = self.keyring.create_organisation(name)
            entry.organisation = organisation.id_hex
            entry.keys.update(name=name, master_key_id=self._masters.platform.key_id)
        return organisation

    def create_credentials(self, actor: str, org: OrgRef) -> tuple[str, str]:
        """Create an access key; the secret is returned only here."""
        with self._recorded(actor, "credentials.create", org) as entry:
            access_key_id, secret = self.keyring.create_credentials(org)
            entry.keys["access_key_id"] = access_key_id
        return access_key_id, secret

    # rotation

    def rotate_org_key(self, actor: str, org: OrgRef) -> int:
        """Rotate the organisation key and rewrap its active DEKs."""
        with self._recorded(actor, "org_key.rotate", org) as entry:
            version = self.keyring.rotate_org_key(org)
            entry.keys["org_key_version"] = version
        return version

    def rotate_dek(self, actor: str, org: OrgRef, purpose: Purpose) -> int:
        """Rotate the DEK of one purpose; new writes use the new version."""
        with self._recorded(actor, "dek.rotate", org) as entry:
            entry.keys["purpose"] = purpose.label
            version = self.keyring.rotate_dek(org, purpose)
            entry.keys["dek_version"] = version
        return version

    def set_max_key_age(self, actor: str, org: OrgRef, seconds: float | None) -> None:
        """Set the rotation policy of an organisation, or clear it with None."""
        with self._recorded(actor, "policy.set", org) as entry:
            entry.keys["max_key_age"] = "none" if seconds is None else int(seconds)
            self.keyring.set_max_key_age(org, seconds)

    def rotate_due(self, actor: str, now: datetime | None = None) -> list[str]:
        """Rotate every organisation key older than its policy; return the names."""
        rotated = []
        for organisation in self.keyring.due_for_rotation(now):
            with contextlib.suppress(Exception):
                self.rotate_org_key(actor, organisation.id)
                rotated.append(organisation.name)
        return rotated

    # master keys

    def start_import(
        self, actor: str, org: OrgRef, private_key: RSAPrivateKey | None = None
    ) -> ImportJob:
        """Issue an import job: a public key to wrap the customer's key with.

        Pass a `private_key` from `crypto.key_import.new_job_key`, made in a
        worker thread, to keep an event loop free of the slow key generation.
        """
        with self._recorded(actor, "import.start", org) as entry:
            organisation = self.keyring.organisation_active(org)
            job = self._imports.create(organisation.id, _now(), private_key=private_key)
            entry.keys["job_id"] = job.job_id
        return job

    def finish_import(
        self,
        actor: str,
        job_id: str,
        token: str,
        wrapped_key: bytes,
        check_value: str,
    ) -> Organisation:
        """Accept an imported key for the job's organisation.

        The key that already wraps the organisation's keys is taken back
        into memory, as after a restart. Any other key becomes the new
        master key, so every organisation key version is rewrapped under it.
        """
        pending = self._imports.get(job_id, _now())
        org: OrgRef = pending.org_id if pending is not None else b""
        with self._recorded(actor, "import.finish", org or "") as entry:
            entry.keys["job_id"] = job_id[:_MAX_ID_LENGTH]
            key = self._imports.complete(
                job_id, token, wrapped_key, check_value, _now()
            )
            master = MemoryMasterKey(key)
            entry.keys["master_key_id"] = master.key_id
            organisation = self.keyring.organisation_active(org)
            if self.keyring.holds_master_of(organisation, master):
                self.keyring.supply_master(organisation, master)
                entry.action = "import.supply"
                return organisation
            return self.keyring.use_master(organisation, master, "imported")

    def use_hsm(self, actor: str, org: OrgRef, key_label: str) -> Organisation:
        """Move the organisation's keys under a key in the PKCS#11 token."""
        with self._recorded(actor, "master.rotate", org) as entry:
            master = self._masters.hsm_key(key_label)
            entry.keys.update(source="hsm", master_key_id=master.key_id)
            return self.keyring.use_master(org, master, "hsm", key_label)

    def use_platform(self, actor: str, org: OrgRef) -> Organisation:
        """Move the organisation's keys back under the platform master key."""
        with self._recorded(actor, "master.rotate", org) as entry:
            master = self.keyring.platform_master()
            entry.keys.update(source="platform", master_key_id=master.key_id)
            return self.keyring.use_master(org, master, "platform")

    def rotate_platform_master(self, actor: str) -> PlatformRotation:
        """Replace the platform key file by a new key and rewrap what it wrapped.

        The record has no organisation, because the platform key serves all.
        It names the old and the new key id and the numbers of organisation
        keys and access key secrets rewrapped.
        """
        with self._recorded(actor, "master.rotate", "") as entry:
            entry.keys.update(
                source="platform", old_master_key_id=self._masters.platform.key_id
            )
            rotation = self.keyring.rotate_platform_master()
            entry.keys.update(
                old_master_key_id=rotation.old_key_id,
                new_master_key_id=rotation.new_key_id,
                org_keys=rotation.org_keys,
                secrets=rotation.secrets,
                resumed=rotation.resumed,
            )
        return rotation

    # revocation

    def revoke(self, actor: str, org: OrgRef) -> Organisation:
        """Revoke the organisation and destroy its key material."""
        with self._recorded(actor, "org.revoke", org):
            organisation = self.keyring.revoke(org)
            self._forget_imported(organisation)
        return organisation

    def _forget_imported(self, organisation: Organisation) -> None:
        """Drop the organisation's imported key from this process's memory.

        A key that another active organisation also uses stays.
        """
        if organisation.key_source != "imported":
            return
        in_use = {
            record.master_key_id
            for other in self.keyring.organisations()
            if other.active and other.id != organisation.id
            for record in self.keyring.org_key_records(other.id)
        }
        for record in self.keyring.org_key_records(organisation.id):
            if record.master_key_id not in in_use:
                self._masters.forget(record.master_key_id)

    # audit

    @contextlib.contextmanager
    def _recorded(self, actor: str, action: str, org: OrgRef) -> Iterator[_Entry]:
        """Append the audit record of the operation in the block, as it ended."""
        entry = _Entry(action, _org_hex(self.keyring, org))
        try:
            yield entry
        except Exception as error:
            outcome = f"failed: {type(error).__name__}"
            self._audit.append(
                actor, entry.action, entry.organisation, entry.keys, outcome
            )
            raise
        self._audit.append(actor, entry.action, entry.organisation, entry.keys, "ok")


def _org_hex(keyring: KeyRing, org: OrgRef) -> str:
    """Return the organisation id as hex, or "" for an unknown organisation."""
    if isinstance(org, Organisation):
        return org.id_hex
    if not org:
        return ""
    try:
        return keyring.organisation(org).id_hex
    except Exception:
        return ""


def _now() -> datetime:
    return datetime.now(UTC)

"""Report of an organisation's objects by key version and of what revocation ends.

A report is built from a scan (`proxy.scan`), which decodes headers and
unwraps nothing. Sizes are stored bytes, that is ciphertext with its
overhead, as the object store counts them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from crypto.header import Header, Purpose
from crypto.keyring import OrganisationStatus
from proxy.scan import Kind, Scanned, Totals

__all__ = ["ActiveKeys", "Report", "build_report", "format_bytes"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


@dataclass(frozen=True)
class ActiveKeys:
    """The versions new writes use; None and empty for a revoked organisation."""

    org_key_version: int | None
    dek_versions: dict[Purpose, int]

    @classmethod
    def of(cls, status: OrganisationStatus) -> ActiveKeys:
        """Read the active versions from the key ring's status, without keys."""
        org_key = [version for version, state in status.org_keys if state == "active"]
        deks = {Purpose.parse(label): version for label, version in status.active_deks}
        return cls(org_key[0] if org_key else None, deks)

    def is_current(self, header: Header) -> bool:
        """Return whether the header names the active organisation key and DEK."""
        return (
            header.org_key_version == self.org_key_version
            and header.dek_version == self.dek_versions.get(header.purpose)
        )


@dataclass
class Report:
    """Counts of one organisation's objects, filled in object by object."""

    status: OrganisationStatus
    buckets: tuple[str, ...]
    versions: bool
    active: ActiveKeys
    encrypted: Totals = field(default_factory=Totals)
    by_purpose: dict[Purpose, Totals] = field(default_factory=dict)
    by_org_key: dict[int, Totals] = field(default_factory=dict)
    by_key_version: dict[tuple[Purpose, int, int], Totals] = field(default_factory=dict)
    foreign: Totals = field(default_factory=Totals)
    invalid: Totals = field(default_factory=Totals)
    deleted: int = 0

    def add(self, scanned: Scanned) -> None:
        """Count one scanned object under its kind and key versions."""
        if scanned.kind is Kind.GONE:
            self.deleted += 1
            return
        size = scanned.size
        if scanned.kind is Kind.FOREIGN:
            self.foreign.add(size)
            return
        header = scanned.header
        if scanned.kind is Kind.INVALID or header is None:
            self.invalid.add(size)
            return
        self.encrypted.add(size)
        self.by_purpose.setdefault(header.purpose, Totals()).add(size)
        self.by_org_key.setdefault(header.org_key_version, Totals()).add(size)
        versions = (header.purpose, header.org_key_version, header.dek_version)
        self.by_key_version.setdefault(versions, Totals()).add(size)

    def as_dict(self) -> dict[str, Any]:
        """Return the report as plain values, for JSON output."""
        active = self.active
        return {
            "organisation": {
                "name": self.status.name,
                "id": self.status.id_hex,
                "state": self.status.state,
            },
            "buckets": list(self.buckets),
            "all_versions": self.versions,
            "active": {
                "org_key_version": active.org_key_version,
                "dek_versions": {p.label: v for p, v in active.dek_versions.items()},
            },
            "encrypted": _totals(self.encrypted),
            "by_purpose": {
                purpose.label: _totals(totals)
                for purpose, totals in sorted(self.by_purpose.items())
            },
            "by_org_key_version": [
                {
                    "org_key_version": version,
                    "active": version == active.org_key_version,
                    **_totals(totals),
                }
                for version, totals in sorted(self.by_org_key.items())
            ],
            "by_key_version": [
                {
                    "purpose": purpose.label,
                    "org_key_version": org_key,
                    "dek_version": dek,
                    "current": org_key == active.org_key_version
                    and dek == active.dek_versions.get(purpose),
                    **_totals(totals),
                }
                for (purpose, org_key, dek), totals in sorted(
                    self.by_key_version.items()
                )
            ],
            "not_written_by_proxy": _totals(self.foreign),
            "invalid_headers": _totals(self.invalid),
            "deleted_during_scan": self.deleted,
            "revocation": {
                "inert": _totals(self.encrypted),
                "stays_readable": _totals(self.foreign),
                "statement": self.revocation_statement(),
            },
        }

    def revocation_statement(self) -> str:
        """Say which objects a revocation makes unreadable and which it cannot."""
        name = self.status.name
        if self.status.state == "revoked":
            statement = (
                f"{name} is revoked: its {_objects(self.encrypted)} are "
                "unreadable for good."
            )
        else:
            statement = (
                f"Revoking {name} makes {_objects(self.encrypted)} unreadable for "
                "good: every object encrypted under its keys."
            )
        if self.foreign.objects == 1:
            statement += (
                f" The {_objects(self.foreign)} not written through the proxy "
                "is stored unencrypted and stays readable in the object store."
            )
        elif self.foreign.objects:
            statement += (
                f" The {_objects(self.foreign)} not written through the proxy "
                "are stored unencrypted and stay readable in the object store."
            )
        if not self.versions:
            statement += (
                " Older versions were not counted; run with --versions to include them."
            )
        return statement

    def lines(self) -> list[str]:
        """Return the report as text lines for a terminal."""
        return [
            *self._summary_lines(),
            "",
            *_table(
                "encrypted objects by purpose",
                [(p.label, t) for p, t in sorted(self.by_purpose.items())],
            ),
            *_table(
                "by organisation key version",
                [
                    (_version(v, v == self.active.org_key_version), t)
                    for v, t in sorted(self.by_org_key.items())
                ],
            ),
            *self._key_version_lines(),
            f"not written by the proxy (no header): {_objects(self.foreign)}",
            f"headers that do not decode as this organisation's: "
            f"{_objects(self.invalid)}",
            "",
            self.revocation_statement(),
        ]

    def _summary_lines(self) -> list[str]:
        status = self.status
        scope = "every version" if self.versions else "current versions"
        deks = ", ".join(
            f"{purpose.label} v{version}"
            for purpose, version in sorted(self.active.dek_versions.items())
        )
        org_key = self.active.org_key_version
        lines = [
            f"organisation {status.name} ({status.id_hex}), {status.state}",
            f"scanned {_count(len(self.buckets), 'bucket')}, {scope}; "
            "sizes are stored bytes",
            f"active keys: organisation key "
            f"{'v' + str(org_key) if org_key else 'none'}; DEKs {deks or 'none'}",
            f"encrypted: {_objects(self.encrypted)}",
        ]
        if self.deleted:
            lines.append(f"deleted while the scan ran: {self.deleted} objects")
        return lines

    def _key_version_lines(self) -> list[str]:
        lines = ["by key version (purpose, organisation key, DEK)"]
        for (purpose, org_key, dek), totals in sorted(self.by_key_version.items()):
            current = (
                "  current"
                if org_key == self.active.org_key_version
                and dek == self.active.dek_versions.get(purpose)
                else ""
            )
            label = f"{purpose.label} org v{org_key} DEK v{dek}"
            lines.append(f"  {label:<30} {_objects(totals)}{current}")
        return [*lines, ""]


async def build_report(
    scanned: AsyncIterator[Scanned],
    status: OrganisationStatus,
    buckets: Iterable[str],
    *,
    versions: bool,
    on_object: Callable[[Scanned], None] = lambda scanned: None,
) -> Report:
    """Count every scanned object, calling `on_object` with each, e.g. for progress."""
    report = Report(status, tuple(sorted(buckets)), versions, ActiveKeys.of(status))
    async for item in scanned:
        report.add(item)
        on_object(item)
    return report


def format_bytes(size: int) -> str:
    """Return a byte count in binary units, such as "5.2 MiB"."""
    value = float(size)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _totals(totals: Totals) -> dict[str, int]:
    return {"objects": totals.objects, "bytes": totals.bytes}


def _objects(totals: Totals) -> str:
    return f"{_count(totals.objects, 'object')} ({format_bytes(totals.bytes)})"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _version(version: int, active: bool) -> str:
    return f"v{version} (active)" if active else f"v{version}"


def _table(title: str, rows: list[tuple[str, Totals]]) -> list[str]:
    lines = [title]
    lines += [f"  {label:<30} {_objects(totals)}" for label, totals in rows]
    return [*lines, ""]

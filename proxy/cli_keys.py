"""Key commands: organisations, credentials, rotation, master keys, audit.

Every command that changes a key goes through `KeyOperations`, so the audit
log records it with the user who ran it. An imported master key exists
only in the memory of the proxy it was imported into, so commands that need
one go to that proxy's admin API instead (`byok-proxy admin ...`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

import click

from crypto.audit import (
    AuditHead,
    AuditLog,
    KeyValue,
    Verification,
    verify_export,
)
from crypto.header import Purpose
from crypto.hsm import HsmConfig, generate_hsm_key
from proxy.cli_common import (
    DATA_DIR,
    PIN_VARIABLE,
    PKCS11_OPTIONS,
    cli_actor,
    hsm_settings,
    key_services,
)

__all__ = ["audit", "credentials", "hsm", "master", "org"]

_PURPOSES = [purpose.label for purpose in Purpose]
_SECONDS_PER_DAY = 86_400


@click.group()
def org() -> None:
    """Manage organisations and their keys."""


@org.command("create")
@DATA_DIR
@click.argument("name")
def org_create(data_dir: Path, name: str) -> None:
    """Create an organisation with its organisation key and DEKs."""
    with key_services(data_dir, create=True) as keys:
        organisation = keys.operations.create_organisation(cli_actor(), name)
    click.echo(f"created organisation {organisation.name} ({organisation.id.hex()})")


@org.command("list")
@DATA_DIR
def org_list(data_dir: Path) -> None:
    """List organisations, their states and master key sources."""
    with key_services(data_dir) as keys:
        organisations = keys.keyring.organisations()
    if not organisations:
        click.echo(f"no organisations in {data_dir}", err=True)
    for organisation in organisations:
        click.echo(
            f"{organisation.name}\t{organisation.state}\t"
            f"{organisation.id.hex()}\t{organisation.key_source}"
        )


@org.command("revoke")
@DATA_DIR
@click.argument("name")
@click.option("--yes", is_flag=True, help="Revoke without asking for confirmation.")
def org_revoke(data_dir: Path, name: str, yes: bool) -> None:
    """Revoke an organisation's key: its data can never be read again."""
    if not yes:
        click.confirm(
            f"Revoke the key of organisation {name!r}? Every object it stored "
            "becomes permanently unreadable",
            abort=True,
        )
    with key_services(data_dir) as keys:
        already = keys.keyring.organisation(name).state == "revoked"
        keys.operations.revoke(cli_actor(), name)
    if already:
        click.echo(f"organisation {name} was already revoked")
        return
    click.echo(f"revoked organisation {name}")


@org.command("rotate")
@DATA_DIR
@click.argument("name")
def org_rotate(data_dir: Path, name: str) -> None:
    """Rotate the organisation key; older versions stay for older objects."""
    with key_services(data_dir) as keys:
        version = keys.operations.rotate_org_key(cli_actor(), name)
    click.echo(f"organisation {name} now uses organisation key version {version}")


@org.command("rotate-dek")
@DATA_DIR
@click.argument("name")
@click.argument("purpose", type=click.Choice(_PURPOSES))
def org_rotate_dek(data_dir: Path, name: str, purpose: str) -> None:
    """Rotate the DEK of one purpose; new writes use the new version."""
    with key_services(data_dir) as keys:
        version = keys.operations.rotate_dek(cli_actor(), name, Purpose.parse(purpose))
    click.echo(f"organisation {name} now writes {purpose} under DEK version {version}")


@org.command("policy")
@DATA_DIR
@click.argument("name")
@click.option(
    "--max-key-age",
    "days",
    type=click.IntRange(min=1),
    help="Days after which the running proxy rotates the organisation key.",
)
@click.option("--none", "clear", is_flag=True, help="Remove the rotation policy.")
def org_policy(data_dir: Path, name: str, days: int | None, clear: bool) -> None:
    """Set how old the organisation key may get before the proxy rotates it."""
    if (days is None) == (not clear):
        raise click.UsageError("give either --max-key-age DAYS or --none")
    seconds = None if clear else float(days or 0) * _SECONDS_PER_DAY
    with key_services(data_dir) as keys:
        keys.operations.set_max_key_age(cli_actor(), name, seconds)
    if clear:
        click.echo(f"organisation {name} has no rotation policy")
        return
    click.echo(f"the proxy rotates the key of {name} once it is {days} days old")


@org.command("use-hsm")
@DATA_DIR
@PKCS11_OPTIONS
@click.argument("name")
@click.option("--key-label", required=True, help="Label of the AES key in the token.")
def org_use_hsm(
    data_dir: Path,
    pkcs11_library: Path | None,
    pkcs11_token: str | None,
    name: str,
    key_label: str,
) -> None:
    """Rewrap the organisation's keys under a master key in the PKCS#11 token."""
    settings = hsm_settings(pkcs11_library, pkcs11_token)
    if settings is None:
        raise click.UsageError("give --pkcs11-library and --pkcs11-token")
    with key_services(data_dir, hsm=settings) as keys:
        keys.operations.use_hsm(cli_actor(), name, key_label)
    click.echo(f"organisation {name} now uses the token key {key_label!r}")


@org.command("use-platform")
@DATA_DIR
@PKCS11_OPTIONS
@click.argument("name")
def org_use_platform(
    data_dir: Path, pkcs11_library: Path | None, pkcs11_token: str | None, name: str
) -> None:
    """Rewrap the organisation's keys under the platform master key.

    An organisation under an imported key needs that key, which only the
    proxy it was imported into holds: use its admin API for this instead.
    """
    settings = hsm_settings(pkcs11_library, pkcs11_token)
    with key_services(data_dir, hsm=settings) as keys:
        keys.operations.use_platform(cli_actor(), name)
    click.echo(f"organisation {name} now uses the platform master key")


@click.group()
def master() -> None:
    """Rotate the platform master key in the data directory."""


@master.command("rotate")
@DATA_DIR
def master_rotate(data_dir: Path) -> None:
    """Replace master.key by a new key and rewrap everything under it.

    Running proxies that share the data directory switch to the new key
    without a restart. The old key is destroyed, so a backup of keys.sqlite3
    taken before now opens only with the master.key of the same backup.
    """
    with key_services(data_dir) as keys:
        rotation = keys.operations.rotate_platform_master(cli_actor())
    if rotation.resumed:
        click.echo(
            "finished an interrupted rotation: the platform master key is now "
            f"{rotation.new_key_id} (was {rotation.old_key_id})"
        )
        return
    click.echo(
        f"the platform master key is now {rotation.new_key_id} (was "
        f"{rotation.old_key_id}); rewrapped {rotation.org_keys} organisation key "
        f"versions and {rotation.secrets} access key secrets"
    )


@click.group()
def credentials() -> None:
    """Manage S3 access keys."""


@credentials.command("create")
@DATA_DIR
@click.argument("org_name", metavar="ORG")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def credentials_create(data_dir: Path, org_name: str, as_json: bool) -> None:
    """Create an access key for ORG; the secret is shown only this once."""
    with key_services(data_dir) as keys:
        access_key_id, secret = keys.operations.create_credentials(
            cli_actor(), org_name
        )
    if as_json:
        click.echo(json.dumps({
            "organisation": org_name,
            "access_key_id": access_key_id,
            "secret_access_key": secret,
        }))  # fmt: skip
        return
    click.echo(f"access key id:     {access_key_id}")
    click.echo(f"secret access key: {secret}")
    click.echo("The secret is not shown again; store it now.")


@click.group()
def audit() -> None:
    """Read and check the audit log of key operations."""


@audit.command("verify")
@DATA_DIR
@click.option(
    "--head",
    "head_text",
    metavar="SEQ:HASH",
    help="A head written down earlier; detects records removed from the end.",
)
@click.option(
    "--file",
    "export_file",
    type=click.File("r"),
    help="Check an exported JSON-lines file instead of the data directory.",
)
def audit_verify(data_dir: Path, head_text: str | None, export_file: TextIO) -> None:
    """Check that no audit record was edited, removed or reordered."""
    expected = _parse_head(head_text) if head_text else None
    if export_file is not None:
        _report(verify_export(export_file, expected))
        return
    with AuditLog.open(data_dir) as log:
        _report(log.verify(expected))


@audit.command("export")
@DATA_DIR
@click.option(
    "--output", "-o", type=click.File("w"), default="-", help="File to write to."
)
def audit_export(data_dir: Path, output: TextIO) -> None:
    """Write every audit record as JSON lines, then print the head to stderr."""
    with AuditLog.open(data_dir) as log:
        head = log.export(output)
    click.echo(f"head {head.seq}:{head.hash}", err=True)


@audit.command("head")
@DATA_DIR
def audit_head(data_dir: Path) -> None:
    """Print the last record's SEQ:HASH; keep it elsewhere to detect truncation."""
    with AuditLog.open(data_dir) as log:
        head = log.head()
    click.echo(f"{head.seq}:{head.hash}")


def _parse_head(text: str) -> AuditHead:
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise click.BadParameter("write the head as SEQ:HASH", param_hint="--head")
    return AuditHead(int(seq), digest)


def _report(verification: Verification) -> None:
    if verification.ok:
        click.echo(f"audit log intact: {verification.checked} records verified")
        return
    problem = verification.problem.value if verification.problem else "damaged"
    click.echo(
        f"audit log damaged: record {verification.bad_seq} {problem}"
        f"{': ' + verification.detail if verification.detail else ''}; "
        f"{verification.checked} records before it verified",
        err=True,
    )
    sys.exit(1)


@click.group()
def hsm() -> None:
    """Prepare master keys in a PKCS#11 token."""


@hsm.command("generate-key")
@DATA_DIR
@PKCS11_OPTIONS
@click.option("--key-label", required=True, help="Label for the new AES key.")
def hsm_generate_key(
    data_dir: Path,
    pkcs11_library: Path | None,
    pkcs11_token: str | None,
    key_label: str,
) -> None:
    """Create a 256-bit AES key in the token that can never be read out."""
    settings = hsm_settings(pkcs11_library, pkcs11_token)
    if settings is None:
        raise click.UsageError(
            f"give --pkcs11-library and --pkcs11-token, and the PIN in {PIN_VARIABLE}"
        )
    config = HsmConfig(settings.library, settings.token_label, settings.pin, key_label)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with AuditLog.open(data_dir) as log:
        keys: dict[str, KeyValue] = {"key_label": key_label[:32]}
        try:
            key_id = generate_hsm_key(config)
        except Exception as error:
            outcome = f"failed: {type(error).__name__}"
            log.append(cli_actor(), "hsm_key.create", "", keys, outcome)
            raise click.ClickException(str(error)) from None
        keys["master_key_id"] = key_id
        log.append(cli_actor(), "hsm_key.create", "", keys, "ok")
    click.echo(f"created token key {key_label!r} with key id {key_id}")

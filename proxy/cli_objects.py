"""Commands over an organisation's stored objects: `report` and `reencrypt`.

Both list the organisation's buckets in the object store with the proxy's
own upstream credentials, so they take the upstream settings as `serve`
does: options, `BYOK_PROXY_UPSTREAM_*` variables or a --config file.
Progress goes to stderr and results to stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from crypto.audit import KeyValue
from crypto.header import Purpose
from crypto.keyring import KeyRing, OrganisationStatus
from crypto.keystore import Organisation
from proxy.catalogue import Catalogue
from proxy.cli_common import DATA_DIR, cli_actor, key_services
from proxy.errors import S3Error
from proxy.keys import KeyServices
from proxy.object_moves import MoveFailed
from proxy.reencrypt import (
    Checkpoint,
    Outcome,
    Reencryption,
    Result,
    Selection,
    Summary,
)
from proxy.report import Report, build_report, format_bytes
from proxy.scan import Position, Totals, connected, count_objects, scan_objects
from proxy.settings import ConfigError, Settings, load_config_file

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar

__all__ = ["reencrypt", "report"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_PURPOSES = [purpose.label for purpose in Purpose]
# Settings these commands read from a --config file.
_FILE_SETTINGS = (
    "data_dir",
    "upstream_url",
    "upstream_access_key",
    "upstream_secret_key",
    "upstream_region",
)
_INTERRUPTED_RUN = (
    "interrupted; run the same command again to continue after the last "
    "object that was done"
)
# Lines of the reencrypt summary, in order: outcome, text, dry-run text.
_SUMMARY_LINES = (
    (Outcome.REWRAP, "rewrapped (new header only)", "to rewrap (new header only)"),
    (Outcome.REENCRYPT, "re-encrypted", "to re-encrypt"),
    (Outcome.CURRENT, "already on the active keys", "already on the active keys"),
    (Outcome.NOT_SELECTED, "not selected", "not selected"),
    (Outcome.FOREIGN, "not written by the proxy", "not written by the proxy"),
    (Outcome.INVALID, "invalid header, left as is", "invalid header, left as is"),
    (Outcome.GONE, "deleted during the run", "deleted during the run"),
    (Outcome.CHANGED, "replaced during the run, left as written", "-"),
    (Outcome.FAILED, "failed, see the messages above", "-"),
)


def UPSTREAM_OPTIONS(command: F) -> F:
    """Add the object store settings that `serve` takes, with the same names."""
    options = [
        click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False, path_type=Path),
            envvar="BYOK_PROXY_CONFIG",
            help="TOML file with the proxy's settings; only upstream ones are used.",
        ),
        click.option(
            "--upstream-url",
            envvar="BYOK_PROXY_UPSTREAM_URL",
            help="URL of the S3 object store.  [default: http://127.0.0.1:9000]",
        ),
        click.option(
            "--upstream-access-key",
            envvar="BYOK_PROXY_UPSTREAM_ACCESS_KEY",
            help="Access key id of the proxy's own object store account.",
        ),
        click.option(
            "--upstream-secret-key",
            envvar="BYOK_PROXY_UPSTREAM_SECRET_KEY",
            help="Secret key of the proxy's own object store account.",
        ),
        click.option(
            "--upstream-region",
            envvar="BYOK_PROXY_UPSTREAM_REGION",
            help="Region to sign upstream requests for.  [default: us-east-1]",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.command("report")
@DATA_DIR
@UPSTREAM_OPTIONS
@click.argument("org")
@click.option(
    "--versions", is_flag=True, help="Count every version, not only current ones."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def report(
    data_dir: Path,
    config_file: Path | None,
    org: str,
    versions: bool,
    as_json: bool,
    **options: Any,
) -> None:
    """Count ORG's objects by purpose and key version, reading headers only.

    Lists every bucket that ORG owns and HEADs each object. Headers are
    decoded, but no key is unwrapped, so a revoked organisation can be
    reported too. Objects without a header were not written through the
    proxy. The last line states what revoking ORG makes unreadable.
    """
    settings = _settings(data_dir, config_file, options)
    with _opened(settings.data_dir) as (keys, catalogue):
        organisation = keys.keyring.organisation(org)
        status = _status(keys.keyring, organisation)
        buckets = sorted(catalogue.buckets_of(organisation.id))
        counted: list[Report] = []
        audit_keys = _report_keys(counted)
        with (
            _operator_errors(),
            _audited(keys, "report.run", organisation.id_hex, audit_keys),
        ):
            result = _run(_scan_report(settings, status, buckets, versions))
            counted.append(result)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    for line in result.lines():
        click.echo(line)


@click.command("reencrypt")
@DATA_DIR
@UPSTREAM_OPTIONS
@click.argument("org")
@click.option(
    "--purpose",
    "purposes",
    multiple=True,
    type=click.Choice(_PURPOSES),
    help="Move only objects of this purpose; repeat for more.",
)
@click.option(
    "--org-key-version",
    "org_key_versions",
    multiple=True,
    type=click.IntRange(min=1),
    help="Move only objects whose header names this organisation key version.",
)
@click.option(
    "--dek-version",
    "dek_versions",
    multiple=True,
    type=click.IntRange(min=1),
    help="Move only objects whose header names this DEK version.",
)
@click.option("--bucket", help="Move only the objects of this bucket of ORG.")
@click.option("--dry-run", is_flag=True, help="Print each move; write nothing.")
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help="Move at most this many objects per second; skipped objects do not "
    "count.  [default: no limit]",
)
@click.option(
    "--restart", is_flag=True, help="Ignore the checkpoint; start at the first object."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def reencrypt(
    data_dir: Path,
    config_file: Path | None,
    org: str,
    purposes: tuple[str, ...],
    org_key_versions: tuple[int, ...],
    dek_versions: tuple[int, ...],
    bucket: str | None,
    dry_run: bool,
    rate: float | None,
    restart: bool,
    as_json: bool,
    **options: Any,
) -> None:
    """Move ORG's objects onto its active organisation key and DEKs.

    An object whose DEK is the active version, but wrapped by an older
    organisation key, gets a new header only: the object store copies it
    onto itself and its ciphertext stays. An object under an older DEK
    version is decrypted and encrypted again under the active DEK. Objects
    already on the active keys are skipped. Each write is conditional on
    the ETag that was read, so a client's concurrent write wins.

    After each object the run records its position in the checkpoint file
    reencrypt-ORGID.json in the data directory. Started again with the same
    options, an interrupted run continues after that object; --restart
    starts at the first object. Only current versions move: in a versioned
    bucket, older versions keep their keys until they are deleted. A dry
    run neither reads nor writes the checkpoint.
    """
    _configure_logging()
    settings = _settings(data_dir, config_file, options)
    selection = Selection(
        frozenset(Purpose.parse(label) for label in purposes),
        frozenset(org_key_versions),
        frozenset(dek_versions),
        bucket,
    )
    with _opened(settings.data_dir) as (keys, catalogue):
        organisation = keys.keyring.organisation_active(org)
        buckets = _selected_buckets(catalogue, organisation, bucket)
        checkpoint = Checkpoint(settings.data_dir, organisation.id, selection)
        with _operator_errors(_INTERRUPTED_RUN), _locked(checkpoint, dry_run):
            if restart and not dry_run:
                checkpoint.clear()
            run = Reencryption(
                keys.keyring,
                catalogue,
                organisation.id,
                buckets,
                selection,
                dry_run=dry_run,
                rate=rate,
                checkpoint=checkpoint,
            )
            _announce(run, checkpoint)
            summary = _audited_run(settings, keys, organisation, run, as_json)
    _print_summary(organisation, summary, as_json)
    failed = summary.counts[Outcome.FAILED]
    if failed:
        raise click.ClickException(
            f"{failed} objects failed to move; fix the cause named above and "
            "run the command again"
        )


# shared set-up


def _settings(
    data_dir: Path, config_file: Path | None, options: dict[str, Any]
) -> Settings:
    """Build the upstream settings as `serve` does: file, options, environment.

    Only the data directory and the upstream settings are taken from the
    file, so listener, TLS and token settings there need not be valid here.
    """
    try:
        found = load_config_file(config_file) if config_file else {}
    except ConfigError as error:
        raise click.UsageError(str(error)) from None
    values = {name: found[name] for name in _FILE_SETTINGS if name in found}
    values.setdefault("data_dir", data_dir)
    values.update({name: value for name, value in options.items() if value is not None})
    values["data_dir"] = Path(values["data_dir"])
    try:
        return Settings(**values)
    except ConfigError as error:
        raise click.UsageError(str(error)) from None


@contextmanager
def _opened(data_dir: Path) -> Iterator[tuple[KeyServices, Catalogue]]:
    """Open the key services and the catalogue of an existing data directory."""
    with key_services(data_dir) as keys:
        path = data_dir / "catalogue.sqlite3"
        if not path.exists():
            raise click.ClickException(
                f"no catalogue in {data_dir}, so no buckets: the proxy records a "
                "bucket when a client creates it; pass the --data-dir that the "
                "proxy uses"
            )
        catalogue = Catalogue(path)
        try:
            yield keys, catalogue
        finally:
            catalogue.close()


def _status(keyring: KeyRing, organisation: Organisation) -> OrganisationStatus:
    for status in keyring.status().organisations:
        if status.id_hex == organisation.id_hex:
            return status
    raise click.ClickException(f"organisation {organisation.name!r} disappeared")


def _selected_buckets(
    catalogue: Catalogue, organisation: Organisation, bucket: str | None
) -> list[str]:
    owned = sorted(catalogue.buckets_of(organisation.id))
    if bucket is None:
        return owned
    if bucket not in owned:
        raise click.BadParameter(
            f"{bucket!r} is not a bucket of {organisation.name} in the catalogue; "
            f"its buckets are: {', '.join(owned) or 'none'}",
            param_hint="--bucket",
        )
    return [bucket]


@contextmanager
def _audited(
    keys: KeyServices,
    action: str,
    org_hex: str,
    audit_keys: Callable[[], dict[str, KeyValue]],
) -> Iterator[None]:
    """Append one audit record for the block, with its outcome and counts."""
    try:
        yield
    except BaseException as error:
        outcome = f"failed: {type(error).__name__}"
        keys.audit.append(cli_actor(), action, org_hex, audit_keys(), outcome)
        raise
    keys.audit.append(cli_actor(), action, org_hex, audit_keys(), "ok")


@contextmanager
def _operator_errors(interrupted: str = "interrupted") -> Iterator[None]:
    """Turn object store failures and interruptions into command-line errors."""
    try:
        yield
    except S3Error as error:
        raise click.ClickException(
            f"an object store request failed: {error.code}: {error.message}; "
            "run the command again once the object store responds"
        ) from None
    except MoveFailed as error:
        raise click.ClickException(str(error)) from None
    except (KeyboardInterrupt, asyncio.CancelledError):
        click.echo(interrupted, err=True)
        sys.exit(130)


@contextmanager
def _locked(checkpoint: Checkpoint, dry_run: bool) -> Iterator[None]:
    if dry_run:
        yield
        return
    with checkpoint.locked():
        yield


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; SIGTERM cancels it as Ctrl-C does."""
    return asyncio.run(_cancelled_by_sigterm(coroutine))


async def _cancelled_by_sigterm(coroutine: Coroutine[Any, Any, T]) -> T:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    # outside the main thread only Ctrl-C interrupts
    with contextlib.suppress(RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await coroutine
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _configure_logging() -> None:
    """Send the run's warnings (failed objects) to stderr, once per process."""
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s"
    )


class _Progress:
    """A progress bar on stderr that counts objects and stored bytes."""

    def __init__(self, label: str, totals: Totals) -> None:
        self._totals = totals
        self._done_bytes = 0
        self._bar: ProgressBar[int] = click.progressbar(
            length=max(totals.objects, 1),
            label=label,
            show_pos=True,
            hidden=totals.objects == 0,
            file=sys.stderr,
            item_show_func=self._describe,
        )

    def __enter__(self) -> _Progress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._bar.__exit__(None, None, None)

    def advance(self, size: int) -> None:
        """Count one object of `size` stored bytes as done."""
        self._done_bytes += size
        self._bar.update(1, current_item=size)

    def _describe(self, item: int | None) -> str:
        done, total = format_bytes(self._done_bytes), format_bytes(self._totals.bytes)
        return f"{done} of {total}"


# report


async def _scan_report(
    settings: Settings, status: OrganisationStatus, buckets: list[str], versions: bool
) -> Report:
    org_id = bytes.fromhex(status.id_hex)
    async with connected(settings) as upstream:
        totals = await count_objects(upstream, buckets, versions=versions)
        with _Progress("scanning", totals) as progress:
            scanned = scan_objects(upstream, org_id, buckets, versions=versions)
            return await build_report(
                scanned,
                status,
                buckets,
                versions=versions,
                on_object=lambda item: progress.advance(item.size),
            )


def _report_keys(counted: list[Report]) -> Callable[[], dict[str, KeyValue]]:
    def keys() -> dict[str, KeyValue]:
        if not counted:
            return {}
        result = counted[0]
        return {
            "versions": result.versions,
            "objects": result.encrypted.objects,
            "bytes": result.encrypted.bytes,
            "foreign_objects": result.foreign.objects,
            "invalid_objects": result.invalid.objects,
        }

    return keys


# reencrypt


def _announce(run: Reencryption, checkpoint: Checkpoint) -> None:
    if checkpoint.ignored:
        click.echo(
            f"ignoring the checkpoint {checkpoint.path}: it was made with other "
            "options; starting at the first object",
            err=True,
        )
    if run.start is not None:
        click.echo(
            f"resuming after {run.start.bucket}/{run.start.key} from the "
            f"checkpoint {checkpoint.path}; pass --restart to start at the "
            "first object",
            err=True,
        )


def _audited_run(
    settings: Settings,
    keys: KeyServices,
    organisation: Organisation,
    run: Reencryption,
    as_json: bool,
) -> Summary:
    """Run with a start and a finish record in the audit log.

    The audit log cannot name objects, because its values are at most 32
    characters, so the finish record carries counts of each outcome. A run
    that was killed leaves a start record without a finish record.
    """
    start_keys: dict[str, KeyValue] = {
        "dry_run": run.summary.dry_run,
        "resumed": run.start is not None,
    }
    org_hex = organisation.id_hex
    keys.audit.append(cli_actor(), "reencrypt.start", org_hex, start_keys, "ok")
    with _audited(keys, "reencrypt.finish", org_hex, run.summary.audit_keys):
        return _run(_move_objects(settings, run, list_moves=not as_json))


async def _move_objects(
    settings: Settings, run: Reencryption, *, list_moves: bool
) -> Summary:
    """Run with a progress bar; a dry run lists its moves unless `list_moves` is off."""
    dry_run = run.summary.dry_run

    def on_result(result: Result) -> None:
        progress.advance(result.scanned.size)
        planned = result.outcome in (Outcome.REWRAP, Outcome.REENCRYPT)
        if dry_run and list_moves and planned:
            click.echo(_describe_move(result))

    async with connected(settings) as upstream:
        totals = await count_objects(upstream, run.buckets, start=run.start)
        with _Progress("planning" if dry_run else "moving", totals) as progress:
            return await run.run(upstream, on_result)


def _describe_move(result: Result) -> str:
    listed, header = result.scanned.listed, result.scanned.header
    assert header is not None and result.target is not None
    org_key, dek = result.target
    name = f"{listed.bucket}/{listed.key}"
    if result.outcome is Outcome.REWRAP:
        return (
            f"rewrap {name}: {header.purpose.label} DEK v{dek}, organisation key "
            f"v{header.org_key_version} -> v{org_key}"
        )
    return (
        f"re-encrypt {name}: {header.purpose.label} DEK v{header.dek_version} -> "
        f"v{dek}, organisation key v{header.org_key_version} -> v{org_key}"
    )


def _print_summary(organisation: Organisation, summary: Summary, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2))
        return
    heading = "dry run, nothing written" if summary.dry_run else "reencrypt"
    click.echo(
        f"{heading} of {organisation.name}: examined {summary.examined} objects"
        + _resumed(summary.resumed_after)
    )
    for outcome, text, dry_text in _SUMMARY_LINES:
        label = dry_text if summary.dry_run else text
        if label != "-":
            click.echo(f"  {label:<42} {summary.counts[outcome]}")
    verb = "would move" if summary.dry_run else "moved"
    click.echo(f"{verb} {format_bytes(summary.moved_bytes)} of stored objects")


def _resumed(position: Position | None) -> str:
    if position is None:
        return ""
    return f", resuming after {position.bucket}/{position.key}"

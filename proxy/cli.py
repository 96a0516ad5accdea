"""The `byok-proxy` command line: serve, routes, buckets, status; keys in cli_keys."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from crypto.header import Purpose
from proxy.catalogue import FOREIGN_POLICIES, Catalogue, Route
from proxy.cli_common import DATA_DIR, PIN_VARIABLE, PKCS11_OPTIONS, key_services
from proxy.cli_import import import_key
from proxy.cli_keys import audit, credentials, hsm, master, org
from proxy.cli_objects import reencrypt, report
from proxy.settings import ConfigError, Settings, load_config_file

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Transparent encrypting S3 proxy with keys held by their owners."""


@main.command()
@DATA_DIR
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="BYOK_PROXY_CONFIG",
    help="TOML file with any of these settings.",
)
@click.option(
    "--listen",
    envvar="BYOK_PROXY_LISTEN",
    help="Address to listen on, HOST:PORT.  [default: 127.0.0.1:8080]",
)
@click.option(
    "--upstream-url",
    envvar="BYOK_PROXY_UPSTREAM_URL",
    help="URL of the S3 object store.  [default: http://127.0.0.1:9000]",
)
@click.option(
    "--upstream-access-key",
    envvar="BYOK_PROXY_UPSTREAM_ACCESS_KEY",
    help="Access key id of the proxy's own object store account.",
)
@click.option(
    "--upstream-secret-key",
    envvar="BYOK_PROXY_UPSTREAM_SECRET_KEY",
    help="Secret key of the proxy's own object store account.",
)
@click.option(
    "--upstream-region",
    envvar="BYOK_PROXY_UPSTREAM_REGION",
    help="Region to sign upstream requests for.  [default: us-east-1]",
)
@click.option(
    "--domain",
    envvar="BYOK_PROXY_DOMAIN",
    help="Base domain for virtual-hosted-style requests (BUCKET.DOMAIN).",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="BYOK_PROXY_TLS_CERT",
    help="PEM certificate chain; with --tls-key, serve HTTPS.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="BYOK_PROXY_TLS_KEY",
    help="PEM private key of --tls-cert.",
)
@click.option(
    "--admin-listen",
    envvar="BYOK_PROXY_ADMIN_LISTEN",
    help="Address of the admin API, HOST:PORT.  [default: 127.0.0.1:8081]",
)
@click.option(
    "--admin-token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="BYOK_PROXY_ADMIN_TOKEN_FILE",
    help="Bearer token of the admin API, created on first start."
    "  [default: DATA_DIR/admin.token]",
)
@PKCS11_OPTIONS
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    envvar="BYOK_PROXY_WORKERS",
    help="Processes serving S3 on the same port.  [default: 1]",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def serve(
    data_dir: Path, config_file: Path | None, log_level: str, **options: Any
) -> None:
    """Run the proxy until interrupted."""
    from proxy.server import run, tls_context

    _configure_logging(log_level)
    try:
        settings = _settings(data_dir, config_file, options)
        context = tls_context(settings)
    except ConfigError as error:
        raise click.UsageError(str(error)) from None
    try:
        run(settings, context)
    except OSError as error:
        raise click.ClickException(
            f"cannot listen on {settings.listen_host}:{settings.listen_port}: "
            f"{error.strerror or error}; choose another address with --listen"
        ) from None


@main.group()
def route() -> None:
    """Map buckets and key prefixes to DEK purposes (default: files)."""


@route.command("set")
@DATA_DIR
@click.argument("bucket")
@click.argument("prefix")
@click.argument(
    "purpose", metavar="PURPOSE", type=click.Choice([p.label for p in Purpose])
)
def route_set(data_dir: Path, bucket: str, prefix: str, purpose: str) -> None:
    """Encrypt new objects under BUCKET/PREFIX with the PURPOSE DEK."""
    with _catalogue(data_dir) as catalogue:
        catalogue.set_route(Route(bucket, prefix, Purpose.parse(purpose)))
    click.echo(f"objects under {bucket}/{prefix} now use the {purpose} key")


@route.command("remove")
@DATA_DIR
@click.argument("bucket")
@click.argument("prefix")
def route_remove(data_dir: Path, bucket: str, prefix: str) -> None:
    """Remove the route of BUCKET/PREFIX."""
    with _catalogue(data_dir) as catalogue:
        if not catalogue.remove_route(bucket, prefix):
            raise click.ClickException(f"no route for {bucket}/{prefix}")
    click.echo(f"removed the route of {bucket}/{prefix}")


@route.command("list")
@DATA_DIR
def route_list(data_dir: Path) -> None:
    """List routes."""
    with _catalogue(data_dir) as catalogue:
        for entry in catalogue.routes():
            click.echo(
                f"{entry.bucket}\t{entry.prefix or '(all)'}\t{entry.purpose.label}"
            )


@main.group()
def bucket() -> None:
    """Show buckets and set how they treat objects the proxy did not write."""


@bucket.command("foreign-objects")
@DATA_DIR
@click.argument("name", metavar="BUCKET")
@click.argument("policy", type=click.Choice(FOREIGN_POLICIES))
def bucket_foreign_objects(data_dir: Path, name: str, policy: str) -> None:
    """Set how BUCKET treats objects that have no encryption header.

    refuse (the default) rejects their GET, HEAD and copy with 403
    InvalidObjectState. read returns them as stored, and lets copies read
    them, so that copying such an object onto itself encrypts it.
    """
    with _catalogue(data_dir, create=False) as catalogue:
        if not catalogue.set_foreign_objects(name, policy):
            raise click.ClickException(_unknown_bucket(name))
    click.echo(f"bucket {name} now {_POLICY_EFFECTS[policy]}")


@bucket.command("show")
@DATA_DIR
@click.argument("name", metavar="BUCKET")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def bucket_show(data_dir: Path, name: str, as_json: bool) -> None:
    """Show the owner, foreign-objects policy and routes of BUCKET."""
    with _catalogue(data_dir, create=False) as catalogue:
        owner = catalogue.bucket_owner(name)
        if owner is None:
            raise click.ClickException(_unknown_bucket(name))
        policy = catalogue.foreign_objects(name)
        routes = [r for r in catalogue.routes() if r.bucket == name]
    with key_services(data_dir) as keys:
        names = {o.id: o.name for o in keys.keyring.organisations()}
    summary = {
        "bucket": name,
        "owner": {"name": names.get(owner), "id": owner.hex()},
        "foreign_objects": policy,
        "routes": [{"prefix": r.prefix, "purpose": r.purpose.label} for r in routes],
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    _print_bucket(summary)


# The effect of each foreign-objects policy, completing "bucket NAME now ...".
_POLICY_EFFECTS = {
    "refuse": "rejects objects the proxy did not write with InvalidObjectState",
    "read": "serves objects the proxy did not write as stored; copy them onto "
    "themselves to encrypt them",
}


def _unknown_bucket(name: str) -> str:
    return (
        f"no bucket {name!r} in the catalogue; only buckets created through "
        "the proxy have settings"
    )


def _print_bucket(summary: dict[str, Any]) -> None:
    owner = summary["owner"]
    click.echo(f"bucket           {summary['bucket']}")
    click.echo(f"owner            {owner['name'] or '(unknown)'} ({owner['id']})")
    click.echo(f"foreign objects  {summary['foreign_objects']}")
    if not summary["routes"]:
        click.echo("routes           none: every key uses the files key")
    for index, entry in enumerate(summary["routes"]):
        label = "routes" if index == 0 else ""
        prefix = entry["prefix"] or "(all)"
        click.echo(f"{label:<16} {prefix} -> {entry['purpose']}")


@main.command()
@DATA_DIR
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def status(data_dir: Path, as_json: bool) -> None:
    """Show organisations, key versions and states; never key material."""
    with key_services(data_dir) as keys:
        summary = keys.keyring.status().as_dict()
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    _print_status(summary)


def _print_status(summary: dict[str, Any]) -> None:
    click.echo(f"master key {summary['master_key_id']}")
    for entry in summary["organisations"]:
        org_keys = ", ".join(f"v{v} {state}" for v, state in entry["org_keys"])
        deks = ", ".join(f"{purpose} v{v}" for purpose, v in entry["active_deks"])
        click.echo(
            f"{entry['name']} ({entry['state']}): organisation key {org_keys or '-'}; "
            f"DEKs {deks or '-'}; {entry['credentials']} access keys"
        )


def _settings(
    data_dir: Path, config_file: Path | None, options: dict[str, Any]
) -> Settings:
    values: dict[str, Any] = load_config_file(config_file) if config_file else {}
    values.setdefault("data_dir", data_dir)
    for name, value in options.items():
        if value is not None:
            values[name] = value
    for option in ("listen", "admin_listen"):
        address = values.pop(option, None)
        if address is not None:
            host, port = _address(option, str(address))
            values[f"{option}_host"], values[f"{option}_port"] = host, port
    if values.get("pkcs11_library") is not None:
        values["pkcs11_pin"] = os.environ.get(PIN_VARIABLE, "")
        values["pkcs11_library"] = Path(values["pkcs11_library"])
    values["pkcs11_token"] = values.get("pkcs11_token") or ""
    values["data_dir"] = Path(values["data_dir"])
    return Settings(**values)


def _address(option: str, address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        name = option.replace("_", " ").replace("listen", "listen address")
        raise ConfigError(f"{name} {address!r} must be HOST:PORT")
    return host.strip("[]"), int(port)


class _catalogue:
    """Open the data directory's catalogue; `create=False` needs an existing one."""

    def __init__(self, data_dir: Path, *, create: bool = True) -> None:
        self._data_dir = data_dir
        self._create = create

    def __enter__(self) -> Catalogue:
        path = self._data_dir / "catalogue.sqlite3"
        if not self._create and not path.exists():
            raise click.ClickException(
                f"no catalogue in {self._data_dir}, so no buckets: the proxy "
                "records a bucket when a client creates it; pass the --data-dir "
                "that the proxy uses"
            )
        self._data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._catalogue = Catalogue(self._data_dir / "catalogue.sqlite3")
        return self._catalogue

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        self._catalogue.close()


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


for _command in (org, credentials, master, audit, hsm, import_key, report, reencrypt):
    main.add_command(_command)

"""`byok-proxy import`: bring a customer's master key into a running proxy.

An imported key lives only in the memory of the proxy that received it, so
these commands talk to that proxy's admin API with the token from its data
directory, instead of opening the key store themselves.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from proxy.cli_common import DATA_DIR

__all__ = ["import_key"]

_ADMIN_URL = click.option(
    "--admin-url",
    default="http://127.0.0.1:8081",
    show_default=True,
    envvar="BYOK_PROXY_ADMIN_URL",
    help="Admin API of the running proxy.",
)
_TIMEOUT = 30.0


@click.group("import")
def import_key() -> None:
    """Import a customer's own AES-256 master key into the running proxy."""


@import_key.command("start")
@DATA_DIR
@_ADMIN_URL
@click.argument("org_name", metavar="ORG")
@click.option(
    "--public-key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("job.pem"),
    show_default=True,
    help="Where to save the job's RSA public key.",
)
def import_start(
    data_dir: Path, admin_url: str, org_name: str, public_key: Path
) -> None:
    """Create an import job for ORG and save its public key.

    Give the customer the public key, the job id and the token. The
    customer wraps its key with the openssl commands printed here.
    """
    job = _call(
        data_dir, admin_url, "POST", f"/v1/organisations/{org_name}/import-jobs"
    )
    public_key.write_text(job["public_key_pem"])
    click.echo(f"job id:      {job['job_id']}")
    click.echo(f"token:       {job['token']}")
    click.echo(f"expires at:  {job['expires_at']}")
    click.echo(f"public key:  {public_key}")
    for step in job["instructions"]:
        click.echo(f"  {step}")


@import_key.command("finish")
@DATA_DIR
@_ADMIN_URL
@click.argument("job_id")
@click.option("--token", required=True, help="The token of the import job.")
@click.option(
    "--wrapped-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The key wrapped by openssl pkeyutl (binary, as openssl wrote it).",
)
@click.option("--check-value", required=True, help="The key check value, 6 hex digits.")
def import_finish(
    data_dir: Path,
    admin_url: str,
    job_id: str,
    token: str,
    wrapped_key: Path,
    check_value: str,
) -> None:
    """Hand the wrapped key to the proxy, which checks it and takes it in."""
    body = {
        "token": token,
        "wrapped_key": base64.b64encode(wrapped_key.read_bytes()).decode("ascii"),
        "check_value": check_value,
    }
    organisation = _call(data_dir, admin_url, "POST", f"/v1/import-jobs/{job_id}", body)
    click.echo(
        f"organisation {organisation['name']} now uses its imported master key; "
        "import it again after every restart of the proxy"
    )


def _call(
    data_dir: Path,
    admin_url: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
) -> Any:
    """Send one admin API request and return its JSON, or exit with its error."""
    token = _admin_token(data_dir)
    request = urllib.request.Request(
        admin_url.rstrip("/") + path,
        data=json.dumps(body or {}).encode(),
        method=method,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        raise click.ClickException(_error_message(error)) from None
    except urllib.error.URLError as error:
        raise click.ClickException(
            f"cannot reach the admin API at {admin_url}: {error.reason}; start the "
            "proxy, or pass its --admin-url"
        ) from None


def _admin_token(data_dir: Path) -> str:
    configured = os.environ.get("BYOK_PROXY_ADMIN_TOKEN_FILE")
    path = Path(configured) if configured else data_dir / "admin.token"
    try:
        return path.read_text().strip()
    except OSError as error:
        raise click.ClickException(
            f"cannot read the admin token {path}: {error.strerror}; pass the "
            "--data-dir of the running proxy"
        ) from None


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        detail = json.load(error)["error"]
        return f"{detail['code']}: {detail['message']}"
    except (ValueError, KeyError, TypeError):
        return f"the admin API answered HTTP {error.code}"

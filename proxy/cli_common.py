"""Options and resources that the `byok-proxy` command groups share."""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from crypto.errors import CryptoError
from proxy.keys import HsmSettings, KeyServices, open_keys

__all__ = [
    "DATA_DIR",
    "PKCS11_OPTIONS",
    "cli_actor",
    "hsm_settings",
    "key_services",
]

F = TypeVar("F", bound=Callable[..., Any])

DATA_DIR = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("byok-data"),
    show_default=True,
    envvar="BYOK_PROXY_DATA_DIR",
    help="Directory of the master key, key store and catalogue.",
)

PIN_VARIABLE = "BYOK_PROXY_PKCS11_PIN"


def PKCS11_OPTIONS(command: F) -> F:
    """Add the PKCS#11 token options; the PIN comes from the environment."""
    command = click.option(
        "--pkcs11-token",
        envvar="BYOK_PROXY_PKCS11_TOKEN",
        help="Label of the PKCS#11 token that contains HSM master keys.",
    )(command)
    return click.option(
        "--pkcs11-library",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="BYOK_PROXY_PKCS11_LIBRARY",
        help=f"PKCS#11 module of the HSM; the user PIN is read from {PIN_VARIABLE}.",
    )(command)


def hsm_settings(
    library: Path | None = None, token: str | None = None
) -> HsmSettings | None:
    """Build the token settings from options or environment; None without a library.

    Every key command reads the environment, so that commands on an
    organisation whose key is in the token work without repeating options.
    """
    library = library or _path_from_environment("BYOK_PROXY_PKCS11_LIBRARY")
    token = token or os.environ.get("BYOK_PROXY_PKCS11_TOKEN")
    if library is None:
        return None
    pin = os.environ.get(PIN_VARIABLE, "")
    if not token or not pin:
        raise click.UsageError(
            f"an HSM needs --pkcs11-token and the user PIN in {PIN_VARIABLE}"
        )
    return HsmSettings(library, token, pin)


def _path_from_environment(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def cli_actor() -> str:
    """Name the person running the command for the audit log."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid-{os.getuid()}"


class key_services:
    """Open the data directory's keys; only `create=True` may start a store."""

    def __init__(
        self,
        data_dir: Path,
        *,
        create: bool = False,
        hsm: HsmSettings | None = None,
    ) -> None:
        self._data_dir = data_dir
        self._create = create
        self._hsm = hsm or hsm_settings()

    def __enter__(self) -> KeyServices:
        if not self._create and not (self._data_dir / "master.key").exists():
            raise click.ClickException(
                f"no key store in {self._data_dir}; create an organisation with "
                "`byok-proxy org create`, or pass the --data-dir that the proxy "
                "uses (`make run` keeps its own in run/proxy)"
            )
        self._data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self._services = open_keys(self._data_dir, hsm=self._hsm, actor=cli_actor())
        except (CryptoError, ValueError, OSError) as error:
            raise click.ClickException(str(error)) from None
        return self._services

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        self._services.close()
        if isinstance(error, (CryptoError, ValueError)):
            raise click.ClickException(str(error)) from None

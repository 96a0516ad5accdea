"""Private SoftHSM2 tokens for tests, in a token directory of their own.

SoftHSM2 reads the configuration file named by SOFTHSM2_CONF when a process
first initialises the library, and lists only the tokens that exist then
(seen with SoftHSM2 2.6.1). `softhsm_tokens` therefore creates every token a
test run needs before it returns, and must run before the first HsmMasterKey
of the process is opened.

Run as `python -m tests.hsm_token unwrap|delete` with a JSON request on
stdin, this module is the second process of the multi-process tests.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pkcs11
from pkcs11.constants import ObjectClass
from pkcs11.exceptions import UserAlreadyLoggedIn
from pkcs11.types import Session

from crypto.hsm import HsmConfig, HsmMasterKey

__all__ = [
    "SOFTHSM_LIBRARY",
    "delete_key",
    "delete_key_in_subprocess",
    "open_session",
    "softhsm_tokens",
    "unwrap_in_subprocess",
]

# The library path of the Debian and Ubuntu package `softhsm2`.
SOFTHSM_LIBRARY = Path("/usr/lib/softhsm/libsofthsm2.so")

_PROJECT_ROOT = Path(__file__).resolve().parents[1]
_SUBPROCESS_TIMEOUT = 60


@contextmanager
def softhsm_tokens(
    directory: Path, token_labels: Sequence[str], key_label: str = "master"
) -> Iterator[dict[str, HsmConfig]]:
    """Create SoftHSM2 tokens in `directory` and point SOFTHSM2_CONF at them.

    Yields one HsmConfig per token label, each with a random user PIN and
    `key_label`, which no key has yet. SOFTHSM2_CONF is restored on exit,
    but a process keeps the configuration it loaded first.
    """
    _require_softhsm()
    config_file = _write_softhsm_config(directory)
    pins = {label: secrets.token_hex(8) for label in token_labels}
    for label, pin in pins.items():
        _init_token(config_file, label, pin)

    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(config_file)
    try:
        yield {
            label: HsmConfig(SOFTHSM_LIBRARY, label, pin, key_label)
            for label, pin in pins.items()
        }
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous


@contextmanager
def open_session(config: HsmConfig) -> Iterator[Session]:
    """Open a read-write session on the token of `config`, as its user.

    If an HsmMasterKey of this process is logged in to the token, the
    session shares that login, since PKCS#11 keeps one login per process.
    Otherwise closing the session logs out.
    """
    token = pkcs11.lib(str(config.library)).get_token(token_label=config.token_label)
    try:
        session = token.open(rw=True, user_pin=config.pin)
    except UserAlreadyLoggedIn:
        session = token.open(rw=True)
    with session:
        yield session


def delete_key(config: HsmConfig) -> None:
    """Destroy the secret key labelled `config.key_label` in its token."""
    with open_session(config) as session:
        session.get_key(
            object_class=ObjectClass.SECRET_KEY, label=config.key_label
        ).destroy()


def unwrap_in_subprocess(
    config: HsmConfig, wrapped: bytes, associated_data: bytes
) -> tuple[str, bytes]:
    """Open the key in a new process, unwrap there and return key id and plaintext."""
    request = {
        "wrapped": wrapped.hex(),
        "associated_data": associated_data.hex(),
    }
    response = _run_subprocess("unwrap", config, request)
    return response["key_id"], bytes.fromhex(response["plaintext"])


def delete_key_in_subprocess(config: HsmConfig) -> None:
    """Destroy the key from a new process, as a customer's HSM tool would."""
    _run_subprocess("delete", config, {})


def _require_softhsm() -> None:
    if not SOFTHSM_LIBRARY.exists() or shutil.which("softhsm2-util") is None:
        raise RuntimeError(
            f"SoftHSM2 is not installed ({SOFTHSM_LIBRARY} or softhsm2-util is "
            "missing); run `apt-get install softhsm2` or `make install`"
        )


def _write_softhsm_config(directory: Path) -> Path:
    token_directory = directory / "tokens"
    token_directory.mkdir(parents=True)
    config_file = directory / "softhsm2.conf"
    config_file.write_text(
        f"directories.tokendir = {token_directory}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
    )
    return config_file


def _init_token(config_file: Path, label: str, pin: str) -> None:
    # The security officer PIN is never needed again, so it is thrown away.
    command = [
        "softhsm2-util",
        "--init-token",
        "--free",
        "--label",
        label,
        "--so-pin",
        secrets.token_hex(8),
        "--pin",
        pin,
    ]
    environment = {**os.environ, "SOFTHSM2_CONF": str(config_file)}
    result = subprocess.run(
        command, env=environment, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"softhsm2-util failed to initialise token {label!r} "
            f"(exit status {result.returncode}): {result.stderr.strip()}"
        )


def _run_subprocess(
    command: str, config: HsmConfig, request: dict[str, str]
) -> dict[str, Any]:
    # The PIN travels on stdin, not on the command line that `ps` shows.
    message = {**request, **_config_to_json(config)}
    result = subprocess.run(
        [sys.executable, "-m", "tests.hsm_token", command],
        input=json.dumps(message),
        capture_output=True,
        text=True,
        cwd=_PROJECT_ROOT,
        timeout=_SUBPROCESS_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"the {command} subprocess failed with exit status "
            f"{result.returncode}: {result.stderr.strip()}"
        )
    response: dict[str, Any] = json.loads(result.stdout)
    return response


def _config_to_json(config: HsmConfig) -> dict[str, str]:
    return {
        "library": str(config.library),
        "token_label": config.token_label,
        "pin": config.pin,
        "key_label": config.key_label,
    }


def _config_from_json(message: dict[str, str]) -> HsmConfig:
    return HsmConfig(
        Path(message["library"]),
        message["token_label"],
        message["pin"],
        message["key_label"],
    )


def _main(command: str) -> None:
    message = json.load(sys.stdin)
    config = _config_from_json(message)
    if command == "delete":
        delete_key(config)
        print(json.dumps({}))
        return
    with HsmMasterKey(config) as master:
        plaintext = master.unwrap(
            bytes.fromhex(message["wrapped"]),
            bytes.fromhex(message["associated_data"]),
        )
        print(json.dumps({"key_id": master.key_id, "plaintext": plaintext.hex()}))


if __name__ == "__main__":
    _main(sys.argv[1])

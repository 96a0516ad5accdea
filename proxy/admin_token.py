"""The admin API's bearer token: a random secret in a mode-0600 file.

The proxy creates the file on first start, and the CLI's admin commands
read it, so an operator who can read the data directory can use the API.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

__all__ = ["load_or_create_token"]

_TOKEN_BYTES = 32


def load_or_create_token(path: Path) -> str:
    """Return the token in `path`, writing a new one there if it is missing.

    Raise PermissionError if group or others can read the file.
    """
    try:
        return _read_token(path)
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        with os.fdopen(os.open(temporary, flags, 0o600), "w") as file:
            file.write(token + "\n")
        # the link appears complete; if another process won, use its token
        os.link(temporary, path)
    except FileExistsError:
        return _read_token(path)
    finally:
        temporary.unlink(missing_ok=True)
    return token


def _read_token(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PermissionError(
            f"admin token file {path} has mode {mode:04o}; run `chmod 600 {path}` "
            "and replace the token, which others may have read"
        )
    return path.read_text().strip()

"""Proxy configuration: one frozen object, read once at start-up."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ConfigError", "Settings", "load_config_file"]


class ConfigError(ValueError):
    """A configuration value is missing or invalid."""


@dataclass(frozen=True)
class Settings:
    """Everything `byok-proxy serve` needs; see `byok-proxy serve --help`."""

    data_dir: Path
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    upstream_url: str = "http://127.0.0.1:9000"
    upstream_access_key: str = field(default="", repr=False)
    upstream_secret_key: str = field(default="", repr=False)
    upstream_region: str = "us-east-1"
    domain: str = ""
    key_cache_ttl: float = 300.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    admin_listen_host: str = "127.0.0.1"
    admin_listen_port: int = 8081
    admin_token_file: Path | None = None
    pkcs11_library: Path | None = None
    pkcs11_token: str = ""
    pkcs11_pin: str = field(default="", repr=False)
    policy_interval: float = 60.0
    workers: int = 1

    def __post_init__(self) -> None:
        parts = urlsplit(self.upstream_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"upstream URL {self.upstream_url!r} is invalid; "
                "give one like http://127.0.0.1:9000"
            )
        if parts.path not in ("", "/"):
            raise ConfigError(
                f"upstream URL {self.upstream_url!r} must not have a path"
            )
        if not self.upstream_access_key or not self.upstream_secret_key:
            raise ConfigError(
                "upstream credentials are missing; set --upstream-access-key and "
                "--upstream-secret-key (or BYOK_PROXY_UPSTREAM_ACCESS_KEY and "
                "BYOK_PROXY_UPSTREAM_SECRET_KEY)"
            )
        for port in (self.listen_port, self.admin_listen_port):
            if not 0 < port < 65536:
                raise ConfigError(f"listen port {port} is out of range")
        if self.pkcs11_library is not None and not (
            self.pkcs11_token and self.pkcs11_pin
        ):
            raise ConfigError(
                "a PKCS#11 library needs --pkcs11-token and the user PIN in "
                "BYOK_PROXY_PKCS11_PIN"
            )
        if not 1 <= self.workers <= 64:
            raise ConfigError(f"workers must be between 1 and 64, got {self.workers}")
        if self.policy_interval <= 0:
            raise ConfigError(
                f"policy interval must be positive, got {self.policy_interval}"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both --tls-cert and --tls-key, or neither")
        if self.key_cache_ttl <= 0:
            raise ConfigError(
                f"key cache TTL must be positive, got {self.key_cache_ttl}"
            )

    @property
    def scheme(self) -> str:
        """The listener's URL scheme."""
        return "https" if self.tls_cert is not None else "http"

    @property
    def admin_token_path(self) -> Path:
        """The file with the admin API's bearer token."""
        return self.admin_token_file or self.data_dir / "admin.token"

    @property
    def upstream_base(self) -> str:
        """The upstream URL without a trailing slash."""
        return self.upstream_url.rstrip("/")


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML config file into option names of `byok-proxy serve`.

    Keys are the long option names with dashes or underscores
    (`upstream-url`, `listen`), at the top level or in a `[serve]` table.
    """
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from error
    table = document.get("serve", document)
    known = {f.name for f in fields(Settings)} | {"listen", "admin_listen"}
    known.discard("pkcs11_pin")
    values: dict[str, Any] = {}
    for name, value in table.items():
        option = name.replace("-", "_")
        if option not in known:
            raise ConfigError(f"config file {path}: unknown setting {name!r}")
        values[option] = value
    for option in (
        "tls_cert",
        "tls_key",
        "data_dir",
        "admin_token_file",
        "pkcs11_library",
    ):
        if option in values:
            values[option] = Path(values[option])
    return values

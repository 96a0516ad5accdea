"""The byok-proxy command line, run as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from crypto.header import Purpose
from proxy.catalogue import Catalogue


def run(
    data_dir: Path, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        input=stdin,
        check=False,
    )


def test_cli_console_script_help() -> None:
    script = Path(sys.executable).parent / "byok-proxy"
    result = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "serve" in result.stdout
    assert "credentials" in result.stdout


def test_cli_org_create_and_list(tmp_path: Path) -> None:
    created = run(tmp_path, "org", "create", "acme")
    assert created.returncode == 0, created.stderr
    listed = run(tmp_path, "org", "list")
    assert listed.stdout.split("\t")[:2] == ["acme", "active"]
    assert (tmp_path / "master.key").stat().st_mode & 0o777 == 0o600


def test_cli_org_create_duplicate(tmp_path: Path) -> None:
    run(tmp_path, "org", "create", "acme")
    again = run(tmp_path, "org", "create", "acme")
    assert again.returncode != 0
    assert "acme" in again.stderr
    assert "Traceback" not in again.stderr


def test_cli_org_create_invalid_name(tmp_path: Path) -> None:
    result = run(tmp_path, "org", "create", "Bad Name")
    assert result.returncode != 0
    assert "invalid" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_credentials_json(tmp_path: Path) -> None:
    run(tmp_path, "org", "create", "acme")
    result = run(tmp_path, "credentials", "create", "acme", "--json")
    keys = json.loads(result.stdout)
    assert keys["organisation"] == "acme"
    assert keys["access_key_id"].startswith("BYOK")
    assert len(keys["secret_access_key"]) == 40
    database = (tmp_path / "keys.sqlite3").read_bytes()
    assert keys["secret_access_key"].encode() not in database


def test_cli_credentials_unknown_org(tmp_path: Path) -> None:
    result = run(tmp_path, "credentials", "create", "nobody")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr


def test_cli_revoke_asks_first(tmp_path: Path) -> None:
    run(tmp_path, "org", "create", "acme")
    declined = run(tmp_path, "org", "revoke", "acme", stdin="n\n")
    assert declined.returncode != 0
    assert "active" in run(tmp_path, "org", "list").stdout
    accepted = run(tmp_path, "org", "revoke", "acme", stdin="y\n")
    assert accepted.returncode == 0, accepted.stderr
    assert "revoked" in run(tmp_path, "org", "list").stdout


def test_cli_revoke_yes(tmp_path: Path) -> None:
    run(tmp_path, "org", "create", "acme")
    result = run(tmp_path, "org", "revoke", "acme", "--yes")
    assert result.returncode == 0
    assert "revoked" in run(tmp_path, "org", "list").stdout


def test_cli_status_json_has_no_key_material(tmp_path: Path) -> None:
    run(tmp_path, "org", "create", "acme")
    result = run(tmp_path, "status", "--json")
    summary = json.loads(result.stdout)
    assert [o["name"] for o in summary["organisations"]] == ["acme"]
    master = (tmp_path / "master.key").read_bytes()
    assert master.hex() not in result.stdout


def test_cli_route_set_list_remove(tmp_path: Path) -> None:
    assert (
        run(tmp_path, "route", "set", "media", "calls/", "recordings").returncode == 0
    )
    assert "recordings" in run(tmp_path, "route", "list").stdout
    catalogue = Catalogue(tmp_path / "catalogue.sqlite3")
    try:
        assert catalogue.purpose_for("media", "calls/1.wav") is Purpose.RECORDINGS
        assert catalogue.purpose_for("media", "other.txt") is Purpose.FILES
    finally:
        catalogue.close()
    assert run(tmp_path, "route", "remove", "media", "calls/").returncode == 0
    missing = run(tmp_path, "route", "remove", "media", "calls/")
    assert missing.returncode != 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--upstream-url", "ftp://x"], "upstream URL"),
        (["--upstream-url", "http://127.0.0.1:9"], "credentials are missing"),
        (["--listen", "nonsense"], "HOST:PORT"),
    ],
)
def test_cli_serve_rejects_bad_settings(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = run(tmp_path, "serve", *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_cli_serve_reads_config_file(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text('[serve]\nupstream-url = "ftp://from-file"\n')
    result = run(tmp_path, "serve", "--config", str(config))
    assert result.returncode == 2
    assert "ftp://from-file" in result.stderr


def test_cli_serve_rejects_unknown_config_key(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text('colour = "blue"\n')
    result = run(tmp_path, "serve", "--config", str(config))
    assert result.returncode == 2
    assert "unknown setting 'colour'" in result.stderr


def test_cli_list_without_store(tmp_path: Path) -> None:
    result = run(tmp_path / "missing", "org", "list")
    assert result.returncode == 1
    assert "no key store" in result.stderr
    assert not (tmp_path / "missing" / "master.key").exists()


def test_cli_data_dir_private(tmp_path: Path) -> None:
    run(tmp_path / "store", "org", "create", "acme")
    assert (tmp_path / "store").stat().st_mode & 0o777 == 0o700


def test_cli_revoke_twice(tmp_path: Path) -> None:
    run(tmp_path, "org", "create", "acme")
    run(tmp_path, "org", "revoke", "acme", "--yes")
    again = run(tmp_path, "org", "revoke", "acme", "--yes")
    assert again.returncode == 0
    assert "already revoked" in again.stdout


def test_cli_status_text(tmp_path: Path) -> None:
    run(tmp_path, "org", "create", "acme")
    result = run(tmp_path, "status")
    assert result.returncode == 0
    assert "acme (active): organisation key v1 active" in result.stdout
    assert "files v1" in result.stdout


def _bucket_of_new_org(data_dir: Path, bucket: str) -> str:
    """Create organisation acme owning `bucket`; return the org id in hex."""
    run(data_dir, "org", "create", "acme")
    org_id = run(data_dir, "org", "list").stdout.split("\t")[2].strip()
    catalogue = Catalogue(data_dir / "catalogue.sqlite3")
    try:
        catalogue.claim_bucket(bucket, bytes.fromhex(org_id), now=0.0)
    finally:
        catalogue.close()
    return org_id


def test_cli_bucket_show(tmp_path: Path) -> None:
    org_id = _bucket_of_new_org(tmp_path, "media")
    run(tmp_path, "route", "set", "media", "calls/", "recordings")
    run(tmp_path, "route", "set", "other", "", "messages")
    result = run(tmp_path, "bucket", "show", "media")
    assert result.returncode == 0, result.stderr
    assert f"acme ({org_id})" in result.stdout
    assert "foreign objects  refuse" in result.stdout
    assert "calls/ -> recordings" in result.stdout
    assert "messages" not in result.stdout


def test_cli_bucket_show_json(tmp_path: Path) -> None:
    org_id = _bucket_of_new_org(tmp_path, "media")
    result = run(tmp_path, "bucket", "show", "media", "--json")
    summary = json.loads(result.stdout)
    assert summary["owner"] == {"name": "acme", "id": org_id}
    assert summary["foreign_objects"] == "refuse"
    assert summary["routes"] == []


def test_cli_bucket_foreign_objects(tmp_path: Path) -> None:
    _bucket_of_new_org(tmp_path, "media")
    result = run(tmp_path, "bucket", "foreign-objects", "media", "read")
    assert result.returncode == 0, result.stderr
    assert "encrypt" in result.stdout
    catalogue = Catalogue(tmp_path / "catalogue.sqlite3")
    try:
        assert catalogue.foreign_objects("media") == "read"
    finally:
        catalogue.close()
    output = run(tmp_path, "bucket", "show", "media", "--json").stdout
    assert json.loads(output)["foreign_objects"] == "read"
    assert run(tmp_path, "bucket", "foreign-objects", "media", "refuse").returncode == 0
    output = run(tmp_path, "bucket", "show", "media", "--json").stdout
    assert json.loads(output)["foreign_objects"] == "refuse"


def test_cli_bucket_foreign_objects_invalid_policy(tmp_path: Path) -> None:
    _bucket_of_new_org(tmp_path, "media")
    result = run(tmp_path, "bucket", "foreign-objects", "media", "write")
    assert result.returncode == 2
    assert "'write' is not one of 'refuse', 'read'" in result.stderr


@pytest.mark.parametrize(
    "args", [["show", "nope"], ["foreign-objects", "nope", "read"]]
)
def test_cli_bucket_unknown(tmp_path: Path, args: list[str]) -> None:
    _bucket_of_new_org(tmp_path, "media")
    result = run(tmp_path, "bucket", *args)
    assert result.returncode == 1
    assert "no bucket 'nope'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args", [["show", "media"], ["foreign-objects", "media", "read"]]
)
def test_cli_bucket_without_store(tmp_path: Path, args: list[str]) -> None:
    result = run(tmp_path / "missing", "bucket", *args)
    assert result.returncode == 1
    assert "no catalogue" in result.stderr
    assert not (tmp_path / "missing").exists()

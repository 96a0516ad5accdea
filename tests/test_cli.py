"""The byok-proxy command line, run as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crypto.header import Purpose
from proxy.catalogue import Catalogue
from tests.hsm_token import softhsm_tokens


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


def test_cli_org_list_shows_key_source(tmp_path: Path) -> None:
    run(tmp_path, "org", "create", "acme")
    name, state, org_id, source = run(tmp_path, "org", "list").stdout.split("\t")
    assert (name, state, source.strip()) == ("acme", "active", "platform")
    assert len(org_id) == 32


def test_cli_rotations_are_audited(tmp_path: Path) -> None:
    run(tmp_path, "org", "create", "acme")
    rotated = run(tmp_path, "org", "rotate", "acme")
    assert (
        rotated.stdout.strip()
        == "organisation acme now uses organisation key version 2"
    )
    rotated = run(tmp_path, "org", "rotate-dek", "acme", "recordings")
    assert "recordings under DEK version 2" in rotated.stdout
    policy = run(tmp_path, "org", "policy", "acme", "--max-key-age", "90")
    assert "once it is 90 days old" in policy.stdout
    status = json.loads(run(tmp_path, "status", "--json").stdout)
    acme = status["organisations"][0]
    assert [v for v, state in acme["org_keys"]] == [1, 2]
    assert ["recordings", 2] in acme["active_deks"]

    exported = run(tmp_path, "audit", "export")
    actions = [json.loads(line)["action"] for line in exported.stdout.splitlines()]
    assert [a for a in actions if a != "org_key.unwrap"] == [
        "org.create",
        "org_key.rotate",
        "dek.rotate",
        "policy.set",
    ]
    assert json.loads(exported.stdout.splitlines()[0])["actor"].startswith("cli:")
    assert exported.stderr.startswith(f"head {len(actions)}:")
    assert "audit log intact" in run(tmp_path, "audit", "verify").stdout


def test_cli_audit_verify_detects_truncation(tmp_path: Path) -> None:
    run(tmp_path, "org", "create", "acme")
    run(tmp_path, "org", "rotate", "acme")
    head = run(tmp_path, "audit", "head").stdout.strip()
    exported = run(tmp_path, "audit", "export").stdout
    shortened = tmp_path / "short.jsonl"
    shortened.write_text("".join(exported.splitlines(keepends=True)[:-1]))

    intact = run(tmp_path, "audit", "verify", "--head", head)
    cut = run(tmp_path, "audit", "verify", "--head", head, "--file", str(shortened))

    assert intact.returncode == 0
    assert cut.returncode == 1
    assert "truncated" in cut.stderr


def test_cli_policy_needs_one_choice(tmp_path: Path) -> None:
    run(tmp_path, "org", "create", "acme")
    result = run(tmp_path, "org", "policy", "acme")
    assert result.returncode == 2
    assert "--max-key-age DAYS or --none" in result.stderr


def test_cli_moves_organisation_into_hsm(tmp_path: Path) -> None:
    with softhsm_tokens(tmp_path / "hsm", ["byok"]) as tokens:
        token = tokens["byok"]
        environment = {
            **os.environ,
            "BYOK_PROXY_PKCS11_LIBRARY": str(token.library),
            "BYOK_PROXY_PKCS11_TOKEN": token.token_label,
            "BYOK_PROXY_PKCS11_PIN": token.pin,
        }

        def with_token(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "proxy", *args, "--data-dir", str(tmp_path)],
                capture_output=True,
                text=True,
                env=environment,
                check=False,
            )

        created = with_token("hsm", "generate-key", "--key-label", "acme-master")
        assert created.returncode == 0, created.stderr
        run(tmp_path, "org", "create", "acme")
        moved = with_token("org", "use-hsm", "acme", "--key-label", "acme-master")
        assert moved.returncode == 0, moved.stderr
        assert run(tmp_path, "org", "list").stdout.split("\t")[3].strip() == "hsm"

        # without the token the key cannot be reached; with it, rotation works
        assert run(tmp_path, "org", "rotate", "acme").returncode == 1
        rotated = with_token("org", "rotate", "acme")
        assert rotated.returncode == 0, rotated.stderr
        back = with_token("org", "use-platform", "acme")
        assert back.returncode == 0, back.stderr
        assert run(tmp_path, "org", "rotate", "acme").returncode == 0

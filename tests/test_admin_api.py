"""Tests of the admin HTTP API: real HTTP on 127.0.0.1, a real key ring and log.

The customer's side of a key import runs the openssl commands of the
crypto.key_import docstring, as written, in a shell.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from multidict import CIMultiDictProxy

import crypto.key_import
from crypto.audit import AuditLog, verify_export
from crypto.errors import KeyRevoked, KeyUnavailable
from crypto.header import Purpose
from crypto.key_import import RSA_KEY_SIZE
from crypto.keyring import KeyRing
from crypto.master import MasterKey, MemoryMasterKey, key_fingerprint
from crypto.masters import MasterKeys
from crypto.operations import KeyOperations
from crypto.sqlite_store import SqliteKeyStore
from proxy.admin_api import create_admin_app, start_admin_listener

TOKEN = "admin-token-" + "5f" * 16
PLATFORM_KEY = bytes(range(32))
ORG = "acme"
ERROR_STATUS = {
    "Unauthorized": 401,
    "UnknownOrganisation": 404,
    "OrganisationExists": 409,
    "KeyRevoked": 403,
    "KeyUnavailable": 503,
    "ImportRejected": 400,
    "MasterKeyError": 409,
    "InvalidRequest": 400,
    "MalformedJSON": 400,
    "ConfirmationRequired": 400,
    "InternalError": 500,
}

# deployment: key ring, audit log and key operations on files in tmp_path


@dataclass
class Deployment:
    """The key state of one proxy process: key ring, masters, log and operations."""

    masters: MasterKeys
    keyring: KeyRing
    audit: AuditLog
    operations: KeyOperations

    def close(self) -> None:
        self.keyring.close()
        self.audit.close()


@dataclass
class FakeToken:
    """A stand-in for a PKCS#11 token, with one in-memory key per label.

    SoftHSM2 reads its configuration once per process, so a real token here
    could clash with the HSM tests in the same run. Those tests cover tokens.
    """

    keys: dict[str, MemoryMasterKey] = field(default_factory=dict)

    def open(self, label: str) -> MasterKey:
        if label not in self.keys:
            raise KeyUnavailable(f"the token has no key labelled {label!r}")
        return self.keys[label]


Deploy = Callable[..., Deployment]


@pytest.fixture
def deploy(tmp_path: Path) -> Iterator[Deploy]:
    """Provide a factory of deployments on one data directory, like restarts."""
    started: list[Deployment] = []

    def start(
        platform_key: bytes = PLATFORM_KEY, token: FakeToken | None = None
    ) -> Deployment:
        hsm = None if token is None else token.open
        masters = MasterKeys(MemoryMasterKey(platform_key), hsm)
        keyring = KeyRing(SqliteKeyStore(tmp_path / "keys.sqlite3"), masters)
        audit = AuditLog(tmp_path / "audit.sqlite3")
        deployment = Deployment(
            masters, keyring, audit, KeyOperations(keyring, masters, audit)
        )
        started.append(deployment)
        return deployment

    yield start
    for deployment in started:
        deployment.close()


# HTTP client


@dataclass(frozen=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)

    def error_code(self) -> str:
        code = self.json()["error"]["code"]
        assert isinstance(code, str)
        return code


@dataclass
class AdminClient:
    """An admin API client that keeps every response body it received."""

    session: aiohttp.ClientSession
    base_url: str
    texts: list[str] = field(default_factory=list)

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = TOKEN,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        url = self.base_url + path
        async with self.session.request(method, url, data=data, headers=sent) as r:
            text = await r.text()
            self.texts.append(text)
            return Reply(r.status, r.headers, text)

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        reply = await self.call(method, path, body)
        assert reply.status in (200, 201), reply.text
        return reply.json()

    async def error(self, method: str, path: str, body: Any = None) -> Reply:
        reply = await self.call(method, path, body)
        assert reply.status >= 400, reply.text
        code = reply.error_code()
        assert reply.status == ERROR_STATUS[code], reply.text
        return reply


@contextlib.asynccontextmanager
async def serving(deployment: Deployment) -> AsyncIterator[AdminClient]:
    app = create_admin_app(deployment.operations, deployment.audit, TOKEN)
    runner = await start_admin_listener(app, 0)
    try:
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession() as session:
            yield AdminClient(session, f"http://{host}:{port}")
    finally:
        await runner.cleanup()


Scenario = Callable[[AdminClient], Awaitable[None]]


def run(deployment: Deployment, scenario: Scenario) -> AdminClient:
    """Serve the deployment's API, run `scenario` against it and stop serving."""

    async def main() -> AdminClient:
        async with serving(deployment) as client:
            await scenario(client)
            return client

    return asyncio.run(main())


# the customer's side of an import


def customer_commands() -> list[str]:
    """Return the shell commands of the crypto.key_import docstring, one a line."""
    doc = crypto.key_import.__doc__
    assert doc is not None
    commands: list[str] = []
    continued = False
    for line in doc.splitlines():
        text = line.strip()
        if text.startswith("$ "):
            commands.append(text[2:])
        elif continued:
            commands[-1] += " " + text
        else:
            continue
        continued = commands[-1].endswith("\\")
        if continued:
            commands[-1] = commands[-1][:-1].rstrip()
    return commands


@dataclass(frozen=True)
class WrappedKey:
    key: bytes
    wrapped_b64: str
    check_value: str


def wrap_like_customer(
    directory: Path, public_key_pem: str, *, new_key: bool = True
) -> WrappedKey:
    """Run the customer's commands in `directory` against the job's public key.

    With `new_key` false, the customer reuses key.bin from an earlier import,
    so the `openssl rand` line is left out.
    """
    directory.mkdir(exist_ok=True)
    (directory / "job.pem").write_text(public_key_pem)
    commands = customer_commands()
    if not new_key:
        commands = [c for c in commands if not c.startswith("openssl rand")]
    result = subprocess.run(
        ["bash", "-c", "set -e\n" + "\n".join(commands)],
        cwd=directory,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return WrappedKey(
        key=(directory / "key.bin").read_bytes(),
        wrapped_b64=(directory / "key.wrapped.b64").read_text().strip(),
        check_value=result.stdout.strip(),
    )


async def import_key(
    client: AdminClient, directory: Path, *, new_key: bool = True
) -> tuple[WrappedKey, Any]:
    """Import a customer key through a new job and return it with the response."""
    job = await client.ok("POST", f"/v1/organisations/{ORG}/import-jobs")
    wrapped = wrap_like_customer(directory, job["public_key_pem"], new_key=new_key)
    organisation = await client.ok(
        "POST",
        f"/v1/import-jobs/{job['job_id']}",
        {
            "token": job["token"],
            "wrapped_key": wrapped.wrapped_b64,
            "check_value": wrapped.check_value,
        },
    )
    return wrapped, organisation


def secret_forms(key: bytes) -> list[str]:
    """The ways a key could show up in text: hex, base64 and repr."""
    return [
        key.hex(),
        key.hex().upper(),
        base64.b64encode(key).decode(),
        repr(key)[2:-1],
    ]


def assert_absent(secrets_: list[str], texts: list[str]) -> None:
    for text in texts:
        for secret in secrets_:
            assert secret not in text


def log_texts(caplog: pytest.LogCaptureFixture) -> list[str]:
    texts = [caplog.text]
    for record in caplog.records:
        texts.append(record.getMessage())
        texts.append(record.exc_text or "")
    return texts


def actions(audit: AuditLog) -> list[str]:
    return [record.action for record in audit.records()]


# authentication


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-of-some-length"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
    ids=["missing", "wrong", "prefix", "basic-scheme", "no-scheme"],
)
def test_auth_rejects_bad_token(
    deploy: Deploy, caplog: pytest.LogCaptureFixture, headers: dict[str, str]
) -> None:
    caplog.set_level(logging.DEBUG)
    deployment = deploy()

    async def scenario(client: AdminClient) -> None:
        for method, path in [
            ("GET", "/v1/organisations"),
            ("POST", f"/v1/organisations/{ORG}/revoke"),
            ("GET", "/v1/no-such-endpoint"),
        ]:
            reply = await client.call(method, path, token=None, headers=headers)
            assert reply.status == 401
            assert reply.error_code() == "Unauthorized"
            assert reply.headers["WWW-Authenticate"].startswith("Bearer")

    run(deployment, scenario)
    rejected = [r for r in caplog.records if "admin.rejected" in r.getMessage()]
    assert len(rejected) == 3
    assert all(r.levelno == logging.WARNING for r in rejected)
    assert_absent([TOKEN, TOKEN[:-1]], log_texts(caplog))
    assert deployment.audit.records() == []


def test_auth_accepts_right_token(deploy: Deploy) -> None:
    async def scenario(client: AdminClient) -> None:
        reply = await client.call(
            "GET",
            "/v1/organisations",
            token=None,
            headers={"Authorization": "bearer " + TOKEN},
        )
        assert reply.status == 200

    run(deploy(), scenario)


def test_create_app_rejects_short_token(deploy: Deploy) -> None:
    deployment = deploy()
    with pytest.raises(ValueError, match="at least 16 characters"):
        create_admin_app(deployment.operations, deployment.audit, "short")


# organisations and credentials


def test_organisation_create_list_get(deploy: Deploy) -> None:
    deployment = deploy()
    platform_id = deployment.masters.platform.key_id

    async def scenario(client: AdminClient) -> None:
        reply = await client.call("POST", "/v1/organisations", {"name": ORG})
        assert reply.status == 201
        created = reply.json()
        assert created["name"] == ORG
        assert created["state"] == "active"
        assert created["key_source"] == "platform"
        assert created["key_state"] == "active"
        assert created["max_key_age_days"] is None
        assert created["revoked_at"] is None
        assert created["org_keys"] == [
            {
                "version": 1,
                "state": "active",
                "master_key_id": platform_id,
                "created_at": created["created_at"],
            }
        ]
        assert created["active_deks"] == {p.label: 1 for p in Purpose}
        assert created["credentials"] == 0

        listed = await client.ok("GET", "/v1/organisations")
        assert listed["organisations"] == [
            {key: created[key] for key in listed["organisations"][0]}
        ]
        assert set(listed["organisations"][0]) == {
            "name",
            "id",
            "state",
            "key_source",
            "key_state",
            "max_key_age_days",
            "created_at",
            "revoked_at",
        }
        assert await client.ok("GET", f"/v1/organisations/{ORG}") == created
        by_id = await client.ok("GET", f"/v1/organisations/{created['id']}")
        assert by_id == created

    run(deployment, scenario)
    organisation = deployment.keyring.organisation(ORG)
    assert organisation.id_hex == deployment.audit.records()[0].organisation


def test_organisation_errors(deploy: Deploy) -> None:
    deployment = deploy()

    async def scenario(client: AdminClient) -> None:
        await client.ok("POST", "/v1/organisations", {"name": ORG})
        duplicate = await client.error("POST", "/v1/organisations", {"name": ORG})
        assert duplicate.error_code() == "OrganisationExists"
        invalid = await client.error("POST", "/v1/organisations", {"name": "Bad Name"})
        assert invalid.error_code() == "InvalidRequest"
        assert "Bad Name" in invalid.json()["error"]["message"]
        missing = await client.error("POST", "/v1/organisations", {})
        assert missing.error_code() == "InvalidRequest"
        unknown = await client.error("GET", "/v1/organisations/nobody")
        assert unknown.error_code() == "UnknownOrganisation"
        for data in [b"{not json", b"", b"\xff\xfe", b"[1, 2]", b'"acme"']:
            reply = await client.call("POST", "/v1/organisations", data=data)
            assert reply.status == 400
            assert reply.error_code() == "MalformedJSON"

    run(deployment, scenario)
    assert actions(deployment.audit) == ["org.create", "org.create", "org.create"]
    outcomes = [record.outcome for record in deployment.audit.records()]
    assert outcomes == ["ok", "failed: OrganisationExists", "failed: ValueError"]


def test_unknown_route_and_method(deploy: Deploy) -> None:
    async def scenario(client: AdminClient) -> None:
        missing = await client.call("GET", "/v1/nothing-here")
        assert missing.status == 404
        assert missing.error_code() == "NotFound"
        wrong_method = await client.call("DELETE", "/v1/organisations")
        assert wrong_method.status == 405
        assert wrong_method.error_code() == "MethodNotAllowed"
        assert "GET" in wrong_method.headers["Allow"]
        assert wrong_method.headers["Cache-Control"] == "no-store"

    run(deploy(), scenario)


def test_credentials_created(deploy: Deploy) -> None:
    deployment = deploy()
    issued: dict[str, str] = {}

    async def scenario(client: AdminClient) -> None:
        await client.ok("POST", "/v1/organisations", {"name": ORG})
        reply = await client.call("POST", f"/v1/organisations/{ORG}/credentials")
        assert reply.status == 201
        assert reply.headers["Cache-Control"] == "no-store"
        issued.update(reply.json())
        detail = await client.ok("GET", f"/v1/organisations/{ORG}")
        assert detail["credentials"] == 1
        unknown = await client.error("POST", "/v1/organisations/nobody/credentials")
        assert unknown.error_code() == "UnknownOrganisation"

    run(deployment, scenario)
    assert set(issued) == {"access_key_id", "secret_access_key"}
    assert issued["access_key_id"].startswith("BYOK")
    org_id, secret = deployment.keyring.credentials(issued["access_key_id"])
    assert org_id == deployment.keyring.organisation(ORG).id
    assert secret == issued["secret_access_key"]
    record = deployment.audit.records()[1]
    assert record.action == "credentials.create"
    assert record.keys == {"access_key_id": issued["access_key_id"]}


# rotation and policy


def test_rotate_org_key_and_dek(deploy: Deploy) -> None:
    deployment = deploy()

    async def scenario(client: AdminClient) -> None:
        await client.ok("POST", "/v1/organisations", {"name": ORG})
        rotate = f"/v1/organisations/{ORG}/rotate"
        org_key = await client.ok("POST", rotate, {"key": "organisation"})
        assert org_key == {"key": "organisation", "version": 2}
        dek = await client.ok("POST", rotate, {"key": "dek", "purpose": "files"})
        assert dek == {"key": "dek", "purpose": "files", "version": 2}
        detail = await client.ok("GET", f"/v1/organisations/{ORG}")
        assert [k["state"] for k in detail["org_keys"]] == ["rotated", "active"]
        assert detail["active_deks"]["files"] == 2
        assert detail["active_deks"]["messages"] == 1
        for body in [{"key": "master"}, {}, {"key": "dek"}, {"key": 1}]:
            bad = await client.error("POST", rotate, body)
            assert bad.error_code() == "InvalidRequest"
        purpose = await client.error("POST", rotate, {"key": "dek", "purpose": "x"})
        assert purpose.error_code() == "InvalidRequest"
        assert "unknown purpose" in purpose.json()["error"]["message"]

    run(deployment, scenario)
    org_id = deployment.keyring.organisation(ORG).id
    files = deployment.keyring.current_dek(org_id, Purpose.FILES)
    assert files.dek_version == 2
    assert files.org_key_version == 2
    messages = deployment.keyring.current_dek(org_id, Purpose.MESSAGES)
    assert messages.dek_version == 1
    assert messages.org_key_version == 2
    records = deployment.audit.records()
    assert [r.action for r in records] == ["org.create", "org_key.rotate", "dek.rotate"]
    assert records[1].keys == {"org_key_version": 2}
    assert records[2].keys == {"purpose": "files", "dek_version": 2}


def test_policy_set_and_cleared(deploy: Deploy) -> None:
    deployment = deploy()
    policy = f"/v1/organisations/{ORG}/policy"

    async def scenario(client: AdminClient) -> None:
        await client.ok("POST", "/v1/organisations", {"name": ORG})
        detail = await client.ok("PUT", policy, {"max_key_age_days": 90})
        assert detail["max_key_age_days"] == 90
        stored = deployment.keyring.organisation(ORG).max_key_age
        assert stored == 90 * 86400
        cleared = await client.ok("PUT", policy, {"max_key_age_days": None})
        assert cleared["max_key_age_days"] is None
        assert deployment.keyring.organisation(ORG).max_key_age is None
        for body in [
            {},
            {"max_key_age_days": 0},
            {"max_key_age_days": -5},
            {"max_key_age_days": "90"},
            {"max_key_age_days": True},
            {"max_key_age_days": 1.5},
            {"max_key_age_days": 10**12},
        ]:
            bad = await client.error("PUT", policy, body)
            assert bad.error_code() == "InvalidRequest"

    run(deployment, scenario)
    records = deployment.audit.records()
    assert [r.action for r in records] == ["org.create", "policy.set", "policy.set"]
    assert records[1].keys == {"max_key_age": 90 * 86400}
    assert records[2].keys == {"max_key_age": "none"}


# revocation


def test_revoke_needs_confirmation(deploy: Deploy) -> None:
    deployment = deploy()
    revoke = f"/v1/organisations/{ORG}/revoke"

    async def scenario(client: AdminClient) -> None:
        created = await client.ok("POST", "/v1/organisations", {"name": ORG})
        for body in [{}, {"confirm": "other"}, {"confirm": created["id"]}]:
            rejected = await client.error("POST", revoke, body)
            assert rejected.error_code() == "ConfirmationRequired"
            assert ORG in rejected.json()["error"]["message"]
        still = await client.ok("GET", f"/v1/organisations/{ORG}")
        assert still["state"] == "active"
        assert still["key_state"] == "active"

        by_id = f"/v1/organisations/{created['id']}/revoke"
        revoked = await client.ok("POST", by_id, {"confirm": ORG})
        assert revoked["state"] == "revoked"
        assert revoked["key_state"] == "revoked"
        assert revoked["revoked_at"] is not None
        assert [k["state"] for k in revoked["org_keys"]] == ["destroyed"]
        assert revoked["active_deks"] == {}

        rotate = f"/v1/organisations/{ORG}/rotate"
        rejected = await client.error("POST", rotate, {"key": "organisation"})
        assert rejected.error_code() == "KeyRevoked"
        credentials = await client.error("POST", f"/v1/organisations/{ORG}/credentials")
        assert credentials.error_code() == "KeyRevoked"
        job = await client.error("POST", f"/v1/organisations/{ORG}/import-jobs")
        assert job.error_code() == "KeyRevoked"

    run(deployment, scenario)
    org_id = deployment.keyring.organisation(ORG).id
    with pytest.raises(KeyRevoked):
        deployment.keyring.current_dek(org_id, Purpose.FILES)
    assert actions(deployment.audit) == [
        "org.create",
        "org.revoke",
        "org_key.rotate",
        "credentials.create",
        "import.start",
    ]


# master keys


def test_import_job_matches_docstring(deploy: Deploy) -> None:
    deployment = deploy()

    async def scenario(client: AdminClient) -> None:
        await client.ok("POST", "/v1/organisations", {"name": ORG})
        reply = await client.call("POST", f"/v1/organisations/{ORG}/import-jobs")
        assert reply.status == 201
        job = reply.json()
        assert set(job) == {
            "job_id",
            "organisation_id",
            "public_key_pem",
            "token",
            "expires_at",
            "instructions",
        }
        assert job["organisation_id"] == deployment.keyring.organisation(ORG).id_hex
        public_key = serialization.load_pem_public_key(job["public_key_pem"].encode())
        assert isinstance(public_key, rsa.RSAPublicKey)
        assert public_key.key_size == RSA_KEY_SIZE
        assert job["expires_at"].endswith("Z")
        commands = customer_commands()
        assert len(commands) == 5
        steps = job["instructions"]
        assert steps[1 : 1 + len(commands)] == commands
        assert job["job_id"] in steps[1 + len(commands)]
        unknown = await client.error("POST", "/v1/organisations/nobody/import-jobs")
        assert unknown.error_code() == "UnknownOrganisation"

    run(deployment, scenario)


def test_import_flow_keeps_deks(
    deploy: Deploy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    deployment = deploy()
    keyring = deployment.keyring
    imported: list[WrappedKey] = []

    async def scenario(client: AdminClient) -> None:
        await client.ok("POST", "/v1/organisations", {"name": ORG})
        await client.ok(
            "POST", f"/v1/organisations/{ORG}/rotate", {"key": "organisation"}
        )
        org_id = keyring.organisation(ORG).id
        before = {p: keyring.current_dek(org_id, p) for p in Purpose}

        wrapped, organisation = await import_key(client, tmp_path / "customer")
        imported.append(wrapped)
        key_id = key_fingerprint(wrapped.key)
        assert organisation["key_source"] == "imported"
        assert organisation["key_state"] == "active"
        assert [k["master_key_id"] for k in organisation["org_keys"]] == [key_id] * 2

        fresh = KeyRing(SqliteKeyStore(tmp_path / "keys.sqlite3"), deployment.masters)
        try:
            for purpose, data_key in before.items():
                after = fresh.current_dek(org_id, purpose)
                assert after.key == data_key.key
                assert after.wrapped == data_key.wrapped
        finally:
            fresh.close()

    client = run(deployment, scenario)
    wrapped = imported[0]
    key_id = key_fingerprint(wrapped.key)
    org_id = keyring.organisation(ORG).id
    records = keyring.org_key_records(org_id)
    assert [r.master_key_id for r in records] == [key_id, key_id]
    assert keyring.current_dek(org_id, Purpose.RECORDINGS).dek_version == 1

    audit = deployment.audit.records()
    assert [r.action for r in audit] == [
        "org.create",
        "org_key.rotate",
        "import.start",
        "import.finish",
    ]
    assert all(r.actor == "admin-api" for r in audit)
    assert all(r.outcome == "ok" for r in audit)
    assert audit[3].keys["master_key_id"] == key_id
    assert audit[3].keys["job_id"] == audit[2].keys["job_id"]
    assert deployment.audit.verify().ok

    assert any(r.name == "byok.admin.access" for r in caplog.records)
    assert_absent(secret_forms(wrapped.key), client.texts)
    assert_absent(secret_forms(wrapped.key), log_texts(caplog))
    assert_absent([TOKEN], log_texts(caplog))


def test_import_after_restart(deploy: Deploy, tmp_path: Path) -> None:
    first = deploy()
    customer = tmp_path / "customer"
    imported: list[WrappedKey] = []

    async def set_up(client: AdminClient) -> None:
        await client.ok("POST", "/v1/organisations", {"name": ORG})
        wrapped, _ = await import_key(client, customer)
        imported.append(wrapped)

    run(first, set_up)
    key_id = key_fingerprint(imported[0].key)
    org_id = first.keyring.organisation(ORG).id
    before = first.keyring.current_dek(org_id, Purpose.MESSAGES)
    first.close()

    restarted = deploy()

    async def after_restart(client: AdminClient) -> None:
        detail = await client.ok("GET", f"/v1/organisations/{ORG}")
        assert detail["key_state"] == "unavailable"
        assert [k["master_key_id"] for k in detail["org_keys"]] == [key_id]
        listed = await client.ok("GET", "/v1/organisations")
        assert listed["organisations"][0]["key_state"] == "unavailable"
        rotate = f"/v1/organisations/{ORG}/rotate"
        rejected = await client.error("POST", rotate, {"key": "organisation"})
        assert rejected.error_code() == "KeyUnavailable"
        with pytest.raises(KeyUnavailable):
            restarted.keyring.current_dek(org_id, Purpose.MESSAGES)

        # Another key cannot take over: the keys to rewrap are unavailable.
        other = await client.ok("POST", f"/v1/organisations/{ORG}/import-jobs")
        other_key = wrap_like_customer(tmp_path / "other", other["public_key_pem"])
        reply = await client.error(
            "POST",
            f"/v1/import-jobs/{other['job_id']}",
            {
                "token": other["token"],
                "wrapped_key": other_key.wrapped_b64,
                "check_value": other_key.check_value,
            },
        )
        assert reply.error_code() == "KeyUnavailable"
        still = await client.ok("GET", f"/v1/organisations/{ORG}")
        assert still["key_state"] == "unavailable"

        again, organisation = await import_key(client, customer, new_key=False)
        assert again.key == imported[0].key
        assert organisation["key_state"] == "active"
        assert organisation["key_source"] == "imported"

    run(restarted, after_restart)
    after = restarted.keyring.current_dek(org_id, Purpose.MESSAGES)
    assert after.key == before.key
    assert [r.master_key_id for r in restarted.keyring.org_key_records(org_id)] == [
        key_id
    ]
    audit = restarted.audit.records()
    assert [r.action for r in audit] == [
        "org.create",
        "import.start",
        "import.finish",
        "org_key.rotate",
        "import.start",
        "import.finish",
        "import.start",
        "import.supply",
    ]
    assert audit[3].outcome == "failed: KeyUnavailable"
    assert audit[5].outcome == "failed: KeyUnavailable"
    assert audit[7].outcome == "ok"
    assert all(r.actor == "admin-api" for r in audit)
    assert restarted.audit.verify().ok


def test_import_rejects_bad_upload(deploy: Deploy, tmp_path: Path) -> None:
    deployment = deploy()

    async def scenario(client: AdminClient) -> None:
        await client.ok("POST", "/v1/organisations", {"name": ORG})
        job = await client.ok("POST", f"/v1/organisations/{ORG}/import-jobs")
        wrapped = wrap_like_customer(tmp_path / "customer", job["public_key_pem"])
        finish = f"/v1/import-jobs/{job['job_id']}"
        upload = {
            "token": job["token"],
            "wrapped_key": wrapped.wrapped_b64,
            "check_value": wrapped.check_value,
        }
        wrong_check = "000000" if wrapped.check_value != "000000" else "111111"
        rejected = await client.error(
            "POST", finish, {**upload, "check_value": wrong_check}
        )
        assert rejected.error_code() == "ImportRejected"
        assert "check value does not match" in rejected.json()["error"]["message"]

        not_base64 = await client.error(
            "POST", finish, {**upload, "wrapped_key": "not base64!"}
        )
        assert not_base64.error_code() == "InvalidRequest"
        missing = await client.error("POST", finish, {"token": job["token"]})
        assert missing.error_code() == "InvalidRequest"
        bad_id = await client.error("POST", "/v1/import-jobs/" + "x" * 40, upload)
        assert bad_id.error_code() == "ImportRejected"
        unknown = await client.error("POST", "/v1/import-jobs/no-such-job", upload)
        assert unknown.error_code() == "ImportRejected"

        organisation = await client.ok("GET", f"/v1/organisations/{ORG}")
        assert organisation["key_source"] == "platform"
        assert organisation["key_state"] == "active"

        accepted = await client.ok("POST", finish, upload)
        assert accepted["key_source"] == "imported"

    run(deployment, scenario)
    audit = deployment.audit.records()
    assert [(r.action, r.outcome) for r in audit] == [
        ("org.create", "ok"),
        ("import.start", "ok"),
        ("import.finish", "failed: ImportRejected"),
        ("import.finish", "failed: ImportRejected"),
        ("import.finish", "ok"),
    ]
    assert audit[2].organisation == deployment.keyring.organisation(ORG).id_hex
    assert audit[3].organisation == ""


def test_master_source_hsm_and_platform(deploy: Deploy) -> None:
    token = FakeToken({"customer-key": MemoryMasterKey(secrets.token_bytes(32))})
    deployment = deploy(token=token)
    hsm_id = token.keys["customer-key"].key_id
    master = f"/v1/organisations/{ORG}/master"

    async def scenario(client: AdminClient) -> None:
        await client.ok("POST", "/v1/organisations", {"name": ORG})
        moved = await client.ok(
            "POST", master, {"source": "hsm", "key_label": "customer-key"}
        )
        assert moved["key_source"] == "hsm"
        assert moved["hsm_key_label"] == "customer-key"
        assert moved["key_state"] == "active"
        assert [k["master_key_id"] for k in moved["org_keys"]] == [hsm_id]

        absent = await client.error(
            "POST", master, {"source": "hsm", "key_label": "no-such-key"}
        )
        assert absent.error_code() == "KeyUnavailable"
        for body in [{"source": "imported"}, {"source": "hsm"}, {}]:
            bad = await client.error("POST", master, body)
            assert bad.error_code() == "InvalidRequest"

        back = await client.ok("POST", master, {"source": "platform"})
        assert back["key_source"] == "platform"
        platform_id = deployment.masters.platform.key_id
        assert [k["master_key_id"] for k in back["org_keys"]] == [platform_id]

    run(deployment, scenario)
    org_id = deployment.keyring.organisation(ORG).id
    assert deployment.keyring.current_dek(org_id, Purpose.FILES).dek_version == 1
    audit = deployment.audit.records()
    assert [(r.action, r.outcome) for r in audit] == [
        ("org.create", "ok"),
        ("master.rotate", "ok"),
        ("master.rotate", "failed: KeyUnavailable"),
        ("master.rotate", "ok"),
    ]
    assert audit[1].keys == {"source": "hsm", "master_key_id": hsm_id}


def test_master_key_mismatch_conflict(deploy: Deploy) -> None:
    first = deploy()
    first.operations.create_organisation("cli", ORG)
    first.close()

    async def scenario(client: AdminClient) -> None:
        reply = await client.error("GET", f"/v1/organisations/{ORG}")
        assert reply.error_code() == "MasterKeyError"

    run(deploy(platform_key=bytes(32)), scenario)


# audit log and status


def test_audit_records_export_verify(deploy: Deploy) -> None:
    deployment = deploy()
    exported: list[str] = []

    async def scenario(client: AdminClient) -> None:
        await client.ok("POST", "/v1/organisations", {"name": ORG})
        other = await client.ok("POST", "/v1/organisations", {"name": "globex"})
        await client.ok("POST", "/v1/organisations/globex/credentials")

        everything = await client.ok("GET", "/v1/audit")
        assert [r["action"] for r in everything["records"]] == [
            "org.create",
            "org.create",
            "credentials.create",
        ]
        assert everything["records"][2]["time"].endswith("Z")
        by_name = await client.ok("GET", "/v1/audit?organisation=globex")
        by_id = await client.ok("GET", f"/v1/audit?organisation={other['id']}")
        assert by_name == by_id
        assert [r["seq"] for r in by_name["records"]] == [2, 3]
        unknown = await client.error("GET", "/v1/audit?organisation=nobody")
        assert unknown.error_code() == "UnknownOrganisation"

        export = await client.call("GET", "/v1/audit/export")
        assert export.status == 200
        assert export.headers["Content-Type"].startswith("application/x-ndjson")
        head = deployment.audit.head()
        assert export.headers["Audit-Head-Seq"] == str(head.seq)
        assert export.headers["Audit-Head-Hash"] == head.hash
        exported.extend(export.text.splitlines())

        plain = await client.ok("GET", "/v1/audit/verify")
        assert plain["ok"] is True
        assert plain["checked"] == 3
        assert plain["head"] == {"seq": head.seq, "hash": head.hash}
        with_head = await client.ok(
            "GET", f"/v1/audit/verify?seq={head.seq}&hash={head.hash}"
        )
        assert with_head["ok"] is True
        rewritten = await client.ok("GET", f"/v1/audit/verify?seq=2&hash={'a' * 64}")
        assert rewritten["ok"] is False
        assert rewritten["problem"] == "rewritten"
        assert rewritten["bad_seq"] == 2
        truncated = await client.ok("GET", f"/v1/audit/verify?seq=9&hash={head.hash}")
        assert truncated["problem"] == "truncated"
        for query in ["seq=1", f"hash={head.hash}", "seq=x&hash=" + head.hash]:
            bad = await client.error("GET", f"/v1/audit/verify?{query}")
            assert bad.error_code() == "InvalidRequest"
        bad_hash = await client.error("GET", "/v1/audit/verify?seq=1&hash=XYZ")
        assert bad_hash.error_code() == "InvalidRequest"

    run(deployment, scenario)
    assert len(exported) == 3
    verification = verify_export(exported, deployment.audit.head())
    assert verification.ok
    assert verification.checked == 3


def test_status_reports_keys_and_head(deploy: Deploy) -> None:
    deployment = deploy()

    async def scenario(client: AdminClient) -> None:
        await client.ok("POST", "/v1/organisations", {"name": ORG})
        status = await client.ok("GET", "/v1/status")
        assert status["master_key_id"] == deployment.masters.platform.key_id
        assert [o["name"] for o in status["organisations"]] == [ORG]
        assert status["organisations"][0]["org_keys"] == [[1, "active"]]
        assert status["organisations"][0]["created_at"].endswith("Z")
        head = deployment.audit.head()
        assert status["audit_head"] == {"seq": head.seq, "hash": head.hash}
        assert "cached_deks" in status

    run(deployment, scenario)


def test_unexpected_error_is_generic_500(
    deploy: Deploy, caplog: pytest.LogCaptureFixture
) -> None:
    deployment = deploy()
    deployment.audit.close()

    async def scenario(client: AdminClient) -> None:
        reply = await client.call("GET", "/v1/audit")
        assert reply.status == 500
        error = reply.json()["error"]
        assert error["code"] == "InternalError"
        assert "internal error" in error["message"]
        assert "closed" not in error["message"]

    run(deployment, scenario)
    failures = [r for r in caplog.records if "admin.failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None


def test_every_operation_audited_once(deploy: Deploy, tmp_path: Path) -> None:
    token = FakeToken({"label": MemoryMasterKey(secrets.token_bytes(32))})
    deployment = deploy(token=token)
    org = f"/v1/organisations/{ORG}"

    async def scenario(client: AdminClient) -> None:
        await client.ok("POST", "/v1/organisations", {"name": ORG})
        await client.ok("POST", f"{org}/credentials")
        await client.ok("POST", f"{org}/rotate", {"key": "organisation"})
        await client.ok("POST", f"{org}/rotate", {"key": "dek", "purpose": "files"})
        await client.ok("PUT", f"{org}/policy", {"max_key_age_days": 30})
        await client.ok(
            "POST", f"{org}/master", {"source": "hsm", "key_label": "label"}
        )
        await client.ok("POST", f"{org}/master", {"source": "platform"})
        await import_key(client, tmp_path / "customer")
        for path in ["/v1/organisations", org, "/v1/audit", "/v1/status"]:
            await client.ok("GET", path)
        await client.ok("GET", "/v1/audit/verify")
        await client.call("GET", "/v1/audit/export")
        await client.ok("POST", f"{org}/revoke", {"confirm": ORG})

    run(deployment, scenario)
    audit = deployment.audit.records()
    assert [r.action for r in audit] == [
        "org.create",
        "credentials.create",
        "org_key.rotate",
        "dek.rotate",
        "policy.set",
        "master.rotate",
        "master.rotate",
        "import.start",
        "import.finish",
        "org.revoke",
    ]
    assert all(r.actor == "admin-api" for r in audit)
    assert all(r.outcome == "ok" for r in audit)
    org_hex = deployment.keyring.organisation(ORG).id_hex
    assert all(r.organisation == org_hex for r in audit)
    assert deployment.audit.verify(deployment.audit.head()).ok

"""Revoking an organisation, end to end, on two proxy processes sharing a key store.

The module fixture creates an organisation, stores a single-stream and a
multipart object through the first proxy, reads both through both proxies
so that each caches the organisation's keys, and runs `byok-proxy org revoke
--yes`. The tests then check what every proxy, the object store, the key
store file and the command line do afterwards.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError

from tests.conftest import Stack, Tenant
from tests.payloads import put_multipart
from tests.stack import ProxyProcess, byok, start_proxy

CANARY = b"REVOCATION-CANARY-plaintext-line "
SINGLE_KEY = "ledger.txt"
MULTIPART_KEY = "archive.bin"
PART_SIZE = 5 * 1024 * 1024
NO_RETRIES = Config(retries={"total_max_attempts": 1})


@dataclass
class Revoked:
    """An organisation revoked after both proxies had used its keys."""

    name: str
    org_id: bytes
    tenant: Tenant
    bucket: str
    plaintexts: dict[str, bytes]
    ciphertexts: dict[str, bytes]
    wrapped_keys: list[bytes]
    clients: dict[str, Any]
    upload_id: str
    presigned_urls: dict[str, str]


@pytest.fixture(scope="module")
def second_proxy(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    log = tmp_path_factory.mktemp("second-proxy") / "proxy.log"
    proxy = start_proxy(stack.data_dir, stack.backend, log)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def proxy_urls(stack: Stack, second_proxy: ProxyProcess) -> dict[str, str]:
    return {"first": stack.proxy.url, "second": second_proxy.url}


def _org_id(data_dir: Path, name: str) -> bytes:
    with sqlite3.connect(data_dir / "keys.sqlite3") as db:
        (org_id,) = db.execute(
            "SELECT id FROM organisations WHERE name = ?", (name,)
        ).fetchone()
    return bytes(org_id)


def _wrapped_keys(data_dir: Path, org_id: bytes) -> list[bytes]:
    """Every wrapped organisation key, DEK and secret of an organisation."""
    queries = (
        "SELECT wrapped FROM org_keys WHERE org_id = ?",
        "SELECT wrapped FROM deks WHERE org_id = ?",
        "SELECT wrapped_secret FROM credentials WHERE org_id = ?",
    )
    found: list[bytes] = []
    with sqlite3.connect(data_dir / "keys.sqlite3") as db:
        for query in queries:
            found += [bytes(row[0]) for row in db.execute(query, (org_id,)) if row[0]]
    return found


@pytest.fixture(scope="module")
def revoked(stack: Stack, proxy_urls: dict[str, str], backend_s3: Any) -> Revoked:
    name = "revoked-" + secrets.token_hex(4)
    tenant = stack.tenant(name)
    clients = {
        proxy: stack.client(tenant, url=url, config=NO_RETRIES)
        for proxy, url in proxy_urls.items()
    }
    first = clients["first"]
    bucket = "revoked-" + secrets.token_hex(6)
    first.create_bucket(Bucket=bucket)
    single = CANARY * 8000
    parts = [CANARY * (PART_SIZE // len(CANARY) + 1), CANARY * 100]
    first.put_object(Bucket=bucket, Key=SINGLE_KEY, Body=single)
    put_multipart(first, bucket, MULTIPART_KEY, parts)
    plaintexts = {SINGLE_KEY: single, MULTIPART_KEY: b"".join(parts)}

    # both processes unwrap and cache the keys before the revocation
    for client in clients.values():
        for key, plaintext in plaintexts.items():
            got = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            assert got == plaintext, f"{key} did not read back before revocation"
    upload_id = first.create_multipart_upload(Bucket=bucket, Key="unfinished")[
        "UploadId"
    ]
    presigned_urls = {
        proxy: stack.client(
            tenant, url=url, config=Config(signature_version="s3v4")
        ).generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": SINGLE_KEY}, ExpiresIn=600
        )
        for proxy, url in proxy_urls.items()
    }
    for url in presigned_urls.values():
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.read() == single, "the presigned URL did not work"
    ciphertexts = {
        key: backend_s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        for key in plaintexts
    }
    org_id = _org_id(stack.data_dir, name)
    wrapped_keys = _wrapped_keys(stack.data_dir, org_id)
    assert len(wrapped_keys) == 6, "expected an org key, four DEKs and a secret"

    byok(stack.data_dir, "org", "revoke", name, "--yes")
    return Revoked(
        name,
        org_id,
        tenant,
        bucket,
        plaintexts,
        ciphertexts,
        wrapped_keys,
        clients,
        upload_id,
        presigned_urls,
    )


# every request of the revoked organisation

OPERATIONS: dict[str, Callable[[Any, Revoked], Any]] = {
    "get": lambda c, r: c.get_object(Bucket=r.bucket, Key=SINGLE_KEY),
    "get_multipart": lambda c, r: c.get_object(Bucket=r.bucket, Key=MULTIPART_KEY),
    "get_range": lambda c, r: c.get_object(
        Bucket=r.bucket, Key=SINGLE_KEY, Range="bytes=10-20"
    ),
    "put": lambda c, r: c.put_object(Bucket=r.bucket, Key="new", Body=b"new data"),
    "overwrite": lambda c, r: c.put_object(
        Bucket=r.bucket, Key=SINGLE_KEY, Body=b"replacement"
    ),
    "list_objects_v2": lambda c, r: c.list_objects_v2(Bucket=r.bucket),
    "list_objects": lambda c, r: c.list_objects(Bucket=r.bucket),
    "list_buckets": lambda c, r: c.list_buckets(),
    "create_bucket": lambda c, r: c.create_bucket(Bucket=r.bucket + "-more"),
    "delete_object": lambda c, r: c.delete_object(Bucket=r.bucket, Key=SINGLE_KEY),
    "create_multipart": lambda c, r: c.create_multipart_upload(
        Bucket=r.bucket, Key="later"
    ),
    "upload_part": lambda c, r: c.upload_part(
        Bucket=r.bucket,
        Key="unfinished",
        UploadId=r.upload_id,
        PartNumber=1,
        Body=b"part",
    ),
    "list_parts": lambda c, r: c.list_parts(
        Bucket=r.bucket, Key="unfinished", UploadId=r.upload_id
    ),
}


@pytest.mark.parametrize("operation", OPERATIONS.values(), ids=OPERATIONS.keys())
@pytest.mark.parametrize("proxy", ["first", "second"])
def test_revocation_request_key_revoked(
    revoked: Revoked, proxy: str, operation: Callable[[Any, Revoked], Any]
) -> None:
    with pytest.raises(ClientError) as raised:
        operation(revoked.clients[proxy], revoked)
    response = raised.value.response
    message = response["Error"]["Message"]
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert response["Error"]["Code"] == "KeyRevoked"
    assert "revoked" in message
    assert revoked.org_id.hex() not in message
    assert revoked.name not in message


@pytest.mark.parametrize("proxy", ["first", "second"])
def test_revocation_head_forbidden(revoked: Revoked, proxy: str) -> None:
    with pytest.raises(ClientError) as raised:
        revoked.clients[proxy].head_object(Bucket=revoked.bucket, Key=SINGLE_KEY)
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


@pytest.mark.parametrize("proxy", ["first", "second"])
def test_revocation_presigned_url_key_revoked(revoked: Revoked, proxy: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(revoked.presigned_urls[proxy], timeout=30)
    body = raised.value.read()
    assert raised.value.code == 403
    assert b"<Code>KeyRevoked</Code>" in body
    assert CANARY not in body


def test_revocation_new_proxy_process(stack: Stack, revoked: Revoked) -> None:
    log = stack.data_dir.parent / "third-proxy.log"
    third = start_proxy(stack.data_dir, stack.backend, log)
    try:
        client = stack.client(revoked.tenant, url=third.url, config=NO_RETRIES)
        with pytest.raises(ClientError) as raised:
            client.get_object(Bucket=revoked.bucket, Key=SINGLE_KEY)
    finally:
        third.stop()
    assert raised.value.response["Error"]["Code"] == "KeyRevoked"


def test_revocation_cuts_download_in_progress(
    stack: Stack, proxy_urls: dict[str, str]
) -> None:
    name = "in-flight-" + secrets.token_hex(4)
    tenant = stack.tenant(name)
    client = stack.client(tenant, url=proxy_urls["second"], config=NO_RETRIES)
    client.create_bucket(Bucket=name)
    data = os.urandom(40 * 1024 * 1024)
    client.put_object(Bucket=name, Key="large", Body=data)

    body = client.get_object(Bucket=name, Key="large")["Body"]
    received = bytearray(body.read(65536))
    byok(stack.data_dir, "org", "revoke", name, "--yes")
    with pytest.raises((BotoCoreError, HTTPError)):
        for chunk in body.iter_chunks(65536):
            received += chunk
    assert len(received) < len(data)
    assert data.startswith(received)


@pytest.mark.parametrize("proxy", ["first", "second"])
def test_revocation_other_organisation_works(
    stack: Stack,
    tenant: Tenant,
    revoked: Revoked,
    proxy_urls: dict[str, str],
    proxy: str,
) -> None:
    client = stack.client(tenant, url=proxy_urls[proxy], config=NO_RETRIES)
    bucket = "survivor-" + secrets.token_hex(6)
    data = os.urandom(70000)
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="kept", Body=data)
    got = client.get_object(Bucket=bucket, Key="kept")["Body"].read()
    listed = client.list_objects_v2(Bucket=bucket)["Contents"]
    client.delete_object(Bucket=bucket, Key="kept")
    client.delete_bucket(Bucket=bucket)
    assert got == data
    assert [entry["Key"] for entry in listed] == ["kept"]


# what stays behind


@pytest.mark.parametrize("key", [SINGLE_KEY, MULTIPART_KEY])
def test_revocation_ciphertext_stays(
    revoked: Revoked, backend_s3: Any, key: str
) -> None:
    stored = backend_s3.get_object(Bucket=revoked.bucket, Key=key)["Body"].read()
    assert stored == revoked.ciphertexts[key]
    assert CANARY not in stored
    assert CANARY[:16] not in stored


def test_revocation_key_store_rows(stack: Stack, revoked: Revoked) -> None:
    with sqlite3.connect(stack.data_dir / "keys.sqlite3") as db:
        org_keys = db.execute(
            "SELECT wrapped, state FROM org_keys WHERE org_id = ?", (revoked.org_id,)
        ).fetchall()
        (deks,) = db.execute(
            "SELECT count(*) FROM deks WHERE org_id = ?", (revoked.org_id,)
        ).fetchone()
        secrets_left = db.execute(
            "SELECT wrapped_secret FROM credentials WHERE org_id = ?",
            (revoked.org_id,),
        ).fetchall()
        (state,) = db.execute(
            "SELECT state FROM organisations WHERE id = ?", (revoked.org_id,)
        ).fetchone()
    assert org_keys == [(None, "destroyed")]
    assert deks == 0
    assert secrets_left == [(None,)]
    assert state == "revoked"


def test_revocation_key_store_files_erased(stack: Stack, revoked: Revoked) -> None:
    files = sorted(stack.data_dir.glob("keys.sqlite3*"))
    assert files, "the key store file is missing"
    for path in files:
        content = path.read_bytes()
        for wrapped in revoked.wrapped_keys:
            assert wrapped not in content, f"{path.name} still holds a wrapped key"


# the command line cannot bring the data back


def test_revocation_credentials_create_fails(stack: Stack, revoked: Revoked) -> None:
    with pytest.raises(RuntimeError, match="revoked"):
        byok(stack.data_dir, "credentials", "create", revoked.name, "--json")


def test_revocation_org_create_same_name_fails(stack: Stack, revoked: Revoked) -> None:
    with pytest.raises(RuntimeError):
        byok(stack.data_dir, "org", "create", revoked.name)
    assert _org_id(stack.data_dir, revoked.name) == revoked.org_id


def test_revocation_new_organisation_cannot_read(
    stack: Stack, revoked: Revoked
) -> None:
    newcomer = stack.tenant("after-" + revoked.name)
    client = stack.client(newcomer, config=NO_RETRIES)
    with pytest.raises(ClientError) as raised:
        client.get_object(Bucket=revoked.bucket, Key=SINGLE_KEY)
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert raised.value.response["Error"]["Code"] == "AccessDenied"


def test_revocation_repeated_revoke_stays_revoked(
    stack: Stack, revoked: Revoked
) -> None:
    byok(stack.data_dir, "org", "revoke", revoked.name, "--yes")
    listed = byok(stack.data_dir, "org", "list")
    assert f"{revoked.name}\trevoked\t{revoked.org_id.hex()}" in listed
    with pytest.raises(ClientError) as raised:
        revoked.clients["first"].get_object(Bucket=revoked.bucket, Key=SINGLE_KEY)
    assert raised.value.response["Error"]["Code"] == "KeyRevoked"


@pytest.mark.parametrize("answer", ["n\n", "\n", ""])
def test_revocation_declined_confirmation(stack: Stack, answer: str) -> None:
    tenant = stack.tenant("kept-" + secrets.token_hex(4))
    client = stack.client(tenant, config=NO_RETRIES)
    bucket = "kept-" + secrets.token_hex(6)
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="kept", Body=b"still readable")

    with pytest.raises(RuntimeError, match="Aborted"):
        byok(stack.data_dir, "org", "revoke", tenant.name, input=answer)
    listed = byok(stack.data_dir, "org", "list")
    body = client.get_object(Bucket=bucket, Key="kept")["Body"].read()
    client.delete_object(Bucket=bucket, Key="kept")
    client.delete_bucket(Bucket=bucket)
    assert f"{tenant.name}\tactive\t" in listed
    assert body == b"still readable"

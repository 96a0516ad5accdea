"""Real clients through the proxy: boto3's transfer manager, minio-py, presigned URLs.

boto3 runs with its default settings: `upload_file` goes multipart in 8 MiB
parts on ten threads, and `download_file` HEADs the object and then sends
ranged GETs with If-Match. Every round trip compares bytes, and the object
store must hold none of the plaintext.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.config import Config
from defusedxml import ElementTree
from minio import Minio

from crypto.sizes import sealed_size
from tests.conftest import Stack, Tenant
from tests.payloads import MIB, leaked_windows, sha256_file, write_sample_file
from tests.stack import BIN

DEFAULT_PART_SIZE = 8 * MIB


def stored_bytes(backend_s3: Any, bucket: str, key: str) -> bytes:
    """Read an object's stored ciphertext straight from the object store."""
    body: bytes = backend_s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def part_count(etag: str) -> int:
    """Return the part count of a multipart ETag, 1 for a single-part one."""
    _, _, count = etag.strip('"').partition("-")
    return int(count) if count else 1


def weed_binary() -> Path:
    """The SeaweedFS binary: a real executable of about 150 MB."""
    found = shutil.which("weed", path=str(BIN)) or shutil.which("weed")
    assert found is not None, "the weed binary is missing"
    return Path(found).resolve()


# boto3 transfer manager


@pytest.fixture(scope="module")
def bucket(s3: Any) -> str:
    """One bucket for the module, in which every test writes keys of its own.

    SeaweedFS gives each bucket volumes of its own, so a bucket per test
    costs a volume per test.
    """
    name = "clients-" + secrets.token_hex(6)
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("transfer")
    return write_sample_file(directory / "sample.bin", 100 * MIB + 12345)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["generated", "weed binary"])
def test_upload_file_round_trip(
    s3: Any,
    backend_s3: Any,
    bucket: str,
    sample_file: Path,
    tmp_path: Path,
    source: str,
) -> None:
    path = sample_file if source == "generated" else weed_binary()
    size = path.stat().st_size
    target = tmp_path / "downloaded"

    key = f"big/{source}"
    s3.upload_file(str(path), bucket, key)
    s3.download_file(bucket, key, str(target))

    assert sha256_file(target) == sha256_file(path)
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == size
    assert part_count(head["ETag"]) == -(-size // DEFAULT_PART_SIZE)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [(key, size)]
    assert listed[0]["ETag"] == head["ETag"]
    stored = stored_bytes(backend_s3, bucket, key)
    assert len(stored) > size
    assert leaked_windows(stored, path.read_bytes()) == []


def test_upload_fileobj_round_trip(s3: Any, backend_s3: Any, bucket: str) -> None:
    data = os.urandom(3 * DEFAULT_PART_SIZE + 1)
    s3.upload_fileobj(io.BytesIO(data), bucket, "fileobj")
    target = io.BytesIO()
    s3.download_fileobj(bucket, "fileobj", target)
    assert hashlib.sha256(target.getvalue()).digest() == hashlib.sha256(data).digest()
    stored = stored_bytes(backend_s3, bucket, "fileobj")
    assert leaked_windows(stored, data) == []


def test_download_file_single_part(s3: Any, bucket: str, tmp_path: Path) -> None:
    data = b"a small object below the multipart threshold\n" * 1000
    s3.put_object(Bucket=bucket, Key="small", Body=data)
    s3.download_file(bucket, "small", str(tmp_path / "small"))
    assert (tmp_path / "small").read_bytes() == data


# minio-py


@pytest.fixture(scope="module")
def minio(stack: Stack, tenant: Tenant) -> Minio:
    return Minio(
        urlsplit(stack.proxy.url).netloc,
        access_key=tenant.access_key_id,
        secret_key=tenant.secret_access_key,
        secure=False,
    )


def minio_read(
    minio: Minio, bucket: str, key: str, offset: int = 0, length: int = 0
) -> bytes:
    response = minio.get_object(bucket, key, offset=offset, length=length)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


@pytest.mark.parametrize("size", [0, 1])
def test_minio_put_object_small(
    minio: Minio, backend_s3: Any, bucket: str, size: int
) -> None:
    data = os.urandom(size)
    key = f"tiny-{size}"
    result = minio.put_object(bucket, key, io.BytesIO(data), length=size)
    assert minio_read(minio, bucket, key) == data
    assert result.etag == hashlib.md5(data).hexdigest()
    assert len(stored_bytes(backend_s3, bucket, key)) == sealed_size(size)


def test_minio_put_object_unknown_length(
    minio: Minio, s3: Any, backend_s3: Any, bucket: str
) -> None:
    # NOTE: minio-py 7.2 signs the SHA-256 of each buffered part over plain
    # HTTP, so it sends no STREAMING-AWS4-HMAC-SHA256-PAYLOAD chunks.
    data = os.urandom(10 * MIB)
    minio.put_object(bucket, "unknown", io.BytesIO(data), length=-1, part_size=5 * MIB)
    assert minio_read(minio, bucket, "unknown") == data
    stat = minio.stat_object(bucket, "unknown")
    assert stat.size == len(data)
    assert part_count(s3.head_object(Bucket=bucket, Key="unknown")["ETag"]) == 2
    stored = stored_bytes(backend_s3, bucket, "unknown")
    assert leaked_windows(stored, data) == []


def test_minio_fput_fget_round_trip(minio: Minio, bucket: str, tmp_path: Path) -> None:
    source = write_sample_file(tmp_path / "source", 3 * 65536 + 7)
    minio.fput_object(bucket, "file", str(source))
    minio.fget_object(bucket, "file", str(tmp_path / "copy"))
    assert sha256_file(tmp_path / "copy") == sha256_file(source)


@pytest.mark.parametrize(
    ("offset", "length"),
    [(0, 1), (65530, 100), (65536, 65536), (3 * 65536, 0), (100, 0)],
)
def test_minio_get_object_range(
    minio: Minio, bucket: str, offset: int, length: int
) -> None:
    data = os.urandom(3 * 65536 + 11)
    minio.put_object(bucket, "ranged", io.BytesIO(data), length=len(data))
    end = offset + length if length else len(data)
    got = minio_read(minio, bucket, "ranged", offset=offset, length=length)
    assert got == data[offset:end]


def test_minio_stat_object(minio: Minio, bucket: str) -> None:
    data = b"stat me"
    minio.put_object(
        bucket,
        "stat",
        io.BytesIO(data),
        length=len(data),
        content_type="text/plain",
        metadata={"colour": "green"},
    )
    stat = minio.stat_object(bucket, "stat")
    assert stat.size == len(data)
    assert stat.etag == hashlib.md5(data).hexdigest()
    assert stat.content_type == "text/plain"
    assert stat.metadata is not None
    assert stat.metadata["x-amz-meta-colour"] == "green"


def test_minio_list_and_remove(minio: Minio, bucket: str) -> None:
    sizes = {"list/a": 0, "list/b/c": 5, "list/d": 70000}
    for key, size in sizes.items():
        minio.put_object(bucket, key, io.BytesIO(os.urandom(size)), length=size)
    listed = minio.list_objects(bucket, prefix="list/", recursive=True)
    assert {o.object_name: o.size for o in listed} == sizes
    top = minio.list_objects(bucket, prefix="list/")
    assert sorted(o.object_name for o in top) == ["list/a", "list/b/", "list/d"]
    minio.remove_object(bucket, "list/a")
    remaining = minio.list_objects(bucket, prefix="list/", recursive=True)
    assert sorted(o.object_name for o in remaining) == ["list/b/c", "list/d"]


# presigned URLs


@pytest.fixture(scope="module")
def signer(stack: Stack, tenant: Tenant) -> Any:
    """A boto3 client that presigns with SigV4, which the proxy requires."""
    return stack.client(tenant, config=Config(signature_version="s3v4"))


@pytest.fixture(scope="module")
def opener() -> urllib.request.OpenerDirector:
    """A urllib opener that ignores proxy settings from the environment."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def curl() -> Iterator[str]:
    found = shutil.which("curl")
    if found is None:
        pytest.skip("curl is not installed")
    yield found


def run_curl(curl: str, *args: str) -> tuple[int, bytes]:
    """Run curl on loopback and return the HTTP status and the body."""
    result = subprocess.run(
        [curl, "-sS", "--noproxy", "*", "-w", "\n%{http_code}", *args],
        capture_output=True,
        check=True,
    )
    body, _, status = result.stdout.rpartition(b"\n")
    return int(status), body


def error_code(body: bytes) -> str | None:
    """Return the Code of an S3 error document."""
    code: str | None = ElementTree.fromstring(body).findtext("Code")
    return code


def test_presigned_get_curl(signer: Any, bucket: str, curl: str) -> None:
    data = os.urandom(70000)
    signer.put_object(Bucket=bucket, Key="shared/a b+c", Body=data)
    url = signer.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "shared/a b+c"}
    )
    assert run_curl(curl, url) == (200, data)


def test_presigned_get_urllib(
    signer: Any, bucket: str, opener: urllib.request.OpenerDirector
) -> None:
    data = os.urandom(70000)
    signer.put_object(Bucket=bucket, Key="shared/caf\u00e9", Body=data)
    url = signer.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "shared/caf\u00e9"}
    )
    with opener.open(url) as response:
        assert response.read() == data


def test_presigned_put_curl(
    signer: Any, backend_s3: Any, bucket: str, curl: str, tmp_path: Path
) -> None:
    source = write_sample_file(tmp_path / "upload", 2 * MIB + 3)
    url = signer.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "shared/upload"}
    )
    status, _ = run_curl(curl, "-X", "PUT", "--data-binary", f"@{source}", url)
    assert status == 200
    got = signer.get_object(Bucket=bucket, Key="shared/upload")["Body"].read()
    assert got == source.read_bytes()
    stored = stored_bytes(backend_s3, bucket, "shared/upload")
    assert leaked_windows(stored, source.read_bytes()) == []


def test_presigned_put_urllib(
    signer: Any, bucket: str, opener: urllib.request.OpenerDirector
) -> None:
    data = b"uploaded with urllib"
    url = signer.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "shared/urllib"}
    )
    request = urllib.request.Request(url, data=data, method="PUT")
    with opener.open(request) as response:
        assert response.status == 200
    got = signer.get_object(Bucket=bucket, Key="shared/urllib")["Body"].read()
    assert got == data


def test_presigned_expired_denied(
    signer: Any, bucket: str, opener: urllib.request.OpenerDirector
) -> None:
    signer.put_object(Bucket=bucket, Key="shared/expiring", Body=b"x")
    url = signer.generate_presigned_url(
        "get_object",
        Params={"Bucket": bucket, "Key": "shared/expiring"},
        ExpiresIn=1,
    )
    time.sleep(2)
    with pytest.raises(urllib.error.HTTPError) as error:
        opener.open(url)
    assert error.value.code == 403
    assert error_code(error.value.read()) == "AccessDenied"


def test_presigned_tampered_signature(
    signer: Any, bucket: str, opener: urllib.request.OpenerDirector
) -> None:
    signer.put_object(Bucket=bucket, Key="shared/tampered", Body=b"x")
    url = signer.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "shared/tampered"}
    )
    signature = url.rsplit("X-Amz-Signature=", 1)[1]
    flipped = "0" if signature[0] != "0" else "1"
    tampered = url.replace(signature, flipped + signature[1:])
    with pytest.raises(urllib.error.HTTPError) as error:
        opener.open(tampered)
    assert error.value.code == 403
    assert error_code(error.value.read()) == "SignatureDoesNotMatch"


def test_presigned_sigv2_default_url(
    s3: Any, bucket: str, opener: urllib.request.OpenerDirector
) -> None:
    # boto3's default presigner for a custom endpoint writes SigV2 query
    # parameters, which the proxy verifies like SigV4 ones.
    s3.put_object(Bucket=bucket, Key="shared/v2", Body=b"x")
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "shared/v2"}
    )
    assert "X-Amz-Signature" not in url
    assert "Signature=" in url
    with opener.open(url) as response:
        assert response.status == 200
        assert response.read() == b"x"
    tampered = url.replace("shared/v2", "shared/v3")
    with pytest.raises(urllib.error.HTTPError) as error:
        opener.open(tampered)
    assert error.value.code == 403
    assert error_code(error.value.read()) == "SignatureDoesNotMatch"

"""POST Object form uploads through the proxy, sent by real HTTP clients.

Forms are signed by botocore's `generate_presigned_post` (Signature Version
4, or 2 with `signature_version="s3"`) or by hand, encoded by urllib3's
multipart encoder, which `requests` also uses, and sent with urllib3.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import socket
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import urllib3
from botocore.config import Config
from botocore.exceptions import ClientError

from crypto.sizes import SEGMENT_SIZE, sealed_size
from tests.conftest import Stack, Tenant, separate_proxy
from tests.stack import ProxyProcess, peak_memory, start_proxy
from tests.test_virtual_host import DOMAIN

S = SEGMENT_SIZE
SIZES = [0, 1, 15, 16, 17, S - 17, S - 16, S - 15, S - 1, S, S + 1, 2 * S, 3 * S + 7]
MIB = 1024 * 1024

Field = tuple[str, Any]
HTTP = urllib3.PoolManager(retries=False, timeout=60)


# building and sending forms


def encode_policy(document: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()


def sign_v2(secret: str, policy: str) -> str:
    digest = hmac.new(secret.encode(), policy.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def in_an_hour() -> str:
    return (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def v2_form(tenant: Tenant, document: dict[str, Any]) -> list[Field]:
    """The credential fields of a Signature Version 2 form for `document`."""
    policy = encode_policy(document)
    return [
        ("AWSAccessKeyId", tenant.access_key_id),
        ("policy", policy),
        ("signature", sign_v2(tenant.secret_access_key, policy)),
    ]


def post(
    url: str, fields: list[Field], headers: dict[str, str] | None = None
) -> urllib3.BaseHTTPResponse:
    """Encode `fields` as multipart/form-data in order and POST them.

    A value that is a tuple is sent as (filename, data), like a file input.
    """
    body, content_type = urllib3.encode_multipart_formdata(fields)
    return HTTP.request(
        "POST",
        url,
        body=body,
        headers={"Content-Type": content_type, **(headers or {})},
        redirect=False,
    )


def presigned(
    client: Any, bucket: str, key: str, **options: Any
) -> tuple[str, list[Field]]:
    """A form from botocore, as a list of fields without the file."""
    form = client.generate_presigned_post(Bucket=bucket, Key=key, **options)
    return form["url"], list(form["fields"].items())


def error_code(response: urllib3.BaseHTTPResponse) -> str:
    code = ElementTree.fromstring(response.data).findtext("Code")
    assert code is not None, response.data
    return code


def error_message(response: urllib3.BaseHTTPResponse) -> str:
    return ElementTree.fromstring(response.data).findtext("Message") or ""


def assert_absent(s3: Any, backend_s3: Any, bucket: str, key: str) -> None:
    for client in (s3, backend_s3):
        with pytest.raises(ClientError) as error:
            client.head_object(Bucket=bucket, Key=key)
        assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


@pytest.fixture(scope="module")
def v4(stack: Stack, tenant: Tenant) -> Any:
    """A client whose presigned forms use Signature Version 4.

    botocore signs forms with Signature Version 2 unless the client's
    config sets `signature_version`.
    """
    return stack.client(tenant, config=Config(signature_version="s3v4"))


# uploads that succeed


def test_post_sigv4_round_trip(v4: Any, s3: Any, backend_s3: Any, bucket: str) -> None:
    data = b"quarterly figures, form upload " * 3000
    url, fields = presigned(v4, bucket, "report.txt")
    response = post(url, [*fields, ("file", ("report.txt", data))])
    etag = f'"{hashlib.md5(data).hexdigest()}"'
    assert response.status == 204, response.data
    assert response.data == b""
    assert response.headers["ETag"] == etag
    got = s3.get_object(Bucket=bucket, Key="report.txt")
    assert got["Body"].read() == data
    assert got["ETag"] == etag
    stored = backend_s3.get_object(Bucket=bucket, Key="report.txt")["Body"].read()
    assert len(stored) == sealed_size(len(data))
    assert b"quarterly figures" not in stored


def test_post_sigv2_round_trip(stack: Stack, tenant: Tenant, bucket: str) -> None:
    client = stack.client(tenant, config=Config(signature_version="s3"))
    data = os.urandom(5000)
    url, fields = presigned(client, bucket, "v2.bin")
    assert "signature" in dict(fields)
    response = post(url, [*fields, ("file", ("v2.bin", data))])
    assert response.status == 204, response.data
    assert client.get_object(Bucket=bucket, Key="v2.bin")["Body"].read() == data


@pytest.mark.parametrize("size", SIZES)
def test_post_sizes_round_trip(
    v4: Any, s3: Any, backend_s3: Any, bucket: str, size: int
) -> None:
    data = os.urandom(size)
    key = f"size-{size}"
    url, fields = presigned(v4, bucket, key)
    response = post(url, [*fields, ("file", (key, data))])
    assert response.status == 204, response.data
    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == data
    assert got["ContentLength"] == size
    assert got["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    stored = backend_s3.head_object(Bucket=bucket, Key=key)
    assert stored["ContentLength"] == sealed_size(size)


def test_post_filename_in_key(v4: Any, s3: Any, bucket: str) -> None:
    url, fields = presigned(v4, bucket, "uploads/${filename}")
    data = b"picture bytes"
    response = post(url, [*fields, ("file", ("C:\\photos\\cat.jpg", data))])
    assert response.status == 204, response.data
    got = s3.get_object(Bucket=bucket, Key="uploads/cat.jpg")
    assert got["Body"].read() == data


def test_post_keeps_metadata(v4: Any, s3: Any, bucket: str) -> None:
    extra = {
        "Content-Type": "text/csv",
        "Cache-Control": "max-age=60",
        "Content-Disposition": 'attachment; filename="table.csv"',
        "x-amz-meta-colour": "Blue",
    }
    conditions = [{name: value} for name, value in extra.items()]
    url, fields = presigned(
        v4, bucket, "table.csv", Fields=extra, Conditions=conditions
    )
    response = post(url, [*fields, ("file", ("t.csv", b"a,b\n1,2\n"))])
    assert response.status == 204, response.data
    head = s3.head_object(Bucket=bucket, Key="table.csv")
    assert head["ContentType"] == "text/csv"
    assert head["CacheControl"] == "max-age=60"
    assert head["ContentDisposition"] == 'attachment; filename="table.csv"'
    assert head["Metadata"] == {"colour": "Blue"}


def test_post_tagging_field(v4: Any, s3: Any, bucket: str) -> None:
    tagging = (
        "<Tagging><TagSet><Tag><Key>team</Key><Value>a b&amp;c</Value></Tag>"
        "<Tag><Key>stage</Key><Value>raw</Value></Tag></TagSet></Tagging>"
    )
    url, fields = presigned(
        v4,
        bucket,
        "tagged",
        Fields={"tagging": tagging},
        Conditions=[{"tagging": tagging}],
    )
    response = post(url, [*fields, ("file", ("t", b"x"))])
    assert response.status == 204, response.data
    tags = s3.get_object_tagging(Bucket=bucket, Key="tagged")["TagSet"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [
        ("stage", "raw"),
        ("team", "a b&c"),
    ]


def test_post_status_201_document(v4: Any, bucket: str) -> None:
    url, fields = presigned(
        v4,
        bucket,
        "dir/created.txt",
        Fields={"success_action_status": "201"},
        Conditions=[{"success_action_status": "201"}],
    )
    data = b"created"
    response = post(url, [*fields, ("file", ("c.txt", data))])
    assert response.status == 201, response.data
    root = ElementTree.fromstring(response.data)
    etag = f'"{hashlib.md5(data).hexdigest()}"'
    assert root.tag == "PostResponse"
    assert root.findtext("Bucket") == bucket
    assert root.findtext("Key") == "dir/created.txt"
    assert root.findtext("ETag") == etag
    assert root.findtext("Location") == f"{url}/dir/created.txt"
    assert response.headers["Location"] == f"{url}/dir/created.txt"


@pytest.mark.parametrize(("asked", "status"), [("200", 200), ("404", 204)])
def test_post_status_empty(v4: Any, bucket: str, asked: str, status: int) -> None:
    url, fields = presigned(
        v4,
        bucket,
        "plain",
        Fields={"success_action_status": asked},
        Conditions=[{"success_action_status": asked}],
    )
    response = post(url, [*fields, ("file", ("p", b"plain"))])
    assert response.status == status, response.data
    assert response.data == b""


def test_post_redirect(v4: Any, s3: Any, bucket: str) -> None:
    target = "https://example.com/done?from=form"
    url, fields = presigned(
        v4,
        bucket,
        "a b/redirected.txt",
        Fields={"success_action_redirect": target},
        Conditions=[["starts-with", "$success_action_redirect", "https://"]],
    )
    data = b"redirected"
    response = post(url, [*fields, ("file", ("r.txt", data))])
    etag = hashlib.md5(data).hexdigest()
    assert response.status == 303, response.data
    assert response.headers["Location"] == (
        f"{target}&bucket={bucket}&key=a%20b%2Fredirected.txt&etag=%22{etag}%22"
    )
    assert s3.get_object(Bucket=bucket, Key="a b/redirected.txt")["Body"].read() == data


def test_post_redirect_not_url(v4: Any, bucket: str) -> None:
    url, fields = presigned(
        v4,
        bucket,
        "ignored-redirect",
        Fields={"success_action_redirect": "not a url"},
        Conditions=[{"success_action_redirect": "not a url"}],
    )
    response = post(url, [*fields, ("file", ("r", b"x"))])
    assert response.status == 204, response.data


def test_post_content_md5(v4: Any, s3: Any, backend_s3: Any, bucket: str) -> None:
    data = b"checked body"
    good = base64.b64encode(hashlib.md5(data).digest()).decode()
    bad = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    for key, digest, status in (("md5-good", good, 204), ("md5-bad", bad, 400)):
        url, fields = presigned(
            v4,
            bucket,
            key,
            Fields={"Content-MD5": digest},
            Conditions=[{"Content-MD5": digest}],
        )
        response = post(url, [*fields, ("file", ("f", data))])
        assert response.status == status, response.data
    assert error_code(response) == "BadDigest"
    assert s3.get_object(Bucket=bucket, Key="md5-good")["Body"].read() == data
    assert_absent(s3, backend_s3, bucket, "md5-bad")


def test_post_ignored_field(v4: Any, bucket: str) -> None:
    url, fields = presigned(v4, bucket, "ignored")
    response = post(url, [*fields, ("x-ignore-note", "hi"), ("file", ("i", b"i"))])
    assert response.status == 204, response.data


def test_post_case_insensitive_names(stack: Stack, tenant: Tenant, bucket: str) -> None:
    document = {
        "expiration": in_an_hour(),
        "conditions": [
            {"bUcKeT": bucket},
            ["StArTs-WiTh", "$KeY", "foo"],
            ["STARTS-WITH", "$CoNtEnT-TyPe", "text/"],
        ],
    }
    fields = [
        ("kEy", "foo.txt"),
        ("Content-Type", "text/plain"),
        *[(name.upper(), value) for name, value in v2_form(tenant, document)],
    ]
    response = post(f"{stack.proxy.url}/{bucket}", [*fields, ("file", ("f", b"x"))])
    assert response.status == 204, response.data


# rejected forms


def test_post_wrong_signature(v4: Any, s3: Any, backend_s3: Any, bucket: str) -> None:
    url, fields = presigned(v4, bucket, "forged")
    forged = [
        (name, "0" * 64 if name == "x-amz-signature" else value)
        for name, value in fields
    ]
    response = post(url, [*forged, ("file", ("f", b"x"))])
    assert response.status == 403
    assert error_code(response) == "SignatureDoesNotMatch"
    assert_absent(s3, backend_s3, bucket, "forged")


def test_post_wrong_signature_v2(stack: Stack, tenant: Tenant, bucket: str) -> None:
    document = {"expiration": in_an_hour(), "conditions": [["starts-with", "$key", ""]]}
    fields = v2_form(tenant, document)
    fields[2] = ("signature", sign_v2("not the secret", fields[1][1]))
    response = post(
        f"{stack.proxy.url}/{bucket}", [("key", "k"), *fields, ("file", b"x")]
    )
    assert response.status == 403
    assert error_code(response) == "SignatureDoesNotMatch"


def test_post_unknown_access_key(stack: Stack, bucket: str) -> None:
    stranger = Tenant("nobody", "AKIANOBODY0000000000", "secret")
    document = {"expiration": in_an_hour(), "conditions": [["starts-with", "$key", ""]]}
    fields = [("key", "k"), *v2_form(stranger, document), ("file", b"x")]
    response = post(f"{stack.proxy.url}/{bucket}", fields)
    assert response.status == 403
    assert error_code(response) == "InvalidAccessKeyId"


def test_post_anonymous_rejected(
    s3: Any, backend_s3: Any, stack: Stack, bucket: str
) -> None:
    fields = [("key", "anon"), ("file", ("a", b"x"))]
    response = post(f"{stack.proxy.url}/{bucket}", fields)
    assert response.status == 403
    assert error_code(response) == "AccessDenied"
    assert_absent(s3, backend_s3, bucket, "anon")


def test_post_expired_policy(v4: Any, s3: Any, backend_s3: Any, bucket: str) -> None:
    url, fields = presigned(v4, bucket, "late", ExpiresIn=-60)
    response = post(url, [*fields, ("file", ("f", b"x"))])
    assert response.status == 403
    assert error_code(response) == "AccessDenied"
    assert "Policy expired" in error_message(response)
    assert_absent(s3, backend_s3, bucket, "late")


@pytest.mark.parametrize(
    ("condition", "value"),
    [
        (["starts-with", "$key", "uploads/"], "other/file"),
        (["eq", "$key", "exact"], "Exact"),
        (["eq", "$Content-Type", "image/png"], "image/jpeg"),
    ],
)
def test_post_condition_fails(
    v4: Any, s3: Any, backend_s3: Any, bucket: str, condition: list[str], value: str
) -> None:
    field = condition[1][1:]
    key = value if field == "key" else "cond"
    extra = {} if field == "key" else {field: value}
    url, fields = presigned(v4, bucket, key, Fields=extra, Conditions=[condition])
    response = post(url, [*fields, ("file", ("f", b"x"))])
    assert response.status == 403, response.data
    assert error_code(response) == "AccessDenied"
    assert "Policy Condition failed" in error_message(response)
    assert_absent(s3, backend_s3, bucket, key)


def test_post_field_not_in_policy(
    v4: Any, s3: Any, backend_s3: Any, bucket: str
) -> None:
    url, fields = presigned(v4, bucket, "extra", Fields={"x-amz-meta-note": "hi"})
    response = post(url, [*fields, ("file", ("f", b"x"))])
    assert response.status == 403
    assert error_code(response) == "AccessDenied"
    assert "x-amz-meta-note" in error_message(response)
    assert_absent(s3, backend_s3, bucket, "extra")


@pytest.mark.parametrize(
    ("bounds", "size", "code"),
    [((10, 20), 9, "EntityTooSmall"), ((10, 20), 21, "EntityTooLarge")],
)
def test_post_size_out_of_range(
    v4: Any,
    s3: Any,
    backend_s3: Any,
    bucket: str,
    bounds: tuple[int, int],
    size: int,
    code: str,
) -> None:
    condition = ["content-length-range", *bounds]
    url, fields = presigned(v4, bucket, "sized", Conditions=[condition])
    response = post(url, [*fields, ("file", ("f", os.urandom(size)))])
    assert response.status == 400
    assert error_code(response) == code
    assert_absent(s3, backend_s3, bucket, "sized")


@pytest.mark.parametrize("size", [10, 15, 20])
def test_post_size_in_range(v4: Any, s3: Any, bucket: str, size: int) -> None:
    url, fields = presigned(
        v4, bucket, "sized", Conditions=[["content-length-range", 10, 20]]
    )
    data = os.urandom(size)
    response = post(url, [*fields, ("file", ("f", data))])
    assert response.status == 204, response.data
    assert s3.get_object(Bucket=bucket, Key="sized")["Body"].read() == data


def test_post_no_key(v4: Any, bucket: str) -> None:
    url, fields = presigned(v4, bucket, "unused")
    without_key = [(name, value) for name, value in fields if name != "key"]
    response = post(url, [*without_key, ("file", ("f", b"x"))])
    assert response.status == 400
    assert error_code(response) == "InvalidArgument"
    assert "'key'" in error_message(response)


def test_post_no_file(v4: Any, bucket: str) -> None:
    url, fields = presigned(v4, bucket, "nofile")
    response = post(url, fields)
    assert response.status == 400
    assert error_code(response) == "InvalidArgument"
    assert "file" in error_message(response)


def test_post_fields_too_large(v4: Any, bucket: str) -> None:
    url, fields = presigned(
        v4, bucket, "big-fields", Conditions=[["starts-with", "$x-ignore-pad", ""]]
    )
    padding = ("x-ignore-pad", "p" * 21000)
    response = post(url, [*fields, padding, ("file", ("f", b"x"))])
    assert response.status == 400
    assert error_code(response) == "MaxPostPreDataLengthExceeded"


def test_post_public_acl_rejected(
    v4: Any, s3: Any, backend_s3: Any, bucket: str
) -> None:
    url, fields = presigned(
        v4,
        bucket,
        "public",
        Fields={"acl": "public-read"},
        Conditions=[{"acl": "public-read"}],
    )
    response = post(url, [*fields, ("file", ("f", b"x"))])
    assert response.status == 400
    assert error_code(response) == "AccessControlListNotSupported"
    assert_absent(s3, backend_s3, bucket, "public")


def test_post_private_acl_accepted(v4: Any, bucket: str) -> None:
    url, fields = presigned(
        v4,
        bucket,
        "private",
        Fields={"acl": "private"},
        Conditions=[{"acl": "private"}],
    )
    response = post(url, [*fields, ("file", ("f", b"x"))])
    assert response.status == 204, response.data


def test_post_other_organisation_bucket(
    stack: Stack, s3: Any, backend_s3: Any, bucket: str
) -> None:
    other = stack.tenant("post-intruder-" + os.urandom(3).hex())
    intruder = stack.client(other)
    url, fields = presigned(intruder, bucket, "intrusion")
    response = post(url, [*fields, ("file", ("f", b"x"))])
    assert response.status == 403
    assert error_code(response) == "AccessDenied"
    assert_absent(s3, backend_s3, bucket, "intrusion")


def test_post_missing_bucket(v4: Any) -> None:
    url, fields = presigned(v4, "no-such-bucket-" + os.urandom(4).hex(), "k")
    response = post(url, [*fields, ("file", ("f", b"x"))])
    assert response.status == 404
    assert error_code(response) == "NoSuchBucket"


# the body layout the size derivation needs


def raw_post(
    url: str, body: bytes, boundary: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, 60)
    try:
        connection.request(
            "POST",
            parts.path,
            body=body,
            headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                **(headers or {}),
            },
        )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def form_body(fields: list[tuple[str, bytes]], boundary: str) -> bytes:
    """Encode fields by hand, so a test can add what encoders never send."""
    body = b""
    for name, value in fields:
        body += (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{name}"; filename="{name}"\r\n'
            "\r\n"
        ).encode()
        body += value + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def encoded(fields: list[Field]) -> list[tuple[str, bytes]]:
    return [(name, str(value).encode()) for name, value in fields]


def test_post_field_after_file(v4: Any, s3: Any, backend_s3: Any, bucket: str) -> None:
    url, fields = presigned(v4, bucket, "trailing")
    boundary = "b0undary" + os.urandom(4).hex()
    body = form_body(
        [*encoded(fields), ("file", b"data" * 100), ("x-ignore-after", b"late")],
        boundary,
    )
    status, answer = raw_post(url, body, boundary)
    assert status == 400, answer
    assert b"MalformedPOSTRequest" in answer
    assert_absent(s3, backend_s3, bucket, "trailing")


def test_post_no_final_crlf(v4: Any, s3: Any, backend_s3: Any, bucket: str) -> None:
    url, fields = presigned(v4, bucket, "no-crlf")
    boundary = "b0undary" + os.urandom(4).hex()
    body = form_body([*encoded(fields), ("file", b"data" * 100)], boundary)
    status, answer = raw_post(url, body.removesuffix(b"\r\n"), boundary)
    assert status == 400, answer
    assert b"MalformedPOSTRequest" in answer
    assert_absent(s3, backend_s3, bucket, "no-crlf")


def test_post_chunked_body_rejected(v4: Any, bucket: str) -> None:
    url, fields = presigned(v4, bucket, "chunked")
    boundary = "b0undary" + os.urandom(4).hex()
    body = form_body([*encoded(fields), ("file", b"data")], boundary)
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, 60)
    try:
        connection.request(
            "POST",
            parts.path,
            body=iter([body]),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        assert response.status == 411
        assert b"MissingContentLength" in response.read()
    finally:
        connection.close()


def test_post_client_vanishes(
    v4: Any, stack: Stack, s3: Any, backend_s3: Any, bucket: str
) -> None:
    url, fields = presigned(v4, bucket, "vanished")
    boundary = "b0undary" + os.urandom(4).hex()
    body = form_body([*encoded(fields), ("file", os.urandom(4 * MIB))], boundary)
    parts = urlsplit(url)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head + body[: len(body) // 2])
    wait_for_log_line(stack.proxy.log, f"POST /{bucket} ")
    assert_absent(s3, backend_s3, bucket, "vanished")


def test_post_expect_continue(v4: Any, s3: Any, bucket: str) -> None:
    url, fields = presigned(v4, bucket, "continued")
    boundary = "b0undary" + os.urandom(4).hex()
    data = os.urandom(100_000)
    body = form_body([*encoded(fields), ("file", data)], boundary)
    parts = urlsplit(url)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head)
        interim = sock.recv(1024)
        sock.sendall(body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert answer.startswith(b"HTTP/1.1 204 "), answer
    assert s3.get_object(Bucket=bucket, Key="continued")["Body"].read() == data


def wait_for_log_line(log: Path, text: str, timeout: float = 30) -> None:
    """Wait until the proxy logs a line that contains `text`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise AssertionError(f"the proxy logged no line with {text!r}")


# Signature Version 2 forms from ceph/s3-tests that SeaweedFS rejects with 400


def s3tests_conditions(bucket: str) -> list[Any]:
    return [
        {"bucket": bucket},
        ["starts-with", "$key", "foo"],
        {"acl": "private"},
        ["starts-with", "$Content-Type", "text/plain"],
        ["content-length-range", 0, 1024],
    ]


def with_range(bucket: str, size_range: list[Any]) -> dict[str, Any]:
    conditions = [*s3tests_conditions(bucket)[:-1], size_range]
    return {"expiration": in_an_hour(), "conditions": conditions}


Case = Callable[[str], dict[str, Any]]
S3TESTS_CASES: dict[str, Case] = {
    "condition_is_case_sensitive": lambda b: {
        "expiration": in_an_hour(),
        "CONDITIONS": s3tests_conditions(b),
    },
    "empty_conditions": lambda b: {"expiration": in_an_hour(), "conditions": [{}]},
    "expires_is_case_sensitive": lambda b: {
        "EXPIRATION": in_an_hour(),
        "conditions": s3tests_conditions(b),
    },
    "invalid_content_length_argument": lambda b: with_range(
        b, ["content-length-range", -1, 0]
    ),
    "invalid_date_format": lambda b: {
        "expiration": str(datetime.now(UTC) + timedelta(hours=1)),
        "conditions": s3tests_conditions(b),
    },
    "missing_conditions_list": lambda b: {"expiration": in_an_hour()},
    "missing_content_length_argument": lambda b: with_range(
        b, ["content-length-range", 0]
    ),
    "missing_expires_condition": lambda b: {"conditions": s3tests_conditions(b)},
    "upload_size_below_minimum": lambda b: with_range(
        b, ["content-length-range", 512, 1000]
    ),
    "upload_size_limit_exceeded": lambda b: with_range(
        b, ["content-length-range", 0, 0]
    ),
}
S3TESTS_CODES = {
    "upload_size_below_minimum": "EntityTooSmall",
    "upload_size_limit_exceeded": "EntityTooLarge",
}


def s3tests_form(tenant: Tenant, document: dict[str, Any]) -> list[Field]:
    """A form laid out as the s3-tests send it, `requests` style.

    `requests.post(files=...)` sends every field as a file part named after
    the field, which urllib3 does for (filename, value) tuples.
    """
    policy = encode_policy(document)
    fields = [
        ("key", "foo.txt"),
        ("AWSAccessKeyId", tenant.access_key_id),
        ("acl", "private"),
        ("signature", sign_v2(tenant.secret_access_key, policy)),
        ("policy", policy),
        ("Content-Type", "text/plain"),
        ("file", "bar"),
    ]
    return [(name, (name, value)) for name, value in fields]


@pytest.mark.parametrize("case", sorted(S3TESTS_CASES))
def test_post_s3tests_rejections(
    stack: Stack,
    tenant: Tenant,
    s3: Any,
    backend_s3: Any,
    bucket: str,
    case: str,
) -> None:
    fields = s3tests_form(tenant, S3TESTS_CASES[case](bucket))
    response = post(f"{stack.proxy.url}/{bucket}", fields)
    assert response.status == 400, response.data
    assert error_code(response) == S3TESTS_CODES.get(case, "InvalidPolicyDocument")
    assert_absent(s3, backend_s3, bucket, "foo.txt")


def test_post_s3tests_missing_signature(
    stack: Stack, tenant: Tenant, bucket: str
) -> None:
    document = {"expiration": in_an_hour(), "conditions": s3tests_conditions(bucket)}
    fields = [
        (name, value)
        for name, value in s3tests_form(tenant, document)
        if name != "signature"
    ]
    response = post(f"{stack.proxy.url}/{bucket}", fields)
    assert response.status == 400, response.data
    assert error_code(response) == "InvalidArgument"


def test_post_s3tests_no_key(stack: Stack, tenant: Tenant, bucket: str) -> None:
    conditions = [c for c in s3tests_conditions(bucket) if "$key" not in c]
    document = {"expiration": in_an_hour(), "conditions": conditions}
    fields = [
        (name, value) for name, value in s3tests_form(tenant, document) if name != "key"
    ]
    response = post(f"{stack.proxy.url}/{bucket}", fields)
    assert response.status == 400, response.data
    assert error_code(response) == "InvalidArgument"


def test_post_s3tests_accepted_form(
    stack: Stack, tenant: Tenant, s3: Any, bucket: str
) -> None:
    document = {"expiration": in_an_hour(), "conditions": s3tests_conditions(bucket)}
    response = post(f"{stack.proxy.url}/{bucket}", s3tests_form(tenant, document))
    assert response.status == 204, response.data
    got = s3.get_object(Bucket=bucket, Key="foo.txt")
    assert got["Body"].read() == b"bar"
    assert got["ContentType"] == "text/plain"


# virtual-hosted style


@pytest.fixture(scope="module")
def domain_proxy(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    log = tmp_path_factory.mktemp("post-virtual-host") / "proxy.log"
    proxy = start_proxy(
        stack.data_dir, stack.backend, log, {"BYOK_PROXY_DOMAIN": DOMAIN}
    )
    try:
        yield proxy
    finally:
        proxy.stop()


def test_post_virtual_host(
    domain_proxy: ProxyProcess, tenant: Tenant, s3: Any, bucket: str
) -> None:
    port = urlsplit(domain_proxy.url).port
    document = {
        "expiration": in_an_hour(),
        "conditions": [
            {"bucket": bucket},
            {"key": "vhost.txt"},
            {"success_action_status": "201"},
        ],
    }
    fields = [
        ("key", "vhost.txt"),
        ("success_action_status", "201"),
        *v2_form(tenant, document),
        ("file", ("v.txt", b"virtual")),
    ]
    host = f"{bucket}.{DOMAIN}:{port}"
    response = post(f"{domain_proxy.url}/", fields, headers={"Host": host})
    assert response.status == 201, response.data
    location = ElementTree.fromstring(response.data).findtext("Location")
    assert location == f"http://{host}/vhost.txt"
    assert s3.get_object(Bucket=bucket, Key="vhost.txt")["Body"].read() == b"virtual"


# memory


@pytest.fixture(scope="module")
def fresh_proxy(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ProxyProcess, Any]]:
    with separate_proxy(stack, tmp_path_factory.mktemp("post-memory"), "forms") as made:
        yield made


@pytest.mark.slow
def test_post_large_file_constant_memory(
    fresh_proxy: tuple[ProxyProcess, Any],
) -> None:
    proxy, client = fresh_proxy
    bucket = "post-memory-" + os.urandom(4).hex()
    client.create_bucket(Bucket=bucket)
    try:
        url, fields = presigned(client, bucket, "warm-up")
        assert post(url, [*fields, ("file", ("w", os.urandom(MIB)))]).status == 204
        before = peak_memory(proxy)

        data = os.urandom(40 * MIB)
        url, fields = presigned(client, bucket, "large")
        response = post(url, [*fields, ("file", ("large.bin", data))])
        assert response.status == 204, response.data
        growth = peak_memory(proxy) - before
        assert growth < 16 * MIB, f"peak memory grew by {growth / MIB:.1f} MiB"

        got = client.get_object(Bucket=bucket, Key="large")["Body"].read()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    finally:
        for key in ("warm-up", "large"):
            client.delete_object(Bucket=bucket, Key=key)
        client.delete_bucket(Bucket=bucket)

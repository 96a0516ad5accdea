"""Tests for SigV4: the AWS test suite, the S3 documentation examples, and
requests signed by botocore (its Python and CRT signers), boto3 and minio.

Client-signed requests are checked in the form the proxy receives: the path
and query as sent on the wire, and header values as aiohttp decodes them (wire
bytes as UTF-8 with surrogateescape).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import threading
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import boto3
import botocore.auth
import pytest
import urllib3
from aiohttp import web
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from minio import Minio
from minio.credentials.credentials import Credentials as MinioCredentials
from minio.helpers import BaseURL
from minio.signer import presign_v4, sign_v4_s3
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.errors import S3Error
from proxy.sigv4 import (
    Authorization,
    PayloadMode,
    SigningContext,
    canonical_uri,
    parse_authorization,
    parse_query,
    payload_mode,
    sign,
    verify,
    verify_payload_sha256,
)
from proxy.sigv4_canonical import (
    EMPTY_SHA256,
    canonical_header_value,
    canonical_query,
    canonical_request,
    credential_scope,
    group_headers,
    signature,
    signing_key,
    string_to_sign,
)

SUITE_DIR = (
    Path(__file__).resolve().parents[2] / "shared" / "vectors" / "aws4_testsuite"
)
SUITE_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
DOCS_ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
DOCS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOCS_NOW = datetime(2013, 5, 24, tzinfo=UTC)
DOCS_HOST = "examplebucket.s3.amazonaws.com"

ACCESS_KEY = "AKIDPROXYTEST"
SECRET = "proxy/test+secret=key"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ENDPOINT = "http://s3.local.test:9000"

SPECIAL_KEYS = [
    "plain.txt",
    "with space.txt",
    " leading and trailing ",
    "a+b+c",
    "100%.txt",
    "%2F-literal",
    "tilde~name",
    "eq=sign&amp",
    "x!*'()$,;:@",
    "brackets[]{}|^`\\",
    "question?hash#",
    "\u00fcn\u00efc\u00f8d\u00e9/\u65e5\u672c\u8a9e.txt",
    "dir//double/./dot/../x",
    "emoji-\U0001f600",
]


# -- helpers ---------------------------------------------------------------


@dataclass(frozen=True)
class Wire:
    """A request as the proxy receives it."""

    method: str
    raw_path: str
    query: list[tuple[str, str]]
    headers: CIMultiDictProxy[str]


def _received(value: str | bytes) -> str:
    """Return a header value as aiohttp decodes it after http.client sent it.

    http.client sends str values as latin-1 and bytes values unchanged;
    botocore hands it UTF-8 bytes.
    """
    raw = value if isinstance(value, bytes) else value.encode("latin-1")
    return raw.decode("utf-8", "surrogateescape")


def _wire(method: str, url: str, headers: Mapping[str, str | bytes]) -> Wire:
    parts = urlsplit(url)
    received: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        received.add(name, _received(value))
    if "host" not in received:
        received["Host"] = parts.netloc
    return Wire(
        method, parts.path or "/", parse_query(parts.query), CIMultiDictProxy(received)
    )


def _verify_wire(
    wire: Wire, *, secret: str = SECRET, now: datetime = NOW, region: str | None = None
) -> SigningContext:
    auth = parse_authorization(wire.method, wire.headers, wire.query)
    assert auth is not None
    return verify(
        auth,
        method=wire.method,
        raw_path=wire.raw_path,
        query=wire.query,
        headers=wire.headers,
        secret_key=secret,
        now=now,
        region=region,
    )


def _frozen_clock(moment: datetime) -> Any:
    def current(remove_tzinfo: bool = True) -> datetime:
        return moment.replace(tzinfo=None) if remove_tzinfo else moment

    return current


@pytest.fixture(params=["python", "crt"])
def signer(request: pytest.FixtureRequest) -> Iterator[str]:
    """botocore's pure-Python signer, or the CRT signer it uses with awscrt."""
    clock = _frozen_clock(NOW)
    with contextlib.ExitStack() as stack:
        for module in ("botocore.auth", "botocore.crt.auth"):
            target = f"{module}.get_current_datetime"
            stack.enter_context(mock.patch(target, side_effect=clock))
        if request.param == "python":
            python_signers = {
                "s3v4": botocore.auth.S3SigV4Auth,
                "s3v4-query": botocore.auth.S3SigV4QueryAuth,
            }
            maps = botocore.auth.AUTH_TYPE_MAPS
            stack.enter_context(mock.patch.dict(maps, python_signers))
        yield str(request.param)


class _Captured(Exception):
    def __init__(self, request: Any) -> None:
        super().__init__("captured")
        self.request = request


def _boto3_client(style: str = "path", region: str = "us-east-1") -> Any:
    session = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET,
        region_name=region,
    )
    config = Config(
        s3={"addressing_style": style},
        signature_version="s3v4",
        retries={"total_max_attempts": 1},
    )
    return session.client("s3", endpoint_url=ENDPOINT, config=config)


def _capture(client: Any, operation: str, **params: Any) -> Any:
    """Return the prepared request botocore would send, without sending it."""

    def stop(request: Any, **_: Any) -> None:
        raise _Captured(request)

    client.meta.events.register_first("before-send.s3", stop)
    try:
        getattr(client, operation)(**params)
    except _Captured as captured:
        return captured.request
    finally:
        client.meta.events.unregister("before-send.s3", stop)
    raise AssertionError("botocore sent no request")


def _captured_wire(client: Any, operation: str, **params: Any) -> Wire:
    request = _capture(client, operation, **params)
    return _wire(request.method, request.url, dict(request.headers.items()))


def _assert_rejected(wire: Wire, code: str, **kwargs: Any) -> S3Error:
    with pytest.raises(S3Error) as caught:
        _verify_wire(wire, **kwargs)
    assert caught.value.code == code, caught.value.message
    return caught.value


def _with_header(wire: Wire, name: str, value: str) -> Wire:
    headers = CIMultiDict(wire.headers)
    headers[name] = value
    return replace(wire, headers=CIMultiDictProxy(headers))


def _mutations(text: str) -> Iterator[str]:
    """Yield `text` with each single character replaced by a different letter."""
    for index, char in enumerate(text):
        letter = "B" if char == "A" else "A"
        yield text[:index] + letter + text[index + 1 :]


# -- AWS SigV4 test suite --------------------------------------------------


@dataclass(frozen=True)
class SuiteCase:
    name: str
    normalizes_path: bool
    method: str
    path: str
    query: str
    headers: CIMultiDictProxy[str]
    body: bytes
    creq: str
    sts: str
    authz: str

    @property
    def signed_headers(self) -> list[str]:
        return self.authz.split("SignedHeaders=")[1].split(",")[0].split(";")

    @property
    def signature(self) -> str:
        return self.authz.split("Signature=")[1]


def _suite_dirs() -> list[Path]:
    return sorted(path.parent for path in SUITE_DIR.rglob("*.sreq"))


def _load_case(directory: Path) -> SuiteCase:
    name = directory.name

    def read(suffix: str) -> str:
        raw = (directory / f"{name}.{suffix}").read_bytes()
        return raw.decode("utf-8", "surrogateescape")

    head, _, body = read("sreq").partition("\n\n")
    request_line, *header_lines = head.split("\n")
    method, _, rest = request_line.partition(" ")
    target = rest.rsplit(" ", 1)[0]
    path, _, query = target.partition("?")
    pairs: list[tuple[str, str]] = []
    for line in header_lines:
        if line[:1] in (" ", "\t"):
            # An obsolete folded line continues the previous header value.
            header, value = pairs.pop()
            pairs.append((header, f"{value} {line.strip()}"))
        else:
            header, _, value = line.partition(":")
            pairs.append((header, value.strip()))
    headers = CIMultiDict(
        (header, value) for header, value in pairs if header.lower() != "authorization"
    )
    return SuiteCase(
        name=name,
        normalizes_path=directory.parent.name == "normalize-path",
        method=method,
        path=path,
        query=query,
        headers=CIMultiDictProxy(headers),
        body=body.encode("utf-8", "surrogateescape"),
        creq=read("creq"),
        sts=read("sts"),
        authz=read("authz").strip(),
    )


SUITE_CASES = _suite_dirs() or [SUITE_DIR / "missing"]

# The suite normalises and double-encodes paths for generic AWS services. S3
# does neither, so for those cases the S3 canonical URI is the raw path,
# each segment encoded once.
S3_URIS_FOR_NORMALIZE_CASES = {
    "get-relative": "/example/..",
    "get-relative-relative": "/example1/example2/../..",
    "get-slash": "//",
    "get-slash-dot-slash": "/./",
    "get-slash-pointless-dot": "/./example",
    "get-slashes": "//example//",
    "get-space": "/example%20space/",
    "get-special-character": "/example/%24delete",
}


def _suite_canonical_request(case: SuiteCase, uri: str) -> str:
    grouped = group_headers(case.headers)
    headers = [
        (name, canonical_header_value(grouped[name])) for name in case.signed_headers
    ]
    return canonical_request(
        case.method,
        uri,
        canonical_query(parse_query(case.query)),
        headers,
        hashlib.sha256(case.body).hexdigest(),
    )


def _suite_uri(case: SuiteCase) -> str:
    """The canonical URI to carry on with: the suite's own for its
    normalising cases, which S3 would sign differently, else ours."""
    if case.normalizes_path:
        return case.creq.split("\n")[1]
    return canonical_uri(case.path)


def _ids(directories: list[Path]) -> list[str]:
    return [directory.name for directory in directories]


def test_aws_suite_vectors_present() -> None:
    assert SUITE_DIR.is_dir(), f"the AWS SigV4 test suite is missing at {SUITE_DIR}"
    assert len(_suite_dirs()) >= 28


@pytest.mark.parametrize("directory", SUITE_CASES, ids=_ids(SUITE_CASES))
def test_aws_suite_canonical_uri(directory: Path) -> None:
    case = _load_case(directory)
    if case.normalizes_path:
        assert canonical_uri(case.path) == S3_URIS_FOR_NORMALIZE_CASES[case.name]
    else:
        assert canonical_uri(case.path) == case.creq.split("\n")[1]


@pytest.mark.parametrize("directory", SUITE_CASES, ids=_ids(SUITE_CASES))
def test_aws_suite_canonical_query(directory: Path) -> None:
    case = _load_case(directory)
    expected = case.creq.split("\n")[2]
    assert canonical_query(parse_query(case.query)) == expected


@pytest.mark.parametrize("directory", SUITE_CASES, ids=_ids(SUITE_CASES))
def test_aws_suite_canonical_headers(directory: Path) -> None:
    case = _load_case(directory)
    built = _suite_canonical_request(case, "/").split("\n")[3:]
    assert built == case.creq.split("\n")[3:]


@pytest.mark.parametrize("directory", SUITE_CASES, ids=_ids(SUITE_CASES))
def test_aws_suite_canonical_request(directory: Path) -> None:
    case = _load_case(directory)
    assert _suite_canonical_request(case, _suite_uri(case)) == case.creq


@pytest.mark.parametrize("directory", SUITE_CASES, ids=_ids(SUITE_CASES))
def test_aws_suite_string_to_sign(directory: Path) -> None:
    case = _load_case(directory)
    scope = credential_scope("20150830", "us-east-1", "service")
    request = _suite_canonical_request(case, _suite_uri(case))
    assert string_to_sign("20150830T123600Z", scope, request) == case.sts


@pytest.mark.parametrize("directory", SUITE_CASES, ids=_ids(SUITE_CASES))
def test_aws_suite_signature(directory: Path) -> None:
    case = _load_case(directory)
    key = signing_key(SUITE_SECRET, "20150830", "us-east-1", "service")
    assert signature(key, case.sts) == case.signature


# -- S3 documentation examples ---------------------------------------------


@dataclass(frozen=True)
class DocExample:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    signature: str


DOC_EXAMPLES = {
    "get-object-range": DocExample(
        "GET",
        "/test.txt",
        "",
        {
            "Host": DOCS_HOST,
            "Range": "bytes=0-9",
            "x-amz-content-sha256": EMPTY_SHA256,
            "x-amz-date": "20130524T000000Z",
        },
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
    ),
    "put-object": DocExample(
        "PUT",
        "/test$file.text",
        "",
        {
            "Host": DOCS_HOST,
            "Date": "Fri, 24 May 2013 00:00:00 GMT",
            "x-amz-date": "20130524T000000Z",
            "x-amz-storage-class": "REDUCED_REDUNDANCY",
            "x-amz-content-sha256": hashlib.sha256(
                b"Welcome to Amazon S3."
            ).hexdigest(),
        },
        "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
    ),
    "get-bucket-lifecycle": DocExample(
        "GET",
        "/",
        "lifecycle",
        {
            "Host": DOCS_HOST,
            "x-amz-date": "20130524T000000Z",
            "x-amz-content-sha256": EMPTY_SHA256,
        },
        "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
    ),
    "list-objects": DocExample(
        "GET",
        "/",
        "max-keys=2&prefix=J",
        {
            "Host": DOCS_HOST,
            "x-amz-date": "20130524T000000Z",
            "x-amz-content-sha256": EMPTY_SHA256,
        },
        "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
    ),
}

DOC_PRESIGNED_QUERY = (
    "X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
    "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
)


def _doc_wire(example: DocExample) -> Wire:
    names = ";".join(sorted(name.lower() for name in example.headers))
    headers = dict(example.headers)
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={DOCS_ACCESS_KEY}/20130524/us-east-1/s3/"
        f"aws4_request,SignedHeaders={names},Signature={example.signature}"
    )
    url = f"https://{DOCS_HOST}{example.path}?{example.query}"
    return _wire(example.method, url, headers)


@pytest.mark.parametrize("name", DOC_EXAMPLES)
def test_verify_docs_example(name: str) -> None:
    example = DOC_EXAMPLES[name]
    context = _verify_wire(_doc_wire(example), secret=DOCS_SECRET, now=DOCS_NOW)
    assert context.seed_signature == example.signature
    assert context.scope == "20130524/us-east-1/s3/aws4_request"
    assert context.amz_date == "20130524T000000Z"


@pytest.mark.parametrize("name", DOC_EXAMPLES)
def test_sign_reproduces_docs_example(name: str) -> None:
    example = DOC_EXAMPLES[name]
    given = {
        key: value
        for key, value in example.headers.items()
        if key.lower() not in ("x-amz-date", "x-amz-content-sha256")
    }
    signed = sign(
        example.method,
        f"https://{DOCS_HOST}{example.path}?{example.query}",
        given,
        payload_hash=example.headers["x-amz-content-sha256"],
        access_key_id=DOCS_ACCESS_KEY,
        secret_key=DOCS_SECRET,
        region="us-east-1",
        now=DOCS_NOW,
    )
    assert signed["authorization"].endswith(f"Signature={example.signature}")


def test_verify_docs_presigned_example() -> None:
    url = f"https://{DOCS_HOST}/test.txt?{DOC_PRESIGNED_QUERY}"
    wire = _wire("GET", url, {})
    context = _verify_wire(wire, secret=DOCS_SECRET, now=DOCS_NOW + timedelta(hours=1))
    assert context.seed_signature.startswith("aeeed9bb")


def test_verify_docs_presigned_example_expired() -> None:
    url = f"https://{DOCS_HOST}/test.txt?{DOC_PRESIGNED_QUERY}"
    error = _assert_rejected(
        _wire("GET", url, {}),
        "AccessDenied",
        secret=DOCS_SECRET,
        now=DOCS_NOW + timedelta(seconds=86401),
    )
    assert error.message == "Request has expired"
    assert error.status == 403


def test_verify_docs_streaming_example_seed() -> None:
    headers = {
        "Host": "s3.amazonaws.com",
        "Content-Encoding": "aws-chunked",
        "Content-Length": "66824",
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "x-amz-date": "20130524T000000Z",
        "x-amz-decoded-content-length": "66560",
        "x-amz-storage-class": "REDUCED_REDUNDANCY",
    }
    example = DocExample(
        "PUT",
        "/examplebucket/chunkObject.txt",
        "",
        headers,
        "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
    )
    wire = _doc_wire(example)
    context = _verify_wire(wire, secret=DOCS_SECRET, now=DOCS_NOW)
    auth = parse_authorization(wire.method, wire.headers, wire.query)
    assert auth is not None
    assert payload_mode(auth) is PayloadMode.STREAMING_SIGNED
    assert context.seed_signature == example.signature


# -- botocore-signed requests ----------------------------------------------


@pytest.mark.parametrize("style", ["path", "virtual"])
@pytest.mark.parametrize("key", SPECIAL_KEYS)
def test_verify_botocore_get_object(signer: str, style: str, key: str) -> None:
    client = _boto3_client(style)
    wire = _captured_wire(
        client,
        "get_object",
        Bucket="bkt",
        Key=key,
        Range="bytes=0-9",
        ResponseContentDisposition='attachment; filename="\u00fc b+c.txt"',
    )
    context = _verify_wire(wire)
    assert context.scope == "20260102/us-east-1/s3/aws4_request"
    client.close()


@pytest.mark.parametrize("key", SPECIAL_KEYS)
def test_verify_botocore_put_object(signer: str, key: str) -> None:
    client = _boto3_client()

    def add_unicode_metadata(params: dict[str, Any], **_: Any) -> None:
        params["headers"]["x-amz-meta-unicode"] = "caf\u00e9  au   lait \u65e5"

    client.meta.events.register("before-call.s3.PutObject", add_unicode_metadata)
    wire = _captured_wire(
        client,
        "put_object",
        Bucket="bkt",
        Key=key,
        Body=b"hello world",
        ContentType="text/plain; charset=utf-8",
        Metadata={"note": "a  b\tc"},
        StorageClass="REDUCED_REDUNDANCY",
    )
    auth = parse_authorization(wire.method, wire.headers, wire.query)
    assert auth is not None
    assert payload_mode(auth) is PayloadMode.LITERAL
    _verify_wire(wire)
    verify_payload_sha256(auth, hashlib.sha256(b"hello world").digest())
    client.close()


@pytest.mark.parametrize(
    "params",
    [
        {"Prefix": "a b+c&d=e/\u00fc~%", "Delimiter": "/", "StartAfter": "x=y"},
        {"Prefix": "", "MaxKeys": 2, "EncodingType": "url"},
        {"Prefix": "\U0001f600?#[]", "ContinuationToken": "tok/en+=="},
    ],
)
def test_verify_botocore_list_objects(signer: str, params: dict[str, Any]) -> None:
    client = _boto3_client("virtual")
    _verify_wire(_captured_wire(client, "list_objects_v2", Bucket="bkt", **params))
    client.close()


def test_verify_botocore_multipart_part(signer: str) -> None:
    client = _boto3_client()
    wire = _captured_wire(
        client,
        "upload_part",
        Bucket="bkt",
        Key="big file+1",
        UploadId="2~x/y+z=",
        PartNumber=3,
        Body=b"part",
    )
    _verify_wire(wire)
    client.close()


@pytest.mark.parametrize("region", ["us-east-1", "eu-central-1"])
def test_verify_accepts_any_scope_region(signer: str, region: str) -> None:
    client = _boto3_client(region=region)
    context = _verify_wire(_captured_wire(client, "head_object", Bucket="b", Key="k"))
    assert context.scope == f"20260102/{region}/s3/aws4_request"
    client.close()


def test_verify_rejects_other_region_when_pinned(signer: str) -> None:
    client = _boto3_client(region="eu-central-1")
    wire = _captured_wire(client, "head_object", Bucket="b", Key="k")
    error = _assert_rejected(wire, "AuthorizationHeaderMalformed", region="us-east-1")
    assert "eu-central-1" in error.message
    client.close()


def test_verify_python_and_crt_signers_agree() -> None:
    signatures = []
    for python in (True, False):
        clock = _frozen_clock(NOW)
        maps = (
            {"s3v4": botocore.auth.S3SigV4Auth}
            if python
            else {"s3v4": botocore.auth.AUTH_TYPE_MAPS["s3v4"]}
        )
        with (
            mock.patch("botocore.auth.get_current_datetime", side_effect=clock),
            mock.patch("botocore.crt.auth.get_current_datetime", side_effect=clock),
            mock.patch.dict(botocore.auth.AUTH_TYPE_MAPS, maps),
        ):
            client = _boto3_client()
            request = _capture(client, "get_object", Bucket="b", Key="a b+c~d")
            client.close()
        signatures.append(request.headers["Authorization"])
    assert signatures[0] == signatures[1]


@pytest.fixture
def signed_put(signer: str) -> Wire:
    client = _boto3_client()
    wire = _captured_wire(
        client,
        "put_object",
        Bucket="bkt",
        Key="dir/a b+c%~.txt",
        Body=b"payload",
        Metadata={"colour": "blue"},
        Tagging="k=v",
    )
    client.close()
    return wire


@pytest.fixture
def signed_list(signer: str) -> Wire:
    client = _boto3_client()
    wire = _captured_wire(
        client, "list_objects_v2", Bucket="bkt", Prefix="a b+c", Delimiter="/"
    )
    client.close()
    return wire


def test_verify_tampered_method(signed_put: Wire) -> None:
    for method in _mutations(signed_put.method):
        _assert_rejected(replace(signed_put, method=method), "SignatureDoesNotMatch")


def test_verify_tampered_path(signed_put: Wire) -> None:
    for path in _mutations(signed_put.raw_path):
        _assert_rejected(replace(signed_put, raw_path=path), "SignatureDoesNotMatch")


def test_verify_tampered_signed_headers(signed_put: Wire) -> None:
    auth = parse_authorization("PUT", signed_put.headers, signed_put.query)
    assert auth is not None
    for name in auth.signed_headers:
        if name == "x-amz-date":
            continue
        for value in _mutations(signed_put.headers[name]):
            _assert_rejected(
                _with_header(signed_put, name, value), "SignatureDoesNotMatch"
            )


def test_verify_tampered_query_value(signed_list: Wire) -> None:
    for index, (name, value) in enumerate(signed_list.query):
        for changed in _mutations(value):
            query = list(signed_list.query)
            query[index] = (name, changed)
            _assert_rejected(replace(signed_list, query=query), "SignatureDoesNotMatch")


def test_verify_extra_query_parameter(signed_list: Wire) -> None:
    query = [*signed_list.query, ("versionId", "1")]
    _assert_rejected(replace(signed_list, query=query), "SignatureDoesNotMatch")


def test_verify_tampered_date(signed_put: Wire) -> None:
    date = signed_put.headers["x-amz-date"]
    later = date[:-2] + str((int(date[-2]) + 1) % 6) + date[-1]
    _assert_rejected(
        _with_header(signed_put, "x-amz-date", later), "SignatureDoesNotMatch"
    )


def test_verify_tampered_secret(signed_put: Wire) -> None:
    for secret in (SECRET[:-1] + "X", "Y" + SECRET[1:], SECRET + " "):
        _assert_rejected(signed_put, "SignatureDoesNotMatch", secret=secret)


def test_verify_unsigned_amz_header(signed_put: Wire) -> None:
    wire = _with_header(signed_put, "x-amz-meta-added", "later")
    error = _assert_rejected(wire, "AccessDenied")
    assert "x-amz-meta-added" in error.message
    assert error.status == 403


def test_verify_unsigned_ordinary_header(signed_put: Wire) -> None:
    _verify_wire(_with_header(signed_put, "X-Forwarded-For", "127.0.0.1"))


def test_verify_clock_skew(signed_put: Wire) -> None:
    _verify_wire(signed_put, now=NOW + timedelta(minutes=14))
    _verify_wire(signed_put, now=NOW - timedelta(minutes=14))
    for skew in (timedelta(minutes=16), -timedelta(minutes=16)):
        error = _assert_rejected(signed_put, "RequestTimeTooSkewed", now=NOW + skew)
        assert error.status == 403


def test_verify_rejects_naive_now(signed_put: Wire) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _verify_wire(signed_put, now=NOW.replace(tzinfo=None))


def test_verify_payload_sha256_mismatch(signed_put: Wire) -> None:
    auth = parse_authorization("PUT", signed_put.headers, signed_put.query)
    assert auth is not None
    with pytest.raises(S3Error) as caught:
        verify_payload_sha256(auth, hashlib.sha256(b"other").digest())
    assert caught.value.code == "XAmzContentSHA256Mismatch"


# -- botocore (AWSRequest + S3SigV4Auth) directly --------------------------


@pytest.mark.parametrize("key", SPECIAL_KEYS)
def test_verify_botocore_s3sigv4auth(key: str) -> None:
    encoded = botocore.utils.percent_encode(key, safe="/~")
    request = AWSRequest(
        "POST",
        f"{ENDPOINT}/bkt/{encoded}?uploads&x-id=Create%20Multi",
        headers={"Content-Type": "application/octet-stream"},
        data=b"",
    )
    with mock.patch(
        "botocore.auth.get_current_datetime", side_effect=_frozen_clock(NOW)
    ):
        botocore.auth.S3SigV4Auth(
            Credentials(ACCESS_KEY, SECRET), "s3", "us-east-1"
        ).add_auth(request)
    _verify_wire(_wire(request.method, request.url, dict(request.headers.items())))


# -- presigned URLs --------------------------------------------------------


def _presigned_wire(
    client: Any, method: str, params: dict[str, Any], expires: int
) -> Wire:
    url = client.generate_presigned_url(method, Params=params, ExpiresIn=expires)
    http_method = "PUT" if method == "put_object" else "GET"
    return _wire(http_method, url, {})


@pytest.mark.parametrize("style", ["path", "virtual"])
@pytest.mark.parametrize("key", SPECIAL_KEYS)
def test_verify_boto3_presigned_get(signer: str, style: str, key: str) -> None:
    client = _boto3_client(style)
    params = {
        "Bucket": "bkt",
        "Key": key,
        "ResponseContentDisposition": 'attachment; filename="a b+c=\u00fc.txt"',
        "VersionId": "v1+/=",
    }
    wire = _presigned_wire(client, "get_object", params, 3600)
    auth = parse_authorization(wire.method, wire.headers, wire.query)
    assert auth is not None
    assert auth.presigned
    assert auth.expires == 3600
    assert payload_mode(auth) is PayloadMode.UNSIGNED
    _verify_wire(wire, now=NOW + timedelta(seconds=3600))
    client.close()


def test_verify_boto3_presigned_put(signer: str) -> None:
    client = _boto3_client()
    params = {"Bucket": "bkt", "Key": "up load+1", "ContentType": "text/plain"}
    wire = _presigned_wire(client, "put_object", params, 60)
    _verify_wire(_with_header(wire, "Content-Type", "text/plain"))
    client.close()


def test_verify_presigned_expired(signer: str) -> None:
    client = _boto3_client()
    wire = _presigned_wire(client, "get_object", {"Bucket": "b", "Key": "k"}, 60)
    error = _assert_rejected(wire, "AccessDenied", now=NOW + timedelta(seconds=61))
    assert error.message == "Request has expired"
    client.close()


# The CRT signer refuses to presign with X-Amz-Expires=0.
@pytest.mark.parametrize("signer", ["python"], indirect=True)
def test_verify_presigned_zero_expires(signer: str) -> None:
    client = _boto3_client()
    wire = _presigned_wire(client, "get_object", {"Bucket": "b", "Key": "k"}, 0)
    _assert_rejected(wire, "AccessDenied", now=NOW + timedelta(seconds=1))
    client.close()


def test_verify_presigned_not_yet_valid(signer: str) -> None:
    client = _boto3_client()
    wire = _presigned_wire(client, "get_object", {"Bucket": "b", "Key": "k"}, 60)
    _verify_wire(wire, now=NOW - timedelta(minutes=14))
    error = _assert_rejected(wire, "AccessDenied", now=NOW - timedelta(minutes=16))
    assert error.message == "Request is not valid yet"
    client.close()


@pytest.mark.parametrize("expires", ["604801", "-1", "1e3", "", "0x10"])
def test_parse_presigned_expires_out_of_range(expires: str) -> None:
    client = _boto3_client()
    wire = _presigned_wire(client, "get_object", {"Bucket": "b", "Key": "k"}, 60)
    client.close()
    query = [(n, expires if n == "X-Amz-Expires" else v) for n, v in wire.query]
    with pytest.raises(S3Error) as caught:
        parse_authorization("GET", wire.headers, query)
    assert caught.value.code == "AuthorizationQueryParametersError"
    assert caught.value.status == 400


def test_parse_presigned_expires_maximum() -> None:
    client = _boto3_client()
    wire = _presigned_wire(client, "get_object", {"Bucket": "b", "Key": "k"}, 604800)
    client.close()
    auth = parse_authorization("GET", wire.headers, wire.query)
    assert auth is not None
    assert auth.expires == 604800


@pytest.fixture
def presigned(signer: str) -> Wire:
    client = _boto3_client()
    params = {"Bucket": "bkt", "Key": "a b", "ResponseContentType": "text/x+y"}
    wire = _presigned_wire(client, "get_object", params, 600)
    client.close()
    return wire


def test_verify_presigned_tampered_path(presigned: Wire) -> None:
    for path in _mutations(presigned.raw_path):
        _assert_rejected(replace(presigned, raw_path=path), "SignatureDoesNotMatch")


def test_verify_presigned_tampered_method(presigned: Wire) -> None:
    _assert_rejected(replace(presigned, method="HEAD"), "SignatureDoesNotMatch")


def test_verify_presigned_tampered_host(presigned: Wire) -> None:
    for host in _mutations(presigned.headers["Host"]):
        _assert_rejected(_with_header(presigned, "Host", host), "SignatureDoesNotMatch")


def test_verify_presigned_tampered_query(presigned: Wire) -> None:
    index = [name for name, _ in presigned.query].index("response-content-type")
    for value in _mutations(presigned.query[index][1]):
        query = list(presigned.query)
        query[index] = ("response-content-type", value)
        _assert_rejected(replace(presigned, query=query), "SignatureDoesNotMatch")
    longer = [(n, "601" if n == "X-Amz-Expires" else v) for n, v in presigned.query]
    _assert_rejected(replace(presigned, query=longer), "SignatureDoesNotMatch")


def test_verify_presigned_added_query(presigned: Wire) -> None:
    query = [*presigned.query, ("response-cache-control", "no-cache")]
    _assert_rejected(replace(presigned, query=query), "SignatureDoesNotMatch")


def test_verify_presigned_unsigned_amz_header(presigned: Wire) -> None:
    wire = _with_header(presigned, "x-amz-acl", "public-read")
    _assert_rejected(wire, "AccessDenied")


# -- minio-py --------------------------------------------------------------


class _CapturingPool(urllib3.PoolManager):
    """An HTTP client for minio that records the request instead of sending."""

    def urlopen(  # type: ignore[override]
        self, method: str, url: str, redirect: bool = True, **kw: Any
    ) -> Any:
        raise _Captured((method, url, kw["headers"]))


def _minio_wire(call: Callable[[Minio], Any]) -> Wire:
    client = Minio(
        "127.0.0.1:9000",
        access_key=ACCESS_KEY,
        secret_key=SECRET,
        secure=False,
        region="us-east-1",
        http_client=_CapturingPool(),
    )
    with mock.patch("minio.time.utcnow", return_value=NOW):
        try:
            call(client)
        except _Captured as captured:
            method, url, headers = captured.request
            return _wire(method, url, dict(headers.items()))
    raise AssertionError("minio sent no request")


# minio refuses object names with "." or ".." segments.
MINIO_KEYS = [key for key in SPECIAL_KEYS if "/./" not in key]


@pytest.mark.parametrize("key", MINIO_KEYS)
def test_verify_minio_put_object(key: str) -> None:
    body = b"minio body"
    wire = _minio_wire(
        lambda client: client.put_object(
            "bkt", key, io.BytesIO(body), len(body), metadata={"x-amz-meta-k": "v"}
        )
    )
    auth = parse_authorization(wire.method, wire.headers, wire.query)
    assert auth is not None
    _verify_wire(wire)
    verify_payload_sha256(auth, hashlib.sha256(body).digest())


@pytest.mark.parametrize("key", MINIO_KEYS)
def test_verify_minio_stat_object(key: str) -> None:
    _verify_wire(_minio_wire(lambda client: client.stat_object("bkt", key)))


def test_verify_minio_list_objects() -> None:
    wire = _minio_wire(
        lambda client: list(
            client.list_objects("bkt", prefix="a b+c/\u00fc", start_after="x=y")
        )
    )
    _verify_wire(wire)


def test_verify_minio_signer_functions() -> None:
    url = BaseURL("http://127.0.0.1:9000", "us-east-1").build(
        method="POST",
        region="us-east-1",
        bucket_name="bkt",
        object_name="k e+y~",
        query_params={"uploads": "", "tag": "a b"},
    )
    headers: dict[str, Any] = {
        "Host": url.netloc,
        "x-amz-content-sha256": EMPTY_SHA256,
        "x-amz-date": NOW.strftime("%Y%m%dT%H%M%SZ"),
    }
    signed = sign_v4_s3(
        method="POST",
        url=url,
        region="us-east-1",
        headers=headers,
        credentials=MinioCredentials(ACCESS_KEY, SECRET),
        content_sha256=EMPTY_SHA256,
        date=NOW,
    )
    _verify_wire(_wire("POST", url.geturl(), {k: str(v) for k, v in signed.items()}))


@pytest.mark.parametrize("key", MINIO_KEYS)
def test_verify_minio_presigned(key: str) -> None:
    client = Minio(
        "127.0.0.1:9000",
        access_key=ACCESS_KEY,
        secret_key=SECRET,
        secure=False,
        region="us-east-1",
    )
    url = client.presigned_get_object(
        "bkt",
        key,
        expires=timedelta(hours=1),
        response_headers={"response-content-type": "text/a b"},
        request_date=NOW,
    )
    _verify_wire(_wire("GET", url, {}), now=NOW + timedelta(minutes=59))


def test_verify_minio_presign_v4_function() -> None:
    url = BaseURL("http://127.0.0.1:9000", "us-east-1").build(
        method="PUT", region="us-east-1", bucket_name="bkt", object_name="x y"
    )
    signed = presign_v4(
        method="PUT",
        url=url,
        region="us-east-1",
        credentials=MinioCredentials(ACCESS_KEY, SECRET),
        date=NOW,
        expires=300,
    )
    _verify_wire(_wire("PUT", signed.geturl(), {}))


# -- sign() against botocore -----------------------------------------------


SIGN_CASES = [
    ("GET", f"{ENDPOINT}/bkt/a%20b%2Bc~d", {}, b""),
    ("PUT", "https://s3.example.com/bkt/k", {"Content-Type": "text/plain"}, b"body"),
    ("POST", "http://127.0.0.1/bkt/k?uploads", {}, b""),
    (
        "PUT",
        f"{ENDPOINT}/bkt/k?partNumber=2&uploadId=a%2Bb%3D",
        {"Content-Length": "4", "x-amz-meta-a": "  spaced   value "},
        b"part",
    ),
    ("GET", "http://[::1]:8333/bkt?list-type=2&prefix=a%20b", {"Range": "x"}, b""),
    ("DELETE", "https://bkt.s3.example.com:443/%C3%BC", {"User-Agent": "x"}, b""),
]


@pytest.mark.parametrize(("method", "url", "headers", "body"), SIGN_CASES)
def test_sign_matches_botocore(
    method: str, url: str, headers: dict[str, str], body: bytes
) -> None:
    request = AWSRequest(method, url, headers=dict(headers), data=body)
    with mock.patch(
        "botocore.auth.get_current_datetime", side_effect=_frozen_clock(NOW)
    ):
        botocore.auth.S3SigV4Auth(
            Credentials(ACCESS_KEY, SECRET), "s3", "eu-west-3"
        ).add_auth(request)
    ours = sign(
        method,
        url,
        headers,
        payload_hash=hashlib.sha256(body).hexdigest(),
        access_key_id=ACCESS_KEY,
        secret_key=SECRET,
        region="eu-west-3",
        now=NOW,
    )
    assert ours["authorization"] == request.headers["Authorization"]
    assert ours["x-amz-date"] == request.headers["X-Amz-Date"]
    assert ours["x-amz-content-sha256"] == request.headers["X-Amz-Content-SHA256"]


def test_sign_then_verify_round_trip() -> None:
    url = f"{ENDPOINT}/bkt/k%20y?uploadId=u%2B1&partNumber=1"
    signed = sign(
        "PUT",
        url,
        {"Content-Length": "3", "x-amz-meta-a": "b"},
        payload_hash="UNSIGNED-PAYLOAD",
        access_key_id=ACCESS_KEY,
        secret_key=SECRET,
        region="us-east-1",
        now=NOW,
        session_token="token/+=",
    )
    assert signed["host"] == "s3.local.test:9000"
    assert signed["x-amz-security-token"] == "token/+="
    _verify_wire(_wire("PUT", url, signed))


def test_sign_replaces_existing_signer_headers() -> None:
    signed = sign(
        "GET",
        f"{ENDPOINT}/b/k",
        {"Authorization": "old", "X-Amz-Date": "old", "Host": "given.example"},
        payload_hash=EMPTY_SHA256,
        access_key_id=ACCESS_KEY,
        secret_key=SECRET,
        region="us-east-1",
        now=NOW,
    )
    assert "Authorization" not in signed
    assert "X-Amz-Date" not in signed
    assert signed["Host"] == "given.example"
    assert "host;" in signed["authorization"]


# -- parsing and verification errors ---------------------------------------


def _header_auth(**overrides: str) -> dict[str, str]:
    headers = {
        "Host": "h",
        "x-amz-date": "20260102T030405Z",
        "x-amz-content-sha256": EMPTY_SHA256,
        "Authorization": (
            f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20260102/us-east-1/s3/"
            "aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
            f"Signature={'0' * 64}"
        ),
    }
    headers.update(overrides)
    return headers


def _parse_error(headers: Mapping[str, str], query: list[tuple[str, str]]) -> S3Error:
    with pytest.raises(S3Error) as caught:
        parse_authorization("GET", headers, query)
    return caught.value


def test_parse_anonymous_request() -> None:
    assert parse_authorization("GET", {"Host": "h"}, [("prefix", "a")]) is None


def test_parse_header_authorization_fields() -> None:
    auth = parse_authorization("GET", _header_auth(), [])
    assert auth == Authorization(
        access_key_id=ACCESS_KEY,
        date=NOW,
        credential_date="20260102",
        region="us-east-1",
        service="s3",
        signed_headers=("host", "x-amz-content-sha256", "x-amz-date"),
        signature="0" * 64,
        payload_hash=EMPTY_SHA256,
        presigned=False,
        expires=None,
    )


def test_parse_missing_content_sha256() -> None:
    headers = _header_auth()
    del headers["x-amz-content-sha256"]
    error = _parse_error(headers, [])
    assert error.code == "InvalidRequest"
    assert "x-amz-content-sha256" in error.message


@pytest.mark.parametrize(
    "value", ["STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", "abc", "UNSIGNED", "0" * 63]
)
def test_parse_unknown_content_sha256(value: str) -> None:
    error = _parse_error(_header_auth(**{"x-amz-content-sha256": value}), [])
    assert error.code == "InvalidArgument"


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        (EMPTY_SHA256, PayloadMode.LITERAL),
        (EMPTY_SHA256.upper(), PayloadMode.LITERAL),
        ("UNSIGNED-PAYLOAD", PayloadMode.UNSIGNED),
        ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", PayloadMode.STREAMING_SIGNED),
        (
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
            PayloadMode.STREAMING_SIGNED_TRAILER,
        ),
        ("STREAMING-UNSIGNED-PAYLOAD-TRAILER", PayloadMode.STREAMING_UNSIGNED_TRAILER),
    ],
)
def test_payload_mode_classification(value: str, mode: PayloadMode) -> None:
    auth = parse_authorization(
        "PUT", _header_auth(**{"x-amz-content-sha256": value}), []
    )
    assert auth is not None
    assert payload_mode(auth) is mode
    assert payload_mode({"X-Amz-Content-Sha256": value}) is mode


def test_payload_mode_ignores_content_encoding() -> None:
    headers = {"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"}
    assert payload_mode(headers) is PayloadMode.STREAMING_SIGNED
    assert payload_mode({"Content-Encoding": "aws-chunked"}) is PayloadMode.UNSIGNED


def test_payload_mode_properties() -> None:
    assert PayloadMode.STREAMING_UNSIGNED_TRAILER.is_streaming
    assert not PayloadMode.STREAMING_UNSIGNED_TRAILER.has_chunk_signatures
    assert PayloadMode.STREAMING_SIGNED_TRAILER.has_trailer
    assert not PayloadMode.STREAMING_SIGNED.has_trailer
    assert not PayloadMode.LITERAL.is_streaming


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        ("AWS AKID:c2lnbmF0dXJl", "InvalidRequest"),
        ("AWS4-ECDSA-P256-SHA256 Credential=x", "InvalidArgument"),
        ("Bearer token", "InvalidArgument"),
        ("AWS4-HMAC-SHA256", "AuthorizationHeaderMalformed"),
        (
            "AWS4-HMAC-SHA256 Credential=A/20260102/us-east-1/s3/aws4_request, "
            f"SignedHeaders=host, Signature={'0' * 64}, Extra=1",
            "AuthorizationHeaderMalformed",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=A/20260102/us-east-1/s3, "
            f"SignedHeaders=host, Signature={'0' * 64}",
            "AuthorizationHeaderMalformed",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=A/20260102/us-east-1/s3/aws5_request, "
            f"SignedHeaders=host, Signature={'0' * 64}",
            "AuthorizationHeaderMalformed",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=A/20260102/us-east-1/s3/aws4_request, "
            f"SignedHeaders=Host, Signature={'0' * 64}",
            "AuthorizationHeaderMalformed",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=A/20260102/us-east-1/s3/aws4_request, "
            f"SignedHeaders=host;;x, Signature={'0' * 64}",
            "AuthorizationHeaderMalformed",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=A/20260102/us-east-1/s3/aws4_request, "
            f"SignedHeaders=host, Signature={'0' * 63}G",
            "AuthorizationHeaderMalformed",
        ),
    ],
)
def test_parse_malformed_authorization(authorization: str, code: str) -> None:
    error = _parse_error(_header_auth(Authorization=authorization), [])
    assert error.code == code


def test_parse_sigv2_query_rejected() -> None:
    query = [("AWSAccessKeyId", "A"), ("Signature", "x"), ("Expires", "1")]
    assert _parse_error({}, query).code == "InvalidRequest"


def test_parse_both_mechanisms_rejected() -> None:
    error = _parse_error(_header_auth(), [("X-Amz-Algorithm", "AWS4-HMAC-SHA256")])
    assert error.code == "InvalidArgument"


def test_parse_presigned_missing_parameter() -> None:
    query = [("X-Amz-Algorithm", "AWS4-HMAC-SHA256"), ("X-Amz-Signature", "0" * 64)]
    assert _parse_error({}, query).code == "AuthorizationQueryParametersError"


def test_parse_presigned_wrong_algorithm() -> None:
    client = _boto3_client()
    wire = _presigned_wire(client, "get_object", {"Bucket": "b", "Key": "k"}, 60)
    client.close()
    query = [
        (n, "AWS4-HMAC-SHA512" if n == "X-Amz-Algorithm" else v) for n, v in wire.query
    ]
    assert _parse_error({}, query).code == "AuthorizationQueryParametersError"


@pytest.mark.parametrize("date", ["20260102T030405", "2026-01-02T03:04:05Z", ""])
def test_parse_invalid_amz_date(date: str) -> None:
    error = _parse_error(_header_auth(**{"x-amz-date": date}), [])
    assert error.code == "AccessDenied"
    assert error.status == 403


def test_parse_date_header_fallback() -> None:
    headers = _header_auth()
    del headers["x-amz-date"]
    headers["Date"] = "Fri, 02 Jan 2026 03:04:05 GMT"
    auth = parse_authorization("GET", headers, [])
    assert auth is not None
    assert auth.date == NOW
    del headers["Date"]
    assert _parse_error(headers, []).code == "AccessDenied"


def _verify_error(
    headers: Mapping[str, str], query: list[tuple[str, str]] | None = None
) -> S3Error:
    auth = parse_authorization("GET", headers, query or [])
    assert auth is not None
    with pytest.raises(S3Error) as caught:
        verify(
            auth,
            method="GET",
            raw_path="/",
            query=query or [],
            headers=headers,
            secret_key=SECRET,
            now=NOW,
        )
    return caught.value


def test_verify_wrong_service() -> None:
    authorization = _header_auth()["Authorization"].replace("/s3/", "/ec2/")
    error = _verify_error(_header_auth(Authorization=authorization))
    assert error.code == "AuthorizationHeaderMalformed"
    assert '"ec2"' in error.message


def test_verify_credential_date_mismatch() -> None:
    authorization = _header_auth()["Authorization"].replace("20260102", "20260101")
    error = _verify_error(_header_auth(Authorization=authorization))
    assert error.code == "AuthorizationHeaderMalformed"


def test_verify_host_must_be_signed() -> None:
    authorization = _header_auth()["Authorization"].replace("host;", "")
    error = _verify_error(_header_auth(Authorization=authorization))
    assert error.code == "AuthorizationHeaderMalformed"


def test_verify_date_header_must_be_signed() -> None:
    headers = _header_auth()
    del headers["x-amz-date"]
    headers["Date"] = "Fri, 02 Jan 2026 03:04:05 GMT"
    headers["Authorization"] = headers["Authorization"].replace(";x-amz-date", "")
    assert _verify_error(headers).code == "AuthorizationHeaderMalformed"


def test_verify_mismatch_hides_secret() -> None:
    error = _verify_error(_header_auth())
    assert error.code == "SignatureDoesNotMatch"
    assert error.status == 403
    assert SECRET not in error.message
    assert SECRET not in str(error)


def test_signing_context_repr_hides_key() -> None:
    context = SigningContext(b"\x01" * 32, "s" * 64, "scope", "date")
    assert "signing_key" not in repr(context)


# -- canonical forms -------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", "/"),
        ("/", "/"),
        ("/a b", "/a%20b"),
        ("/a%20b", "/a%20b"),
        ("/a+b", "/a%2Bb"),
        ("/a%2Bb", "/a%2Bb"),
        ("/a%2bb", "/a%2Bb"),
        ("/a~b%7E", "/a~b~"),
        ("/a%2Fb/c", "/a%2Fb/c"),
        ("/test$file.text", "/test%24file.text"),
        ("/\u00fc", "/%C3%BC"),
        ("/%FF%00", "/%FF%00"),
        ("/\udcff", "/%FF"),
        ("//a/./b/../", "//a/./b/../"),
        ("/k?ignored=1", "/k"),
    ],
)
def test_canonical_uri_s3_rules(raw: str, expected: str) -> None:
    assert canonical_uri(raw) == expected


@pytest.mark.parametrize("raw", ["/a%", "/a%2", "/a%zz"])
def test_canonical_uri_invalid_escape(raw: str) -> None:
    with pytest.raises(S3Error) as caught:
        canonical_uri(raw)
    assert caught.value.code == "InvalidURI"


@pytest.mark.parametrize(
    ("raw", "pairs"),
    [
        ("", []),
        ("lifecycle", [("lifecycle", "")]),
        ("a=1&&b=", [("a", "1"), ("b", "")]),
        ("a+b=c%2Bd", [("a b", "c+d")]),
        ("x=%E2%82%AC&x=%FF", [("x", "\u20ac"), ("x", "\udcff")]),
        ("k=a=b", [("k", "a=b")]),
    ],
)
def test_parse_query_decodes_pairs(raw: str, pairs: list[tuple[str, str]]) -> None:
    assert parse_query(raw) == pairs


def test_canonical_query_sorts_encoded_pairs() -> None:
    pairs = [("b", "2"), ("a", "z"), ("a", "y"), ("A", "1"), ("\u00fc", " ~+")]
    expected = "%C3%BC=%20~%2B&A=1&a=y&a=z&b=2"
    assert canonical_query(pairs) == expected


def test_canonical_header_value_trims_and_joins() -> None:
    assert canonical_header_value(["  a   b  ", "c\t\td"]) == "a b,c d"


# -- through a real HTTP server on 127.0.0.1 -------------------------------


@dataclass
class LoopbackServer:
    url: str
    outcomes: list[str]


@pytest.fixture
def loopback() -> Iterator[LoopbackServer]:
    """An aiohttp server that verifies each request and records the outcome."""
    outcomes: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        query = parse_query(request.rel_url.raw_query_string)
        await request.read()
        try:
            auth = parse_authorization(request.method, request.headers, query)
            assert auth is not None
            verify(
                auth,
                method=request.method,
                raw_path=request.raw_path,
                query=query,
                headers=request.headers,
                secret_key=SECRET,
                now=datetime.now(UTC),
            )
        except S3Error as error:
            outcomes.append(error.code)
            return web.Response(status=error.status, body=error.to_xml("test"))
        outcomes.append("ok")
        # botocore reads a PUT response body as XML, so only GET gets one.
        return web.Response(body=b"0123456789" if request.method == "GET" else b"")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(app, access_log=None)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return int(runner.addresses[0][1])

    port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    yield LoopbackServer(f"http://127.0.0.1:{port}", outcomes)
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=30)
    loop.close()


def _loopback_client(server: LoopbackServer) -> Any:
    session = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET
    )
    config = Config(signature_version="s3v4", retries={"total_max_attempts": 1})
    return session.client(
        "s3", endpoint_url=server.url, region_name="us-east-1", config=config
    )


def test_loopback_boto3_requests_verify(loopback: LoopbackServer) -> None:
    client = _loopback_client(loopback)

    def add_unicode_metadata(params: dict[str, Any], **_: Any) -> None:
        params["headers"]["x-amz-meta-unicode"] = "caf\u00e9 \u65e5"

    client.meta.events.register("before-call.s3.PutObject", add_unicode_metadata)
    for key in SPECIAL_KEYS:
        client.put_object(Bucket="bkt", Key=key, Body=b"0123456789")
        client.get_object(Bucket="bkt", Key=key, Range="bytes=0-9")["Body"].read()
    client.close()
    assert loopback.outcomes == ["ok"] * (2 * len(SPECIAL_KEYS))


def test_loopback_presigned_urls_verify(loopback: LoopbackServer) -> None:
    client = _loopback_client(loopback)
    for key in SPECIAL_KEYS:
        url = client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": "bkt",
                "Key": key,
                "ResponseContentDisposition": "inline; filename=a+b c",
            },
            ExpiresIn=300,
        )
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.read() == b"0123456789"
    client.close()
    assert loopback.outcomes == ["ok"] * len(SPECIAL_KEYS)


def test_loopback_wrong_secret_rejected(loopback: LoopbackServer) -> None:
    session = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET + "x"
    )
    config = Config(signature_version="s3v4", retries={"total_max_attempts": 1})
    client = session.client(
        "s3", endpoint_url=loopback.url, region_name="us-east-1", config=config
    )
    with pytest.raises(botocore.exceptions.ClientError):
        client.get_object(Bucket="bkt", Key="k")
    client.close()
    assert loopback.outcomes == ["SignatureDoesNotMatch"]

"""Tests for the aws-chunked decoder: published vectors, botocore bodies,
tampering, truncation, and arbitrary input."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import itertools
import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import boto3
import pytest
from botocore import httpchecksum
from botocore.config import Config
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.checksums import Checksum
from proxy.chunked import (
    MAX_CHUNK_SIZE,
    MAX_LINE,
    ChunkedDecoder,
    declared_trailers,
    decoded_content_length,
    verify_trailer_checksum,
)
from proxy.errors import S3Error
from proxy.sigv4 import (
    PayloadMode,
    SigningContext,
    parse_authorization,
    parse_query,
    payload_mode,
    verify,
)
from proxy.sigv4_canonical import signing_key

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

# The streaming PUT example of the S3 SigV4 documentation ("Signature
# Calculations for the Authorization Header: Transferring Payload in Multiple
# Chunks"): 65,536 + 1,024 bytes of "a" under credentials AKIAIOSFODNN7EXAMPLE.
DOCS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOCS_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
DOCS_CHUNK_SIGNATURES = (
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
)
DOCS_PAYLOAD = b"a" * 66560
DOCS_BODY = (
    f"10000;chunk-signature={DOCS_CHUNK_SIGNATURES[0]}\r\n".encode()
    + b"a" * 65536
    + f"\r\n400;chunk-signature={DOCS_CHUNK_SIGNATURES[1]}\r\n".encode()
    + b"a" * 1024
    + f"\r\n0;chunk-signature={DOCS_CHUNK_SIGNATURES[2]}\r\n\r\n".encode()
)
DOCS_HEADERS = {
    "Host": "s3.amazonaws.com",
    "Content-Encoding": "aws-chunked",
    "Content-Length": "66824",
    "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    "x-amz-date": "20130524T000000Z",
    "x-amz-decoded-content-length": "66560",
    "x-amz-storage-class": "REDUCED_REDUNDANCY",
    "Authorization": (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
        "aws4_request,SignedHeaders=content-encoding;content-length;host;"
        "x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;"
        f"x-amz-storage-class,Signature={DOCS_SEED}"
    ),
}
DOCS_CONTEXT = SigningContext(
    signing_key(DOCS_SECRET, "20130524", "us-east-1", "s3"),
    DOCS_SEED,
    "20130524/us-east-1/s3/aws4_request",
    "20130524T000000Z",
)
# The trailing-headers vector of AWS's C signer (aws-c-auth,
# sigv4_trailing_headers_signing_test): the documentation example's chunks,
# then trailers first:1st, second:2nd and third:3rd signed after the final
# chunk.
DOCS_TRAILERS = {"first": "1st", "second": "2nd", "third": "3rd"}
DOCS_TRAILER_SIGNATURE = (
    "df5735bd9f3295cd9386572292562fefc93ba94e80a0a1ddcbd652c4e0a75e6c"
)

ACCESS_KEY = "AKIDCHUNKED"
SECRET = "chunked/secret"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CONTEXT = SigningContext(
    signing_key(SECRET, "20260102", "us-east-1", "s3"),
    "1" * 64,
    "20260102/us-east-1/s3/aws4_request",
    "20260102T030405Z",
)
SIGNED_MODES = [PayloadMode.STREAMING_SIGNED, PayloadMode.STREAMING_SIGNED_TRAILER]


# -- an independent encoder for test bodies --------------------------------


def _hmac_hex(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def _chunk_signature(context: SigningContext, previous: str, data: bytes) -> str:
    message = "\n".join(
        [
            "AWS4-HMAC-SHA256-PAYLOAD",
            context.amz_date,
            context.scope,
            previous,
            EMPTY_SHA256,
            hashlib.sha256(data).hexdigest(),
        ]
    )
    return _hmac_hex(context.signing_key, message)


def _trailer_signature(
    context: SigningContext, previous: str, trailers: dict[str, str]
) -> str:
    canonical = "".join(f"{name}:{trailers[name]}\n" for name in sorted(trailers))
    message = "\n".join(
        [
            "AWS4-HMAC-SHA256-TRAILER",
            context.amz_date,
            context.scope,
            previous,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    return _hmac_hex(context.signing_key, message)


def _signed_body(
    chunks: Sequence[bytes],
    trailers: dict[str, str] | None = None,
    context: SigningContext = CONTEXT,
) -> bytes:
    """Encode chunks (and trailers) as a signed aws-chunked body."""
    out = bytearray()
    previous = context.seed_signature
    for data in [*chunks, b""]:
        previous = _chunk_signature(context, previous, data)
        out += f"{len(data):x};chunk-signature={previous}\r\n".encode()
        if data or trailers is None:
            out += data + b"\r\n"
    if trailers is not None:
        for name, value in trailers.items():
            out += f"{name}:{value}\r\n".encode()
        signature = _trailer_signature(context, previous, trailers)
        out += f"x-amz-trailer-signature:{signature}\r\n\r\n".encode()
    return bytes(out)


def _unsigned_body(chunks: Sequence[bytes], trailers: dict[str, str]) -> bytes:
    out = bytearray()
    for data in chunks:
        out += f"{len(data):x}\r\n".encode() + data + b"\r\n"
    out += b"0\r\n"
    for name, value in trailers.items():
        out += f"{name}:{value}\r\n".encode()
    return bytes(out + b"\r\n")


def _decoder(
    mode: PayloadMode = PayloadMode.STREAMING_SIGNED,
    *,
    context: SigningContext | None = CONTEXT,
    trailers: Sequence[str] = (),
    length: int | None = None,
) -> ChunkedDecoder:
    return ChunkedDecoder(
        mode, context=context, trailer_names=list(trailers), decoded_length=length
    )


def _decode(
    decoder: ChunkedDecoder, pieces: Sequence[bytes]
) -> tuple[bytes, dict[str, str]]:
    out = bytearray()
    for piece in pieces:
        for part in decoder.feed(piece):
            out += part
    return bytes(out), decoder.finish()


def _decode_error(decoder: ChunkedDecoder, body: bytes) -> S3Error:
    with pytest.raises(S3Error) as caught:
        _decode(decoder, [body])
    return caught.value


def _docs_decoder(
    mode: PayloadMode = PayloadMode.STREAMING_SIGNED,
    trailers: Sequence[str] = (),
) -> ChunkedDecoder:
    return _decoder(mode, context=DOCS_CONTEXT, trailers=trailers, length=66560)


def _docs_trailer_body() -> bytes:
    body = DOCS_BODY.removesuffix(b"\r\n")
    for name, value in DOCS_TRAILERS.items():
        body += f"{name}:{value}\r\n".encode()
    return body + f"x-amz-trailer-signature:{DOCS_TRAILER_SIGNATURE}\r\n\r\n".encode()


# -- published vectors -----------------------------------------------------


def test_decoder_docs_example_end_to_end() -> None:
    headers = CIMultiDictProxy(CIMultiDict(DOCS_HEADERS))
    auth = parse_authorization("PUT", headers, [])
    assert auth is not None
    context = verify(
        auth,
        method="PUT",
        raw_path="/examplebucket/chunkObject.txt",
        query=[],
        headers=headers,
        secret_key=DOCS_SECRET,
        now=datetime(2013, 5, 24, tzinfo=UTC),
    )
    assert len(DOCS_BODY) == int(headers["Content-Length"])
    decoder = ChunkedDecoder(
        payload_mode(auth),
        context=context,
        trailer_names=declared_trailers(headers),
        decoded_length=decoded_content_length(headers),
    )
    payload, trailers = _decode(decoder, [DOCS_BODY])
    assert payload == DOCS_PAYLOAD
    assert trailers == {}


def test_decoder_docs_example_one_byte_pieces() -> None:
    pieces = [DOCS_BODY[i : i + 1] for i in range(len(DOCS_BODY))]
    payload, _ = _decode(_docs_decoder(), pieces)
    assert payload == DOCS_PAYLOAD


@settings(max_examples=50, deadline=None)
@given(cuts=st.lists(st.integers(0, len(DOCS_BODY)), max_size=40))
def test_decoder_docs_example_random_splits(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(DOCS_BODY)]
    pieces = [DOCS_BODY[a:b] for a, b in itertools.pairwise(points)]
    payload, trailers = _decode(_docs_decoder(), pieces)
    assert payload == DOCS_PAYLOAD
    assert trailers == {}


def test_decoder_releases_verified_chunks_only() -> None:
    decoder = _docs_decoder()
    released: list[tuple[int, int]] = []
    for offset in range(len(DOCS_BODY)):
        pieces = decoder.feed(DOCS_BODY[offset : offset + 1])
        size = sum(len(piece) for piece in pieces)
        if size:
            released.append((offset, size))
    decoder.finish()
    first_end = DOCS_BODY.index(b"a" * 65536) + 65536 - 1
    second_end = DOCS_BODY.rindex(b"a" * 1024) + 1024 - 1
    assert released == [(first_end, 65536), (second_end, 1024)]


def test_decoder_signed_trailer_vector() -> None:
    decoder = _docs_decoder(PayloadMode.STREAMING_SIGNED_TRAILER, list(DOCS_TRAILERS))
    payload, trailers = _decode(decoder, [_docs_trailer_body()])
    assert payload == DOCS_PAYLOAD
    assert trailers == DOCS_TRAILERS


def test_decoder_trailer_vector_tampered() -> None:
    body = _docs_trailer_body().replace(b"second:2nd", b"second:2nD")
    decoder = _docs_decoder(PayloadMode.STREAMING_SIGNED_TRAILER, list(DOCS_TRAILERS))
    assert _decode_error(decoder, body).code == "SignatureDoesNotMatch"


def test_decoder_trailer_vector_unsigned() -> None:
    body = _docs_trailer_body()
    start = body.index(b"x-amz-trailer-signature")
    decoder = _docs_decoder(PayloadMode.STREAMING_SIGNED_TRAILER, list(DOCS_TRAILERS))
    error = _decode_error(decoder, body[:start] + b"\r\n")
    assert error.code == "MalformedTrailerError"


# -- botocore's aws-chunked bodies -----------------------------------------


class _Captured(Exception):
    def __init__(self, request: Any) -> None:
        super().__init__("captured")
        self.request = request


def _frozen_clock(remove_tzinfo: bool = True) -> datetime:
    return NOW.replace(tzinfo=None) if remove_tzinfo else NOW


@contextlib.contextmanager
def _frozen_botocore() -> Iterator[None]:
    with (
        mock.patch("botocore.auth.get_current_datetime", side_effect=_frozen_clock),
        mock.patch("botocore.crt.auth.get_current_datetime", side_effect=_frozen_clock),
    ):
        yield


def _botocore_put(
    algorithm: str, payload: bytes
) -> tuple[Any, bytes, CIMultiDictProxy[str]]:
    """Return the request headers and body botocore sends for an https PUT."""
    session = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET
    )
    client = session.client(
        "s3",
        endpoint_url="https://s3.local.test",
        region_name="us-east-1",
        config=Config(signature_version="s3v4", retries={"total_max_attempts": 1}),
    )

    def stop(request: Any, **_: Any) -> None:
        raise _Captured(request)

    client.meta.events.register_first("before-send.s3", stop)
    with _frozen_botocore(), pytest.raises(_Captured) as caught:
        client.put_object(
            Bucket="bkt",
            Key="chunked key+1",
            Body=io.BytesIO(payload),
            ChecksumAlgorithm=algorithm,
        )
    client.close()
    request = caught.value.request
    body = request.body.read()
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in request.headers.items():
        text = value.decode() if isinstance(value, bytes) else value
        headers.add(name, text)
    return request, body, CIMultiDictProxy(headers)


BOTOCORE_PAYLOAD = random.Random(1).randbytes(1024 * 1024 + 4099)


@pytest.mark.parametrize(
    "algorithm", ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"]
)
def test_decoder_botocore_unsigned_trailer(algorithm: str) -> None:
    request, body, headers = _botocore_put(algorithm, BOTOCORE_PAYLOAD)
    parts = urlsplit(request.url)
    query = parse_query(parts.query)
    auth = parse_authorization(request.method, headers, query)
    assert auth is not None
    context = verify(
        auth,
        method=request.method,
        raw_path=parts.path,
        query=query,
        headers=headers,
        secret_key=SECRET,
        now=NOW,
    )

    mode = payload_mode(auth)
    assert mode is PayloadMode.STREAMING_UNSIGNED_TRAILER
    names = declared_trailers(headers)
    assert names == [f"x-amz-checksum-{algorithm.lower()}"]
    decoder = ChunkedDecoder(
        mode,
        context=context,
        trailer_names=names,
        decoded_length=decoded_content_length(headers),
    )

    checksum = Checksum.new(algorithm)
    out = bytearray()
    for piece in decoder.feed(body):
        checksum.update(piece)
        out += piece
    trailers = decoder.finish()
    assert bytes(out) == BOTOCORE_PAYLOAD
    verify_trailer_checksum(trailers, checksum)


def test_decoder_botocore_tampered_payload() -> None:
    _, body, headers = _botocore_put("CRC32", BOTOCORE_PAYLOAD)
    position = body.index(BOTOCORE_PAYLOAD[100:200]) + 50
    tampered = body[:position] + bytes([body[position] ^ 1]) + body[position + 1 :]
    decoder = _decoder(
        PayloadMode.STREAMING_UNSIGNED_TRAILER,
        context=None,
        trailers=declared_trailers(headers),
        length=len(BOTOCORE_PAYLOAD),
    )
    checksum = Checksum.new("crc32")
    for piece in decoder.feed(tampered):
        checksum.update(piece)
    with pytest.raises(S3Error) as caught:
        verify_trailer_checksum(decoder.finish(), checksum)
    assert caught.value.code == "BadDigest"


WRAPPER_CLASSES = {
    "crc32": httpchecksum.Crc32Checksum,
    "crc32c": httpchecksum.CrtCrc32cChecksum,
    "crc64nvme": httpchecksum.CrtCrc64NvmeChecksum,
    "sha1": httpchecksum.Sha1Checksum,
    "sha256": httpchecksum.Sha256Checksum,
    "sha512": httpchecksum.Sha512Checksum,
    "xxhash64": httpchecksum.CrtXxhash64Checksum,
    "xxhash3": httpchecksum.CrtXxhash3Checksum,
    "xxhash128": httpchecksum.CrtXxhash128Checksum,
}


@pytest.mark.parametrize("algorithm", WRAPPER_CLASSES)
@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 5000])
def test_decoder_botocore_chunked_wrapper(algorithm: str, size: int) -> None:
    payload = random.Random(size).randbytes(size)
    name = f"x-amz-checksum-{algorithm}"
    wrapper = httpchecksum.AwsChunkedWrapper(
        io.BytesIO(payload),
        checksum_cls=WRAPPER_CLASSES[algorithm],
        checksum_name=name,
        chunk_size=1000,
    )
    body = wrapper.read()
    decoder = _decoder(
        PayloadMode.STREAMING_UNSIGNED_TRAILER, trailers=[name], length=size
    )
    checksum = Checksum.new(algorithm)
    pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
    out = bytearray()
    for piece in pieces:
        for part in decoder.feed(piece):
            checksum.update(part)
            out += part
    trailers = decoder.finish()
    assert bytes(out) == payload
    assert set(trailers) == {name}
    verify_trailer_checksum(trailers, checksum)


# -- signed bodies: round trip and tampering -------------------------------


@pytest.mark.parametrize("mode", SIGNED_MODES)
@pytest.mark.parametrize(
    "chunks", [[], [b"x"], [b"a" * 8192, b"b" * 10], [b"\r\n" * 100, b"\n", b"\r"]]
)
def test_decoder_signed_round_trip(mode: PayloadMode, chunks: list[bytes]) -> None:
    trailers = {"x-amz-checksum-crc32": "AAAAAA=="} if mode.has_trailer else None
    body = _signed_body(chunks, trailers)
    decoder = _decoder(
        mode, trailers=list(trailers or ()), length=sum(map(len, chunks))
    )
    payload, received = _decode(decoder, [body])
    assert payload == b"".join(chunks)
    assert received == (trailers or {})


def _docs_error(body: bytes, length: int | None = 66560) -> S3Error:
    decoder = _decoder(context=DOCS_CONTEXT, length=length)
    return _decode_error(decoder, body)


def test_decoder_tampered_chunk_data() -> None:
    position = DOCS_BODY.index(b"a" * 100) + 50
    body = DOCS_BODY[:position] + b"b" + DOCS_BODY[position + 1 :]
    assert _docs_error(body).code == "SignatureDoesNotMatch"


@pytest.mark.parametrize("index", range(3))
def test_decoder_tampered_chunk_signature(index: int) -> None:
    original = DOCS_CHUNK_SIGNATURES[index]
    changed = original[:10] + ("0" if original[10] != "0" else "1") + original[11:]
    body = DOCS_BODY.replace(original.encode(), changed.encode())
    assert _docs_error(body).code == "SignatureDoesNotMatch"


def test_decoder_uppercase_chunk_signature() -> None:
    original = DOCS_CHUNK_SIGNATURES[0]
    body = DOCS_BODY.replace(original.encode(), original.upper().encode())
    assert _docs_error(body).code == "SignatureDoesNotMatch"


def test_decoder_tampered_size_line() -> None:
    body = DOCS_BODY.replace(b"10000;", b"0ffff;", 1)
    assert _docs_error(body).code == "SignatureDoesNotMatch"


def test_decoder_swapped_chunks() -> None:
    first = DOCS_BODY.index(b"400;")
    final = DOCS_BODY.index(b"0;chunk-signature=" + DOCS_CHUNK_SIGNATURES[2].encode())
    swapped = DOCS_BODY[first:final] + DOCS_BODY[:first] + DOCS_BODY[final:]
    assert _docs_error(swapped).code == "SignatureDoesNotMatch"


def test_decoder_dropped_chunk() -> None:
    first = DOCS_BODY.index(b"400;")
    assert _docs_error(DOCS_BODY[first:], length=None).code == "SignatureDoesNotMatch"


def test_decoder_missing_final_chunk() -> None:
    final = DOCS_BODY.index(b"0;chunk-signature=" + DOCS_CHUNK_SIGNATURES[2].encode())
    error = _docs_error(DOCS_BODY[:final])
    assert error.code == "IncompleteBody"


def test_decoder_bytes_after_end() -> None:
    error = _docs_error(DOCS_BODY + b"0")
    assert error.code == "InvalidRequest"


def test_decoder_missing_crlf_after_data() -> None:
    body = DOCS_BODY.replace(b"a\r\n400;", b"a400;", 1)
    assert _docs_error(body).code == "InvalidRequest"


def test_decoder_bare_lf_line_endings() -> None:
    body = DOCS_BODY.replace(b"\r\n", b"\n")
    assert _docs_error(body).code == "InvalidRequest"


def test_decoder_missing_chunk_signature() -> None:
    body = _unsigned_body([b"abc"], {})
    assert _decode_error(_decoder(), body).code == "InvalidRequest"


@pytest.mark.parametrize("line", [b"zz", b"-1", b" 10", b"10 ", b"0x10", b""])
def test_decoder_malformed_size_line(line: bytes) -> None:
    body = line + b";chunk-signature=" + b"0" * 64 + b"\r\n"
    assert _decode_error(_decoder(), body).code == "InvalidRequest"


def test_decoder_overlong_line() -> None:
    body = b"1" + b"0" * MAX_LINE + b"\r\n"
    decoder = _decoder(PayloadMode.STREAMING_UNSIGNED_TRAILER)
    assert _decode_error(decoder, body).code == "InvalidRequest"


def test_decoder_overlong_line_without_newline() -> None:
    decoder = _decoder(PayloadMode.STREAMING_UNSIGNED_TRAILER)
    with pytest.raises(S3Error) as caught:
        for _ in range(MAX_LINE):
            decoder.feed(b"0")
    assert caught.value.code == "InvalidRequest"


def test_decoder_chunk_too_large() -> None:
    line = f"{MAX_CHUNK_SIZE + 1:x}\r\n".encode()
    decoder = _decoder(PayloadMode.STREAMING_UNSIGNED_TRAILER)
    assert _decode_error(decoder, line).code == "InvalidChunkSizeError"


def test_decoder_largest_chunk_accepted() -> None:
    data = b"z" * MAX_CHUNK_SIZE
    body = _unsigned_body([data], {})
    decoder = _decoder(PayloadMode.STREAMING_UNSIGNED_TRAILER)
    payload, _ = _decode(decoder, [body])
    assert len(payload) == MAX_CHUNK_SIZE


@pytest.mark.parametrize("cut", range(0, len(DOCS_BODY), 997))
def test_decoder_truncated_body(cut: int) -> None:
    decoder = _docs_decoder()
    decoder.feed(DOCS_BODY[:cut])
    with pytest.raises(S3Error) as caught:
        decoder.finish()
    assert caught.value.code == "IncompleteBody"


def test_decoder_truncated_before_last_crlf() -> None:
    decoder = _docs_decoder()
    decoder.feed(DOCS_BODY[:-1])
    with pytest.raises(S3Error) as caught:
        decoder.finish()
    assert caught.value.code == "IncompleteBody"


def test_decoder_declared_length_too_large() -> None:
    assert _docs_error(DOCS_BODY, length=66561).code == "IncompleteBody"


def test_decoder_declared_length_too_small() -> None:
    assert _docs_error(DOCS_BODY, length=66559).code == "InvalidRequest"


def test_decoder_error_is_sticky() -> None:
    decoder = _docs_decoder()
    with pytest.raises(S3Error) as first:
        decoder.feed(DOCS_BODY.replace(b"a", b"b", 1))
    with pytest.raises(S3Error) as again:
        decoder.feed(b"")
    assert again.value is first.value
    with pytest.raises(S3Error) as at_finish:
        decoder.finish()
    assert at_finish.value is first.value


def test_decoder_feed_after_finish() -> None:
    decoder = _docs_decoder()
    _decode(decoder, [DOCS_BODY])
    with pytest.raises(ValueError, match="finished"):
        decoder.feed(b"")


def test_decoder_framing_byte_changes() -> None:
    data_ranges = [
        (start, start + size)
        for start, size in (
            (DOCS_BODY.index(b"a" * 65536), 65536),
            (DOCS_BODY.rindex(b"a" * 1024), 1024),
        )
    ]
    for position in range(len(DOCS_BODY)):
        if any(start <= position < end for start, end in data_ranges):
            continue
        body = (
            DOCS_BODY[:position]
            + bytes([DOCS_BODY[position] ^ 0x20])
            + DOCS_BODY[position + 1 :]
        )
        with pytest.raises(S3Error):
            _decode(_docs_decoder(), [body])


@settings(max_examples=60, deadline=None)
@given(position=st.integers(0, len(DOCS_BODY) - 1), flip=st.integers(1, 255))
def test_decoder_random_byte_changes(position: int, flip: int) -> None:
    body = (
        DOCS_BODY[:position]
        + bytes([DOCS_BODY[position] ^ flip])
        + DOCS_BODY[position + 1 :]
    )
    with pytest.raises(S3Error):
        _decode(_docs_decoder(), [body])


# -- trailers --------------------------------------------------------------


CRC32_NAME = "x-amz-checksum-crc32"


def _unsigned_decoder(trailers: Sequence[str] = (CRC32_NAME,)) -> ChunkedDecoder:
    return _decoder(
        PayloadMode.STREAMING_UNSIGNED_TRAILER, context=None, trailers=trailers
    )


def test_decoder_unsigned_trailer_returned() -> None:
    body = _unsigned_body([b"hello"], {"X-Amz-Checksum-CRC32": "NhCmhg=="})
    payload, trailers = _decode(_unsigned_decoder(), [body])
    assert payload == b"hello"
    assert trailers == {CRC32_NAME: "NhCmhg=="}


def test_decoder_unsigned_mode_ignores_context() -> None:
    body = _unsigned_body([b"hello"], {CRC32_NAME: "NhCmhg=="})
    decoder = _decoder(PayloadMode.STREAMING_UNSIGNED_TRAILER, trailers=[CRC32_NAME])
    payload, _ = _decode(decoder, [body])
    assert payload == b"hello"


def test_decoder_unsigned_chunk_extension_rejected() -> None:
    body = _signed_body([b"hello"])
    assert _decode_error(_unsigned_decoder(), body).code == "InvalidRequest"


def test_decoder_undeclared_trailer() -> None:
    body = _unsigned_body([b"x"], {CRC32_NAME: "AAAAAA==", "x-amz-meta-a": "b"})
    assert _decode_error(_unsigned_decoder(), body).code == "MalformedTrailerError"


def test_decoder_missing_declared_trailer() -> None:
    body = _unsigned_body([b"x"], {})
    assert _decode_error(_unsigned_decoder(), body).code == "MalformedTrailerError"


def test_decoder_repeated_trailer() -> None:
    body = _unsigned_body([b"x"], {CRC32_NAME: "AAAAAA=="})
    body = body.replace(b"\r\n\r\n", b"\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n")
    assert _decode_error(_unsigned_decoder(), body).code == "MalformedTrailerError"


@pytest.mark.parametrize(
    "line", [b"no colon", b":empty-name", b"bad name:x", b"x-amz-checksum-crc32:\x01"]
)
def test_decoder_malformed_trailer_line(line: bytes) -> None:
    body = b"1\r\nx\r\n0\r\n" + line + b"\r\n\r\n"
    assert _decode_error(_unsigned_decoder(), body).code == "MalformedTrailerError"


def test_decoder_trailer_signature_in_unsigned_mode() -> None:
    body = b"0\r\nx-amz-trailer-signature:" + b"0" * 64 + b"\r\n\r\n"
    error = _decode_error(_unsigned_decoder(()), body)
    assert error.code == "MalformedTrailerError"


def test_decoder_signed_trailer_wrong_signature() -> None:
    trailers = {CRC32_NAME: "AAAAAA=="}
    body = _signed_body([b"data"], trailers)
    body = body.replace(b"x-amz-trailer-signature:", b"x-amz-trailer-signature:0")
    decoder = _decoder(PayloadMode.STREAMING_SIGNED_TRAILER, trailers=[CRC32_NAME])
    assert _decode_error(decoder, body).code == "SignatureDoesNotMatch"


def test_decoder_signed_trailer_after_signature() -> None:
    trailers = {CRC32_NAME: "AAAAAA=="}
    body = _signed_body([b"data"], trailers).removesuffix(b"\r\n")
    body += b"x-amz-meta-late:1\r\n\r\n"
    decoder = _decoder(PayloadMode.STREAMING_SIGNED_TRAILER, trailers=[CRC32_NAME])
    assert _decode_error(decoder, body).code == "MalformedTrailerError"


def test_decoder_trailer_requires_trailer_mode() -> None:
    with pytest.raises(S3Error) as caught:
        _decoder(PayloadMode.STREAMING_SIGNED, trailers=[CRC32_NAME])
    assert caught.value.code == "InvalidRequest"


def test_decoder_rejects_non_streaming_mode() -> None:
    with pytest.raises(ValueError, match="not an aws-chunked"):
        _decoder(PayloadMode.LITERAL)


def test_decoder_signed_mode_needs_context() -> None:
    with pytest.raises(ValueError, match="SigningContext"):
        _decoder(PayloadMode.STREAMING_SIGNED, context=None)


def test_verify_trailer_checksum_missing_trailer() -> None:
    checksum = Checksum.new("crc32")
    with pytest.raises(S3Error) as caught:
        verify_trailer_checksum({}, checksum)
    assert caught.value.code == "MalformedTrailerError"


def test_declared_trailers_parses_header() -> None:
    headers = CIMultiDict({"X-Amz-Trailer": " X-Amz-Checksum-CRC64NVME "})
    assert declared_trailers(headers) == ["x-amz-checksum-crc64nvme"]
    assert declared_trailers({}) == []


@pytest.mark.parametrize(
    "value",
    ["x-amz-meta-a", "x-amz-checksum-md5", "x-amz-checksum-crc32,x-amz-checksum-crc32"],
)
def test_declared_trailers_rejects_unsupported(value: str) -> None:
    with pytest.raises(S3Error) as caught:
        declared_trailers({"x-amz-trailer": value})
    assert caught.value.code == "InvalidRequest"


def test_decoded_content_length_parses_header() -> None:
    assert decoded_content_length({"X-Amz-Decoded-Content-Length": "66560"}) == 66560
    assert decoded_content_length({}) is None


@pytest.mark.parametrize("value", ["-1", "1e3", "", "\u0661"])
def test_decoded_content_length_invalid(value: str) -> None:
    with pytest.raises(S3Error) as caught:
        decoded_content_length({"x-amz-decoded-content-length": value})
    assert caught.value.code == "InvalidArgument"


# -- arbitrary input -------------------------------------------------------


STREAMING_MODES = [mode for mode in PayloadMode if mode.is_streaming]


@pytest.mark.parametrize("mode", STREAMING_MODES)
@settings(max_examples=150, deadline=None)
@given(pieces=st.lists(st.binary(max_size=300), max_size=8))
def test_decoder_arbitrary_bytes(mode: PayloadMode, pieces: list[bytes]) -> None:
    decoder = _decoder(mode, trailers=[CRC32_NAME] if mode.has_trailer else [])
    with contextlib.suppress(S3Error):
        _decode(decoder, pieces)


@pytest.mark.parametrize("mode", STREAMING_MODES)
@settings(max_examples=100, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=200), max_size=5),
    junk=st.binary(max_size=40),
)
def test_decoder_prefix_then_junk(
    mode: PayloadMode, chunks: list[bytes], junk: bytes
) -> None:
    if mode.has_chunk_signatures:
        body = _signed_body(chunks, {} if mode.has_trailer else None)
    else:
        body = _unsigned_body(chunks, {})
    decoder = _decoder(mode)
    with contextlib.suppress(S3Error):
        _decode(decoder, [body[: len(body) // 2], junk])


@settings(max_examples=60, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=300), max_size=6),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
)
def test_decoder_split_points_irrelevant(chunks: list[bytes], cuts: list[int]) -> None:
    body = _signed_body(chunks, {CRC32_NAME: "AAAAAA=="})
    points = [0, *sorted(min(cut, len(body)) for cut in cuts), len(body)]
    pieces = [body[a:b] for a, b in itertools.pairwise(points)]
    decoder = _decoder(PayloadMode.STREAMING_SIGNED_TRAILER, trailers=[CRC32_NAME])
    payload, trailers = _decode(decoder, pieces)
    assert payload == b"".join(chunks)
    assert trailers == {CRC32_NAME: "AAAAAA=="}

"""Reading a POST Object form: the fields before the file, and their checks.

Fields are read up to the `file` part with a cap on their total size, then
checked against the policy. The file size is derived from Content-Length,
as `post_object` explains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, cast

from aiohttp import BodyPartReader, MultipartReader, StreamReader, web
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import BadHttpMessage, ContentLengthError, LineTooLong

from proxy.body import PayloadSigning
from proxy.context import Identity
from proxy.errors import S3Error
from proxy.post_policy import (
    PostPolicy,
    check_fields,
    parse_policy,
)
from proxy.sigv4 import PayloadMode

__all__ = [
    "MAX_OBJECT_SIZE",
    "MAX_PRE_DATA_SIZE",
    "CountingStream",
    "check_form",
    "closing_delimiter",
    "file_size",
    "form_boundary",
    "form_content_length",
    "form_identity",
    "malformed",
    "read_error",
    "read_form",
]

# S3 takes at most 20 KB of form data and boundaries besides the file
# contents, and reports 20480 bytes in MaxPostPreDataLengthExceeded.
MAX_PRE_DATA_SIZE: Final = 20480
# S3 takes objects of up to 5 GB in one PUT (S3 user guide, "Uploading
# objects"), and the proxy applies the same limit to a form upload.
MAX_OBJECT_SIZE: Final = 5 * 1024**3
_FIELD_CHUNK: Final = 4096
_PATH_SEPARATORS: Final = re.compile(r"[/\\]")
_QUOTED_FILENAME: Final = re.compile(r';\s*filename="([^"]*)"', re.IGNORECASE)


class CountingStream:
    """The request body as the multipart reader reads it, with a byte count.

    `consumed` counts the body bytes handed to the reader and not handed
    back. Handed-back bytes stay in this object, because aiohttp deprecates
    `StreamReader.unread_data`. aiohttp 3.14's MultipartReader calls only
    `read`, `readline`, `at_eof` and `unread_data` on its stream.
    """

    def __init__(self, stream: StreamReader) -> None:
        self._stream = stream
        self._pushback = b""
        self.consumed = 0

    def at_eof(self) -> bool:
        return not self._pushback and self._stream.at_eof()

    def unread_data(self, data: bytes) -> None:
        self._pushback = bytes(data) + self._pushback
        self.consumed -= len(data)

    async def read(self, n: int = -1) -> bytes:
        ended = self._stream.at_eof() and self._stream.exception() is None
        if not self._pushback and ended:
            # StreamReader logs a warning with a stack trace on its sixth
            # read at the end, and the part reader reads there once per part.
            return b""
        if not self._pushback:
            data = await self._stream.read(n)
        elif n < 0:
            data = self._pushback + await self._stream.read()
            self._pushback = b""
        else:
            data, self._pushback = self._pushback[:n], self._pushback[n:]
        self.consumed += len(data)
        return data

    async def readline(self, *, max_line_length: int | None = None) -> bytes:
        end = self._pushback.find(b"\n")
        if end >= 0:
            line = self._pushback[: end + 1]
            self._pushback = self._pushback[end + 1 :]
        else:
            rest = await self._stream.readline(max_line_length=max_line_length)
            line, self._pushback = self._pushback + rest, b""
        self.consumed += len(line)
        if max_line_length is not None and len(line) > max_line_length:
            raise LineTooLong(line[:100] + b"...", max_line_length)
        return line


@dataclass
class _Form:
    """The fields before the file part, and the file part if the form has one.

    `fields` maps lower-case names to values, with repeated fields joined by
    commas as S3 joins them.
    """

    fields: dict[str, str]
    file: BodyPartReader | None = None
    filename: str = ""


async def read_form(request: web.Request, stream: CountingStream) -> _Form:
    """Read parts up to and including the headers of the `file` part."""
    values: dict[str, list[str]] = {}
    try:
        # the reader only calls what CountingStream provides
        reader = MultipartReader(request.headers, cast(StreamReader, stream))
        while True:
            part = await reader.next()
            _check_pre_data(stream.consumed)
            if part is None:
                return _Form(_joined(values))
            if not isinstance(part, BodyPartReader) or not part.name:
                raise malformed("every part must be a form field with a name")
            name = part.name.lower()
            if name == "file":
                return _Form(_joined(values), part, _filename(part))
            values.setdefault(name, []).append(await _read_field(part, stream))
    except (ValueError, BadHttpMessage) as error:
        raise read_error(error) from error


async def _read_field(part: BodyPartReader, stream: CountingStream) -> str:
    data = bytearray()
    while not part.at_eof():
        data += await part.read_chunk(_FIELD_CHUNK)
        # The reader holds up to two chunks beyond what it returned, so the
        # exact check waits for the end of the field.
        _check_pre_data(stream.consumed - 2 * _FIELD_CHUNK)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise S3Error(
            "InvalidArgument",
            f"The form field {part.name!r} is not valid UTF-8; send form fields "
            "as UTF-8.",
        ) from None


def _filename(part: BodyPartReader) -> str:
    """Return the file name as the client sent it.

    Browsers send a backslash in a quoted file name as it is (HTML5 encodes
    only `"`, CR and LF), but aiohttp reads it as an escape and would turn
    `C:\\dir\\a.txt` into `C:dira.txt`. So a quoted name is taken from the
    raw header, and aiohttp parses the other forms, such as `filename*=`.
    """
    disposition = part.headers.get("Content-Disposition", "")
    quoted = _QUOTED_FILENAME.search(disposition)
    if quoted is not None:
        return quoted.group(1)
    return part.filename or ""


def _joined(values: dict[str, list[str]]) -> dict[str, str]:
    return {name: ",".join(parts) for name, parts in values.items()}


def _check_pre_data(consumed: int) -> None:
    if consumed > MAX_PRE_DATA_SIZE:
        raise S3Error(
            "MaxPostPreDataLengthExceeded",
            "Your POST request fields preceding the upload file were too large: "
            f"the limit is {MAX_PRE_DATA_SIZE} bytes.",
        )


def form_content_length(request: web.Request) -> int:
    if request.content_length is None:
        raise S3Error(
            "MissingContentLength",
            "A form upload through the proxy needs a Content-Length header, "
            "because the encrypted object's size is derived from it.",
            411,
        )
    return request.content_length


def form_boundary(request: web.Request) -> bytes:
    mimetype = parse_mimetype(request.headers.get("Content-Type", ""))
    boundary = mimetype.parameters.get("boundary", "")
    if not boundary:
        raise malformed("the Content-Type header names no boundary")
    return ("--" + boundary).encode()


def check_form(
    form: _Form, bucket: str
) -> tuple[dict[str, str], PostPolicy, BodyPartReader]:
    """Expand `${filename}`, then check the file, the key and the policy.

    Returns the expanded fields, the policy and the file part.
    """
    if form.file is None:
        raise S3Error(
            "InvalidArgument",
            "POST requires exactly one file upload per request: add a field "
            "named 'file' as the last field of the form.",
        )
    filename = _PATH_SEPARATORS.split(form.filename)[-1]
    fields = {
        name: value.replace("${filename}", filename)
        for name, value in form.fields.items()
    }
    if not fields.get("key"):
        raise S3Error(
            "InvalidArgument",
            "Bucket POST must contain a field named 'key'; put it before the "
            "file field.",
        )
    _check_utf8(fields["key"])
    if any(name.startswith("x-amz-checksum-") for name in fields):
        # TODO: verify x-amz-checksum-* form fields as PutObject verifies
        # the headers of the same names.
        raise S3Error(
            "NotImplemented",
            "The proxy does not check x-amz-checksum-* form fields; send "
            "Content-MD5 instead.",
            501,
        )
    policy = parse_policy(fields["policy"])
    check_fields(policy, fields, bucket=bucket, now=datetime.now(UTC))
    return fields, policy, form.file


def _check_utf8(key: str) -> None:
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise S3Error(
            "InvalidArgument",
            "The object key is not valid UTF-8; send the file name as UTF-8.",
        ) from None


def file_size(content_length: int, consumed: int, boundary: bytes) -> int:
    """Derive the file size, assuming the closing delimiter ends the body."""
    size = content_length - consumed - len(closing_delimiter(boundary))
    if size < 0:
        raise malformed("the body ends before the file field does")
    if size > MAX_OBJECT_SIZE:
        raise S3Error(
            "EntityTooLarge",
            "Your proposed upload exceeds the maximum allowed size: "
            f"{size} bytes, and S3 objects are at most {MAX_OBJECT_SIZE}.",
        )
    return size


def closing_delimiter(boundary: bytes) -> bytes:
    return b"\r\n" + boundary + b"--\r\n"


def malformed(detail: str) -> S3Error:
    return S3Error(
        "MalformedPOSTRequest",
        f"The body of your POST request is not well-formed multipart/form-data: "
        f"{detail}.",
    )


def read_error(error: Exception) -> S3Error:
    if isinstance(error, ContentLengthError):
        return S3Error(
            "IncompleteBody",
            "You did not provide the number of bytes specified by the "
            "Content-Length HTTP header",
        )
    return malformed(str(error) or type(error).__name__)


def form_identity(org_id: bytes, access_key_id: str) -> Identity:
    """Build the Identity of a form upload's S3Request.

    A form's signature covers its policy and never the body, so the body
    counts as unsigned.
    """
    return Identity(org_id, access_key_id, PayloadSigning(PayloadMode.UNSIGNED))

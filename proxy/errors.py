"""S3 errors: one exception class, rendered as S3 XML at the HTTP boundary."""

from __future__ import annotations

from xml.sax.saxutils import escape

__all__ = ["S3Error", "object_changed"]


class S3Error(Exception):
    """An error returned to the client as S3 XML.

    `code` is the S3 error code (`NoSuchKey`, `SignatureDoesNotMatch`, ...),
    `status` the HTTP status. The message is for the client, so it never
    contains a secret, a key or plaintext.
    """

    def __init__(
        self,
        code: str,
        message: str,
        status: int = 400,
        *,
        resource: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.resource = resource
        self.headers = headers or {}

    def to_xml(self, request_id: str) -> bytes:
        """Render the S3 `<Error>` document."""
        parts = [
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error>',
            f"<Code>{escape(self.code)}</Code>",
            f"<Message>{escape(self.message)}</Message>",
        ]
        if self.resource:
            parts.append(f"<Resource>{escape(self.resource)}</Resource>")
        parts.append(f"<RequestId>{escape(request_id)}</RequestId></Error>")
        return "".join(parts).encode()


def object_changed() -> S3Error:
    """Return the error for an object replaced while the proxy was reading it."""
    return S3Error(
        "InternalError", "The object changed while it was being read; retry", 500
    )

"""Request handler inputs: the services and the authenticated request."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from multidict import MultiMapping

from crypto.keyring import KeyRing
from proxy.addressing import Target
from proxy.body import PayloadSigning
from proxy.catalogue import Catalogue
from proxy.keys import KeyServices
from proxy.settings import Settings
from proxy.upstream import Upstream

__all__ = ["SERVICES", "Identity", "S3Request", "Services"]


@dataclass(frozen=True)
class Services:
    """Long-lived objects created and closed with the application."""

    settings: Settings
    keyring: KeyRing
    catalogue: Catalogue
    upstream: Upstream
    keys: KeyServices


SERVICES = web.AppKey("services", Services)


@dataclass(frozen=True)
class Identity:
    """The organisation whose credentials signed the request.

    `payload` describes what the signature covers of the body, which SigV4
    and SigV2 requests sign differently.
    """

    org_id: bytes
    access_key_id: str
    payload: PayloadSigning


@dataclass(frozen=True)
class S3Request:
    """One authenticated S3 request, as the handlers see it."""

    http: web.Request
    services: Services
    identity: Identity
    target: Target
    query: MultiMapping[str]
    request_id: str

    @property
    def bucket(self) -> str:
        """The addressed bucket, or "" for service-level requests."""
        return self.target.bucket

    @property
    def key(self) -> str:
        """The addressed object key, or "" for bucket-level requests."""
        return self.target.key

    @property
    def org_id(self) -> bytes:
        """The id of the requesting organisation."""
        return self.identity.org_id

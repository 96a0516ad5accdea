"""The admin HTTP API: organisations, key operations and the audit log as JSON.

The API runs in the proxy's own process, on a listener of its own that binds
to the loopback interface by default. A key that a customer imports through
it is therefore held in the memory of the process that serves S3 requests.
Every request must carry `Authorization: Bearer <token>`. Every key
operation goes through `KeyOperations` with the actor "admin-api", which
appends one audit record per operation. Every error is a JSON body
`{"error": {"code": ..., "message": ...}}`, and no response or log line
contains key material.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hmac
import ipaddress
import json
import logging
import re
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO, cast

from aiohttp import hdrs, web

from crypto.audit import AuditHead, AuditLog, AuditRecord, Verification
from crypto.errors import (
    ImportRejected,
    KeyRevoked,
    KeyUnavailable,
    MasterKeyError,
    OrganisationExists,
    UnknownOrganisation,
)
from crypto.header import Purpose
from crypto.key_import import ImportJob, new_job_key
from crypto.keyring import KeyRing
from crypto.keystore import Organisation
from crypto.operations import KeyOperations

__all__ = ["ACTOR", "DEFAULT_HOST", "create_admin_app", "start_admin_listener"]

ACTOR = "admin-api"
DEFAULT_HOST = "127.0.0.1"
MIN_TOKEN_LENGTH = 16

log = logging.getLogger("byok.admin")

_SECONDS_PER_DAY = 86400
# A policy longer than a century is a typing mistake, not a policy.
_MAX_KEY_AGE_DAYS = 36500
# Import job ids are 22 URL-safe base64 characters. The bound keeps an id sent
# by a client within the 32 characters that the audit log accepts.
_JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,32}")
_EXPORT_CHUNK = 64 * 1024
_EXPORT_SPOOL_SIZE = 1024 * 1024

# The exceptions of key operations and the status and code each one gets.
# No class here subclasses another, so the order does not matter.
_ERROR_STATUS: tuple[tuple[type[Exception], int, str], ...] = (
    (UnknownOrganisation, 404, "UnknownOrganisation"),
    (OrganisationExists, 409, "OrganisationExists"),
    (KeyRevoked, 403, "KeyRevoked"),
    (KeyUnavailable, 503, "KeyUnavailable"),
    (ImportRejected, 400, "ImportRejected"),
    (MasterKeyError, 409, "MasterKeyError"),
    (ValueError, 400, "InvalidRequest"),
)
_HTTP_ERROR_CODES = {
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "RequestTooLarge",
}
_INTERNAL_ERROR_MESSAGE = (
    "the request failed because of an internal error; the server log has details"
)

# The customer's side of an import, the same commands as in the docstring of
# crypto.key_import, with the job's public key saved as job.pem.
_IMPORT_COMMANDS = (
    "openssl rand -out key.bin 32",
    "openssl pkeyutl -encrypt -pubin -inkey job.pem -in key.bin -out key.wrapped"
    " -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256"
    " -pkeyopt rsa_mgf1_md:sha256",
    "KEY_HEX=$(od -An -tx1 -v key.bin | tr -d ' \\n')",
    'head -c 16 /dev/zero | openssl enc -aes-256-ecb -nopad -K "$KEY_HEX"'
    " | head -c 3 | od -An -tx1 | tr -d ' '",
    "openssl base64 -A -in key.wrapped -out key.wrapped.b64",
)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _RequestError(Exception):
    """A request the API rejects before any key operation runs."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = dict(headers or {})


def create_admin_app(
    operations: KeyOperations, audit: AuditLog, token: str
) -> web.Application:
    """Build the admin API application around the key operations and audit log.

    Raise ValueError if `token` is shorter than `MIN_TOKEN_LENGTH`, because
    the bearer token is the only thing between a caller and the keys.
    """
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"the admin API token must be at least {MIN_TOKEN_LENGTH} characters, "
            f"got {len(token)}; generate one with `openssl rand -hex 32`"
        )
    app = web.Application(
        middlewares=[_render_errors, _require_token(token.encode("utf-8"))]
    )
    _AdminRoutes(operations, audit).register(app.router)
    app.on_response_prepare.append(_forbid_caching)
    return app


async def start_admin_listener(
    app: web.Application, port: int, host: str = DEFAULT_HOST
) -> web.AppRunner:
    """Serve `app` on its own listener in the running event loop.

    Call `cleanup()` on the returned runner to stop it. Port 0 picks a free
    port, which `runner.addresses` then shows.
    """
    runner = web.AppRunner(app, access_log=logging.getLogger("byok.admin.access"))
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("admin.listening %s", runner.addresses)
    if not _is_loopback(host):
        log.warning(
            "admin.exposed the admin API listens on %s, beyond this host, "
            "over plain HTTP; bind it to %s unless a TLS proxy fronts it",
            host,
            DEFAULT_HOST,
        )
    return runner


class _AdminRoutes:
    """The request handlers, bound to one key ring, key operations and audit log."""

    def __init__(self, operations: KeyOperations, audit: AuditLog) -> None:
        self._operations = operations
        self._keyring: KeyRing = operations.keyring
        self._audit = audit

    def register(self, router: web.UrlDispatcher) -> None:
        organisation = "/v1/organisations/{org}"
        router.add_get("/v1/organisations", self.list_organisations)
        router.add_post("/v1/organisations", self.create_organisation)
        router.add_get(organisation, self.get_organisation)
        router.add_post(f"{organisation}/credentials", self.create_credentials)
        router.add_post(f"{organisation}/rotate", self.rotate)
        router.add_put(f"{organisation}/policy", self.set_policy)
        router.add_post(f"{organisation}/revoke", self.revoke)
        router.add_post(f"{organisation}/import-jobs", self.create_import_job)
        router.add_post("/v1/import-jobs/{job}", self.finish_import)
        router.add_post(f"{organisation}/master", self.set_master)
        router.add_post("/v1/master/rotate", self.rotate_platform_master)
        router.add_get("/v1/audit", self.audit_records)
        router.add_get("/v1/audit/export", self.audit_export)
        router.add_get("/v1/audit/verify", self.audit_verify)
        router.add_get("/v1/status", self.status)

    # organisations and credentials

    async def list_organisations(self, request: web.Request) -> web.Response:
        organisations = [
            self._summary(organisation)
            for organisation in self._keyring.organisations()
        ]
        return _json({"organisations": organisations})

    async def create_organisation(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        name = _text_field(body, "name")
        organisation = self._operations.create_organisation(ACTOR, name)
        return _json(self._detail(organisation), status=201)

    async def get_organisation(self, request: web.Request) -> web.Response:
        organisation = self._keyring.organisation(_org_ref(request))
        return _json(self._detail(organisation))

    async def create_credentials(self, request: web.Request) -> web.Response:
        access_key_id, secret = self._operations.create_credentials(
            ACTOR, _org_ref(request)
        )
        body = {"access_key_id": access_key_id, "secret_access_key": secret}
        return _json(body, status=201)

    # rotation and policy

    async def rotate(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        org = _org_ref(request)
        key = _text_field(body, "key")
        if key == "organisation":
            version = self._operations.rotate_org_key(ACTOR, org)
            return _json({"key": key, "version": version})
        if key == "dek":
            purpose = Purpose.parse(_text_field(body, "purpose"))
            version = self._operations.rotate_dek(ACTOR, org, purpose)
            return _json({"key": key, "purpose": purpose.label, "version": version})
        raise _invalid("field 'key' must be 'organisation' or 'dek'")

    async def set_policy(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        days = _max_key_age_days(body)
        seconds = None if days is None else days * _SECONDS_PER_DAY
        org = _org_ref(request)
        self._operations.set_max_key_age(ACTOR, org, seconds)
        return _json(self._detail(self._keyring.organisation(org)))

    # revocation

    async def revoke(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        organisation = self._keyring.organisation(_org_ref(request))
        if body.get("confirm") != organisation.name:
            raise _RequestError(
                400,
                "ConfirmationRequired",
                f"revoking destroys the keys of organisation {organisation.name!r} "
                "for good; repeat its name in the field 'confirm' to proceed",
            )
        revoked = self._operations.revoke(ACTOR, organisation.id)
        return _json(self._detail(revoked))

    # master keys

    async def create_import_job(self, request: web.Request) -> web.Response:
        # RSA key generation takes a noticeable fraction of a second of CPU,
        # so it runs in a worker thread while the S3 listener goes on
        loop = asyncio.get_running_loop()
        private_key = await loop.run_in_executor(None, new_job_key)
        job = self._operations.start_import(ACTOR, _org_ref(request), private_key)
        return _json(_import_job(job), status=201)

    async def finish_import(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job"]
        if not _JOB_ID_PATTERN.fullmatch(job_id):
            raise ImportRejected(
                "the import job id is invalid; use the job_id returned when "
                "the import job was created"
            )
        body = await _json_object(request)
        organisation = self._operations.finish_import(
            ACTOR,
            job_id,
            _text_field(body, "token"),
            _base64_field(body, "wrapped_key"),
            _text_field(body, "check_value"),
        )
        return _json(self._detail(organisation))

    async def set_master(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        org = _org_ref(request)
        source = _text_field(body, "source")
        if source == "platform":
            organisation = self._operations.use_platform(ACTOR, org)
        elif source == "hsm":
            label = _text_field(body, "key_label")
            organisation = self._operations.use_hsm(ACTOR, org, label)
        else:
            raise _invalid(
                "field 'source' must be 'platform' or 'hsm'; to use a key of "
                "your own, create an import job instead"
            )
        return _json(self._detail(organisation))

    async def rotate_platform_master(self, request: web.Request) -> web.Response:
        # NOTE: the rotation runs on the event loop, so the S3 requests of
        # this process wait until it ends. It makes a few queries and
        # unwraps per organisation.
        rotation = self._operations.rotate_platform_master(ACTOR)
        return _json({
            "old_master_key_id": rotation.old_key_id,
            "master_key_id": rotation.new_key_id,
            "org_keys_rewrapped": rotation.org_keys,
            "secrets_rewrapped": rotation.secrets,
            "resumed": rotation.resumed,
        })  # fmt: skip

    # audit log and status

    async def audit_records(self, request: web.Request) -> web.Response:
        org = request.query.get("organisation")
        org_hex = None if org is None else self._keyring.organisation(org).id_hex
        records = [_record(record) for record in self._audit.records(org_hex)]
        return _json({"records": records})

    async def audit_export(self, request: web.Request) -> web.StreamResponse:
        # The export is spooled first, so that a failure becomes a JSON error
        # before the response starts. Large exports spill to a temporary file.
        # NOTE: reading the log is synchronous and blocks the event loop.
        with tempfile.SpooledTemporaryFile(
            _EXPORT_SPOOL_SIZE, mode="w+", encoding="utf-8"
        ) as spool:
            # SpooledTemporaryFile is a text file, but not typed as TextIO.
            head = self._audit.export(cast(TextIO, spool))
            spool.seek(0)
            response = web.StreamResponse(
                headers={
                    "Audit-Head-Seq": str(head.seq),
                    "Audit-Head-Hash": head.hash,
                }
            )
            response.content_type = "application/x-ndjson"
            response.charset = "utf-8"
            await response.prepare(request)
            while chunk := spool.read(_EXPORT_CHUNK):
                await response.write(chunk.encode("utf-8"))
        await response.write_eof()
        return response

    async def audit_verify(self, request: web.Request) -> web.Response:
        expected = _expected_head(request.query)
        return _json(_verification(self._audit.verify(expected)))

    async def status(self, request: web.Request) -> web.Response:
        body = self._keyring.status().as_dict()
        body["audit_head"] = _head(self._audit.head())
        return _json(body)

    # organisation views

    def _summary(self, organisation: Organisation) -> dict[str, Any]:
        max_key_age = organisation.max_key_age
        return {
            "name": organisation.name,
            "id": organisation.id_hex,
            "state": organisation.state,
            "key_source": organisation.key_source,
            "key_state": self._keyring.key_state(organisation),
            "max_key_age_days": _days(max_key_age),
            "created_at": _utc_text(organisation.created_at),
            "revoked_at": _optional_utc_text(organisation.revoked_at),
        }

    def _detail(self, organisation: Organisation) -> dict[str, Any]:
        """Describe the organisation with its key versions, but no key material."""
        # NOTE: KeyRing has no status of one organisation, so this builds the
        # status of all of them, a few queries per organisation.
        status = next(
            entry
            for entry in self._keyring.status().organisations
            if entry.id_hex == organisation.id_hex
        )
        org_keys = [
            {
                "version": record.version,
                "state": record.state,
                "master_key_id": record.master_key_id,
                "created_at": _utc_text(record.created_at),
            }
            for record in self._keyring.org_key_records(organisation.id)
        ]
        return {
            **self._summary(organisation),
            "hsm_key_label": organisation.hsm_key_label,
            "org_keys": org_keys,
            "active_deks": dict(status.active_deks),
            "credentials": status.credentials,
        }


# middlewares


@web.middleware
async def _render_errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Turn every exception into a JSON error, and log it without secrets."""
    try:
        return await handler(request)
    except _RequestError as error:
        _log_rejected(request, error.status, error.code)
        return _error(error.status, error.code, str(error), error.headers)
    except web.HTTPException as error:
        # aiohttp's own errors: no route, wrong method, body too large.
        code = _HTTP_ERROR_CODES.get(error.status, "HTTPError")
        headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else {}
        _log_rejected(request, error.status, code)
        return _error(error.status, code, _http_error_message(request, error), headers)
    except Exception as error:
        for kind, status, code in _ERROR_STATUS:
            if isinstance(error, kind):
                _log_rejected(request, status, code)
                return _error(status, code, str(error))
        log.exception("admin.failed %s %s", request.method, request.path)
        return _error(500, "InternalError", _INTERNAL_ERROR_MESSAGE)


def _require_token(token: bytes) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def require_token(
        request: web.Request, handler: _Handler
    ) -> web.StreamResponse:
        if not _token_matches(request.headers.get(hdrs.AUTHORIZATION, ""), token):
            raise _RequestError(
                401,
                "Unauthorized",
                "the bearer token is missing or invalid; send the header "
                "Authorization: Bearer <token>",
                {hdrs.WWW_AUTHENTICATE: 'Bearer realm="byok-proxy admin"'},
            )
        return await handler(request)

    return require_token


def _token_matches(authorization: str, token: bytes) -> bool:
    scheme, _, credentials = authorization.strip().partition(" ")
    # Header text may hold any code point, and compare_digest needs bytes.
    submitted = credentials.strip().encode("utf-8", "surrogatepass")
    matches = hmac.compare_digest(submitted, token)
    return scheme.lower() == "bearer" and matches


async def _forbid_caching(request: web.Request, response: web.StreamResponse) -> None:
    # Responses carry secrets (credentials, import tokens) and key states.
    response.headers[hdrs.CACHE_CONTROL] = "no-store"


def _log_rejected(request: web.Request, status: int, code: str) -> None:
    level = logging.WARNING if status == 401 else logging.INFO
    log.log(
        level,
        "admin.rejected %s %s status=%d code=%s remote=%s",
        request.method,
        request.path,
        status,
        code,
        request.remote,
    )


# request bodies


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise _RequestError(
            400, "MalformedJSON", "the request body is not valid JSON"
        ) from None
    if not isinstance(body, dict):
        raise _RequestError(
            400, "MalformedJSON", "the request body must be a JSON object"
        )
    return body


def _text_field(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise _invalid(f"field {name!r} is missing or not a non-empty string")
    return value


def _base64_field(body: Mapping[str, Any], name: str) -> bytes:
    text = _text_field(body, name)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(
            f"field {name!r} is not valid base64; send the contents of the file "
            "that `openssl base64 -A` wrote"
        ) from None


def _max_key_age_days(body: Mapping[str, Any]) -> int | None:
    if "max_key_age_days" not in body:
        raise _invalid("field 'max_key_age_days' is missing; send a number or null")
    days = body["max_key_age_days"]
    if days is None:
        return None
    if isinstance(days, bool) or not isinstance(days, int):
        raise _invalid("field 'max_key_age_days' must be a whole number of days")
    if not 1 <= days <= _MAX_KEY_AGE_DAYS:
        raise _invalid(
            f"field 'max_key_age_days' must be from 1 to {_MAX_KEY_AGE_DAYS}, "
            f"got {days}"
        )
    return days


def _expected_head(query: Mapping[str, str]) -> tuple[int, str] | None:
    seq, hash_hex = query.get("seq"), query.get("hash")
    if seq is None and hash_hex is None:
        return None
    if seq is None or hash_hex is None:
        raise _invalid("send both 'seq' and 'hash' of the expected head, or neither")
    if not seq.isdigit():
        raise _invalid(f"'seq' must be a whole number >= 0, got {seq[:20]!r}")
    return int(seq), hash_hex


def _org_ref(request: web.Request) -> str:
    return request.match_info["org"]


def _invalid(message: str) -> _RequestError:
    return _RequestError(400, "InvalidRequest", message)


# responses


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=_dumps)


def _error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    body = {"error": {"code": code, "message": message}}
    response = _json(body, status=status)
    response.headers.update(headers or {})
    return response


def _http_error_message(request: web.Request, error: web.HTTPException) -> str:
    if error.status == 404:
        return f"no admin API endpoint has the path {request.path!r}"
    if error.status == 405:
        return f"{request.method} is not allowed on {request.path!r}"
    return error.reason


def _import_job(job: ImportJob) -> dict[str, Any]:
    upload = (
        f"POST /v1/import-jobs/{job.job_id} with the JSON object "
        '{"token": <token>, "wrapped_key": <contents of key.wrapped.b64>, '
        '"check_value": <the 6 hex digits printed by step 5>}'
    )
    steps = [
        "save public_key_pem as job.pem",
        *_IMPORT_COMMANDS,
        upload,
        "openssl enc shows the key in its arguments to other users of the "
        "machine, so run it where only the key's owner is logged in",
    ]
    return {
        "job_id": job.job_id,
        "organisation_id": job.org_id.hex(),
        "public_key_pem": job.public_key_pem,
        "token": job.token,
        "expires_at": _utc_text(job.expires_at),
        "instructions": steps,
    }


def _record(record: AuditRecord) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "time": _utc_text(record.time),
        "actor": record.actor,
        "action": record.action,
        "organisation": record.organisation,
        "keys": dict(record.keys),
        "outcome": record.outcome,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }


def _verification(result: Verification) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "checked": result.checked,
        "head": _head(result.head),
        "bad_seq": result.bad_seq,
        "problem": None if result.problem is None else result.problem.value,
        "detail": result.detail,
    }


def _head(head: AuditHead) -> dict[str, Any]:
    return {"seq": head.seq, "hash": head.hash}


def _days(seconds: float | None) -> float | None:
    if seconds is None:
        return None
    days = seconds / _SECONDS_PER_DAY
    return int(days) if days.is_integer() else days


def _utc_text(moment: datetime) -> str:
    """Format a time as the audit log does: UTC, six fraction digits and a Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _optional_utc_text(moment: datetime | None) -> str | None:
    return None if moment is None else _utc_text(moment)


def _json_default(value: object) -> Any:
    if isinstance(value, datetime):
        return _utc_text(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_dumps = functools.partial(json.dumps, default=_json_default)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

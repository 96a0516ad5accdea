r"""Import of a customer's own 256-bit AES master key, wrapped under RSA-OAEP.

The key never crosses the wire in clear. `ImportJobs.create` makes an import
job with a fresh RSA-3072 key pair whose private key stays inside the
registry. The customer wraps the key with the job's public key and uploads
the wrapped key, the job's token and the key check value, and
`ImportJobs.complete` returns the key.

The customer's commands, with the job's public key saved as job.pem (the
tests run these lines as written)::

    $ openssl rand -out key.bin 32
    $ openssl pkeyutl -encrypt -pubin -inkey job.pem -in key.bin -out key.wrapped \
          -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 \
          -pkeyopt rsa_mgf1_md:sha256
    $ KEY_HEX=$(od -An -tx1 -v key.bin | tr -d ' \n')
    $ head -c 16 /dev/zero | openssl enc -aes-256-ecb -nopad -K "$KEY_HEX" \
          | head -c 3 | od -An -tx1 | tr -d ' '
    $ openssl base64 -A -in key.wrapped -out key.wrapped.b64

The fourth command prints the key check value as 6 hex digits. The last one
is needed only where the upload takes text: key.wrapped.b64 is the wrapped key
in base64 on one line, and the caller decodes it before `complete`. While
`openssl enc` runs, the key is visible in its arguments to other users of the
machine, so run it where only the key's owner is logged in.

Attempts policy: a job is single use. It is removed when it completes, when it
expires, and after `MAX_FAILED_ATTEMPTS` failed attempts. Every attempt on a
live job that fails counts: a wrong token, a wrapped key that does not
decrypt, a key of the wrong size or a wrong check value. So neither a token
guess nor an RSA decryption oracle gets more than a few tries per key pair.
Anyone who has a job id can burn that job this way, but the id is random and
the customer can create a new job.
"""

from __future__ import annotations

import hmac
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NoReturn

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from crypto.errors import ImportRejected
from crypto.wrap import KEY_SIZE, ORG_ID_SIZE

__all__ = [
    "DEFAULT_TTL",
    "MAX_FAILED_ATTEMPTS",
    "RSA_KEY_SIZE",
    "ImportJob",
    "ImportJobs",
    "key_check_value",
    "new_job_key",
]

RSA_KEY_SIZE = 3072
DEFAULT_TTL = timedelta(hours=24)
MAX_FAILED_ATTEMPTS = 3

_PUBLIC_EXPONENT = 65537
_RSA_BLOCK_SIZE = RSA_KEY_SIZE // 8
_JOB_ID_BYTES = 16
_TOKEN_BYTES = 32
_AES_BLOCK_SIZE = 16
_CHECK_VALUE_BYTES = 3
_CHECK_VALUE_PATTERN = re.compile(r"[0-9A-Fa-f]{6}")
_MAX_ECHOED_ID = 64
_OAEP = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()),
    algorithm=hashes.SHA256(),
    label=None,
)


@dataclass(frozen=True, slots=True)
class ImportJob:
    """Public part of an import job, which a customer uses to wrap and upload a key.

    The token authenticates the upload, so the repr hides it. The repr also
    leaves out the public key, which is long and not secret.
    """

    job_id: str
    org_id: bytes
    public_key_pem: str = field(repr=False)
    token: str = field(repr=False)
    expires_at: datetime


@dataclass(eq=False, slots=True)
class _PendingJob:
    job: ImportJob
    private_key: rsa.RSAPrivateKey = field(repr=False)
    failed_attempts: int = 0


class _AttemptFailed(Exception):
    """A failed check on a live job, with a message safe to show the customer."""


class ImportJobs:
    """In-memory registry of pending import jobs and their RSA private keys.

    Private keys are never serialised: they exist only in this object and
    are dropped with their job, and pickling the registry raises TypeError.
    A lock guards the registry, so threads may share it.
    """

    def __init__(self, max_failed_attempts: int = MAX_FAILED_ATTEMPTS) -> None:
        if max_failed_attempts < 1:
            raise ValueError(
                f"max_failed_attempts must be at least 1, got {max_failed_attempts}"
            )
        self._max_failed_attempts = max_failed_attempts
        self._pending: dict[str, _PendingJob] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ImportJobs(pending={len(self._pending)})"

    def __len__(self) -> int:
        """Count the jobs in the registry, including expired ones not yet purged."""
        return len(self._pending)

    def __getstate__(self) -> NoReturn:
        raise TypeError("ImportJobs contains private keys and cannot be pickled")

    def create(
        self,
        org_id: bytes,
        now: datetime,
        ttl: timedelta = DEFAULT_TTL,
        private_key: rsa.RSAPrivateKey | None = None,
    ) -> ImportJob:
        """Start an import for `org_id` with a fresh RSA-3072 key pair.

        RSA key generation searches for primes and takes a noticeable amount
        of CPU time, so an event loop should make `private_key` with
        `new_job_key` in a worker thread and pass it in.
        """
        _check_org_id(org_id)
        _check_aware(now)
        if ttl <= timedelta(0):
            raise ValueError(f"ttl must be positive, got {ttl}")
        if private_key is None:
            private_key = new_job_key()
        elif private_key.key_size != RSA_KEY_SIZE:
            raise ValueError(f"an import job key must have {RSA_KEY_SIZE} bits")
        job = ImportJob(
            # hexadecimal, so an id never starts with "-" on a command line
            job_id=secrets.token_hex(_JOB_ID_BYTES),
            org_id=org_id,
            public_key_pem=_public_key_pem(private_key),
            token=secrets.token_urlsafe(_TOKEN_BYTES),
            expires_at=now.astimezone(UTC) + ttl,
        )
        with self._lock:
            self._purge_expired(now)
            self._pending[job.job_id] = _PendingJob(job, private_key)
        return job

    def get(self, job_id: str, now: datetime) -> ImportJob | None:
        """Return the live job with that id, or None if there is none."""
        _check_aware(now)
        with self._lock:
            self._purge_expired(now)
            pending = self._pending.get(job_id)
        return None if pending is None else pending.job

    def complete(
        self,
        job_id: str,
        token: str,
        wrapped_key: bytes,
        check_value: str,
        now: datetime,
    ) -> bytes:
        """Unwrap and return the customer's 32-byte key, then remove the job.

        Checks, in order: the job exists, it has not expired, the token
        matches, the wrapped key decrypts with RSA-OAEP (SHA-256 and MGF1
        with SHA-256, no label), the key is 32 bytes and the check value
        matches. Raises ImportRejected on the first failed check. Failures
        after the expiry check count towards the job's attempt limit.
        """
        _check_aware(now)
        with self._lock:
            pending = self._pending.get(job_id)
            self._purge_expired(now)
            if pending is None:
                raise ImportRejected(
                    f"import job {_echo_id(job_id)} was not found: it never "
                    "existed, or it expired, completed or used up its attempts; "
                    "create a new import job"
                )
            if now >= pending.job.expires_at:
                raise ImportRejected(
                    f"import job {_echo_id(job_id)} expired at "
                    f"{pending.job.expires_at.isoformat()}; create a new import job"
                )
            try:
                key = _open_key(pending, token, wrapped_key, check_value)
            except _AttemptFailed as failure:
                raise self._record_failure(pending, str(failure)) from None
            del self._pending[job_id]
            return key

    def _record_failure(self, pending: _PendingJob, reason: str) -> ImportRejected:
        pending.failed_attempts += 1
        attempts_left = self._max_failed_attempts - pending.failed_attempts
        if attempts_left > 0:
            return ImportRejected(f"{reason}; {attempts_left} attempt(s) left")
        del self._pending[pending.job.job_id]
        return ImportRejected(
            f"{reason}; that was the last attempt, so the job was removed: "
            "create a new import job and wrap the key with its new public key"
        )

    def _purge_expired(self, now: datetime) -> None:
        expired = [
            job_id
            for job_id, pending in self._pending.items()
            if now >= pending.job.expires_at
        ]
        for job_id in expired:
            del self._pending[job_id]


def key_check_value(key: bytes) -> str:
    """Compute the key check value of an AES-256 key as 6 upper-case hex digits.

    The value is the first 3 bytes of one all-zero block encrypted with
    AES-256-ECB. It lets both sides confirm that they hold the same key, and
    24 bits of one cipher block are no help in recovering a random 256-bit key.
    """
    if len(key) != KEY_SIZE:
        raise ValueError(f"key must be {KEY_SIZE} bytes for AES-256, got {len(key)}")
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    block = encryptor.update(bytes(_AES_BLOCK_SIZE)) + encryptor.finalize()
    return block[:_CHECK_VALUE_BYTES].hex().upper()


def _open_key(
    pending: _PendingJob, token: str, wrapped_key: bytes, check_value: str
) -> bytes:
    _check_token(pending.job.token, token)
    key = _decrypt_key(pending.private_key, wrapped_key)
    _check_key_check_value(key, check_value)
    return key


def _check_token(expected: str, token: str) -> None:
    # Encoding first lets compare_digest take any text, not only ASCII, and
    # surrogatepass keeps lone surrogates from raising UnicodeEncodeError.
    submitted = token.encode("utf-8", "surrogatepass")
    if not hmac.compare_digest(expected.encode("ascii"), submitted):
        raise _AttemptFailed(
            "the import token does not match this job; send the token that "
            "was returned with the job"
        )


def _decrypt_key(private_key: rsa.RSAPrivateKey, wrapped_key: bytes) -> bytes:
    if len(wrapped_key) != _RSA_BLOCK_SIZE:
        raise _AttemptFailed(
            f"the wrapped key must be {_RSA_BLOCK_SIZE} bytes (one RSA-3072 "
            f"block), got {len(wrapped_key)}; upload the raw output of openssl "
            "pkeyutl, and decode it first if you encoded it as base64"
        )
    try:
        key = private_key.decrypt(wrapped_key, _OAEP)
    except ValueError:
        raise _AttemptFailed(
            "the wrapped key did not decrypt; wrap the key with this job's "
            "public key using RSA-OAEP with SHA-256 for both the OAEP digest "
            "and MGF1 (openssl pkeyutl -pkeyopt rsa_padding_mode:oaep "
            "-pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256)"
        ) from None
    if len(key) != KEY_SIZE:
        raise _AttemptFailed(
            f"the unwrapped key is {len(key)} bytes, but the key must be "
            f"{KEY_SIZE} bytes for AES-256; generate one with "
            f"openssl rand -out key.bin {KEY_SIZE}"
        )
    return key


def _check_key_check_value(key: bytes, check_value: str) -> None:
    # The submitted value is never echoed: a customer who pasted the key's
    # hex into the wrong field would otherwise see the key in an error.
    submitted = check_value.strip()
    if not _CHECK_VALUE_PATTERN.fullmatch(submitted):
        raise _AttemptFailed(
            f"the key check value must be 6 hex digits, got {len(check_value)} "
            "characters; send the first 3 bytes of the AES-256-ECB encryption "
            "of 16 zero bytes under the key, in hex"
        )
    expected = key_check_value(key).encode("ascii")
    if not hmac.compare_digest(submitted.upper().encode("ascii"), expected):
        raise _AttemptFailed(
            "the key check value does not match the unwrapped key; compute it "
            "from the same key.bin that you wrapped"
        )


def _public_key_pem(private_key: rsa.RSAPrivateKey) -> str:
    pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    return pem.decode("ascii")


def _echo_id(job_id: str) -> str:
    # Job ids come from the client, so bound what an error message repeats.
    return repr(job_id[:_MAX_ECHOED_ID])


def _check_org_id(org_id: bytes) -> None:
    if len(org_id) != ORG_ID_SIZE:
        raise ValueError(
            f"organisation id must be {ORG_ID_SIZE} bytes, got {len(org_id)}"
        )


def _check_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(
            "now must be a timezone-aware datetime; pass datetime.now(UTC)"
        )


def new_job_key() -> rsa.RSAPrivateKey:
    """Generate the RSA-3072 key pair of one import job."""
    return rsa.generate_private_key(
        public_exponent=_PUBLIC_EXPONENT, key_size=RSA_KEY_SIZE
    )

"""Tests of the customer key import: check values, RSA-OAEP unwrap, job limits.

The round trip runs the openssl commands from the module docstring through a
real shell, so the documented commands stay true.
"""

from __future__ import annotations

import base64
import gc
import pickle
import re
import secrets
import shutil
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import crypto.key_import
from crypto.errors import ImportRejected, KeyHierarchyError
from crypto.key_import import (
    MAX_FAILED_ATTEMPTS,
    ImportJob,
    ImportJobs,
    key_check_value,
)

ORG_ID = bytes(range(16))
NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
OAEP_SHA256 = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()),
    algorithm=hashes.SHA256(),
    label=None,
)
CUSTOMER_OPTIONS = (
    "rsa_padding_mode:oaep",
    "rsa_oaep_md:sha256",
    "rsa_mgf1_md:sha256",
)
# The largest plaintext RSA-3072 OAEP with SHA-256 can wrap: 384 - 2 * 32 - 2.
MAX_OAEP_PLAINTEXT = 318


@pytest.fixture(scope="module")
def openssl() -> str:
    path = shutil.which("openssl")
    assert path is not None, "these tests need the openssl command line tool"
    return path


@pytest.fixture
def jobs() -> ImportJobs:
    return ImportJobs()


def _public_key(job: ImportJob) -> rsa.RSAPublicKey:
    public_key = serialization.load_pem_public_key(job.public_key_pem.encode())
    assert isinstance(public_key, rsa.RSAPublicKey)
    return public_key


def _wrap(job: ImportJob, key: bytes) -> bytes:
    return _public_key(job).encrypt(key, OAEP_SHA256)


def _openssl_check_value(openssl: str, key: bytes) -> str:
    encrypted = subprocess.run(
        [openssl, "enc", "-aes-256-ecb", "-nopad", "-K", key.hex()],
        input=bytes(16),
        capture_output=True,
        check=True,
    ).stdout
    return encrypted[:3].hex().upper()


def _customer_commands() -> str:
    # The command block is the docstring's indented lines. "$ " marks a
    # command, and a trailing backslash continues it on the next line.
    doc = crypto.key_import.__doc__
    assert doc is not None
    block = [line[4:] for line in doc.splitlines() if line.startswith("    ")]
    assert block[0].startswith("$ openssl rand")
    return "\n".join(line.removeprefix("$ ") for line in block) + "\n"


def _openssl_wrap(
    openssl: str,
    tmp_path: Path,
    job: ImportJob,
    options: tuple[str, ...],
    key_size: int = 32,
) -> bytes:
    # Writes key.bin and key.wrapped in tmp_path as the customer would.
    (tmp_path / "job.pem").write_text(job.public_key_pem)
    rand = [openssl, "rand", "-out", "key.bin", str(key_size)]
    subprocess.run(rand, cwd=tmp_path, check=True)
    pkeyutl = [openssl, "pkeyutl", "-encrypt", "-pubin", "-inkey", "job.pem"]
    pkeyutl += ["-in", "key.bin", "-out", "key.wrapped"]
    for option in options:
        pkeyutl += ["-pkeyopt", option]
    subprocess.run(pkeyutl, cwd=tmp_path, check=True)
    return (tmp_path / "key.wrapped").read_bytes()


def _reachable(root: object) -> list[object]:
    # Walk references from an instance without entering classes, whose
    # module globals would reach every object in the process.
    seen: dict[int, object] = {}
    stack = [root]
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, type):
            continue
        seen[id(item)] = item
        stack.extend(gc.get_referents(item))
    return list(seen.values())


def test_key_check_value_golden_vectors() -> None:
    # Both values were computed once with openssl enc -aes-256-ecb -nopad
    # over 16 zero bytes (OpenSSL 3.0.19).
    assert key_check_value(bytes(32)) == "DC95C0"
    assert key_check_value(bytes(range(32))) == "F29000"


def test_key_check_value_matches_openssl(openssl: str) -> None:
    for _ in range(8):
        key = secrets.token_bytes(32)

        assert key_check_value(key) == _openssl_check_value(openssl, key)


@pytest.mark.parametrize("size", [0, 16, 24, 31, 33])
def test_key_check_value_rejects_other_sizes(size: int) -> None:
    with pytest.raises(ValueError, match=f"32 bytes for AES-256, got {size}"):
        key_check_value(bytes(size))


def test_create_returns_fresh_job(jobs: ImportJobs) -> None:
    ttl = timedelta(hours=2)

    job = jobs.create(ORG_ID, NOW, ttl)
    other = jobs.create(ORG_ID, NOW, ttl)

    assert re.fullmatch(r"[0-9a-f]{32}", job.job_id)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", job.token)
    assert job.org_id == ORG_ID
    assert job.expires_at == NOW + ttl
    assert job.expires_at.utcoffset() == timedelta(0)
    public_key = _public_key(job)
    assert public_key.key_size == 3072
    assert public_key.public_numbers().e == 65537
    assert other.job_id != job.job_id
    assert other.token != job.token
    assert other.public_key_pem != job.public_key_pem
    assert jobs.get(job.job_id, NOW) == job
    assert len(jobs) == 2


def test_create_default_ttl_and_utc_expiry(jobs: ImportJobs) -> None:
    utc_plus_one = timezone(timedelta(hours=1))

    job = jobs.create(ORG_ID, NOW.astimezone(utc_plus_one))

    assert job.expires_at == NOW + timedelta(hours=24)
    assert job.expires_at.tzinfo is UTC


def test_create_rejects_bad_arguments(jobs: ImportJobs) -> None:
    with pytest.raises(ValueError, match="organisation id must be 16 bytes, got 15"):
        jobs.create(bytes(15), NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        jobs.create(ORG_ID, datetime(2030, 1, 2))
    with pytest.raises(ValueError, match="ttl must be positive"):
        jobs.create(ORG_ID, NOW, timedelta(0))
    assert len(jobs) == 0


def test_registry_rejects_zero_attempt_limit() -> None:
    with pytest.raises(ValueError, match="at least 1, got 0"):
        ImportJobs(max_failed_attempts=0)


def test_customer_commands_round_trip(
    jobs: ImportJobs, openssl: str, tmp_path: Path
) -> None:
    job = jobs.create(ORG_ID, NOW)
    (tmp_path / "job.pem").write_text(job.public_key_pem)

    result = subprocess.run(
        ["sh", "-e", "-c", _customer_commands()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )

    key = (tmp_path / "key.bin").read_bytes()
    wrapped = (tmp_path / "key.wrapped").read_bytes()
    uploaded = base64.b64decode((tmp_path / "key.wrapped.b64").read_text())
    check_value = result.stdout.strip()
    assert len(key) == 32
    assert uploaded == wrapped
    assert re.fullmatch(r"[0-9a-f]{6}", check_value)
    assert check_value.upper() == key_check_value(key)
    assert jobs.complete(job.job_id, job.token, uploaded, check_value, NOW) == key
    assert jobs.get(job.job_id, NOW) is None
    assert len(jobs) == 0


def test_complete_accepts_check_value_in_any_case(jobs: ImportJobs) -> None:
    key = secrets.token_bytes(32)
    upper = key_check_value(key)
    variants = [upper.lower(), upper.title(), f"  {upper}\n"]

    for check_value in variants:
        job = jobs.create(ORG_ID, NOW)

        returned = jobs.complete(
            job.job_id, job.token, _wrap(job, key), check_value, NOW
        )

        assert returned == key


def test_complete_rejects_expired_job(jobs: ImportJobs) -> None:
    key = secrets.token_bytes(32)
    job = jobs.create(ORG_ID, NOW, timedelta(minutes=10))
    wrapped = _wrap(job, key)

    with pytest.raises(ImportRejected, match="expired at 2030-01-02T03:14:05"):
        jobs.complete(
            job.job_id, job.token, wrapped, key_check_value(key), job.expires_at
        )

    assert len(jobs) == 0
    with pytest.raises(ImportRejected, match="was not found"):
        jobs.complete(job.job_id, job.token, wrapped, key_check_value(key), NOW)


def test_complete_rejects_unknown_job(jobs: ImportJobs) -> None:
    jobs.create(ORG_ID, NOW)

    with pytest.raises(ImportRejected, match="'no-such-job' was not found"):
        jobs.complete("no-such-job", "token", bytes(384), "000000", NOW)

    assert len(jobs) == 1


def test_expired_jobs_purged_on_every_call(jobs: ImportJobs) -> None:
    first = jobs.create(ORG_ID, NOW, timedelta(minutes=1))
    later = NOW + timedelta(minutes=1)

    second = jobs.create(ORG_ID, later, timedelta(minutes=1))
    assert len(jobs) == 1
    assert jobs.get(first.job_id, later) is None

    assert jobs.get(second.job_id, later + timedelta(minutes=1)) is None
    assert len(jobs) == 0

    third = jobs.create(ORG_ID, NOW, timedelta(minutes=1))
    with pytest.raises(ImportRejected, match="was not found"):
        jobs.complete("other", "token", b"", "000000", later)
    assert jobs.get(third.job_id, NOW) is None


def test_complete_rejects_wrong_token(jobs: ImportJobs) -> None:
    key = secrets.token_bytes(32)
    job = jobs.create(ORG_ID, NOW)
    wrapped = _wrap(job, key)
    wrong_tokens = [job.token[:-1], job.token + "x"]
    assert len(wrong_tokens) < MAX_FAILED_ATTEMPTS

    for wrong_token in wrong_tokens:
        with pytest.raises(ImportRejected, match="token does not match") as caught:
            jobs.complete(job.job_id, wrong_token, wrapped, key_check_value(key), NOW)
        assert job.token not in str(caught.value)

    assert jobs.complete(job.job_id, job.token, wrapped, key_check_value(key), NOW)


def test_token_comparison_takes_any_text() -> None:
    # Non-ASCII text must be a wrong token, not a TypeError from compare_digest.
    jobs = ImportJobs(max_failed_attempts=10)
    job = jobs.create(ORG_ID, NOW)

    for wrong_token in ["", "é" * 43, "\udc80", job.token.upper() + "\x00"]:
        with pytest.raises(ImportRejected, match="token does not match"):
            jobs.complete(job.job_id, wrong_token, bytes(384), "000000", NOW)


def test_complete_rejects_wrong_check_value(jobs: ImportJobs) -> None:
    key = secrets.token_bytes(32)
    job = jobs.create(ORG_ID, NOW)
    wrapped = _wrap(job, key)
    wrong = f"{int(key_check_value(key), 16) ^ 1:06X}"

    with pytest.raises(ImportRejected, match="check value does not match") as caught:
        jobs.complete(job.job_id, job.token, wrapped, wrong, NOW)

    message = str(caught.value)
    assert f"{MAX_FAILED_ATTEMPTS - 1} attempt(s) left" in message
    assert key.hex() not in message.lower()
    assert key_check_value(key) not in message.upper()


def test_complete_never_echoes_malformed_check_value(jobs: ImportJobs) -> None:
    # A customer who pastes the key's hex into the check value field must not
    # see the key again in the error or in the server's log of it.
    key = secrets.token_bytes(32)
    job = jobs.create(ORG_ID, NOW)

    with pytest.raises(ImportRejected, match="6 hex digits, got 64") as caught:
        jobs.complete(job.job_id, job.token, _wrap(job, key), key.hex(), NOW)

    assert key.hex() not in str(caught.value).lower()


@pytest.mark.parametrize("check_value", ["", "12345", "1234567", "12 34 56", "GHIJKL"])
def test_complete_rejects_malformed_check_value(
    jobs: ImportJobs, check_value: str
) -> None:
    key = secrets.token_bytes(32)
    job = jobs.create(ORG_ID, NOW)

    with pytest.raises(ImportRejected, match="must be 6 hex digits"):
        jobs.complete(job.job_id, job.token, _wrap(job, key), check_value, NOW)


# OpenSSL 3.0.19 was seen to use the OAEP digest for MGF1 unless rsa_mgf1_md
# names another, so the mixed cases set both digests.
OTHER_PADDINGS = {
    "pkcs1-v1.5": ("rsa_padding_mode:pkcs1",),
    "oaep-sha1": ("rsa_padding_mode:oaep",),
    "oaep-sha256-mgf1-sha1": (
        "rsa_padding_mode:oaep",
        "rsa_oaep_md:sha256",
        "rsa_mgf1_md:sha1",
    ),
    "oaep-sha1-mgf1-sha256": (
        "rsa_padding_mode:oaep",
        "rsa_oaep_md:sha1",
        "rsa_mgf1_md:sha256",
    ),
}


@pytest.mark.parametrize("options", OTHER_PADDINGS.values(), ids=OTHER_PADDINGS.keys())
def test_complete_rejects_other_padding(
    jobs: ImportJobs, openssl: str, tmp_path: Path, options: tuple[str, ...]
) -> None:
    job = jobs.create(ORG_ID, NOW)
    wrapped = _openssl_wrap(openssl, tmp_path, job, options)
    key = (tmp_path / "key.bin").read_bytes()

    with pytest.raises(ImportRejected, match="did not decrypt") as caught:
        jobs.complete(job.job_id, job.token, wrapped, key_check_value(key), NOW)

    assert "rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256" in str(caught.value)
    assert key.hex() not in str(caught.value).lower()


def test_complete_rejects_key_wrapped_for_other_job(jobs: ImportJobs) -> None:
    key = secrets.token_bytes(32)
    job = jobs.create(ORG_ID, NOW)
    other = jobs.create(ORG_ID, NOW)

    with pytest.raises(ImportRejected, match="did not decrypt"):
        jobs.complete(
            job.job_id, job.token, _wrap(other, key), key_check_value(key), NOW
        )


@pytest.mark.parametrize("size", [0, 383, 385, 512])
def test_complete_rejects_wrapped_key_of_wrong_size(
    jobs: ImportJobs, size: int
) -> None:
    job = jobs.create(ORG_ID, NOW)

    with pytest.raises(ImportRejected, match=f"must be 384 bytes .* got {size}"):
        jobs.complete(job.job_id, job.token, bytes(size), "000000", NOW)


def test_complete_rejects_base64_upload(
    jobs: ImportJobs, openssl: str, tmp_path: Path
) -> None:
    job = jobs.create(ORG_ID, NOW)
    wrapped = _openssl_wrap(openssl, tmp_path, job, CUSTOMER_OPTIONS)

    with pytest.raises(ImportRejected, match="decode it first"):
        jobs.complete(job.job_id, job.token, base64.b64encode(wrapped), "000000", NOW)


@pytest.mark.parametrize("size", [16, 0, 24, 31, 33, 64])
def test_complete_rejects_key_of_wrong_size(jobs: ImportJobs, size: int) -> None:
    key = secrets.token_bytes(size)
    job = jobs.create(ORG_ID, NOW)

    with pytest.raises(ImportRejected, match=f"unwrapped key is {size} bytes"):
        jobs.complete(job.job_id, job.token, _wrap(job, key), "000000", NOW)


def test_complete_rejects_16_byte_key_from_openssl(
    jobs: ImportJobs, openssl: str, tmp_path: Path
) -> None:
    job = jobs.create(ORG_ID, NOW)
    wrapped = _openssl_wrap(openssl, tmp_path, job, CUSTOMER_OPTIONS, key_size=16)
    key = (tmp_path / "key.bin").read_bytes()
    assert len(key) == 16

    with pytest.raises(
        ImportRejected, match="16 bytes, but the key must be 32"
    ) as caught:
        jobs.complete(job.job_id, job.token, wrapped, "000000", NOW)

    assert key.hex() not in str(caught.value).lower()


def test_complete_is_single_use(jobs: ImportJobs) -> None:
    key = secrets.token_bytes(32)
    job = jobs.create(ORG_ID, NOW)
    wrapped = _wrap(job, key)

    assert jobs.complete(job.job_id, job.token, wrapped, key_check_value(key), NOW)

    with pytest.raises(ImportRejected, match="was not found"):
        jobs.complete(job.job_id, job.token, wrapped, key_check_value(key), NOW)
    assert jobs.get(job.job_id, NOW) is None


def test_job_removed_after_max_failed_attempts(jobs: ImportJobs) -> None:
    key = secrets.token_bytes(32)
    job = jobs.create(ORG_ID, NOW)
    wrapped = _wrap(job, key)
    check_value = key_check_value(key)
    wrong_check_value = f"{int(check_value, 16) ^ 0x800000:06X}"
    failures = [
        (job.token + "x", wrapped, check_value),
        (job.token, bytes(384), check_value),
        (job.token, wrapped, wrong_check_value),
    ]
    assert len(failures) == MAX_FAILED_ATTEMPTS

    for attempt, (token, upload, value) in enumerate(failures, start=1):
        with pytest.raises(ImportRejected) as caught:
            jobs.complete(job.job_id, token, upload, value, NOW)
        attempts_left = MAX_FAILED_ATTEMPTS - attempt
        if attempts_left:
            assert f"{attempts_left} attempt(s) left" in str(caught.value)
            assert jobs.get(job.job_id, NOW) == job

    assert "that was the last attempt" in str(caught.value)
    assert jobs.get(job.job_id, NOW) is None
    with pytest.raises(ImportRejected, match="was not found"):
        jobs.complete(job.job_id, job.token, wrapped, check_value, NOW)


def test_failed_attempts_count_per_job(jobs: ImportJobs) -> None:
    key = secrets.token_bytes(32)
    burnt = jobs.create(ORG_ID, NOW)
    untouched = jobs.create(ORG_ID, NOW)

    for _ in range(MAX_FAILED_ATTEMPTS):
        with pytest.raises(ImportRejected):
            jobs.complete(burnt.job_id, "wrong", bytes(384), "000000", NOW)

    returned = jobs.complete(
        untouched.job_id,
        untouched.token,
        _wrap(untouched, key),
        key_check_value(key),
        NOW,
    )
    assert returned == key


def test_import_job_repr_hides_token(jobs: ImportJobs) -> None:
    job = jobs.create(ORG_ID, NOW)

    text = repr(job)

    assert job.job_id in text
    assert job.token not in text
    assert "PUBLIC KEY" not in text


def test_private_key_not_reachable_from_job(jobs: ImportJobs) -> None:
    job = jobs.create(ORG_ID, NOW)

    field_names = {name for name in ImportJob.__dataclass_fields__}
    reachable = _reachable(job)

    assert field_names == {"job_id", "org_id", "public_key_pem", "token", "expires_at"}
    assert not any(isinstance(item, rsa.RSAPrivateKey) for item in reachable)
    assert "PRIVATE KEY" not in job.public_key_pem
    assert repr(jobs) == "ImportJobs(pending=1)"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(jobs)


def test_import_rejected_is_key_hierarchy_error() -> None:
    assert issubclass(ImportRejected, KeyHierarchyError)


@pytest.fixture(scope="module")
def fuzz_target() -> tuple[ImportJobs, ImportJob]:
    # A limit no run reaches keeps one job alive for every example, so each
    # example exercises the checks rather than the not-found path.
    jobs = ImportJobs(max_failed_attempts=2**62)
    return jobs, jobs.create(ORG_ID, NOW)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    use_job_id=st.booleans(),
    other_job_id=st.text(max_size=80),
    use_token=st.booleans(),
    other_token=st.text(max_size=60),
    shape=st.sampled_from(["raw", "block", "oaep"]),
    payload=st.binary(max_size=600),
    check_value=st.one_of(
        st.text(max_size=12),
        st.from_regex(r"\s*[0-9a-fA-F]{6}\s*", fullmatch=True),
    ),
)
def test_complete_raises_only_import_rejected(
    fuzz_target: tuple[ImportJobs, ImportJob],
    use_job_id: bool,
    other_job_id: str,
    use_token: bool,
    other_token: str,
    shape: str,
    payload: bytes,
    check_value: str,
) -> None:
    jobs, job = fuzz_target
    job_id = job.job_id if use_job_id else other_job_id
    token = job.token if use_token else other_token
    if shape == "block":
        upload = payload[:384].ljust(384, b"\x00")
    elif shape == "oaep":
        payload = payload[:MAX_OAEP_PLAINTEXT]
        upload = _wrap(job, payload)
    else:
        upload = payload
    assume(
        not (
            job_id == job.job_id
            and token == job.token
            and shape == "oaep"
            and len(payload) == 32
            and check_value.strip().upper() == key_check_value(payload)
        )
    )

    with pytest.raises(ImportRejected):
        jobs.complete(job_id, token, upload, check_value, NOW)

    assert jobs.get(job.job_id, NOW) == job

"""Every kind of key rotation while four clients keep reading and writing.

One SeaweedFS and one proxy, with a SoftHSM token and a policy interval of
half a second, serve a steady boto3 load. Between short stretches of load
the module fixture rotates the organisation key (CLI and admin API) and
each DEK. It moves the master key from platform to an imported key, a
second imported key, a token key and back to platform, and lets a rotation
policy fire. The tests
then check that no request failed, that every object reads back as written,
that every write used the key versions current when it started, and what
the key store and the audit log show.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from crypto.header import Header
from crypto.hsm import HsmConfig
from crypto.master import MemoryMasterKey
from proxy.keys import open_keys
from tests.hsm_token import softhsm_tokens
from tests.load import (
    PART_SIZE,
    AdminClient,
    Failure,
    StoredObject,
    VersionBounds,
    Workload,
    import_through_api,
    import_through_cli,
    new_customer_key,
    payload,
    run_cli,
    wait_until,
)
from tests.stack import Backend, ProxyProcess, byok, start_backend, start_proxy

ORG = "rotating-co"
BUCKET = "rotation-load"
PURPOSES = ("messages", "files", "recordings", "transcripts")
# The prefix "files/" has no route, so its objects get the default purpose.
PREFIXES = {purpose: f"{purpose}/" for purpose in PURPOSES}
WORKERS = 4
TOKEN_LABEL = "rotation"
HSM_KEY_LABEL = "rotation-master"
POLICY_INTERVAL = 0.5
POLICY_MAX_AGE = 2.0
# Organisation keys leave the serving proxy's cache after a second, so its
# requests unwrap them again under each master key in turn.
KEY_CACHE_TTL = 1.0
LONG_UPLOAD_KEY = "files/open-across-rotations"
LONG_UPLOAD_SIZE = 3 * PART_SIZE + 1000
# Operations the load must finish after each rotation before the next one.
OPERATIONS_BETWEEN = 3 * WORKERS
STEP_TIMEOUT = 120.0
ORGANISATION = "organisation"
POLICY_ACTOR = "test:rotation-under-load"


@dataclass
class Rig:
    """The servers, clients and load of the run."""

    root: Path
    backend: Backend
    proxy: ProxyProcess
    admin: AdminClient
    hsm_env: dict[str, str]
    workload: Workload
    bounds: VersionBounds
    backend_s3: Any
    credentials: dict[str, str]


@dataclass
class Run:
    """What the rotations returned and what the store showed after each."""

    platform_key_id: str
    org_versions: list[int] = field(default_factory=list)
    dek_versions: dict[str, list[int]] = field(default_factory=dict)
    # step name -> (expected master key id, organisation detail after the step)
    masters: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    objects: list[StoredObject] = field(default_factory=list)


# the servers and the load


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("rotation")
    with softhsm_tokens(root / "hsm", [TOKEN_LABEL]) as tokens:
        backend = start_backend(root / "seaweedfs")
        try:
            yield from _with_proxy(root, backend, tokens[TOKEN_LABEL])
        finally:
            backend.stop()


def _with_proxy(root: Path, backend: Backend, token: HsmConfig) -> Iterator[Rig]:
    data_dir = root / "proxy"
    byok(data_dir, "org", "create", ORG)
    credentials = json.loads(byok(data_dir, "credentials", "create", ORG, "--json"))
    for purpose in ("messages", "recordings", "transcripts"):
        byok(data_dir, "route", "set", BUCKET, PREFIXES[purpose], purpose)
    config = root / "proxy.toml"
    config.write_text(
        f"[serve]\npolicy-interval = {POLICY_INTERVAL}\n"
        f"key-cache-ttl = {KEY_CACHE_TTL}\n"
    )
    hsm_env = {
        "BYOK_PROXY_PKCS11_LIBRARY": str(token.library),
        "BYOK_PROXY_PKCS11_TOKEN": token.token_label,
        "BYOK_PROXY_PKCS11_PIN": token.pin,
    }
    extra_env = {**hsm_env, "BYOK_PROXY_CONFIG": str(config)}
    proxy = start_proxy(data_dir, backend, root / "proxy.log", extra_env=extra_env)
    try:
        clients = [_client(proxy, credentials) for _ in range(WORKERS + 1)]
        clients[0].create_bucket(Bucket=BUCKET)
        bounds = VersionBounds({ORGANISATION: 1, **dict.fromkeys(PURPOSES, 1)})
        workload = Workload(clients[1:], BUCKET, PREFIXES, bounds, seed=7)
        backend_s3 = boto3.client(
            "s3",
            endpoint_url=backend.url,
            aws_access_key_id=backend.access_key,
            aws_secret_access_key=backend.secret_key,
            region_name="us-east-1",
        )
        admin = AdminClient.of(proxy)
        workload.start()
        try:
            yield Rig(
                root, backend, proxy, admin, hsm_env, workload, bounds, backend_s3,
                credentials,
            )  # fmt: skip
        finally:
            workload.stop()
    finally:
        proxy.stop()


def _client(proxy: ProxyProcess, credentials: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=proxy.url,
        aws_access_key_id=credentials["access_key_id"],
        aws_secret_access_key=credentials["secret_access_key"],
        region_name="us-east-1",
    )


# the rotations


@pytest.fixture(scope="module")
def run(rig: Rig) -> Run:
    """Go through every rotation under load, then stop the load.

    One multipart upload stays open from before the first rotation to the
    end, and gets a part under the platform, an imported and the token key.
    """
    status = json.loads(byok(rig.proxy.data_dir, "status", "--json"))
    result = Run(platform_key_id=status["master_key_id"])
    result.dek_versions = {purpose: [] for purpose in PURPOSES}
    rig.workload.wait_for_operations(OPERATIONS_BETWEEN, STEP_TIMEOUT)
    client = _client(rig.proxy, rig.credentials)
    rig.workload.watch(client)
    long_upload = LongUpload(client, rig.bounds)
    long_upload.upload_part()

    steps: list[Callable[[Rig, Run], None]] = [
        _rotate_org_with_cli,
        _rotate_org_with_api,
        *(_rotate_dek_step(purpose) for purpose in PURPOSES),
        _import_first_key,
        lambda rig, run: long_upload.upload_part(),
        _rotate_org_with_api,
        _let_policy_fire,
        _import_second_key,
        _move_into_token,
        lambda rig, run: long_upload.upload_part(),
        _rotate_org_with_api,
        _rotate_files_dek_with_cli,
        _move_to_platform,
        _rotate_org_with_cli,
    ]
    for step in steps:
        step(rig, result)
        rig.workload.wait_for_operations(OPERATIONS_BETWEEN, STEP_TIMEOUT)

    long_object = long_upload.complete()
    rig.workload.stop()
    result.failures = rig.workload.failures
    result.objects = [*rig.workload.objects, long_object]
    return result


class LongUpload:
    """A multipart upload created before the first rotation and completed after all.

    Its header, and so its DEK, is fixed when it is created, and its parts
    arrive while the organisation is under different master keys.
    """

    def __init__(self, client: Any, bounds: VersionBounds) -> None:
        self._client = client
        self._seed = 99
        self._body = payload(self._seed, LONG_UPLOAD_SIZE)
        self._low = bounds.low()
        answer = client.create_multipart_upload(Bucket=BUCKET, Key=LONG_UPLOAD_KEY)
        self._high = bounds.high()
        self._upload_id = answer["UploadId"]
        self.parts: list[dict[str, Any]] = []

    def upload_part(self) -> None:
        """Upload the next part of 5 MiB, or the rest of the body."""
        number = len(self.parts) + 1
        start = (number - 1) * PART_SIZE
        answer = self._client.upload_part(
            Bucket=BUCKET,
            Key=LONG_UPLOAD_KEY,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=self._body[start : start + PART_SIZE],
        )
        self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def complete(self) -> StoredObject:
        """Upload the last part, complete the upload and describe the object."""
        self.upload_part()
        self._client.complete_multipart_upload(
            Bucket=BUCKET,
            Key=LONG_UPLOAD_KEY,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self.parts},
        )
        size = len(self._body)
        return StoredObject(
            LONG_UPLOAD_KEY,
            self._seed,
            size,
            "files",
            "multipart",
            self._low,
            self._high,
        )


def _rotate_org_with_cli(rig: Rig, run: Run) -> None:
    def rotate() -> int:
        output = run_cli(rig.proxy.data_dir, "org", "rotate", ORG, env=rig.hsm_env)
        return int(output.split()[-1])

    run.org_versions.append(_rotating(rig, ORGANISATION, rotate))


def _rotate_org_with_api(rig: Rig, run: Run) -> None:
    def rotate() -> int:
        answer = rig.admin.ok(
            "POST", f"/v1/organisations/{ORG}/rotate", {"key": "organisation"}
        )
        return int(answer["version"])

    run.org_versions.append(_rotating(rig, ORGANISATION, rotate))


def _rotate_dek_step(purpose: str) -> Callable[[Rig, Run], None]:
    """Rotate one DEK: messages and files with the CLI, the others with the API."""

    def step(rig: Rig, run: Run) -> None:
        rotate = _dek_with_cli if purpose in ("messages", "files") else _dek_with_api
        version = _rotating(rig, purpose, functools.partial(rotate, rig, purpose))
        run.dek_versions[purpose].append(version)

    return step


def _rotate_files_dek_with_cli(rig: Rig, run: Run) -> None:
    """Rotate the files DEK from a CLI process, which opens the token itself."""
    rotate = functools.partial(_dek_with_cli, rig, "files")
    run.dek_versions["files"].append(_rotating(rig, "files", rotate))


def _dek_with_cli(rig: Rig, purpose: str) -> int:
    output = run_cli(
        rig.proxy.data_dir, "org", "rotate-dek", ORG, purpose, env=rig.hsm_env
    )
    return int(output.split()[-1])


def _dek_with_api(rig: Rig, purpose: str) -> int:
    body = {"key": "dek", "purpose": purpose}
    answer = rig.admin.ok("POST", f"/v1/organisations/{ORG}/rotate", body)
    return int(answer["version"])


def _rotating(rig: Rig, name: str, rotate: Callable[[], int]) -> int:
    """Run one rotation with the version bounds of writes around it."""
    rig.bounds.rotating(name, rig.bounds.current(name) + 1)
    version = rotate()
    rig.bounds.rotated(name, version)
    return version


def _import_first_key(rig: Rig, run: Run) -> None:
    customer = rig.root / "customer-a"
    key = new_customer_key(customer)
    output = import_through_cli(rig.proxy, ORG, customer)
    assert "now uses its imported master key" in output
    _record_master(rig, run, "imported-a", MemoryMasterKey(key).key_id)


def _import_second_key(rig: Rig, run: Run) -> None:
    customer = rig.root / "customer-b"
    key = new_customer_key(customer)
    import_through_api(rig.admin, ORG, customer)
    _record_master(rig, run, "imported-b", MemoryMasterKey(key).key_id)


def _move_into_token(rig: Rig, run: Run) -> None:
    output = run_cli(
        rig.proxy.data_dir,
        "hsm",
        "generate-key",
        "--key-label",
        HSM_KEY_LABEL,
        env=rig.hsm_env,
    )
    found = re.search(r"with key id (\S+)", output)
    assert found is not None, output
    body = {"source": "hsm", "key_label": HSM_KEY_LABEL}
    rig.admin.ok("POST", f"/v1/organisations/{ORG}/master", body)
    _record_master(rig, run, "hsm", found.group(1))


def _move_to_platform(rig: Rig, run: Run) -> None:
    rig.admin.ok("POST", f"/v1/organisations/{ORG}/master", {"source": "platform"})
    _record_master(rig, run, "platform", run.platform_key_id)


def _record_master(rig: Rig, run: Run, step: str, expected_key_id: str) -> None:
    detail = rig.admin.ok("GET", f"/v1/organisations/{ORG}")
    run.masters[step] = (expected_key_id, detail)


def _let_policy_fire(rig: Rig, run: Run) -> None:
    """Set a policy the API rejects, the smallest it accepts, then one that fires.

    The CLI and the admin API take whole days, so the test sets a policy of
    a few seconds through the key operations that both of them call.
    """
    path = f"/v1/organisations/{ORG}/policy"
    run.policy["zero_days"] = rig.admin.request("PUT", path, {"max_key_age_days": 0})
    run.policy["one_day"] = rig.admin.ok("PUT", path, {"max_key_age_days": 1})

    before = _active_version(rig)
    # The policy may fire more than once before it is cleared.
    rig.bounds.rotating(ORGANISATION, before + 100)
    keys = open_keys(rig.proxy.data_dir, actor=POLICY_ACTOR)
    try:
        keys.operations.set_max_key_age(POLICY_ACTOR, ORG, POLICY_MAX_AGE)
    finally:
        keys.close()
    wait_until(lambda: _active_version(rig) > before, 30, "a policy rotation")
    run.policy["cleared"] = rig.admin.ok("PUT", path, {"max_key_age_days": None})
    fired = _active_version(rig)
    rig.bounds.rotated(ORGANISATION, fired)
    run.org_versions.extend(range(before + 1, fired + 1))

    # no rotation follows once the policy is cleared
    rig.workload.wait_for_operations(OPERATIONS_BETWEEN, STEP_TIMEOUT)
    wait_for_ticks = POLICY_MAX_AGE + 3 * POLICY_INTERVAL
    run.policy["fired"] = fired
    run.policy["later"] = _version_after(rig, wait_for_ticks)


def _active_version(rig: Rig) -> int:
    detail = rig.admin.ok("GET", f"/v1/organisations/{ORG}")
    versions = [
        int(entry["version"])
        for entry in detail["org_keys"]
        if entry["state"] == "active"
    ]
    return max(versions)


def _version_after(rig: Rig, seconds: float) -> int:
    """Return the active version once `seconds` have passed, under load."""
    time.sleep(seconds)
    return _active_version(rig)


# the checks


def test_no_request_failed(run: Run) -> None:
    assert run.failures == []


def test_load_wrote_every_kind(run: Run) -> None:
    kinds = {stored.kind for stored in run.objects}
    assert kinds == {"put", "multipart", "transfer", "copy"}


@pytest.fixture(scope="module")
def fresh_proxy(rig: Rig, run: Run) -> Iterator[ProxyProcess]:
    """A second proxy on the same data directory, with no key cached yet.

    By the end of the run the organisation is back under the platform key,
    so this proxy unwraps every organisation key version from the store.
    """
    log = rig.root / "fresh-proxy.log"
    proxy = start_proxy(rig.proxy.data_dir, rig.backend, log)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.mark.parametrize("reader", ["serving", "fresh"])
def test_objects_read_back_identical(
    rig: Rig, run: Run, fresh_proxy: ProxyProcess, reader: str
) -> None:
    proxy = rig.proxy if reader == "serving" else fresh_proxy
    client = _client(proxy, rig.credentials)

    def mismatch(stored: StoredObject) -> str | None:
        body = client.get_object(Bucket=BUCKET, Key=stored.key)["Body"].read()
        expected = hashlib.sha256(stored.body()).hexdigest()
        if hashlib.sha256(body).hexdigest() == expected:
            return None
        return f"{stored.key} ({stored.kind}, {stored.size} bytes)"

    with ThreadPoolExecutor(WORKERS) as pool:
        mismatches = [name for name in pool.map(mismatch, run.objects) if name]

    assert mismatches == []


def test_writes_use_current_versions(rig: Rig, run: Run) -> None:
    """Every upload used the DEK and organisation key current when it started.

    Copies are left out, because a copy may keep its source's DEK.
    """
    wrong = []
    for stored in run.objects:
        if stored.kind == "copy":
            continue
        metadata = rig.backend_s3.head_object(Bucket=BUCKET, Key=stored.key)["Metadata"]
        header = Header.from_metadata(metadata["byok-header"])
        dek_range = (stored.low[stored.purpose], stored.high[stored.purpose])
        org_range = (stored.low[ORGANISATION], stored.high[ORGANISATION])
        if (
            header.purpose.label != stored.purpose
            or not dek_range[0] <= header.dek_version <= dek_range[1]
            or not org_range[0] <= header.org_key_version <= org_range[1]
        ):
            wrong.append(
                f"{stored.key}: {header.purpose.label} DEK v{header.dek_version} "
                f"(expected {dek_range}), organisation key "
                f"v{header.org_key_version} (expected {org_range})"
            )
    assert wrong == []


def test_org_rotations_count_up(run: Run) -> None:
    assert run.org_versions == list(range(2, len(run.org_versions) + 2))


def test_dek_rotations_count_up(run: Run) -> None:
    expected = {purpose: [2] for purpose in PURPOSES}
    expected["files"] = [2, 3]
    assert run.dek_versions == expected


@pytest.mark.parametrize("step", ["imported-a", "imported-b", "hsm", "platform"])
def test_master_rotation_rewraps_every_version(run: Run, step: str) -> None:
    expected_key_id, detail = run.masters[step]
    source = step.split("-")[0]
    assert detail["key_source"] == source
    assert detail["key_state"] == "active"
    assert {entry["master_key_id"] for entry in detail["org_keys"]} == {expected_key_id}


def test_master_keys_differ(run: Run) -> None:
    key_ids = [key_id for key_id, _ in run.masters.values()]
    assert len(set(key_ids)) == len(key_ids)


def test_policy_below_one_day_rejected(run: Run) -> None:
    status, answer = run.policy["zero_days"]
    assert status == 400
    assert answer["error"]["code"] == "InvalidRequest"


def test_policy_of_one_day_accepted(run: Run) -> None:
    assert run.policy["one_day"]["max_key_age_days"] == 1


def test_policy_fires_and_stops(run: Run) -> None:
    assert run.policy["cleared"]["max_key_age_days"] is None
    assert run.policy["later"] == run.policy["fired"]


def test_status_shows_every_version(rig: Rig, run: Run) -> None:
    status = json.loads(byok(rig.proxy.data_dir, "status", "--json"))
    (entry,) = status["organisations"]
    last = run.org_versions[-1]
    expected_org_keys = [[v, "rotated"] for v in range(1, last)] + [[last, "active"]]
    expected_deks = {
        purpose: versions[-1] for purpose, versions in run.dek_versions.items()
    }

    assert entry["name"] == ORG
    assert entry["state"] == "active"
    assert entry["org_keys"] == expected_org_keys
    assert dict(entry["active_deks"]) == expected_deks


def test_audit_log_intact(rig: Rig, run: Run) -> None:
    output = byok(rig.proxy.data_dir, "audit", "verify")
    assert output.startswith("audit log intact")


def test_proxy_still_running(rig: Rig, run: Run) -> None:
    assert rig.proxy.process.poll() is None

"""Run ceph/s3-tests against SeaweedFS directly and through byok-proxy.

Usage:

    .venv/bin/python tests/conformance/run_s3tests.py S3TESTS_DIR S3TESTS_VENV

S3TESTS_DIR is a checkout of https://github.com/ceph/s3-tests and
S3TESTS_VENV a virtual environment with its requirements.txt and
pytest-timeout installed. The script starts one SeaweedFS and one proxy in
front of it on 127.0.0.1, each with three users (main, alt, tenant). It runs
the same selection of the suite against both, then prints the counts and the
tests that pass directly but not through the proxy. JUnit XML, logs and
configs go to --out (a new temporary directory by default).

The proxy runs from the checkout that contains this script, with that
checkout's working tree.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))

from tests.stack import (  # noqa: E402
    Backend,
    ProxyProcess,
    byok,
    start_backend,
    start_proxy,
)

USERS = ("main", "alt", "tenant")
TEST_FILES = ("s3tests/functional/test_s3.py", "s3tests/functional/test_headers.py")

# Features the proxy does not offer (IAM, STS, policies, lifecycle, website,
# SSE-C, SSE-KMS and SSE-S3, object lock, S3 Select, notifications, logging,
# cloud tiering, append) are deselected by their pytest markers.
EXCLUDED_MARKERS = (
    "encryption", "sse_s3", "bucket_encryption", "lifecycle", "s3select",
    "s3website", "sns", "iam_account", "iam_user", "iam_role", "iam_tenant",
    "iam_cross_account", "bucket_logging", "cloud_transition", "cloud_restore",
    "webidentity_test", "test_of_sts", "object_lock", "appendobject",
    "bucket_policy", "user_policy", "role_policy", "session_policy",
    "group_policy", "abac_test",
)  # fmt: skip
MARKER_FILTER = f"not ({' or '.join(EXCLUDED_MARKERS)})"

OUTCOMES = ("passed", "failed", "error", "skipped")


@dataclass(frozen=True)
class Credentials:
    """An access key id and secret key of one suite user."""

    access_key: str
    secret_key: str
    # the canonical user id the target reports for this user, if it is not
    # the user's name (the proxy names an organisation by its id)
    user_id: str = ""


@dataclass(frozen=True)
class Target:
    """One S3 endpoint to run the suite against, with keys for every user."""

    name: str
    url: str
    users: dict[str, Credentials]


def parse_arguments() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("s3tests", type=Path, help="checkout of ceph/s3-tests")
    parser.add_argument("venv", type=Path, help="virtual environment of the suite")
    parser.add_argument(
        "--out", type=Path, help="directory for results (default: a new temp dir)"
    )
    parser.add_argument(
        "--timeout", type=int, default=120, help="limit per test, in seconds"
    )
    parser.add_argument(
        "--run-timeout", type=int, default=3600, help="limit per run, in seconds"
    )
    parser.add_argument(
        "--target",
        choices=("both", "direct", "proxy"),
        default="both",
        help="which runs to do",
    )
    parser.add_argument(
        "--parallel", action="store_true", help="do both runs at the same time"
    )
    parser.add_argument("-k", dest="keyword", help="pytest -k expression (subset)")
    return parser.parse_args()


def check_suite(s3tests: Path, venv: Path) -> Path:
    """Check the checkout and the venv, and return the venv's Python."""
    for name in TEST_FILES[:1]:
        if not (s3tests / name).is_file():
            raise SystemExit(
                f"{s3tests / name} is missing. Is {s3tests} a checkout of s3-tests?"
            )
    python = venv / "bin" / "python"
    if not python.is_file():
        raise SystemExit(f"{python} is missing. Create the venv first.")
    probe = [str(python), "-c", "import boto3, munch, pytest, pytest_timeout"]
    if subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        raise SystemExit(
            f"{venv} lacks the suite's packages. Run: {python} -m pip install "
            f"-r {s3tests / 'requirements.txt'} pytest-timeout"
        )
    return python


def new_credentials(name: str) -> Credentials:
    """Create random SeaweedFS credentials for user `name`."""
    access_key = (name.upper() + secrets.token_hex(10).upper())[:20]
    return Credentials(access_key, secrets.token_hex(20))


def proxy_users(data_dir: Path) -> dict[str, Credentials]:
    """Create one organisation with one set of credentials per suite user."""
    users = {}
    for name in USERS:
        byok(data_dir, "org", "create", name)
        keys = json.loads(byok(data_dir, "credentials", "create", name, "--json"))
        users[name] = Credentials(keys["access_key_id"], keys["secret_access_key"])
    for line in byok(data_dir, "org", "list").splitlines():
        name, _, org_id, _ = line.split("\t")
        if name in users:
            users[name] = replace(users[name], user_id=org_id)
    return users


def write_config(target: Target, path: Path) -> None:
    """Write an s3tests config file for `target`.

    The suite reads every section below, the IAM ones included. The IAM
    users reuse the main user's keys because IAM tests are deselected.
    """
    host, port = target.url.removeprefix("http://").split(":")
    config = configparser.RawConfigParser()
    config["DEFAULT"] = {
        "host": host, "port": port, "is_secure": "False", "ssl_verify": "False"
    }  # fmt: skip
    config["fixtures"] = {"bucket prefix": "s3t-{random}-"}
    for name, keys in target.users.items():
        section = _user_section(name, keys)
        if name == "tenant":
            section["tenant"] = "testx"
        config[f"s3 {name}"] = section
    main = target.users["main"]
    for section_name in ("iam", "iam root", "iam alt root"):
        config[section_name] = _user_section(section_name.replace(" ", ""), main)
    with path.open("w") as output:
        config.write(output)


def _user_section(name: str, keys: Credentials) -> dict[str, str]:
    return {
        "display_name": name,
        "user_id": keys.user_id or name,
        "email": f"{name}@example.com",
        "access_key": keys.access_key,
        "secret_key": keys.secret_key,
    }


def pytest_command(python: Path, args: argparse.Namespace, junit: Path) -> list[str]:
    """Build the pytest command line of one run."""
    files = [name for name in TEST_FILES if (args.s3tests / name).is_file()]
    command = [
        str(python), "-m", "pytest", *files,
        "-p", "no:cacheprovider", "-p", "s3tests_cleanup",
        "-m", MARKER_FILTER, f"--timeout={args.timeout}",
        f"--junitxml={junit}", "-q", "-rN", "--tb=short",
    ]  # fmt: skip
    if args.keyword:
        command += ["-k", args.keyword]
    return command


def suite_environment(config: Path) -> dict[str, str]:
    """Return the environment of a run: its config, no AWS profile, no proxy."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AWS_") and name.lower() not in _PROXY_VARIABLES
    }
    env.update({
        "S3TEST_CONF": str(config),
        "PYTHONPATH": str(HERE),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost",
    })  # fmt: skip
    return env


_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")


def start_run(
    target: Target, python: Path, args: argparse.Namespace
) -> subprocess.Popen[bytes]:
    """Write the config of `target` and start pytest on it in the background."""
    config = args.out / f"{target.name}.conf"
    write_config(target, config)
    junit = args.out / f"{target.name}.xml"
    command = pytest_command(python, args, junit)
    (args.out / f"{target.name}.command").write_text(shlex.join(command) + "\n")
    with (args.out / f"{target.name}.log").open("wb") as log:
        return subprocess.Popen(
            command,
            cwd=args.s3tests,
            env=suite_environment(config),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_run(process: subprocess.Popen[bytes], name: str, limit: float) -> None:
    """Wait for a run, and stop it when it takes longer than `limit` seconds."""
    try:
        process.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        print(f"{name}: run timed out after {limit:.0f} s; stopping it", flush=True)
        os.killpg(process.pid, signal.SIGTERM)
        process.wait()


def outcomes(junit: Path) -> dict[str, str]:
    """Read JUnit XML and return each test's outcome, one of OUTCOMES."""
    results = {}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        results[name] = _outcome(case)
    return results


def _outcome(case: ElementTree.Element) -> str:
    if case.find("failure") is not None:
        return "failed"
    if case.find("error") is not None:
        return "error"
    if case.find("skipped") is not None:
        return "skipped"
    return "passed"


def failure_message(junit: Path, test: str) -> str:
    """Return the first line of a test's failure or error message."""
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        if f"{case.get('classname')}::{case.get('name')}" != test:
            continue
        for tag in ("failure", "error"):
            element = case.find(tag)
            if element is not None:
                return (element.get("message") or "").splitlines()[0][:200]
    return ""


def report(out: Path, names: list[str]) -> None:
    """Print the counts of each run and the proxy-only failures."""
    results = {}
    for name in names:
        junit = out / f"{name}.xml"
        if not junit.is_file():
            print(f"{name}: no results in {junit}; see {out / (name + '.log')}")
            continue
        results[name] = outcomes(junit)
        counts = Counter(results[name].values())
        summary = ", ".join(f"{counts[outcome]} {outcome}" for outcome in OUTCOMES)
        print(f"{name}: {len(results[name])} tests: {summary}")
    if {"direct", "proxy"} <= results.keys():
        _report_difference(out, results["direct"], results["proxy"])


def _report_difference(
    out: Path, direct: dict[str, str], proxied: dict[str, str]
) -> None:
    lost = sorted(
        test
        for test, outcome in direct.items()
        if outcome == "passed" and proxied.get(test) in ("failed", "error")
    )
    lines = [
        f"{test}\t{proxied[test]}\t{failure_message(out / 'proxy.xml', test)}"
        for test in lost
    ]
    (out / "proxy-only-failures.tsv").write_text("".join(f"{x}\n" for x in lines))
    print(f"{len(lost)} tests pass directly but not through the proxy:")
    print("\n".join(lines))


def start_stack(out: Path) -> tuple[Backend, ProxyProcess, list[Target]]:
    """Start SeaweedFS and the proxy, and return the two targets."""
    backend_users = {name: new_credentials(name) for name in USERS}
    backend = start_backend(
        out / "seaweedfs",
        {
            name: (keys.access_key, keys.secret_key)
            for name, keys in backend_users.items()
        },
    )
    try:
        data_dir = out / "proxy-data"
        users = proxy_users(data_dir)
        proxy = start_proxy(data_dir, backend, out / "proxy-server.log")
    except BaseException:
        backend.stop()
        raise
    targets = [
        Target("direct", backend.url, backend_users),
        Target("proxy", proxy.url, users),
    ]
    return backend, proxy, targets


def run_targets(targets: list[Target], python: Path, args: argparse.Namespace) -> None:
    """Run the suite against each target, one after the other or in parallel."""
    deadline = args.run_timeout * (1 if args.parallel else len(targets))
    started = time.monotonic()
    running = []
    for target in targets:
        print(f"{target.name}: running against {target.url}", flush=True)
        process = start_run(target, python, args)
        running.append((target.name, process))
        if not args.parallel:
            wait_run(process, target.name, args.run_timeout)
    for name, process in running:
        remaining = max(1.0, deadline - (time.monotonic() - started))
        wait_run(process, name, remaining)
        print(f"{name}: pytest exited with {process.returncode}", flush=True)


def main() -> None:
    """Start the servers, run the suite against them and print the results."""
    args = parse_arguments()
    args.s3tests = args.s3tests.resolve()
    python = check_suite(args.s3tests, args.venv.resolve())
    args.out = (args.out or Path(tempfile.mkdtemp(prefix="s3tests-"))).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"results in {args.out}", flush=True)
    os.chdir(REPO)  # the proxy process imports the checkout this script sits in
    backend, proxy, targets = start_stack(args.out)
    chosen = [t for t in targets if args.target in ("both", t.name)]
    try:
        run_targets(chosen, python, args)
    finally:
        proxy.stop()
        backend.stop()
    report(args.out, [target.name for target in chosen])


if __name__ == "__main__":
    main()

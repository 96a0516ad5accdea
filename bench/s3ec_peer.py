"""Upload or download one file with the AWS S3 Encryption Client for Python.

The bench runs this file as a script with an interpreter that has
`amazon-s3-encryption-client-python` (version 4 pins cryptography below
49, older than the proxy's, so it usually lives in a virtual environment
of its own). The script imports nothing from this repository. It prints
one JSON line with the seconds spent in the transfer, after the imports
and client set-up, and with --check the SHA-256 of what it downloaded.

S3 credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. The
KMS is moto's server, which accepts any credentials.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from typing import Any

import boto3  # type: ignore[import-untyped, unused-ignore]
from s3_encryption import (  # type: ignore[import-not-found, unused-ignore]
    S3EncryptionClient,
    S3EncryptionClientConfig,
)
from s3_encryption.materials import KmsKeyring  # type: ignore[import-not-found, unused-ignore]

_READ_SIZE = 1024 * 1024
_REGION = "us-east-1"


def _client(arguments: argparse.Namespace) -> Any:
    s3 = boto3.client("s3", endpoint_url=arguments.s3_endpoint, region_name=_REGION)
    kms = boto3.client(
        "kms",
        endpoint_url=arguments.kms_endpoint,
        region_name=_REGION,
        aws_access_key_id="moto",
        aws_secret_access_key="moto",
    )
    keyring = KmsKeyring(kms_client=kms, kms_key_id=arguments.kms_key_id)
    return S3EncryptionClient(s3, S3EncryptionClientConfig(keyring=keyring))


def _upload(client: Any, arguments: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    client.upload_file(arguments.file, arguments.bucket, arguments.key)
    return {"seconds": time.perf_counter() - started}


def _download(client: Any, arguments: argparse.Namespace) -> dict[str, Any]:
    digest = hashlib.sha256() if arguments.check else None
    started = time.perf_counter()
    body = client.get_object(Bucket=arguments.bucket, Key=arguments.key)["Body"]
    while chunk := body.read(_READ_SIZE):
        if digest is not None:
            digest.update(chunk)
    answer: dict[str, Any] = {"seconds": time.perf_counter() - started}
    if digest is not None:
        answer["sha256"] = digest.hexdigest()
    return answer


def main() -> None:
    """Parse the command line, run one transfer and print its JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["upload", "download"])
    parser.add_argument("--s3-endpoint", required=True)
    parser.add_argument("--kms-endpoint", required=True)
    parser.add_argument("--kms-key-id", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--file", help="file to upload")
    parser.add_argument("--check", action="store_true", help="print the SHA-256")
    arguments = parser.parse_args()
    client = _client(arguments)
    if arguments.action == "upload":
        answer = _upload(client, arguments)
    else:
        answer = _download(client, arguments)
    print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()

"""Run the AWS CLI from the test environment against a proxy."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import Tenant
from tests.stack import BIN

__all__ = ["AWS", "AwsCli"]

AWS = BIN / "aws"


class AwsCli:
    """Runs `aws` against the proxy with one tenant's credentials."""

    def __init__(self, endpoint: str, tenant: Tenant, home: Path) -> None:
        self.endpoint = endpoint
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(home),
            "AWS_ACCESS_KEY_ID": tenant.access_key_id,
            "AWS_SECRET_ACCESS_KEY": tenant.secret_access_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(home / "missing-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "missing-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "PYTHONIOENCODING": "utf-8",
        }

    def run(self, *args: str, stdin: bytes | None = None) -> bytes:
        """Run one command; raise with its error output if it fails."""
        result = subprocess.run(
            [str(AWS), "--endpoint-url", self.endpoint, *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"aws {' '.join(args)} failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace')}"
            )
        return result.stdout

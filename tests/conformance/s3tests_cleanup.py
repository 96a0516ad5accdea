"""pytest plugin for ceph/s3-tests: empty buckets without ListObjectVersions.

Around every test the suite deletes the buckets it created, and it lists
their contents with ListObjectVersions. The proxy rejects that call with
501 NotImplemented, so the buckets stay and every later test errors in
setup. Where ListObjectVersions returns NotImplemented, this plugin lists
the bucket with ListObjectsV2 instead. Against a store that implements
ListObjectVersions nothing changes.

run_s3tests.py loads it with `-p s3tests_cleanup` in both runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import s3tests.functional as suite  # type: ignore[import-not-found]
from botocore.exceptions import ClientError

Batch = list[dict[str, str]]

_list_versions = suite.list_versions


def _list_versions_or_objects(
    client: Any, bucket: str, batch_size: int
) -> Iterator[Batch]:
    try:
        yield from _list_versions(client, bucket, batch_size)
    except ClientError as error:
        if error.response["Error"]["Code"] != "NotImplemented":
            raise
        yield from _list_objects(client, bucket, batch_size)


def _list_objects(client: Any, bucket: str, batch_size: int) -> Iterator[Batch]:
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, PaginationConfig={"PageSize": batch_size}
    )
    for page in pages:
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            yield keys


suite.list_versions = _list_versions_or_objects

"""Object and bucket tags pass through as object store metadata."""

from __future__ import annotations

from typing import Any


def test_object_tagging_round_trip(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="tagged", Body=b"x", Tagging="team=red")
    assert s3.get_object_tagging(Bucket=bucket, Key="tagged")["TagSet"] == [
        {"Key": "team", "Value": "red"}
    ]
    s3.put_object_tagging(
        Bucket=bucket,
        Key="tagged",
        Tagging={"TagSet": [{"Key": "stage", "Value": "final"}]},
    )
    assert s3.get_object_tagging(Bucket=bucket, Key="tagged")["TagSet"] == [
        {"Key": "stage", "Value": "final"}
    ]
    s3.delete_object_tagging(Bucket=bucket, Key="tagged")
    assert s3.get_object_tagging(Bucket=bucket, Key="tagged")["TagSet"] == []
    assert s3.get_object(Bucket=bucket, Key="tagged")["Body"].read() == b"x"


def test_bucket_tagging_round_trip(s3: Any, bucket: str) -> None:
    s3.put_bucket_tagging(
        Bucket=bucket, Tagging={"TagSet": [{"Key": "cost", "Value": "ops"}]}
    )
    tags = s3.get_bucket_tagging(Bucket=bucket)["TagSet"]
    assert tags == [{"Key": "cost", "Value": "ops"}]

"""POST policy documents: parsing, form checks and size ranges, without a server."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.errors import S3Error
from proxy.post_policy import (
    Condition,
    PostPolicy,
    check_fields,
    check_size,
    parse_policy,
)

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
LATER = "2030-06-01T13:00:00.000Z"


def encode(document: Any) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()


def policy(*conditions: Any, expiration: str = LATER) -> PostPolicy:
    return parse_policy(encode({"expiration": expiration, "conditions": conditions}))


def policy_error(document: Any) -> S3Error:
    with pytest.raises(S3Error) as error:
        parse_policy(encode(document))
    return error.value


# parsing


def test_parse_policy_conditions() -> None:
    parsed = policy(
        {"Bucket": "photos"},
        ["STARTS-WITH", "$Key", "user/"],
        ["eq", "$x-amz-meta-Tag", "Blue"],
        ["content-length-range", 1, 100],
        ["content-length-range", "5", "50"],
    )
    assert parsed.expiration == datetime(2030, 6, 1, 13, 0, tzinfo=UTC)
    assert parsed.conditions == (
        Condition("eq", "bucket", "photos"),
        Condition("starts-with", "key", "user/"),
        Condition("eq", "x-amz-meta-tag", "Blue"),
    )
    assert parsed.size_ranges == ((1, 100), (5, 50))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2030-01-02T03:04:05Z", datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2030-01-02T03:04:05.5Z", datetime(2030, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)),
        (
            "2030-01-02T03:04:05.123456789Z",
            datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        ),
    ],
)
def test_parse_policy_expiration(text: str, expected: datetime) -> None:
    assert policy(expiration=text).expiration == expected


def test_parse_policy_wrapped_base64() -> None:
    encoded = encode({"expiration": LATER, "conditions": [{"key": "k"}]})
    wrapped = "\n".join(encoded[i : i + 20] for i in range(0, len(encoded), 20))
    assert parse_policy(wrapped).conditions == (Condition("eq", "key", "k"),)


@pytest.mark.parametrize(
    "encoded",
    ["not base64!", base64.b64encode(b"\xff\xfe").decode(), encode([1, 2])],
)
def test_parse_policy_undecodable(encoded: str) -> None:
    with pytest.raises(S3Error) as error:
        parse_policy(encoded)
    assert error.value.code == "InvalidPolicyDocument"
    assert error.value.status == 400


def test_parse_policy_invalid_json() -> None:
    with pytest.raises(S3Error) as error:
        parse_policy(base64.b64encode(b'{"expiration": ').decode())
    assert error.value.code == "InvalidPolicyDocument"
    assert "Invalid JSON" in error.value.message


@pytest.mark.parametrize(
    ("document", "detail"),
    [
        ({"conditions": []}, "missing expiration"),
        ({"EXPIRATION": LATER, "conditions": []}, "missing expiration"),
        ({"expiration": LATER}, "missing conditions"),
        ({"expiration": LATER, "CONDITIONS": []}, "missing conditions"),
        ({"expiration": LATER, "conditions": {"key": "k"}}, "must be a list"),
        ({"expiration": "2030-06-01 13:00:00+00:00", "conditions": []}, "expiration"),
        ({"expiration": "2030-06-01T13:00:00+01:00", "conditions": []}, "expiration"),
        ({"expiration": "2030-02-30T13:00:00Z", "conditions": []}, "expiration"),
        ({"expiration": 1893456000, "conditions": []}, "expiration"),
        ({"expiration": LATER, "conditions": [{}]}, "exactly one property"),
        ({"expiration": LATER, "conditions": [{"a": "1", "b": "2"}]}, "exactly one"),
        ({"expiration": LATER, "conditions": [{"key": 5}]}, "must be a string"),
        ({"expiration": LATER, "conditions": ["key"]}, "Invalid condition"),
        ({"expiration": LATER, "conditions": [[]]}, "Invalid condition"),
        ({"expiration": LATER, "conditions": [["in", "$key", "a"]]}, "unknown"),
        ({"expiration": LATER, "conditions": [["eq", "$key"]]}, "takes a $field"),
        ({"expiration": LATER, "conditions": [["eq", "key", "a"]]}, "'$'"),
        ({"expiration": LATER, "conditions": [["eq", "$", "a"]]}, "'$'"),
        ({"expiration": LATER, "conditions": [["eq", "$key", 1]]}, "a string"),
    ],
)
def test_parse_policy_invalid_document(document: Any, detail: str) -> None:
    error = policy_error(document)
    assert error.code == "InvalidPolicyDocument"
    assert error.status == 400
    assert detail in error.message


@pytest.mark.parametrize(
    "condition",
    [
        ["content-length-range", 0],
        ["content-length-range", 0, 1, 2],
        ["content-length-range", -1, 0],
        ["content-length-range", 10, 5],
        ["content-length-range", 1.5, 10],
        ["content-length-range", True, 10],
        ["content-length-range", "1e3", 10],
        ["content-length-range", None, 10],
    ],
)
def test_parse_policy_invalid_size_range(condition: list[Any]) -> None:
    error = policy_error({"expiration": LATER, "conditions": [condition]})
    assert error.code == "InvalidPolicyDocument"
    assert "content-length-range" in error.message


# checking a form


def test_check_fields_accepts_form() -> None:
    parsed = policy(
        {"bucket": "photos"},
        ["starts-with", "$key", "user/"],
        ["starts-with", "$Content-Type", ""],
        {"success_action_status": "201"},
    )
    fields = {
        "key": "user/cat.jpg",
        "content-type": "image/jpeg",
        "success_action_status": "201",
        "policy": "...",
        "x-amz-signature": "...",
        "awsaccesskeyid": "...",
        "signature": "...",
        "x-ignore-flash": "1",
    }
    check_fields(parsed, fields, bucket="photos", now=NOW)


@pytest.mark.parametrize(
    ("condition", "fields"),
    [
        (["eq", "$key", "a.txt"], {"key": "A.txt"}),
        (["starts-with", "$key", "user/"], {"key": "other/user/a"}),
        ({"x-amz-meta-tag": "blue"}, {}),
        (["starts-with", "$x-amz-meta-tag", "b"], {}),
        ({"bucket": "photos"}, {"bucket": "other"}),
    ],
)
def test_check_fields_condition_fails(condition: Any, fields: dict[str, str]) -> None:
    parsed = policy(condition, ["starts-with", "$key", ""], ["eq", "$bucket", "other"])
    with pytest.raises(S3Error) as error:
        check_fields(parsed, fields, bucket="other", now=NOW)
    assert error.value.code == "AccessDenied"
    assert error.value.status == 403
    assert error.value.message.startswith(
        "Invalid according to Policy: Policy Condition failed: "
    )


def test_check_fields_bucket_is_addressed_bucket() -> None:
    parsed = policy({"bucket": "photos"})
    check_fields(parsed, {"bucket": "photos"}, bucket="photos", now=NOW)
    with pytest.raises(S3Error) as error:
        check_fields(parsed, {"bucket": "photos"}, bucket="videos", now=NOW)
    assert error.value.code == "AccessDenied"
    assert '["eq", "$bucket", "photos"]' in error.value.message


def test_check_fields_missing_field_matches_empty_prefix() -> None:
    parsed = policy(["starts-with", "$x-amz-meta-note", ""])
    check_fields(parsed, {}, bucket="b", now=NOW)


def test_check_fields_extra_field() -> None:
    parsed = policy(["starts-with", "$key", ""])
    fields = {"key": "k", "x-amz-meta-b": "1", "x-amz-meta-a": "2"}
    with pytest.raises(S3Error) as error:
        check_fields(parsed, fields, bucket="b", now=NOW)
    assert error.value.code == "AccessDenied"
    assert error.value.message == (
        "Invalid according to Policy: Extra input fields: x-amz-meta-a, x-amz-meta-b"
    )


def test_check_fields_expired() -> None:
    parsed = policy(expiration="2030-06-01T11:59:59Z")
    with pytest.raises(S3Error) as error:
        check_fields(parsed, {}, bucket="b", now=NOW)
    assert error.value.code == "AccessDenied"
    assert error.value.message == "Invalid according to Policy: Policy expired."


def test_check_fields_expires_after_expiration() -> None:
    parsed = policy(expiration="2030-06-01T12:00:00Z")
    check_fields(parsed, {}, bucket="b", now=NOW)
    with pytest.raises(S3Error):
        check_fields(parsed, {}, bucket="b", now=NOW + timedelta(microseconds=1))


# size ranges


@pytest.mark.parametrize(
    ("size", "code"),
    [(9, "EntityTooSmall"), (10, None), (20, None), (21, "EntityTooLarge")],
)
def test_check_size(size: int, code: str | None) -> None:
    parsed = policy(["content-length-range", 10, 20])
    if code is None:
        check_size(parsed, size)
        return
    with pytest.raises(S3Error) as error:
        check_size(parsed, size)
    assert error.value.code == code
    assert error.value.status == 400


def test_check_size_every_range() -> None:
    parsed = policy(["content-length-range", 0, 100], ["content-length-range", 50, 60])
    check_size(parsed, 55)
    with pytest.raises(S3Error) as error:
        check_size(parsed, 70)
    assert error.value.code == "EntityTooLarge"


def test_check_size_without_range() -> None:
    check_size(policy(), 5 * 1024**3)


# arbitrary input


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
NAMES = st.sampled_from(
    ["expiration", "conditions", "EXPIRATION", "CONDITIONS", "key", "x"]
)
CONDITION_PARTS = st.sampled_from(
    ["eq", "starts-with", "content-length-range", "EQ", "$key", "$", "key", ""]
)
CONDITIONS = st.lists(
    st.lists(CONDITION_PARTS | st.integers(-5, 5) | JSON, max_size=4)
    | st.dictionaries(st.text(max_size=10), JSON, max_size=2)
    | JSON,
    max_size=6,
)
DOCUMENTS = st.dictionaries(NAMES, JSON | CONDITIONS | st.just(LATER), max_size=4)


def parse_or_reject(encoded: str) -> PostPolicy | None:
    try:
        return parse_policy(encoded)
    except S3Error as error:
        assert error.code == "InvalidPolicyDocument"
        return None


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_parse_policy_any_text(text: str) -> None:
    parse_or_reject(text)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_parse_policy_any_bytes(data: bytes) -> None:
    parse_or_reject(base64.b64encode(data).decode())


@settings(max_examples=500)
@given(DOCUMENTS, st.dictionaries(NAMES, st.text(max_size=10), max_size=4))
def test_parse_policy_any_document(document: Any, fields: dict[str, str]) -> None:
    parsed = parse_or_reject(encode(document))
    if parsed is None:
        return
    try:
        check_fields(parsed, fields, bucket="b", now=NOW)
        check_size(parsed, 10)
    except S3Error as error:
        assert error.code in ("AccessDenied", "EntityTooSmall", "EntityTooLarge")


@pytest.mark.parametrize("depth", [500, 990, 100_000])
@pytest.mark.parametrize("place", ["expiration", "conditions"])
def test_parse_policy_deep_nesting(depth: int, place: str) -> None:
    deep = "[" * depth + "]" * depth
    expiration = deep if place == "expiration" else f'"{LATER}"'
    conditions = f"[{deep}]" if place == "conditions" else "[]"
    text = f'{{"expiration": {expiration}, "conditions": {conditions}}}'
    assert parse_or_reject(base64.b64encode(text.encode()).decode()) is None

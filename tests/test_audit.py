"""Tests of the audit log: chaining, tamper detection, export and concurrency."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import multiprocessing
import os
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from crypto.audit import (
    AUDIT_DATABASE,
    GENESIS_HASH,
    MAX_KEY_VALUE_LENGTH,
    AuditHead,
    AuditLog,
    AuditLogError,
    AuditRecord,
    Problem,
    Verification,
    verify_export,
)
from crypto.sqlite_store import schema_version

RECORDS = 20
START = datetime(2025, 1, 31, 9, 5, tzinfo=UTC)
ORG_A = "00112233445566778899aabbccddeeff"
ORG_B = "ffeeddccbbaa99887766554433221100"
MASTER_KEY_ID = "0123456789abcdef"
FIELDS = (
    "seq",
    "time",
    "actor",
    "action",
    "organisation",
    "keys",
    "outcome",
    "prev_hash",
    "hash",
)
# Generous upper bound for a child process, so that a hung child fails the
# test instead of hanging it.
CHILD_TIMEOUT = 120.0


def _append_sample(log: AuditLog, index: int) -> AuditRecord:
    """Append record number `index` of a varied, reproducible sample."""
    organisation = (ORG_A, ORG_B, "")[index % 3]
    outcome = "ok" if index % 4 else "failed: wrapped key did not open"
    return log.append(
        actor=f"cli:user{index % 2}",
        action=("org.create", "org_key.rotate", "dek.unwrap")[index % 3],
        organisation=organisation,
        keys={"org_key_version": index, "master_key_id": MASTER_KEY_ID},
        outcome=outcome,
        now=START + timedelta(seconds=index),
    )


def _fill(log: AuditLog, count: int) -> list[AuditRecord]:
    return [_append_sample(log, index) for index in range(count)]


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    with AuditLog.open(tmp_path) as audit_log:
        yield audit_log


@pytest.fixture
def filled(log: AuditLog) -> AuditLog:
    _fill(log, RECORDS)
    return log


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed log of RECORDS records that tests copy before tampering."""
    directory = tmp_path_factory.mktemp("template")
    with AuditLog.open(directory) as audit_log:
        _fill(audit_log, RECORDS)
    return directory / AUDIT_DATABASE


def _copy_log(template: Path, directory: Path) -> Path:
    for source in template.parent.glob(f"{AUDIT_DATABASE}*"):
        shutil.copy(source, directory / source.name)
    return directory / AUDIT_DATABASE


def _raw_sql(path: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Drop the triggers and run `statements`, as someone with the file could."""
    db = sqlite3.connect(path)
    try:
        db.execute("DROP TRIGGER audit_records_reject_update")
        db.execute("DROP TRIGGER audit_records_reject_delete")
        for sql, parameters in statements:
            db.execute(sql, parameters)
        db.commit()
    finally:
        db.close()


def _row(path: Path, seq: int) -> tuple[Any, ...]:
    db = sqlite3.connect(path)
    try:
        row: tuple[Any, ...] = db.execute(
            f"SELECT {', '.join(FIELDS)} FROM audit_records WHERE seq = ?", (seq,)
        ).fetchone()
    finally:
        db.close()
    return row


def _verify_file(path: Path, expected_head: tuple[int, str] | None = None) -> Any:
    with AuditLog(path) as audit_log:
        return audit_log.verify(expected_head)


def _assert_failure(result: Verification, bad_seq: int, problem: Problem) -> None:
    assert not result.ok
    assert result.problem is problem, result.detail
    assert result.bad_seq == bad_seq, result.detail
    assert result.checked == bad_seq - 1
    assert result.head.seq == bad_seq - 1


# the documented encoding, computed independently of the module


def _canonical(document: dict[str, Any]) -> str:
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def _documented_hash(document: dict[str, Any]) -> str:
    hashed = {name: value for name, value in document.items() if name != "hash"}
    return hashlib.sha256(_canonical(hashed).encode("utf-8")).hexdigest()


def _export_lines(audit_log: AuditLog) -> list[str]:
    out = io.StringIO()
    audit_log.export(out)
    return out.getvalue().splitlines()


def _rechain(lines: list[str], start: int) -> list[str]:
    """Recompute hashes from line `start` on, as a forger without a key could."""
    rebuilt = lines[:start]
    previous = json.loads(rebuilt[-1])["hash"] if rebuilt else GENESIS_HASH
    for line in lines[start:]:
        document = json.loads(line)
        document["prev_hash"] = previous
        document["hash"] = _documented_hash(document)
        previous = document["hash"]
        rebuilt.append(_canonical(document))
    return rebuilt


# appending and the chain


def test_append_many_records_verify(log: AuditLog) -> None:
    records = _fill(log, 500)

    assert [record.seq for record in records] == list(range(1, 501))
    assert records[0].prev_hash == GENESIS_HASH
    for previous, record in itertools.pairwise(records):
        assert record.prev_hash == previous.hash
    assert log.head() == (500, records[-1].hash)
    assert log.verify() == Verification(ok=True, checked=500, head=log.head())


def test_append_hash_documented_encoding(log: AuditLog) -> None:
    record = log.append(
        actor="cli:alice",
        action="org.create",
        organisation=ORG_A,
        keys={"org_key_version": 1, "master_key_id": MASTER_KEY_ID},
        outcome="ok",
        now=START,
    )

    encoded = (
        b'{"action":"org.create","actor":"cli:alice","keys":{"master_key_id":'
        b'"0123456789abcdef","org_key_version":1},"organisation":'
        b'"00112233445566778899aabbccddeeff","outcome":"ok","prev_hash":"'
        + GENESIS_HASH.encode()
        + b'","seq":1,"time":"2025-01-31T09:05:00.000000Z"}'
    )
    assert record.hash == hashlib.sha256(encoded).hexdigest()
    assert record.hash == (
        "101e6c976a548783af76b93b86c46a8380d2774dcd34ea56528653a859fc4847"
    )


def test_append_returns_stored_record(filled: AuditLog) -> None:
    record = _append_sample(filled, RECORDS)

    assert filled.records()[-1] == record
    assert record.seq == RECORDS + 1
    assert record.time == START + timedelta(seconds=RECORDS)
    assert dict(record.keys) == {
        "master_key_id": MASTER_KEY_ID,
        "org_key_version": RECORDS,
    }


def test_append_keys_read_only(log: AuditLog) -> None:
    record = log.append("cli:alice", "org.create", ORG_A, {"org_key_version": 1}, "ok")

    with pytest.raises(TypeError):
        record.keys["org_key_version"] = 2  # type: ignore[index]


def test_append_converts_time_to_utc(log: AuditLog) -> None:
    moment = datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))

    record = log.append("cli:alice", "org.create", ORG_A, {}, "ok", now=moment)

    assert record.time == moment
    assert record.time.tzinfo is UTC
    assert '"time":"2025-06-01T10:00:00.123456Z"' in _export_lines(log)[0]


def test_append_default_time_is_now(log: AuditLog) -> None:
    before = datetime.now(UTC)
    record = log.append("cli:alice", "org.create", ORG_A, {}, "ok")
    after = datetime.now(UTC)

    assert before <= record.time <= after


def test_append_continues_after_reopen(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path) as first:
        _fill(first, 3)
        head = first.head()
    with AuditLog.open(tmp_path) as second:
        record = _append_sample(second, 3)
        assert record.seq == 4
        assert record.prev_hash == head.hash
        assert second.verify().ok


def test_empty_log_head_and_verify(log: AuditLog) -> None:
    assert log.head() == AuditHead(0, GENESIS_HASH)
    assert log.verify() == Verification(ok=True, checked=0, head=log.head())
    assert log.verify(expected_head=(0, GENESIS_HASH)).ok
    assert log.records() == []


def test_records_filter_by_organisation(filled: AuditLog) -> None:
    every = filled.records()
    of_a = filled.records(organisation=ORG_A)
    of_none = filled.records(organisation="")

    assert len(every) == RECORDS
    assert of_a == [record for record in every if record.organisation == ORG_A]
    assert of_none == [record for record in every if record.organisation == ""]
    assert len(of_a) == 7
    with pytest.raises(ValueError, match="32 lowercase hex"):
        filled.records(organisation="ACME")


def test_records_unreadable_row_raises(template: Path, tmp_path: Path) -> None:
    path = _copy_log(template, tmp_path)
    _raw_sql(path, ("UPDATE audit_records SET time = 'noon' WHERE seq = 4", ()))

    with AuditLog(path) as audit_log, pytest.raises(AuditLogError, match="seq 4"):
        audit_log.records()


# input validation


@pytest.mark.parametrize("material", [b"\x01" * 32, bytearray(32), memoryview(b"k")])
def test_append_rejects_bytes_in_keys(log: AuditLog, material: object) -> None:
    with pytest.raises(TypeError, match="never key material") as raised:
        log.append("cli:alice", "org.create", ORG_A, {"org_key": material}, "ok")  # type: ignore[dict-item]

    assert repr(bytes(material)) not in str(raised.value)  # type: ignore[call-overload]
    assert log.head() == AuditHead(0, GENESIS_HASH)


def test_append_rejects_long_key_value(log: AuditLog) -> None:
    secret = "s" * 40

    with pytest.raises(ValueError, match=f"at most {MAX_KEY_VALUE_LENGTH}") as raised:
        log.append("cli:alice", "org.create", ORG_A, {"secret": secret}, "ok")

    assert secret not in str(raised.value)
    assert log.head() == AuditHead(0, GENESIS_HASH)


def test_append_accepts_longest_id(log: AuditLog) -> None:
    record = log.append("cli:alice", "org.create", ORG_A, {"org_id": ORG_A}, "ok")

    assert record.keys["org_id"] == ORG_A


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"actor": ""}, ValueError, "actor must not be empty"),
        ({"actor": "cli:a\nb"}, ValueError, "control characters"),
        ({"actor": "x" * 129}, ValueError, "at most 128"),
        ({"actor": 7}, TypeError, "actor must be a str"),
        ({"action": "Create"}, ValueError, "<object>.<verb>"),
        ({"action": "create"}, ValueError, "<object>.<verb>"),
        ({"organisation": "acme"}, ValueError, "32 lowercase hex"),
        ({"organisation": ORG_A.upper()}, ValueError, "32 lowercase hex"),
        ({"organisation": bytes(16)}, TypeError, "organisation must be a str"),
        ({"outcome": "done"}, ValueError, "'ok' or 'failed: <reason>'"),
        ({"outcome": "failed: "}, ValueError, "'ok' or 'failed: <reason>'"),
        ({"outcome": "failed: " + "x" * 300}, ValueError, "at most 256"),
        ({"keys": {"Version": 1}}, ValueError, "lowercase identifier"),
        ({"keys": {"version": 2**53}}, ValueError, "within"),
        ({"keys": {"version": 1.5}}, TypeError, "str, int or bool"),
        ({"keys": {"version": None}}, TypeError, "str, int or bool"),
        ({"keys": {"id": ""}}, ValueError, "must not be empty"),
        ({"keys": {"id": "a\x00b"}}, ValueError, "control characters"),
        ({"keys": {f"k{i}": i for i in range(17)}}, ValueError, "at most 16"),
        ({"keys": [("version", 1)]}, TypeError, "keys must be a mapping"),
        ({"now": datetime(2025, 1, 1)}, ValueError, "timezone-aware"),
    ],
)
def test_append_rejects_invalid_field(
    log: AuditLog, overrides: dict[str, Any], error: type[Exception], message: str
) -> None:
    arguments: dict[str, Any] = {
        "actor": "cli:alice",
        "action": "org.create",
        "organisation": ORG_A,
        "keys": {"org_key_version": 1},
        "outcome": "ok",
        **overrides,
    }

    with pytest.raises(error, match=message):
        log.append(**arguments)

    assert log.head() == AuditHead(0, GENESIS_HASH)


def test_append_bool_and_failed_outcome(log: AuditLog) -> None:
    record = log.append(
        "admin-api:ops token",
        "dek.unwrap",
        "",
        {"cache_miss": True, "dek_version": 2},
        "failed: tag mismatch",
    )

    assert record.keys == {"cache_miss": True, "dek_version": 2}
    assert '"cache_miss":true' in _export_lines(log)[0]


def test_verify_rejects_invalid_expected_head(filled: AuditLog) -> None:
    with pytest.raises(ValueError, match="64 lowercase hex"):
        filled.verify(expected_head=(3, "abc"))
    with pytest.raises(ValueError, match=">= 0"):
        filled.verify(expected_head=(-1, GENESIS_HASH))
    with pytest.raises(ValueError, match="zeros"):
        filled.verify(expected_head=(0, "1" * 64))


# the database file


def test_database_file_mode_0600(filled: AuditLog, tmp_path: Path) -> None:
    for name in (AUDIT_DATABASE, f"{AUDIT_DATABASE}-wal", f"{AUDIT_DATABASE}-shm"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


def test_database_schema_version_row(filled: AuditLog, tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / AUDIT_DATABASE)
    try:
        assert schema_version(db, "audit") == 1
    finally:
        db.close()


def test_database_newer_schema_rejected(template: Path, tmp_path: Path) -> None:
    path = _copy_log(template, tmp_path)
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_version SET version = 2 WHERE component = 'audit'")
    db.commit()
    db.close()

    with pytest.raises(AuditLogError, match=r"schema version 2.*upgrade"):
        AuditLog(path)


def test_open_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(AuditLogError, match="does not exist"):
        AuditLog.open(tmp_path / "absent")


def test_triggers_reject_update(filled: AuditLog, tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / AUDIT_DATABASE)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("UPDATE audit_records SET actor = 'cli:mallory' WHERE seq = 2")
    finally:
        db.close()

    assert filled.records()[1].actor == "cli:user1"
    assert filled.verify().ok


def test_triggers_reject_delete(filled: AuditLog, tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / AUDIT_DATABASE)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM audit_records WHERE seq = 2")
    finally:
        db.close()

    assert len(filled.records()) == RECORDS
    assert filled.verify().ok


# tampering with the database


def _changed_value(field: str, old: Any) -> st.SearchStrategy[Any]:
    text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
    hex_digest = st.text("0123456789abcdef", min_size=64, max_size=64)
    times = st.datetimes(timezones=st.just(UTC)).map(
        lambda moment: (
            moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
        )
    )
    keys = st.dictionaries(
        st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
        st.one_of(st.integers(), st.booleans(), text),
        max_size=3,
    ).map(json.dumps)
    strategies: dict[str, st.SearchStrategy[Any]] = {
        "seq": st.integers(min_value=RECORDS + 1, max_value=2**62),
        "time": st.one_of(times, text),
        "keys": st.one_of(keys, text),
        "prev_hash": hex_digest,
        "hash": hex_digest,
    }
    return strategies.get(field, text).filter(lambda new: new != old)


def _same_keys(old: str, new: str) -> bool:
    try:
        return bool(json.loads(new) == json.loads(old))
    except ValueError:
        return False


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_verify_detects_edited_field(template: Path, data: st.DataObject) -> None:
    seq = data.draw(st.integers(min_value=1, max_value=RECORDS), label="seq")
    field = data.draw(st.sampled_from(FIELDS), label="field")
    old = _row(template, seq)[FIELDS.index(field)]
    new = data.draw(_changed_value(field, old), label="new value")
    if field == "keys":
        assume(not _same_keys(old, new))

    with tempfile.TemporaryDirectory() as directory:
        path = _copy_log(template, Path(directory))
        _raw_sql(
            path, (f"UPDATE audit_records SET {field} = ? WHERE seq = ?", (new, seq))
        )
        result = _verify_file(path)

    _assert_failure(result, seq, Problem.EDITED)


@pytest.mark.parametrize(
    "stored_keys",
    [
        "[1]",
        "NaN",
        '{"v":NaN}',
        '{"v":1e999}',
        "{" * 100_000,
        "[" * 100_000 + "]" * 100_000,
        b"\x00\xff",
    ],
)
def test_verify_detects_unparsable_keys(
    template: Path, tmp_path: Path, stored_keys: str | bytes
) -> None:
    path = _copy_log(template, tmp_path)
    _raw_sql(path, ("UPDATE audit_records SET keys = ? WHERE seq = 6", (stored_keys,)))

    _assert_failure(_verify_file(path), 6, Problem.EDITED)


@pytest.mark.parametrize("seq", [1, 2, 10, RECORDS - 1])
def test_verify_detects_deleted_record(
    template: Path, tmp_path: Path, seq: int
) -> None:
    path = _copy_log(template, tmp_path)
    _raw_sql(path, ("DELETE FROM audit_records WHERE seq = ?", (seq,)))

    _assert_failure(_verify_file(path), seq, Problem.MISSING)


def test_verify_detects_deleted_range(template: Path, tmp_path: Path) -> None:
    path = _copy_log(template, tmp_path)
    _raw_sql(path, ("DELETE FROM audit_records WHERE seq BETWEEN 5 AND 8", ()))

    result = _verify_file(path)

    _assert_failure(result, 5, Problem.MISSING)
    assert result.detail == "seqs 5 to 8 are missing"


@pytest.mark.parametrize(("first", "second"), [(1, 2), (5, 6), (3, 15), (19, 20)])
def test_verify_detects_swapped_records(
    template: Path, tmp_path: Path, first: int, second: int
) -> None:
    path = _copy_log(template, tmp_path)
    row_first = _row(template, first)
    row_second = _row(template, second)
    columns = ", ".join(f"{name} = ?" for name in FIELDS[1:])
    update = f"UPDATE audit_records SET {columns} WHERE seq = ?"
    _raw_sql(
        path,
        (update, (*row_second[1:], first)),
        (update, (*row_first[1:], second)),
    )

    _assert_failure(_verify_file(path), first, Problem.REORDERED)


def test_verify_detects_rehashed_record(template: Path, tmp_path: Path) -> None:
    path = _copy_log(template, tmp_path)
    row = dict(zip(FIELDS, _row(template, 7), strict=True))
    row["actor"] = "cli:mallory"
    row["keys"] = json.loads(row["keys"])
    forged_hash = _documented_hash(row)
    _raw_sql(
        path,
        (
            "UPDATE audit_records SET actor = ?, hash = ? WHERE seq = 7",
            ("cli:mallory", forged_hash),
        ),
    )

    _assert_failure(_verify_file(path), 8, Problem.CHAIN_BROKEN)


def test_verify_truncation_needs_head(template: Path, tmp_path: Path) -> None:
    with AuditLog(template) as original:
        head = original.head()
    path = _copy_log(template, tmp_path)
    _raw_sql(path, ("DELETE FROM audit_records WHERE seq > ?", (RECORDS - 3,)))

    alone = _verify_file(path)
    against_head = _verify_file(path, expected_head=head)

    assert alone.ok
    assert alone.checked == RECORDS - 3
    _assert_failure(against_head, RECORDS - 2, Problem.TRUNCATED)


def test_verify_earlier_head_passes(filled: AuditLog) -> None:
    earlier = filled.records()[4]

    result = filled.verify(expected_head=(earlier.seq, earlier.hash))

    assert result.ok
    assert result.checked == RECORDS


def test_verify_head_detects_rewrite(filled: AuditLog) -> None:
    earlier = filled.records()[4]

    result = filled.verify(expected_head=(earlier.seq, "1" * 64))

    _assert_failure(result, earlier.seq, Problem.REWRITTEN)


# concurrency


def _append_from_child(path: str, barrier: Any, count: int) -> None:
    with AuditLog(Path(path)) as audit_log:
        barrier.wait()
        for index in range(count):
            audit_log.append(
                f"proxy:{os.getpid()}",
                "dek.unwrap",
                ORG_A,
                {"dek_version": index},
                "ok",
            )


def test_two_processes_append_one_chain(tmp_path: Path) -> None:
    path = tmp_path / AUDIT_DATABASE
    AuditLog(path).close()
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    children = [
        context.Process(target=_append_from_child, args=(str(path), barrier, 200))
        for _ in range(2)
    ]

    for child in children:
        child.start()
    for child in children:
        child.join(CHILD_TIMEOUT)

    assert [child.exitcode for child in children] == [0, 0]
    with AuditLog(path) as audit_log:
        result = audit_log.verify()
        records = audit_log.records()
    assert result == Verification(ok=True, checked=400, head=result.head)
    assert [record.seq for record in records] == list(range(1, 401))
    for child in children:
        mine = [record for record in records if record.actor == f"proxy:{child.pid}"]
        assert [record.keys["dek_version"] for record in mine] == list(range(200))


# export and verify_export


def test_export_round_trip(filled: AuditLog) -> None:
    out = io.StringIO()

    exported_head = filled.export(out)
    lines = out.getvalue().splitlines(keepends=True)

    assert exported_head == filled.head()
    assert len(lines) == RECORDS
    assert all(line.endswith("\n") for line in lines)
    assert verify_export(lines) == Verification(
        ok=True, checked=RECORDS, head=filled.head()
    )
    assert verify_export(lines, expected_head=filled.head()).ok


def test_export_lines_documented_encoding(filled: AuditLog) -> None:
    records = filled.records()

    for line, record in zip(_export_lines(filled), records, strict=True):
        document = json.loads(line)
        assert sorted(document) == sorted(FIELDS)
        assert _canonical(document) == line
        assert document["hash"] == record.hash
        assert _documented_hash(document) == record.hash


def test_export_writes_non_ascii_as_is(log: AuditLog) -> None:
    log.append("cli:zoë", "org.create", ORG_A, {}, "ok")

    line = _export_lines(log)[0]

    assert '"actor":"cli:zoë"' in line
    assert verify_export([line]).ok


def test_export_tampered_log_same_result(template: Path, tmp_path: Path) -> None:
    path = _copy_log(template, tmp_path)
    _raw_sql(path, ("UPDATE audit_records SET outcome = 'ok' WHERE seq = 5", ()))

    with AuditLog(path) as audit_log:
        from_database = audit_log.verify()
        from_export = verify_export(_export_lines(audit_log))

    assert from_export == from_database
    _assert_failure(from_export, 5, Problem.EDITED)


def _edit_line(lines: list[str], index: int, **changes: Any) -> list[str]:
    document = json.loads(lines[index])
    document.update(changes)
    return [*lines[:index], _canonical(document), *lines[index + 1 :]]


def _tampered_exports(lines: list[str]) -> dict[str, tuple[list[str], int, Problem]]:
    """Tampered copies of `lines`, each with its first bad seq and problem."""
    swapped = [*lines[:5], lines[6], lines[5], *lines[7:]]
    spaced = json.dumps(json.loads(lines[2]), sort_keys=True)
    extra = _edit_line(lines, 2, comment="added later")
    nan_line = lines[2].replace('"org_key_version":2', '"v":NaN')
    huge_line = lines[2].replace('"org_key_version":2', '"v":1e999')
    assert "NaN" in nan_line
    assert "1e999" in huge_line
    rehashed = _rechain(_edit_line(lines, 3, actor="cli:mallory"), 3)
    duplicate_member = lines[2].replace("{", '{"actor":"cli:mallory",', 1)
    return {
        "edited actor": (_edit_line(lines, 3, actor="cli:mallory"), 4, Problem.EDITED),
        "edited keys": (
            _edit_line(lines, 3, keys={"org_key_version": 99}),
            4,
            Problem.EDITED,
        ),
        "edited seq": (_edit_line(lines, 3, seq=40), 4, Problem.EDITED),
        "removed line": ([*lines[:3], *lines[4:]], 4, Problem.MISSING),
        "swapped lines": (swapped, 6, Problem.REORDERED),
        "line moved to end": ([*lines[:3], *lines[4:], lines[3]], 4, Problem.REORDERED),
        "repeated line": ([*lines[:4], lines[3], *lines[4:]], 5, Problem.REORDERED),
        "rehashed line": ([*rehashed[:4], *lines[4:]], 5, Problem.CHAIN_BROKEN),
        "not JSON": ([*lines[:2], "{seq: 3", *lines[3:]], 3, Problem.MALFORMED),
        "spaces": ([*lines[:2], spaced, *lines[3:]], 3, Problem.MALFORMED),
        "extra member": (extra, 3, Problem.MALFORMED),
        "duplicate member": (
            [*lines[:2], duplicate_member, *lines[3:]],
            3,
            Problem.MALFORMED,
        ),
        "keys not object": (_edit_line(lines, 2, keys="[]"), 3, Problem.MALFORMED),
        "seq as string": (_edit_line(lines, 2, seq="3"), 3, Problem.MALFORMED),
        "NaN in keys": (
            [*lines[:2], nan_line, *lines[3:]],
            3,
            Problem.MALFORMED,
        ),
        "number out of range": (
            [*lines[:2], huge_line, *lines[3:]],
            3,
            Problem.MALFORMED,
        ),
        "deep nesting": (
            [*lines[:2], "[" * 100_000 + "]" * 100_000, *lines[3:]],
            3,
            Problem.MALFORMED,
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "edited actor",
        "edited keys",
        "edited seq",
        "removed line",
        "swapped lines",
        "line moved to end",
        "repeated line",
        "rehashed line",
        "not JSON",
        "spaces",
        "extra member",
        "duplicate member",
        "keys not object",
        "seq as string",
        "NaN in keys",
        "number out of range",
        "deep nesting",
    ],
)
def test_verify_export_detects_tampering(filled: AuditLog, case: str) -> None:
    lines, bad_seq, problem = _tampered_exports(_export_lines(filled))[case]

    _assert_failure(verify_export(lines), bad_seq, problem)


def test_verify_export_skips_blank_lines(filled: AuditLog) -> None:
    lines = _export_lines(filled)

    result = verify_export(["\n", *lines[:5], "   \r\n", *lines[5:], ""])

    assert result.ok
    assert result.checked == RECORDS


def test_verify_export_accepts_crlf(filled: AuditLog) -> None:
    lines = [line + "\r\n" for line in _export_lines(filled)]

    assert verify_export(lines).ok


def test_export_truncation_needs_head(filled: AuditLog) -> None:
    lines = _export_lines(filled)[:-2]

    assert verify_export(lines).ok
    _assert_failure(
        verify_export(lines, expected_head=filled.head()),
        RECORDS - 1,
        Problem.TRUNCATED,
    )


def test_export_rebuilt_chain_needs_head(filled: AuditLog) -> None:
    lines = _export_lines(filled)
    edited = _edit_line(lines, 6, outcome="ok", actor="cli:mallory")
    forged = _rechain(edited, 6)

    assert verify_export(forged).ok
    _assert_failure(
        verify_export(forged, expected_head=filled.head()),
        RECORDS,
        Problem.REWRITTEN,
    )


def test_verify_export_reads_file(filled: AuditLog, tmp_path: Path) -> None:
    export_path = tmp_path / "audit.jsonl"
    with export_path.open("w", encoding="utf-8") as out:
        filled.export(out)

    with export_path.open(encoding="utf-8") as lines:
        result = verify_export(lines, expected_head=filled.head())

    assert result.ok
    assert result.checked == RECORDS

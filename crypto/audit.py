"""A hash-chained, append-only audit log of key operations: `audit.sqlite3`.

Every operation on a key (create, import, rotate, revoke, destroy, an unwrap
on a cache miss, a failed unwrap) is one `AuditRecord`. Records are numbered
1, 2, 3... by `seq`, and each stores the hash of the record before it in
`prev_hash`. The first record's `prev_hash` is 64 zeros (`GENESIS_HASH`).

Canonical encoding. A record's document is a JSON object with exactly these
members: `action`, `actor`, `keys`, `organisation`, `outcome`, `prev_hash`,
`seq` and `time`. The encoding is what
`json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`
returns, encoded as UTF-8:

- members sorted by name, in `keys` too, and no whitespace between tokens.
  `append` allows only ASCII names, so code point, UTF-16 and byte order of
  the names agree;
- strings with non-ASCII characters written as they are; `append` rejects
  control characters, so `\\"` and `\\\\` are the only escapes in its records;
- integers in decimal, booleans as `true` and `false`;
- `time` in UTC as RFC 3339 with six fraction digits and a `Z`, for example
  `2025-01-31T09:05:00.000000Z`;
- `organisation` as 32 lowercase hex digits, or "" for none.

`hash` is the lowercase hex SHA-256 of that encoding, so it covers
`prev_hash` and every other field. Editing, removing or reordering a record
breaks the chain. `export` writes one record a line: the same encoding with
the member `hash` added (sorted among the others), then a newline.

What the chain proves. SHA-256 is unkeyed, so anyone with write access to
the file can also rebuild a consistent chain. Removing records from the end
leaves a valid chain as well. Verification is only as strong as a head
(`seq`, `hash`) that an auditor keeps somewhere the writer cannot change.
Given it as `expected_head`, `verify` and `verify_export` detect truncation
and rewriting up to that record. The triggers that reject UPDATE and DELETE
only guard against mistakes, because the file's owner can drop them.

Storage follows `crypto.sqlite_store`: a file of mode 0600 in WAL mode, one
connection per process, and a `schema_version` table. `append` reads the
head and inserts the next record in one BEGIN IMMEDIATE transaction, so
processes that append at the same time still form one chain.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sqlite3
import unicodedata
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, NamedTuple, TextIO

from crypto.errors import CryptoError
from crypto.sqlite_store import connect, schema_version

__all__ = [
    "AUDIT_DATABASE",
    "GENESIS_HASH",
    "MAX_KEY_VALUE_LENGTH",
    "SCHEMA_VERSION",
    "AuditHead",
    "AuditLog",
    "AuditLogError",
    "AuditRecord",
    "KeyValue",
    "Problem",
    "Verification",
    "verify_export",
]

AUDIT_DATABASE = "audit.sqlite3"
SCHEMA_VERSION = 1
GENESIS_HASH = "0" * 64

MAX_ACTOR_LENGTH = 128
MAX_ACTION_LENGTH = 64
MAX_OUTCOME_LENGTH = 256
MAX_KEY_ENTRIES = 16
# Organisation ids, 32 hex digits, are the longest ids in the key hierarchy.
# A 32-byte key is longer in hex (64) or base64 (44), and so is an S3 secret
# access key (40), so these cannot be stored by mistake.
MAX_KEY_VALUE_LENGTH = 32
# Larger integers lose precision in JSON parsers that read numbers as doubles.
MAX_JSON_INTEGER = 2**53 - 1

_COMPONENT = "audit"
_FAILED_PREFIX = "failed: "
_ACTION_PATTERN = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")
_KEY_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
_ORGANISATION_PATTERN = re.compile(r"(?:[0-9a-f]{32})?")
_HASH_PATTERN = re.compile(r"[0-9a-f]{64}")
_REJECTED_CATEGORIES = frozenset({"Cc", "Cs"})  # control characters, surrogates

_HASHED_FIELDS = (
    "seq",
    "time",
    "actor",
    "action",
    "organisation",
    "keys",
    "outcome",
    "prev_hash",
)
_STORED_FIELDS = (*_HASHED_FIELDS, "hash")
_COLUMNS = ", ".join(_STORED_FIELDS)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS schema_version (
        component TEXT PRIMARY KEY,
        version INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS audit_records (
        seq INTEGER PRIMARY KEY CHECK (seq >= 1),
        time TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        organisation TEXT NOT NULL,
        keys TEXT NOT NULL,
        outcome TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS audit_records_organisation
        ON audit_records (organisation, seq)""",
    """CREATE TRIGGER IF NOT EXISTS audit_records_reject_update
        BEFORE UPDATE ON audit_records
        BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_records_reject_delete
        BEFORE DELETE ON audit_records
        BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END""",
)

KeyValue = str | int | bool
"""A key id, a key version or a flag, but never key material."""

_Document = dict[str, Any]


class AuditLogError(CryptoError):
    """The audit log database cannot be used or a stored record cannot be read."""


class AuditHead(NamedTuple):
    """The last record of a log: its seq and hash, (0, GENESIS_HASH) if empty."""

    seq: int
    hash: str


@dataclass(frozen=True)
class AuditRecord:
    """One key operation: who did what to which keys, and how it ended.

    `outcome` is "ok" or "failed: <reason>". `keys` maps short names to key
    ids and versions, for example {"org_key_version": 3}, and is read-only.
    """

    seq: int
    time: datetime
    actor: str
    action: str
    organisation: str
    keys: Mapping[str, KeyValue]
    outcome: str
    prev_hash: str
    hash: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))


class Problem(StrEnum):
    """The kind of fault that verification found at the first bad record."""

    EDITED = "edited"
    MISSING = "missing"
    REORDERED = "reordered"
    CHAIN_BROKEN = "chain broken"
    MALFORMED = "malformed"
    TRUNCATED = "truncated"
    REWRITTEN = "rewritten"


@dataclass(frozen=True)
class Verification:
    """The result of checking a chain.

    `checked` counts the records that passed, which on failure are the
    records before `bad_seq`. `head` is the last record that passed.
    """

    ok: bool
    checked: int
    head: AuditHead
    bad_seq: int | None = None
    problem: Problem | None = None
    detail: str = ""


class AuditLog:
    """The audit log in its own SQLite file, on one connection."""

    def __init__(self, path: Path, *, busy_timeout: float = 5.0) -> None:
        self._path = path
        self._connection = connect(path, busy_timeout=busy_timeout)
        try:
            self._create_schema()
        except BaseException:
            self._connection.close()
            raise

    @classmethod
    def open(cls, data_dir: Path, *, busy_timeout: float = 5.0) -> AuditLog:
        """Open `audit.sqlite3` in `data_dir`, creating it on first use."""
        if not data_dir.is_dir():
            raise AuditLogError(
                f"data directory {data_dir} does not exist; create it first"
            )
        return cls(data_dir / AUDIT_DATABASE, busy_timeout=busy_timeout)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def close(self) -> None:
        """Close the connection."""
        self._connection.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def append(
        self,
        actor: str,
        action: str,
        organisation: str,
        keys: Mapping[str, KeyValue],
        outcome: str,
        now: datetime | None = None,
    ) -> AuditRecord:
        """Validate the fields, chain a new record to the head and store it.

        Raise TypeError or ValueError naming the invalid field. Bytes in
        `keys` always raise TypeError, because key material must never enter
        the log. `now` must be timezone-aware. Without it, the time is read
        once the transaction holds the write lock, so on one host times
        increase with `seq` unless the system clock steps back.
        """
        fields = _validated_fields(actor, action, organisation, keys, outcome)
        moment = None if now is None else _utc(now)
        with self._write() as db:
            head = _read_head(db)
            record = _sealed_record(
                seq=head.seq + 1,
                time=moment or datetime.now(UTC),
                prev_hash=head.hash,
                **fields,
            )
            document = _document(record)
            db.execute(
                f"INSERT INTO audit_records ({_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    document["seq"],
                    document["time"],
                    document["actor"],
                    document["action"],
                    document["organisation"],
                    _canonical_json(document["keys"]),
                    document["outcome"],
                    document["prev_hash"],
                    document["hash"],
                ),
            )
        return record

    def records(self, organisation: str | None = None) -> list[AuditRecord]:
        """Return every record, or those of one organisation, in seq order.

        Raise AuditLogError if a stored record no longer parses. `verify`
        then reports which record was tampered with.
        """
        if organisation is None:
            documents = self._documents()
        else:
            _check_organisation(organisation)
            documents = self._documents("WHERE organisation = ?", (organisation,))
        with closing(documents):
            return [_record_from_document(document) for document in documents]

    def head(self) -> AuditHead:
        """Return the seq and hash of the last record.

        An auditor keeps a copy outside this file to pass as `expected_head`.
        """
        # TODO: nothing copies heads out of this file yet, so until a caller
        # does, truncation and rebuilt chains go unnoticed.
        return _read_head(self._connection)

    def export(self, out: TextIO) -> AuditHead:
        """Write every record to `out` as JSON lines and return the last one's head.

        Records are written as stored, tampered ones included, so that
        `verify_export` finds the same problems as `verify`.
        """
        head = AuditHead(0, GENESIS_HASH)
        with closing(self._documents()) as documents:
            for document in documents:
                out.write(_canonical_json(document) + "\n")
                head = AuditHead(document["seq"], document["hash"])
        return head

    def verify(self, expected_head: tuple[int, str] | None = None) -> Verification:
        """Check the chain of stored records and stop at the first bad one.

        The chain alone cannot reveal records removed from the end, or a
        chain rebuilt by someone who can write the file. Pass a head that
        was written down or exported earlier as `expected_head` to detect
        both: the record with that seq must exist and have that hash.
        """
        expected = _checked_head(expected_head)
        with closing(self._documents()) as documents:
            return _verify(documents, expected)

    def _documents(
        self, where: str = "", parameters: tuple[Any, ...] = ()
    ) -> Generator[_Document, None, None]:
        # One statement reads one snapshot, even while other processes append.
        rows = self._connection.execute(
            f"SELECT {_COLUMNS} FROM audit_records {where} ORDER BY seq", parameters
        )
        for row in rows:
            yield _row_document(row)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._connection
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _create_schema(self) -> None:
        with self._write() as db:
            for statement in _SCHEMA:
                db.execute(statement)
            version = schema_version(db, _COMPONENT)
            if version is None:
                db.execute(
                    "INSERT INTO schema_version (component, version) VALUES (?, ?)",
                    (_COMPONENT, SCHEMA_VERSION),
                )
            elif version > SCHEMA_VERSION:
                raise AuditLogError(
                    f"audit log {self._path} has schema version {version}, but "
                    f"this byok-proxy supports up to {SCHEMA_VERSION}; upgrade "
                    "byok-proxy"
                )


def verify_export(
    lines: Iterable[str], expected_head: tuple[int, str] | None = None
) -> Verification:
    """Check an exported JSON-lines file without the database.

    Each line must be in the canonical encoding byte for byte, so that what
    an auditor reads is exactly what the hashes cover. Blank lines are
    skipped. `expected_head` works as in `AuditLog.verify`.
    """
    expected = _checked_head(expected_head)
    entries = (
        _parse_line(number, line.rstrip("\r\n"))
        for number, line in enumerate(lines, start=1)
        if line.strip()
    )
    return _verify(entries, expected)


# validation of new records


def _validated_fields(
    actor: str,
    action: str,
    organisation: str,
    keys: Mapping[str, KeyValue],
    outcome: str,
) -> dict[str, Any]:
    _check_text("actor", actor, MAX_ACTOR_LENGTH)
    _check_text("action", action, MAX_ACTION_LENGTH)
    if not _ACTION_PATTERN.fullmatch(action):
        raise ValueError(
            f"action {action!r} is invalid; use '<object>.<verb>' in lowercase "
            "letters, digits and underscores, such as 'org_key.rotate'"
        )
    _check_organisation(organisation)
    _check_outcome(outcome)
    return {
        "actor": actor,
        "action": action,
        "organisation": organisation,
        "keys": _checked_keys(keys),
        "outcome": outcome,
    }


def _check_text(name: str, value: object, max_length: int) -> None:
    # Messages give lengths but never the value, which might be a secret.
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    if len(value) > max_length:
        raise ValueError(
            f"{name} has {len(value)} characters, but at most {max_length} are allowed"
        )
    if any(unicodedata.category(c) in _REJECTED_CATEGORIES for c in value):
        raise ValueError(f"{name} must not contain control characters or surrogates")


def _check_organisation(organisation: object) -> None:
    if not isinstance(organisation, str):
        raise TypeError(
            f"organisation must be a str, got {type(organisation).__name__}"
        )
    if not _ORGANISATION_PATTERN.fullmatch(organisation):
        raise ValueError(
            "organisation must be an organisation id as 32 lowercase hex "
            "digits, or '' for none"
        )


def _check_outcome(outcome: str) -> None:
    _check_text("outcome", outcome, MAX_OUTCOME_LENGTH)
    if outcome != "ok" and not (
        outcome.startswith(_FAILED_PREFIX) and outcome[len(_FAILED_PREFIX) :].strip()
    ):
        raise ValueError("outcome must be 'ok' or 'failed: <reason>'")


def _checked_keys(keys: Mapping[str, KeyValue]) -> dict[str, KeyValue]:
    if not isinstance(keys, Mapping):
        raise TypeError(f"keys must be a mapping, got {type(keys).__name__}")
    if len(keys) > MAX_KEY_ENTRIES:
        raise ValueError(
            f"keys has {len(keys)} entries, but at most {MAX_KEY_ENTRIES} are allowed"
        )
    checked: dict[str, KeyValue] = {}
    for name, value in keys.items():
        if not isinstance(name, str) or not _KEY_NAME_PATTERN.fullmatch(name):
            raise ValueError(
                "each name in keys must be a lowercase identifier of at most "
                "64 characters, such as 'org_key_version'"
            )
        checked[name] = _checked_key_value(name, value)
    return dict(sorted(checked.items()))


def _checked_key_value(name: str, value: object) -> KeyValue:
    if isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(
            f"keys[{name!r}] is bytes; the audit log stores key ids and "
            "versions, never key material"
        )
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_JSON_INTEGER:
            raise ValueError(f"keys[{name!r}] must be within ±{MAX_JSON_INTEGER}")
        return int(value)
    if isinstance(value, str):
        _check_text(f"keys[{name!r}]", value, MAX_KEY_VALUE_LENGTH)
        return str(value)
    raise TypeError(
        f"keys[{name!r}] must be a str, int or bool, got {type(value).__name__}"
    )


def _utc(moment: datetime) -> datetime:
    if moment.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return moment.astimezone(UTC)


def _checked_head(head: tuple[int, str] | None) -> AuditHead | None:
    if head is None:
        return None
    seq, hash_hex = head
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ValueError(f"expected head seq must be an integer >= 0, got {seq!r}")
    if not isinstance(hash_hex, str) or not _HASH_PATTERN.fullmatch(hash_hex):
        raise ValueError("expected head hash must be 64 lowercase hex digits")
    if seq == 0 and hash_hex != GENESIS_HASH:
        raise ValueError("the head of an empty log (seq 0) has the hash of zeros")
    return AuditHead(seq, hash_hex)


# encoding and hashing


def _format_time(moment: datetime) -> str:
    naive = moment.astimezone(UTC).replace(tzinfo=None)
    return naive.isoformat(timespec="microseconds") + "Z"


def _canonical_json(value: object) -> str:
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def _record_hash(document: Mapping[str, Any]) -> str:
    hashed = {name: document[name] for name in _HASHED_FIELDS}
    return hashlib.sha256(_canonical_json(hashed).encode("utf-8")).hexdigest()


def _sealed_record(**fields: Any) -> AuditRecord:
    document = {**fields, "time": _format_time(fields["time"])}
    return AuditRecord(**fields, hash=_record_hash(document))


def _document(record: AuditRecord) -> _Document:
    return {
        "seq": record.seq,
        "time": _format_time(record.time),
        "actor": record.actor,
        "action": record.action,
        "organisation": record.organisation,
        "keys": dict(record.keys),
        "outcome": record.outcome,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }


# reading stored and exported records


def _read_head(db: sqlite3.Connection) -> AuditHead:
    row = db.execute(
        "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    return AuditHead(0, GENESIS_HASH) if row is None else AuditHead(*row)


def _row_document(row: tuple[Any, ...]) -> _Document:
    document = dict(zip(_STORED_FIELDS, map(_column_value, row), strict=True))
    document["keys"] = _parse_keys(document["keys"])
    return document


def _column_value(value: Any) -> Any:
    # A row edited with raw SQL may hold a BLOB, which JSON cannot encode.
    # Decoding it lets verification report the row as edited.
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def _parse_keys(text: Any) -> Any:
    """Parse stored `keys`, or return the text itself so its hash cannot match."""
    try:
        keys = _strict_json(text)
    except (TypeError, ValueError):
        return text
    return keys if isinstance(keys, dict) else text


def _strict_json(text: str) -> Any:
    """Parse JSON that `_canonical_json` can encode again, else raise ValueError."""
    try:
        return json.loads(
            text, parse_constant=_reject_constant, parse_float=_finite_float
        )
    except RecursionError as error:
        raise ValueError("the JSON is nested too deeply") from error


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of the range of a double")
    return value


def _record_from_document(document: _Document) -> AuditRecord:
    try:
        if not isinstance(document["keys"], dict):
            raise ValueError("keys are not a JSON object")
        return AuditRecord(**{**document, "time": _parse_time(document["time"])})
    except (TypeError, ValueError) as error:
        raise AuditLogError(
            f"audit record seq {document['seq']} cannot be read ({error}); run "
            "verify to find the records that were tampered with"
        ) from error


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.utcoffset() is None:
        raise ValueError(f"time {text!r} has no timezone")
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class _Malformed:
    """An exported line that is not a record in the canonical encoding."""

    reason: str


_Entry = _Document | _Malformed


def _parse_line(number: int, line: str) -> _Entry:
    try:
        document = _strict_json(line)
    except ValueError:
        return _Malformed(f"line {number} is not valid JSON")
    reason = _shape_problem(document)
    if reason is not None:
        return _Malformed(f"line {number} {reason}")
    if _canonical_json(document) != line:
        return _Malformed(f"line {number} is not in the canonical encoding")
    return dict(document)


def _shape_problem(document: object) -> str | None:
    if not isinstance(document, dict):
        return "is not a JSON object"
    if set(document) != set(_STORED_FIELDS):
        return f"must have exactly the members {', '.join(sorted(_STORED_FIELDS))}"
    seq = document["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int):
        return "has a seq that is not an integer"
    if not isinstance(document["keys"], dict):
        return "has keys that are not a JSON object"
    text_fields = (name for name in _STORED_FIELDS if name not in ("seq", "keys"))
    if not all(isinstance(document[name], str) for name in text_fields):
        return "has a field that should be a string but is not"
    return None


# verification


def _verify(entries: Iterator[_Entry], expected_head: AuditHead | None) -> Verification:
    walk = _ChainWalk(expected_head)
    for entry in entries:
        failure = walk.check(entry, entries)
        if failure is not None:
            return failure
    return walk.finish()


class _ChainWalk:
    """A walk over records in stored order that explains the first bad one.

    To tell a missing record from a reordered or edited one, the checks of a
    bad record may read the rest of `entries`, which ends the walk.
    """

    def __init__(self, expected_head: AuditHead | None) -> None:
        self._expected_head = expected_head
        self._head = AuditHead(0, GENESIS_HASH)

    def check(self, entry: _Entry, rest: Iterator[_Entry]) -> Verification | None:
        if isinstance(entry, _Malformed):
            return self._fail(Problem.MALFORMED, entry.reason)
        if entry["seq"] != self._head.seq + 1:
            return self._misplaced(entry, rest)
        if _record_hash(entry) != entry["hash"]:
            return self._altered(entry, rest)
        if entry["prev_hash"] != self._head.hash:
            return self._fail(
                Problem.CHAIN_BROKEN,
                f"seq {entry['seq']} matches its hash, but its prev_hash is not "
                f"the hash of {_position(self._head.seq)}",
            )
        expected = self._expected_head
        if expected and expected.seq == entry["seq"] and expected.hash != entry["hash"]:
            return self._fail(
                Problem.REWRITTEN,
                f"the hash of seq {expected.seq} differs from the expected head, "
                f"so the records up to seq {expected.seq} were rewritten",
            )
        self._head = AuditHead(entry["seq"], entry["hash"])
        return None

    def finish(self) -> Verification:
        expected = self._expected_head
        if expected and expected.seq > self._head.seq:
            return self._fail(
                Problem.TRUNCATED,
                f"the log ends at seq {self._head.seq}, but the expected head is "
                f"seq {expected.seq}",
            )
        return Verification(ok=True, checked=self._head.seq, head=self._head)

    def _misplaced(self, entry: _Document, rest: Iterator[_Entry]) -> Verification:
        """Explain a record whose seq is not the next one."""
        expected_seq = self._head.seq + 1
        seq = entry["seq"]
        if entry["prev_hash"] == self._head.hash:
            return self._fail(
                Problem.EDITED,
                f"the record after {_position(self._head.seq)} carries seq {seq}",
            )
        if seq < expected_seq:
            return self._fail(
                Problem.REORDERED, f"seq {seq} comes after {_position(seq)}"
            )
        follower = _find(rest, lambda other: other["prev_hash"] == self._head.hash)
        if follower is None:
            return self._fail(Problem.MISSING, _missing(expected_seq, seq))
        if follower["seq"] == expected_seq:
            return self._fail(
                Problem.REORDERED, f"seq {expected_seq} comes after seq {seq}"
            )
        return self._fail(
            Problem.EDITED,
            f"the record after {_position(self._head.seq)} carries seq "
            f"{follower['seq']} and is stored after seq {seq}",
        )

    def _altered(self, entry: _Document, rest: Iterator[_Entry]) -> Verification:
        """Explain a record in its place whose fields do not match its hash."""
        seq = entry["seq"]
        if entry["prev_hash"] != self._head.hash:
            previous = _find(rest, lambda other: other["hash"] == entry["prev_hash"])
            if previous is not None:
                return self._fail(
                    Problem.REORDERED,
                    f"seq {seq} holds the record that follows the one stored as "
                    f"seq {previous['seq']}",
                )
        return self._fail(
            Problem.EDITED, f"the fields of seq {seq} do not match its hash"
        )

    def _fail(self, problem: Problem, detail: str) -> Verification:
        return Verification(
            ok=False,
            checked=self._head.seq,
            head=self._head,
            bad_seq=self._head.seq + 1,
            problem=problem,
            detail=detail,
        )


def _find(
    entries: Iterator[_Entry], predicate: Callable[[_Document], bool]
) -> _Document | None:
    for entry in entries:
        if not isinstance(entry, _Malformed) and predicate(entry):
            return entry
    return None


def _position(seq: int) -> str:
    return "the start of the log" if seq == 0 else f"seq {seq}"


def _missing(first: int, found: int) -> str:
    if found == first + 1:
        return f"seq {first} is missing"
    return f"seqs {first} to {found - 1} are missing"

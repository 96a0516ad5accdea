"""Tests of the key agent: a worker borrows an imported key over a pipe."""

import secrets
import threading
from collections.abc import Iterator
from multiprocessing import Pipe

import pytest

from crypto import key_agent
from crypto.errors import DecryptionFailed, KeyUnavailable
from crypto.key_agent import KeyAgent, serve_agent
from crypto.master import MemoryMasterKey
from crypto.masters import MasterKeys

AAD = b"byok-proxy/1 org-key" + bytes(20)


@pytest.fixture
def imported() -> MemoryMasterKey:
    return MemoryMasterKey(secrets.token_bytes(32))


@pytest.fixture
def agent(imported: MemoryMasterKey) -> Iterator[KeyAgent]:
    masters = MasterKeys(MemoryMasterKey(secrets.token_bytes(32)))
    masters.add_imported(imported)
    supervisor_end, worker_end = Pipe()
    thread = threading.Thread(target=serve_agent, args=(supervisor_end, masters))
    thread.start()
    yield KeyAgent(worker_end)
    worker_end.close()
    thread.join(5)
    assert not thread.is_alive()


def test_borrowed_key_wraps_and_unwraps(
    agent: KeyAgent, imported: MemoryMasterKey
) -> None:
    borrowed = agent.key(imported.key_id)
    secret = secrets.token_bytes(32)

    assert imported.unwrap(borrowed.wrap(secret, AAD), AAD) == secret
    assert borrowed.unwrap(imported.wrap(secret, AAD), AAD) == secret


def test_key_not_imported_is_unavailable(agent: KeyAgent) -> None:
    with pytest.raises(KeyUnavailable, match="not imported into this proxy"):
        agent.key("0123456789abcdef").unwrap(b"\0" * 60, AAD)


def test_tampered_value_fails(agent: KeyAgent, imported: MemoryMasterKey) -> None:
    wrapped = bytearray(imported.wrap(secrets.token_bytes(32), AAD))
    wrapped[-1] ^= 1

    with pytest.raises(DecryptionFailed):
        agent.key(imported.key_id).unwrap(bytes(wrapped), AAD)


def test_late_response_is_not_taken_for_the_next(
    monkeypatch: pytest.MonkeyPatch, imported: MemoryMasterKey
) -> None:
    supervisor_end, worker_end = Pipe()
    agent = KeyAgent(worker_end)
    monkeypatch.setattr(key_agent, "_TIMEOUT", 0.2)
    secret = secrets.token_bytes(32)

    # no supervisor serves the first request in time
    with pytest.raises(KeyUnavailable, match="did not respond in time"):
        agent.key(imported.key_id).unwrap(imported.wrap(secret, AAD), AAD)
    late = supervisor_end.recv()
    supervisor_end.send((late[0], "ok", b"late response"))

    masters = MasterKeys(MemoryMasterKey(secrets.token_bytes(32)))
    masters.add_imported(imported)
    thread = threading.Thread(target=serve_agent, args=(supervisor_end, masters))
    thread.start()
    try:
        borrowed = agent.key(imported.key_id)
        assert borrowed.unwrap(imported.wrap(secret, AAD), AAD) == secret
    finally:
        worker_end.close()
        thread.join(5)


def test_supervisor_gone_is_unavailable(imported: MemoryMasterKey) -> None:
    supervisor_end, worker_end = Pipe()
    supervisor_end.close()

    with pytest.raises(KeyUnavailable, match="unreachable"):
        KeyAgent(worker_end).key(imported.key_id).unwrap(b"\0" * 60, AAD)

"""Lend imported master keys to worker processes without copying them.

An imported key lives in the memory of one process only, the one that
received it. When the proxy runs several worker processes, that process is
the supervisor, and each worker has one end of a private pipe to it. A worker
that meets an organisation key wrapped by a key it does not have asks the
supervisor to unwrap (or wrap) it. The master key never leaves the
supervisor, and the pipe is an inherited descriptor, not a file.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Literal

from crypto.errors import DecryptionFailed, KeyUnavailable
from crypto.masters import MasterKeys

__all__ = ["AgentKey", "KeyAgent", "serve_agent"]

log = logging.getLogger("byok.key_agent")

_Operation = Literal["wrap", "unwrap"]
_TIMEOUT = 10.0


class KeyAgent:
    """The worker's end of the pipe, which sends one request at a time."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()
        self._sequence = 0

    def key(self, key_id: str) -> AgentKey:
        """Return a master key that forwards its operations to the supervisor."""
        return AgentKey(key_id, self)

    def call(
        self, operation: _Operation, key_id: str, value: bytes, aad: bytes
    ) -> bytes:
        """Run `operation` with the supervisor's key `key_id`.

        Raise KeyUnavailable if the supervisor does not have the key or does
        not respond, and DecryptionFailed if the value does not open.
        """
        with self._lock:
            self._sequence += 1
            try:
                self._connection.send((self._sequence, operation, key_id, value, aad))
                status, payload = self._receive(self._sequence)
            except (OSError, EOFError) as error:
                raise KeyUnavailable(
                    f"the supervisor process is unreachable: {error}"
                ) from None
        if status == "ok" and isinstance(payload, bytes):
            return payload
        if status == "failed":
            raise DecryptionFailed(str(payload))
        raise KeyUnavailable(str(payload))

    def _receive(self, sequence: int) -> tuple[str, bytes | str]:
        """Return the response to request `sequence`, skipping late ones.

        A response that arrives after its request timed out would otherwise
        be read as the response to the next request.
        """
        deadline = time.monotonic() + _TIMEOUT
        while (remaining := deadline - time.monotonic()) > 0:
            if not self._connection.poll(remaining):
                break
            answered, status, payload = self._connection.recv()
            if answered == sequence:
                return status, payload
        raise KeyUnavailable("the supervisor process did not respond in time")


@dataclass(frozen=True)
class AgentKey:
    """A MasterKey kept by the supervisor; its bytes never reach this process."""

    key_id: str
    agent: KeyAgent

    def wrap(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """Ask the supervisor to wrap `plaintext` under its key."""
        return self.agent.call("wrap", self.key_id, plaintext, associated_data)

    def unwrap(self, wrapped: bytes, associated_data: bytes) -> bytes:
        """Ask the supervisor to unwrap `wrapped` with its key."""
        return self.agent.call("unwrap", self.key_id, wrapped, associated_data)


def serve_agent(connection: Connection, masters: MasterKeys) -> None:
    """Serve one worker's requests with the imported keys until it hangs up.

    Runs in a thread of the supervisor. Only keys imported into the
    supervisor are lent; a worker opens the platform and HSM keys itself.
    """
    while True:
        try:
            sequence, operation, key_id, value, aad = connection.recv()
        except (EOFError, OSError):
            return
        connection.send((sequence, *_response(masters, operation, key_id, value, aad)))


def _response(
    masters: MasterKeys, operation: str, key_id: str, value: bytes, aad: bytes
) -> tuple[str, bytes | str]:
    master = masters.imported_key(key_id)
    if master is None:
        return "unavailable", (
            f"master key {key_id} is not imported into this proxy; the customer "
            "must supply it again after every restart"
        )
    try:
        if operation == "wrap":
            return "ok", master.wrap(value, aad)
        return "ok", master.unwrap(value, aad)
    except DecryptionFailed as error:
        log.warning("key_agent.unwrap_failed key=%s: %s", key_id, error)
        return "failed", str(error)

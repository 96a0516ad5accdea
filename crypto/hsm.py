"""A master key that lives in a PKCS#11 token (an HSM) and never leaves it.

AES-256-GCM runs inside the token, and a wrapped value has the layout of
`crypto.wrap`: `nonce (12, random) || ciphertext || tag (16)`, with the
associated data authenticated by GCM. The process keeps one logged-in session
and reopens it once when the token drops it. A key that the customer deletes
or disables makes `wrap` and `unwrap` raise KeyUnavailable, so the proxy
refuses requests instead of crashing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pkcs11
from pkcs11.constants import Attribute, MechanismFlag, ObjectClass
from pkcs11.exceptions import (
    AttributeSensitive,
    AttributeTypeInvalid,
    EncryptedDataInvalid,
    EncryptedDataLenRange,
    FunctionFailed,
    GeneralError,
    MultipleObjectsReturned,
    MultipleTokensReturned,
    NoSuchKey,
    NoSuchToken,
    PinExpired,
    PinIncorrect,
    PinInvalid,
    PinLenRange,
    PinLocked,
    PKCS11Error,
    UserAlreadyLoggedIn,
    UserPinNotInitialized,
)
from pkcs11.mechanisms import GCMParams, KeyType, Mechanism
from pkcs11.types import DecryptMixin, EncryptMixin, SecretKey, Session, Token

from crypto.errors import DecryptionFailed, KeyUnavailable, MasterKeyError
from crypto.wrap import KEY_SIZE, NONCE_SIZE, TAG_SIZE

__all__ = ["HsmConfig", "HsmMasterKey", "generate_hsm_key"]

_TAG_BITS = TAG_SIZE * 8
_CKA_ID_SIZE = 16
_MAX_TOKEN_LABEL_BYTES = 32
_FINGERPRINT_LABEL = b"byok-proxy hsm key id"

# Errors with which a token rejects a ciphertext. SoftHSM 2.6.1 reports a GCM
# tag mismatch as CKR_GENERAL_ERROR rather than CKR_ENCRYPTED_DATA_INVALID, so
# `unwrap` distinguishes a forged value from a failing key by a probe
# encryption.
_REJECTED_CIPHERTEXT: tuple[type[PKCS11Error], ...] = (
    EncryptedDataInvalid,
    EncryptedDataLenRange,
    FunctionFailed,
    GeneralError,
)

# Attributes of a key made by `generate_hsm_key`.
_KEY_TEMPLATE: dict[Attribute, Any] = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.ENCRYPT: True,
    Attribute.DECRYPT: True,
}


if TYPE_CHECKING:

    class _AesKey(SecretKey, EncryptMixin, DecryptMixin):
        """The class python-pkcs11 builds for a secret key that can encrypt."""


_Operation = Callable[["_AesKey"], bytes]


@dataclass(frozen=True)
class HsmConfig:
    """The PKCS#11 library, token label, user PIN and key label of the master key.

    The repr hides the PIN.
    """

    library: Path
    token_label: str
    pin: str = field(repr=False)
    key_label: str

    def __post_init__(self) -> None:
        if not self.token_label:
            raise ValueError("the HSM token label is empty; set the token's label")
        if len(self.token_label.encode()) > _MAX_TOKEN_LABEL_BYTES:
            raise ValueError(
                f"the HSM token label {self.token_label!r} is longer than "
                f"{_MAX_TOKEN_LABEL_BYTES} bytes, so no PKCS#11 token can have it"
            )
        if not self.pin:
            raise ValueError("the HSM user PIN is empty; set the token's user PIN")
        if not self.key_label:
            raise ValueError("the HSM key label is empty; set the master key's label")


@dataclass
class _Connection:
    """A logged-in session, the key found in it and the key's id."""

    session: Session
    key: _AesKey
    key_id: str


class HsmMasterKey:
    """A MasterKey whose 256-bit AES key stays inside a PKCS#11 token.

    Opening it logs in to the token and finds the secret key by label. `close`
    logs out, which ends the login of every session this process holds on the
    token, because PKCS#11 shares one login per process. Another HsmMasterKey
    on the same token then reopens its session on its next call.
    """

    def __init__(self, config: HsmConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._connection: _Connection | None = _connect(config)
        self._key_id = self._connection.key_id

    @property
    def key_id(self) -> str:
        """Fingerprint of the key's CKA_ID and check value, safe to log and store."""
        return self._key_id

    def __repr__(self) -> str:
        return (
            f"HsmMasterKey(key_id={self._key_id!r}, "
            f"token_label={self._config.token_label!r}, "
            f"key_label={self._config.key_label!r})"
        )

    def __enter__(self) -> HsmMasterKey:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Log out and close the session. A later call opens a new one."""
        with self._lock:
            if self._connection is not None:
                _close_session(self._connection.session)
                self._connection = None

    def wrap(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """Encrypt `plaintext` with AES-256-GCM inside the token.

        Returns `nonce || ciphertext || tag`. Raises KeyUnavailable if the
        token or the key cannot be used, even after reopening the session.
        """
        if not plaintext:
            raise ValueError("the plaintext to wrap is empty; pass a key or secret")
        # A retry in `_run` encrypts the same plaintext under the same nonce,
        # so it yields the same ciphertext and reveals nothing more.
        nonce = os.urandom(NONCE_SIZE)
        parameters = GCMParams(nonce, associated_data, _TAG_BITS)
        ciphertext = self._run(
            "encrypt", lambda key: _encrypt(key, plaintext, parameters)
        )
        return nonce + ciphertext

    def unwrap(self, wrapped: bytes, associated_data: bytes) -> bytes:
        """Decrypt a value made by `wrap` with the same associated data.

        Raises DecryptionFailed if the value does not authenticate under this
        key and associated data, and KeyUnavailable if the key cannot be used.
        """
        if len(wrapped) <= NONCE_SIZE + TAG_SIZE:
            raise DecryptionFailed(
                f"wrapped value of {len(wrapped)} bytes is too short to open"
            )
        parameters = GCMParams(wrapped[:NONCE_SIZE], associated_data, _TAG_BITS)
        body = wrapped[NONCE_SIZE:]
        try:
            return self._run(
                "decrypt",
                lambda key: _decrypt(key, body, parameters),
                _REJECTED_CIPHERTEXT,
            )
        except _CiphertextRejected:
            pass

        # A token may report a failing key with the same error as a bad tag,
        # so the key must still encrypt before the value is called forged.
        self._probe()
        raise DecryptionFailed(
            f"wrapped value failed to open under HSM key {self._key_id}: the tag "
            "does not match the key, the associated data and the bytes"
        )

    def _probe(self) -> None:
        """Encrypt one block, raising KeyUnavailable if the key cannot."""
        parameters = GCMParams(os.urandom(NONCE_SIZE), b"", _TAG_BITS)
        self._run("encrypt", lambda key: _encrypt(key, bytes(16), parameters))

    def _run(
        self,
        name: str,
        operation: _Operation,
        rejected: tuple[type[PKCS11Error], ...] = (),
    ) -> bytes:
        """Run `operation` on the key, reopening the session once on failure.

        An error in `rejected` means that the token rejected the input and did
        not lose the session, so it raises _CiphertextRejected at once.
        """
        with self._lock:
            try:
                return operation(self._open_key())
            except rejected as error:
                raise _CiphertextRejected from error
            except PKCS11Error:
                self._disconnect()

            # The token may have closed the session or logged it out, as it does
            # when another session of this process logs out, so reopen once.
            try:
                return operation(self._open_key())
            except rejected as error:
                raise _CiphertextRejected from error
            except PKCS11Error as error:
                self._disconnect()
                raise KeyUnavailable(
                    f"HSM key {self._config.key_label!r} on token "
                    f"{self._config.token_label!r} failed to {name} after the "
                    f"session was reopened ({_describe(error)}); check that the "
                    "key exists, allows ENCRYPT and DECRYPT, and that the token "
                    "is reachable"
                ) from error

    def _open_key(self) -> _AesKey:
        """Return the key of the open session, connecting first if needed.

        A key found under the label on reconnection must be the key first
        opened, or wrapped values would silently change keys.
        """
        if self._connection is None:
            connection = _connect(self._config)
            if connection.key_id != self._key_id:
                _close_session(connection.session)
                raise KeyUnavailable(
                    f"the key labelled {self._config.key_label!r} on token "
                    f"{self._config.token_label!r} is no longer the master key "
                    f"that this process opened (key id {self._key_id}, found "
                    f"{connection.key_id}); restore the original key to the token"
                )
            self._connection = connection
        return self._connection.key

    def _disconnect(self) -> None:
        if self._connection is not None:
            _close_session(self._connection.session)
            self._connection = None


class _CiphertextRejected(Exception):
    """The token rejected the value given to decrypt."""


# python-pkcs11 returns bytes for bytes input, and an iterator only for a stream.
def _encrypt(key: _AesKey, plaintext: bytes, parameters: GCMParams) -> bytes:
    ciphertext = key.encrypt(
        plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=parameters
    )
    return cast(bytes, ciphertext)


def _decrypt(key: _AesKey, ciphertext: bytes, parameters: GCMParams) -> bytes:
    plaintext = key.decrypt(
        ciphertext, mechanism=Mechanism.AES_GCM, mechanism_param=parameters
    )
    return cast(bytes, plaintext)


def generate_hsm_key(config: HsmConfig) -> str:
    """Generate the master key inside the token and return its key id.

    The key is a 256-bit AES token object with a random CKA_ID, usable only
    to encrypt and decrypt, and the token never reveals its value.
    Raises MasterKeyError if the token already has a secret key with that
    label, and KeyUnavailable if the token cannot be used.
    """
    token = _find_token(config)
    session = _log_in(token, config, rw=True)
    try:
        # NOTE: the check and the generation are two steps, so two processes
        # generating the same label at once can both succeed.
        _reject_existing_label(session, config)
        key = session.generate_key(
            KeyType.AES,
            KEY_SIZE * 8,
            id=os.urandom(_CKA_ID_SIZE),
            label=config.key_label,
            store=True,
            capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
            template=_KEY_TEMPLATE,
        )
        return _fingerprint(token, key, config)
    except PKCS11Error as error:
        raise KeyUnavailable(
            f"generating key {config.key_label!r} in token "
            f"{config.token_label!r} failed ({_describe(error)}); check that "
            "the token is writable and supports 256-bit AES keys"
        ) from error
    finally:
        _close_session(session)


def _reject_existing_label(session: Session, config: HsmConfig) -> None:
    search = {
        Attribute.CLASS: ObjectClass.SECRET_KEY,
        Attribute.LABEL: config.key_label,
    }
    # Reading the whole search ends it, so that generate_key can start.
    if list(session.get_objects(search)):
        raise MasterKeyError(
            f"token {config.token_label!r} already has a secret key labelled "
            f"{config.key_label!r}; use that key or choose another label"
        )


def _connect(config: HsmConfig) -> _Connection:
    """Log in to the token and find, check and fingerprint the key."""
    token = _find_token(config)
    session = _log_in(token, config, rw=False)
    try:
        key = _find_key(session, config)
        _check_key(key, config)
        return _Connection(session, key, _fingerprint(token, key, config))
    except PKCS11Error as error:
        _close_session(session)
        raise KeyUnavailable(
            f"reading key {config.key_label!r} on token {config.token_label!r} "
            f"failed ({_describe(error)}); check that the token is reachable"
        ) from error
    except BaseException:
        _close_session(session)
        raise


def _find_token(config: HsmConfig) -> Token:
    try:
        library = pkcs11.lib(str(config.library))
    except PKCS11Error as error:
        raise KeyUnavailable(
            f"cannot load the PKCS#11 library {config.library} ({error}); check "
            "the library path and that the HSM's client library is installed"
        ) from error
    try:
        return library.get_token(token_label=config.token_label)
    except NoSuchToken as error:
        raise KeyUnavailable(
            f"the PKCS#11 library {config.library} has no token labelled "
            f"{config.token_label!r}; check the token label and that the token "
            "is connected (SoftHSM2 lists only the tokens that existed when the "
            "process loaded the library)"
        ) from error
    except MultipleTokensReturned as error:
        raise KeyUnavailable(
            f"several tokens are labelled {config.token_label!r}; give the "
            "master key's token a unique label"
        ) from error
    except PKCS11Error as error:
        raise KeyUnavailable(
            f"listing the tokens of PKCS#11 library {config.library} failed "
            f"({_describe(error)}); check that the HSM is connected"
        ) from error


def _log_in(token: Token, config: HsmConfig, *, rw: bool) -> Session:
    """Open a session logged in as the user, mapping PIN errors to advice."""
    label = config.token_label
    try:
        return _open_session(token, config.pin, rw=rw)
    except (PinIncorrect, PinInvalid, PinLenRange) as error:
        raise KeyUnavailable(
            f"login to token {label!r} failed: the user PIN is incorrect; "
            "check the configured user PIN"
        ) from error
    except PinLocked as error:
        raise KeyUnavailable(
            f"the user PIN of token {label!r} is locked after too many wrong "
            "attempts; the token's security officer must reset it"
        ) from error
    except (PinExpired, UserPinNotInitialized) as error:
        raise KeyUnavailable(
            f"the user PIN of token {label!r} is expired or not set; set it "
            "with the token's administration tool"
        ) from error
    except PKCS11Error as error:
        raise KeyUnavailable(
            f"opening a session on token {label!r} failed ({_describe(error)}); "
            "check that the token is connected and has free sessions"
        ) from error


def _open_session(token: Token, pin: str, *, rw: bool) -> Session:
    try:
        return token.open(rw=rw, user_pin=pin)
    except UserAlreadyLoggedIn:
        # PKCS#11 shares one login among all sessions of a process, so a
        # session without a PIN can use the private objects of the session
        # that logged in. The PIN is therefore not checked again in this case.
        # NOTE: python-pkcs11 0.10.1 leaves open the session whose login
        # failed, so each such fallback leaks one session handle.
        return token.open(rw=rw)


def _find_key(session: Session, config: HsmConfig) -> _AesKey:
    try:
        key = session.get_key(
            object_class=ObjectClass.SECRET_KEY, label=config.key_label
        )
    except NoSuchKey as error:
        raise KeyUnavailable(
            f"token {config.token_label!r} has no secret key labelled "
            f"{config.key_label!r}; check the key label, and if the key was "
            "deleted, restore it from the token's backup"
        ) from error
    except MultipleObjectsReturned as error:
        raise KeyUnavailable(
            f"token {config.token_label!r} has several secret keys labelled "
            f"{config.key_label!r}; give the master key a unique label"
        ) from error
    return cast("_AesKey", key)


def _check_key(key: SecretKey, config: HsmConfig) -> None:
    """Raise unless the key is AES-256, cannot leave the token and is enabled.

    An unsafe key raises MasterKeyError. A key with CKA_ENCRYPT or CKA_DECRYPT
    turned off, which is how a customer disables it, raises KeyUnavailable.
    python-pkcs11 also leaves the encrypt or decrypt method off such a key.
    """
    attributes = key.get_attributes(
        [
            Attribute.KEY_TYPE,
            Attribute.VALUE_LEN,
            Attribute.SENSITIVE,
            Attribute.EXTRACTABLE,
            Attribute.ENCRYPT,
            Attribute.DECRYPT,
        ]
    )
    name = f"HSM key {config.key_label!r} on token {config.token_label!r}"
    if attributes[Attribute.KEY_TYPE] != KeyType.AES:
        raise MasterKeyError(f"{name} is not an AES key; generate an AES-256 key")
    if attributes[Attribute.VALUE_LEN] != KEY_SIZE:
        raise MasterKeyError(
            f"{name} is {attributes[Attribute.VALUE_LEN] * 8} bits long, not "
            f"{KEY_SIZE * 8}; generate an AES-256 key"
        )
    if not attributes[Attribute.SENSITIVE] or attributes[Attribute.EXTRACTABLE]:
        raise MasterKeyError(
            f"{name} can be read out of the token (it is not SENSITIVE or is "
            "EXTRACTABLE); generate a key with SENSITIVE true and EXTRACTABLE "
            "false"
        )
    if not attributes[Attribute.ENCRYPT] or not attributes[Attribute.DECRYPT]:
        raise KeyUnavailable(
            f"{name} is disabled (ENCRYPT or DECRYPT is false); re-enable both "
            "to use it as the master key"
        )


def _fingerprint(token: Token, key: SecretKey, config: HsmConfig) -> str:
    """Return a 16-hex-digit key id: SHA-256 over the key's identity, 8 bytes.

    The identity is the key's CKA_ID with its CKA_CHECK_VALUE, so the same key
    copied into another token keeps its id. A key without a CKA_ID is named
    by the token serial and its label instead. The check value, which tokens
    show to anyone logged in, is the only fact about the key material hashed.
    """
    key_id = bytes(key[Attribute.ID])
    check_value = _check_value(key)
    if key_id:
        fields = [b"id", key_id, check_value]
    else:
        fields = [b"label", token.serial, config.key_label.encode(), check_value]
    digest = hashlib.sha256(_FINGERPRINT_LABEL)
    for value in fields:
        digest.update(len(value).to_bytes(4, "big"))
        digest.update(value)
    return digest.digest()[:8].hex()


def _check_value(key: SecretKey) -> bytes:
    """Return CKA_CHECK_VALUE, or nothing on tokens that do not provide it."""
    try:
        return bytes(key[Attribute.CHECK_VALUE])
    except (AttributeTypeInvalid, AttributeSensitive):
        return b""


def _close_session(session: Session) -> None:
    # Closing fails if the token already dropped the session or its login.
    # python-pkcs11 0.10.1 logs out before closing, so a failed logout leaves
    # the session handle open until the library is finalised.
    with contextlib.suppress(PKCS11Error):
        session.close()


def _describe(error: PKCS11Error) -> str:
    """Return the class and message of a PKCS#11 error, often only the class."""
    message = str(error)
    name = type(error).__name__
    return f"{name}: {message}" if message else name

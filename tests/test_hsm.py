"""Tests of the PKCS#11 master key against real SoftHSM2 tokens."""

import re
import secrets
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pkcs11.constants import Attribute, ObjectClass
from pkcs11.exceptions import AttributeSensitive
from pkcs11.mechanisms import KeyType

from crypto.errors import DecryptionFailed, KeyUnavailable, MasterKeyError
from crypto.hsm import HsmConfig, HsmMasterKey, generate_hsm_key
from crypto.master import MasterKey
from crypto.wrap import NONCE_SIZE, TAG_SIZE
from tests.hsm_token import (
    delete_key,
    delete_key_in_subprocess,
    open_session,
    softhsm_tokens,
    unwrap_in_subprocess,
)

# The shared token contains one fresh key per test. No test ever logs in to the
# PIN token while another session is open, because PKCS#11 shares a login
# across the sessions of a process and would then accept any PIN.
SHARED_TOKEN = "byok-shared"
PIN_TOKEN = "byok-pin"

ASSOCIATED_DATA = b"byok-proxy/1 org-key test"


@pytest.fixture(scope="session")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, HsmConfig]]:
    directory = tmp_path_factory.mktemp("softhsm")
    with softhsm_tokens(directory, [SHARED_TOKEN, PIN_TOKEN]) as configs:
        yield configs


def _new_key_config(tokens: dict[str, HsmConfig]) -> HsmConfig:
    label = f"master-{secrets.token_hex(4)}"
    return replace(tokens[SHARED_TOKEN], key_label=label)


@pytest.fixture
def config(tokens: dict[str, HsmConfig]) -> HsmConfig:
    config = _new_key_config(tokens)
    generate_hsm_key(config)
    return config


@pytest.fixture
def master(config: HsmConfig) -> Iterator[HsmMasterKey]:
    with HsmMasterKey(config) as master:
        yield master


def _flip(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x01
    return bytes(changed)


def _assert_no_pin(error: pytest.ExceptionInfo[Exception], config: HsmConfig) -> None:
    assert config.pin not in str(error.value)


def test_wrap_unwrap_round_trip(master: HsmMasterKey) -> None:
    plaintext = secrets.token_bytes(32)

    wrapped = master.wrap(plaintext, ASSOCIATED_DATA)

    assert len(wrapped) == NONCE_SIZE + len(plaintext) + TAG_SIZE
    assert master.unwrap(wrapped, ASSOCIATED_DATA) == plaintext


def test_wrap_uses_fresh_nonce(master: HsmMasterKey) -> None:
    plaintext = secrets.token_bytes(32)

    first = master.wrap(plaintext, ASSOCIATED_DATA)
    second = master.wrap(plaintext, ASSOCIATED_DATA)

    assert first[:NONCE_SIZE] != second[:NONCE_SIZE]
    assert first[NONCE_SIZE:] != second[NONCE_SIZE:]


def test_wrap_rejects_empty_plaintext(master: HsmMasterKey) -> None:
    with pytest.raises(ValueError, match="empty"):
        master.wrap(b"", ASSOCIATED_DATA)


def test_hsm_master_key_is_master_key(master: HsmMasterKey) -> None:
    typed: MasterKey = master
    wrapped = typed.wrap(b"secret", b"")

    assert typed.unwrap(wrapped, b"") == b"secret"
    assert typed.key_id == master.key_id


def test_generated_key_cannot_be_read(config: HsmConfig) -> None:
    with open_session(config) as session:
        key = session.get_key(
            object_class=ObjectClass.SECRET_KEY, label=config.key_label
        )

        with pytest.raises(AttributeSensitive):
            key[Attribute.VALUE]
        assert key[Attribute.KEY_TYPE] == KeyType.AES
        assert key[Attribute.VALUE_LEN] == 32
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.TOKEN] is True
        assert key[Attribute.ENCRYPT] is True
        assert key[Attribute.DECRYPT] is True
        assert key[Attribute.WRAP] is False


@pytest.mark.parametrize(
    "index", [0, NONCE_SIZE - 1, NONCE_SIZE, -TAG_SIZE - 1, -TAG_SIZE, -1]
)
def test_unwrap_tampered_value_fails(master: HsmMasterKey, index: int) -> None:
    plaintext = secrets.token_bytes(32)
    wrapped = master.wrap(plaintext, ASSOCIATED_DATA)

    with pytest.raises(DecryptionFailed):
        master.unwrap(_flip(wrapped, index), ASSOCIATED_DATA)
    assert master.unwrap(wrapped, ASSOCIATED_DATA) == plaintext


@pytest.mark.parametrize("size", [0, NONCE_SIZE, NONCE_SIZE + TAG_SIZE])
def test_unwrap_short_value_fails(master: HsmMasterKey, size: int) -> None:
    wrapped = master.wrap(secrets.token_bytes(32), ASSOCIATED_DATA)

    with pytest.raises(DecryptionFailed, match="too short"):
        master.unwrap(wrapped[:size], ASSOCIATED_DATA)


def test_unwrap_truncated_tag_fails(master: HsmMasterKey) -> None:
    wrapped = master.wrap(secrets.token_bytes(32), ASSOCIATED_DATA)

    with pytest.raises(DecryptionFailed):
        master.unwrap(wrapped[:-1], ASSOCIATED_DATA)


def test_unwrap_other_associated_data_fails(master: HsmMasterKey) -> None:
    wrapped = master.wrap(secrets.token_bytes(32), ASSOCIATED_DATA)

    with pytest.raises(DecryptionFailed):
        master.unwrap(wrapped, ASSOCIATED_DATA + b"x")
    with pytest.raises(DecryptionFailed):
        master.unwrap(wrapped, b"")


def test_unwrap_under_other_key_fails(
    master: HsmMasterKey, tokens: dict[str, HsmConfig]
) -> None:
    other_config = _new_key_config(tokens)
    generate_hsm_key(other_config)
    wrapped = master.wrap(secrets.token_bytes(32), ASSOCIATED_DATA)

    with HsmMasterKey(other_config) as other, pytest.raises(DecryptionFailed):
        other.unwrap(wrapped, ASSOCIATED_DATA)


def test_key_id_stable_across_reopen(config: HsmConfig) -> None:
    with HsmMasterKey(config) as first:
        first_id = first.key_id
    with HsmMasterKey(config) as second:
        second_id = second.key_id

    assert re.fullmatch("[0-9a-f]{16}", first_id)
    assert second_id == first_id


def test_key_id_matches_generate_result(tokens: dict[str, HsmConfig]) -> None:
    config = _new_key_config(tokens)

    generated_id = generate_hsm_key(config)

    with HsmMasterKey(config) as master:
        assert master.key_id == generated_id


def test_key_id_differs_between_keys(
    master: HsmMasterKey, tokens: dict[str, HsmConfig]
) -> None:
    other_config = _new_key_config(tokens)
    generate_hsm_key(other_config)

    with HsmMasterKey(other_config) as other:
        assert other.key_id != master.key_id


def test_key_id_changes_on_regeneration(
    config: HsmConfig,
) -> None:
    with HsmMasterKey(config) as first:
        first_id = first.key_id
    delete_key(config)
    generate_hsm_key(config)

    with HsmMasterKey(config) as second:
        assert second.key_id != first_id


def test_second_process_unwraps(master: HsmMasterKey, config: HsmConfig) -> None:
    plaintext = secrets.token_bytes(32)
    wrapped = master.wrap(plaintext, ASSOCIATED_DATA)

    key_id, unwrapped = unwrap_in_subprocess(config, wrapped, ASSOCIATED_DATA)

    assert unwrapped == plaintext
    assert key_id == master.key_id


def test_wrong_pin_raises_key_unavailable(tokens: dict[str, HsmConfig]) -> None:
    config = replace(tokens[PIN_TOKEN], key_label="pin-test")
    generate_hsm_key(config)
    wrong = replace(config, pin="wrong-" + secrets.token_hex(4))

    with pytest.raises(KeyUnavailable, match="PIN is incorrect") as error:
        HsmMasterKey(wrong)

    _assert_no_pin(error, wrong)
    _assert_no_pin(error, config)
    with HsmMasterKey(config) as master:
        assert master.unwrap(master.wrap(b"secret", b""), b"") == b"secret"


def test_missing_token_raises_key_unavailable(config: HsmConfig) -> None:
    missing = replace(config, token_label="no-such-token")

    with pytest.raises(KeyUnavailable, match="no token labelled") as error:
        HsmMasterKey(missing)

    _assert_no_pin(error, config)


def test_missing_library_raises_key_unavailable(
    config: HsmConfig, tmp_path: Path
) -> None:
    missing = replace(config, library=tmp_path / "libmissing.so")

    with pytest.raises(KeyUnavailable, match="cannot load the PKCS#11 library"):
        HsmMasterKey(missing)


def test_missing_key_raises_key_unavailable(tokens: dict[str, HsmConfig]) -> None:
    config = _new_key_config(tokens)

    with pytest.raises(KeyUnavailable, match="no secret key labelled") as error:
        HsmMasterKey(config)

    _assert_no_pin(error, config)


def test_deleted_key_raises_key_unavailable(config: HsmConfig) -> None:
    delete_key(config)

    with pytest.raises(KeyUnavailable, match="no secret key labelled"):
        HsmMasterKey(config)


def test_key_deleted_while_open(master: HsmMasterKey, config: HsmConfig) -> None:
    wrapped = master.wrap(secrets.token_bytes(32), ASSOCIATED_DATA)

    delete_key(config)

    with pytest.raises(KeyUnavailable, match="no secret key labelled") as error:
        master.unwrap(wrapped, ASSOCIATED_DATA)
    _assert_no_pin(error, config)
    with pytest.raises(KeyUnavailable, match="no secret key labelled"):
        master.wrap(b"secret", ASSOCIATED_DATA)


def test_key_deleted_by_other_process(master: HsmMasterKey, config: HsmConfig) -> None:
    wrapped = master.wrap(secrets.token_bytes(32), ASSOCIATED_DATA)

    delete_key_in_subprocess(config)

    with pytest.raises(KeyUnavailable, match="no secret key labelled"):
        master.unwrap(wrapped, ASSOCIATED_DATA)


def test_key_replaced_while_open(master: HsmMasterKey, config: HsmConfig) -> None:
    wrapped = master.wrap(secrets.token_bytes(32), ASSOCIATED_DATA)

    delete_key(config)
    generate_hsm_key(config)

    with pytest.raises(KeyUnavailable, match="no longer the master key"):
        master.unwrap(wrapped, ASSOCIATED_DATA)
    with pytest.raises(KeyUnavailable, match="no longer the master key"):
        master.wrap(b"secret", ASSOCIATED_DATA)


def _disable(config: HsmConfig, attribute: Attribute) -> None:
    with open_session(config) as session:
        key = session.get_key(
            object_class=ObjectClass.SECRET_KEY, label=config.key_label
        )
        key[attribute] = False


@pytest.mark.parametrize("attribute", [Attribute.ENCRYPT, Attribute.DECRYPT])
def test_disabled_key_raises_key_unavailable(
    master: HsmMasterKey, config: HsmConfig, attribute: Attribute
) -> None:
    plaintext = secrets.token_bytes(32)
    wrapped = master.wrap(plaintext, ASSOCIATED_DATA)

    _disable(config, attribute)

    # The open session still runs the function left enabled, so only the
    # disabled one fails. The reopened session then rejects the key.
    with pytest.raises(KeyUnavailable, match="is disabled") as error:
        if attribute == Attribute.ENCRYPT:
            master.wrap(plaintext, ASSOCIATED_DATA)
        else:
            master.unwrap(wrapped, ASSOCIATED_DATA)
    _assert_no_pin(error, config)
    with pytest.raises(KeyUnavailable, match="is disabled"):
        master.unwrap(wrapped, ASSOCIATED_DATA)
    with pytest.raises(KeyUnavailable, match="is disabled"):
        master.wrap(plaintext, ASSOCIATED_DATA)
    with pytest.raises(KeyUnavailable, match="is disabled"):
        HsmMasterKey(config)


def test_forged_value_with_encrypt_disabled(
    master: HsmMasterKey, config: HsmConfig
) -> None:
    wrapped = master.wrap(secrets.token_bytes(32), ASSOCIATED_DATA)

    _disable(config, Attribute.ENCRYPT)

    # Without the probe encryption a forged value cannot be distinguished
    # from a failing key, so it raises KeyUnavailable rather than DecryptionFailed.
    with pytest.raises(KeyUnavailable, match="is disabled"):
        master.unwrap(_flip(wrapped, -1), ASSOCIATED_DATA)


def test_session_reopened_after_logout(config: HsmConfig) -> None:
    plaintext = secrets.token_bytes(32)
    with HsmMasterKey(config) as first, HsmMasterKey(config) as second:
        wrapped = second.wrap(plaintext, ASSOCIATED_DATA)

        # Closing the first key logs out every session of this process on
        # the token, the second one's included.
        first.close()

        assert second.unwrap(wrapped, ASSOCIATED_DATA) == plaintext
        assert second.unwrap(second.wrap(b"again", b""), b"") == b"again"


def test_unwrap_after_close_reopens(master: HsmMasterKey) -> None:
    wrapped = master.wrap(b"secret", ASSOCIATED_DATA)

    master.close()

    assert master.unwrap(wrapped, ASSOCIATED_DATA) == b"secret"


def test_generate_rejects_duplicate_label(
    master: HsmMasterKey, config: HsmConfig
) -> None:
    wrapped = master.wrap(b"secret", ASSOCIATED_DATA)

    with pytest.raises(MasterKeyError, match="already has a secret key labelled"):
        generate_hsm_key(config)

    assert master.unwrap(wrapped, ASSOCIATED_DATA) == b"secret"
    with open_session(config) as session:
        search = {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.LABEL: config.key_label,
        }
        assert len(list(session.get_objects(search))) == 1


@pytest.mark.parametrize(
    ("key_bits", "template", "problem"),
    [
        (256, {Attribute.EXTRACTABLE: True}, "can be read out of the token"),
        (256, {Attribute.SENSITIVE: False}, "can be read out of the token"),
        (128, {}, "128 bits long"),
    ],
)
def test_open_rejects_unsafe_key(
    tokens: dict[str, HsmConfig],
    key_bits: int,
    template: dict[Attribute, Any],
    problem: str,
) -> None:
    config = _new_key_config(tokens)
    with open_session(config) as session:
        session.generate_key(
            KeyType.AES,
            key_bits,
            label=config.key_label,
            store=True,
            template={Attribute.SENSITIVE: True, **template},
        )

    with pytest.raises(MasterKeyError, match=problem):
        HsmMasterKey(config)


def test_config_repr_hides_pin(config: HsmConfig) -> None:
    assert config.pin not in repr(config)
    assert config.pin not in str(config)
    assert config.token_label in repr(config)


def test_master_key_repr_hides_pin(master: HsmMasterKey, config: HsmConfig) -> None:
    assert config.pin not in repr(master)
    assert master.key_id in repr(master)


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("token_label", "", "token label is empty"),
        ("token_label", "t" * 33, "longer than 32 bytes"),
        ("pin", "", "PIN is empty"),
        ("key_label", "", "key label is empty"),
    ],
)
def test_config_rejects_invalid_value(
    config: HsmConfig, field: str, value: str, problem: str
) -> None:
    changes: dict[str, Any] = {field: value}

    with pytest.raises(ValueError, match=problem):
        replace(config, **changes)

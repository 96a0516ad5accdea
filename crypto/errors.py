"""Errors raised by the crypto package, grouped by kind."""

__all__ = [
    "CryptoError",
    "DecryptionFailed",
    "ImportRejected",
    "KeyHierarchyError",
    "KeyRevoked",
    "KeyStoreError",
    "KeyUnavailable",
    "MasterKeyError",
    "OrganisationExists",
    "SizeMismatch",
    "UnknownAccessKey",
    "UnknownOrganisation",
]


class CryptoError(Exception):
    """Base class of every error raised by the crypto package."""


class DecryptionFailed(CryptoError):
    """An object, header or wrapped key failed to open.

    Every cause (bad tag, bad commitment, bad header tag, impossible size)
    raises this one class, so callers cannot tell them apart; the message
    names the check for the server log.
    """


class SizeMismatch(CryptoError):
    """The plaintext fed to a sealer differs from its declared size."""


class KeyHierarchyError(CryptoError):
    """Base class of key hierarchy errors."""


class UnknownOrganisation(KeyHierarchyError):
    """No organisation has that name or id."""


class UnknownAccessKey(KeyHierarchyError):
    """No credentials have that access key id."""


class KeyRevoked(KeyHierarchyError):
    """The organisation's key was revoked; its data can never be read again."""


class KeyUnavailable(KeyHierarchyError):
    """The key exists but cannot be used now; a later retry may succeed."""


class MasterKeyError(KeyHierarchyError):
    """The master key is unsafe, malformed or not the key that wrapped the store.

    The message names the fix: a file mode, a file size or the key id to load.
    """


class OrganisationExists(KeyHierarchyError):
    """Another organisation already has that name."""


class KeyStoreError(KeyHierarchyError):
    """The key store database cannot be used or did not finish an operation."""


class ImportRejected(KeyHierarchyError):
    """A rejected customer key import, with a message that names the fix.

    No message contains key bytes, the import token or a submitted check value.
    """

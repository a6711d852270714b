"""The project's error types: one base class, split by what went wrong.

Every parser turns `cbor2`, `cryptography`, `ValueError` and friends into one of these, so a
caller catches `ScittOciError` and nothing else. Messages name the input and the rule it broke.
"""

from __future__ import annotations


class ScittOciError(Exception):
    """Base of every error scitt-oci raises on purpose."""

    def diagnostics(self) -> str:
        """The text the CLI prints for this error."""
        return str(self)


class MalformedError(ScittOciError):
    """Input bytes that are not what they claim to be (CBOR, COSE, JSON, PEM, ...)."""


class LimitExceededError(MalformedError):
    """Input that breaks a size, depth or item-count limit before it is fully decoded."""


class UnsupportedError(ScittOciError):
    """Well-formed input that uses an algorithm, key type or structure we do not implement."""


class KeyFormatError(MalformedError):
    """A key (PEM, JWK, COSE_Key) that cannot be loaded."""


class SignatureError(ScittOciError):
    """A signature that does not verify under the key given."""


class ProofError(ScittOciError):
    """A Merkle inclusion or consistency proof that does not hold."""


class PolicyError(ScittOciError):
    """A trust policy or configuration file that cannot be used."""


class UntrustedKeyError(SignatureError):
    """A signature made by a key (or certificate) that nothing configured vouches for."""

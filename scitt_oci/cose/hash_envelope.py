"""COSE Hash Envelope (RFC 9995): the payload is the digest of the artifact, described by 258-260."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from scitt_oci.cose import headers
from scitt_oci.errors import MalformedError, UnsupportedError

# COSE hash algorithm ids (IANA "COSE Algorithms") and their hashlib names and lengths
HASHES: dict[int, tuple[str, int]] = {
    -16: ("sha256", 32),
    -43: ("sha384", 48),
    -44: ("sha512", 64),
}
# The other way round: an OCI digest's algorithm (hashlib's name) -> its COSE id. The one table of both.
BY_OCI_ALGORITHM = {name: alg for alg, (name, _size) in HASHES.items()}


@dataclass(frozen=True)
class HashEnvelope:
    """What a hash-envelope protected header says about the artifact."""

    hash_alg: int
    digest: bytes
    preimage_content_type: str | int | None = None
    location: str | None = None

    @property
    def hash_name(self) -> str:
        return HASHES[self.hash_alg][0]

    def matches(self, artifact: bytes) -> bool:
        """Whether `artifact` hashes to the digest this envelope carries."""
        return hashlib.new(self.hash_name, artifact).digest() == self.digest

    def header(self) -> dict[int, Any]:
        out: dict[int, Any] = {headers.PAYLOAD_HASH_ALG: self.hash_alg}
        if self.preimage_content_type is not None:
            out[headers.PREIMAGE_CONTENT_TYPE] = self.preimage_content_type
        if self.location is not None:
            out[headers.PAYLOAD_LOCATION] = self.location
        return out


def digest_of(artifact: bytes, hash_alg: int = -16) -> bytes:
    name, _size = _hash(hash_alg)
    return hashlib.new(name, artifact).digest()


def _hash(hash_alg: object) -> tuple[str, int]:
    if isinstance(hash_alg, bool) or not isinstance(hash_alg, int) or hash_alg not in HASHES:
        raise UnsupportedError(
            f"payload-hash-alg {hash_alg!r} is not supported (SHA-256 -16, SHA-384 -43, SHA-512 -44)"
        )
    return HASHES[hash_alg]


_PROTECTED_ONLY = (headers.PAYLOAD_HASH_ALG, headers.PREIMAGE_CONTENT_TYPE, headers.PAYLOAD_LOCATION)


def parse(protected: dict[Any, Any], unprotected: dict[Any, Any], payload: bytes | None) -> HashEnvelope | None:
    """The hash envelope of a message, None when 258 is absent, or `MalformedError` for a rule broken."""
    for label in _PROTECTED_ONLY if unprotected else ():
        if label in unprotected:
            raise MalformedError(
                f"hash envelope: {headers.NAMES[label]} ({label}) must not be in the unprotected header"
            )
    if headers.PAYLOAD_HASH_ALG not in protected:
        return None
    if headers.CONTENT_TYPE in protected or headers.CONTENT_TYPE in unprotected:
        raise MalformedError("hash envelope: content type (3) must not be used with payload-hash-alg (258); use 259")
    hash_alg = protected[headers.PAYLOAD_HASH_ALG]
    known = HASHES.get(hash_alg) if type(hash_alg) is int else None  # _hash's answer for a plain int id
    _name, size = known if known is not None else _hash(hash_alg)
    if payload is None:
        raise MalformedError("hash envelope: the payload (the digest) is detached; it is needed to bind the artifact")
    if len(payload) != size:
        raise MalformedError(f"hash envelope: payload is {len(payload)} bytes; alg {hash_alg} digests are {size}")
    ctype = protected.get(headers.PREIMAGE_CONTENT_TYPE)
    if (
        ctype is not None
        and type(ctype) is not str  # text, the usual case, passes every test below
        and (isinstance(ctype, bool) or not isinstance(ctype, (str, int)) or (isinstance(ctype, int) and ctype < 0))
    ):
        raise MalformedError("hash envelope: preimage-content-type (259) must be a text string or unsigned integer")
    location = protected.get(headers.PAYLOAD_LOCATION)
    if location is not None and not isinstance(location, str):
        raise MalformedError("hash envelope: payload-location (260) must be a text string")
    return HashEnvelope(hash_alg, payload, ctype, location)

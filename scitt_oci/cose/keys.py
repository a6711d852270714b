"""COSE_Key and COSE Key Set, PEM and JWK import/export, RFC 9679 thumbprints.

A `CoseKey` wraps a `cryptography` key; its `kid` is the RFC 9679 thumbprint (SHA-256 over the
deterministic CBOR of the key's required parameters) unless the source named another.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from scitt_oci import b64url
from scitt_oci.cose import algorithms, cbor
from scitt_oci.cose.algorithms import PRIVATE_KEY_TYPES, PUBLIC_KEY_TYPES, Algorithm, PrivateKey, PublicKey
from scitt_oci.errors import KeyFormatError, MalformedError, UnsupportedError

# COSE_Key labels (RFC 9052 section 7; RFC 9053 sections 7.1, 7.2; RFC 8230 section 4)
KTY, KID, ALG = 1, 2, 3
CRV, X, Y, D = -1, -2, -3, -4
RSA_N, RSA_E = -1, -2
KTY_OKP, KTY_EC2, KTY_RSA = 1, 2, 3
CRV_P256, CRV_P384, CRV_P521, CRV_ED25519 = 1, 2, 3, 6

_CURVES: dict[int, tuple[type[ec.EllipticCurve], str, int]] = {
    CRV_P256: (ec.SECP256R1, "P-256", 32),
    CRV_P384: (ec.SECP384R1, "P-384", 48),
    CRV_P521: (ec.SECP521R1, "P-521", 66),
}
_CRV_BY_CURVE_NAME = {"secp256r1": CRV_P256, "secp384r1": CRV_P384, "secp521r1": CRV_P521}
_CRV_BY_JWK = {jwk: label for label, (_cls, jwk, _size) in _CURVES.items()}
_DEFAULT_ALG_BY_CRV = {CRV_P256: -7, CRV_P384: -35, CRV_P521: -36}


_b64u = b64url.encode


def _unb64u(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise KeyFormatError(f"JWK member {what!r} must be a base64url string")
    try:
        return b64url.decode(text)
    except ValueError:
        raise KeyFormatError(f"JWK member {what!r} is not unpadded base64url") from None


def _int_bytes(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


@dataclass(frozen=True)
class CoseKey:
    """A public key (and optionally its private half) with its COSE identity."""

    public: PublicKey
    kid: bytes
    alg: Algorithm | None = None
    private: PrivateKey | None = field(default=None, repr=False, compare=False)
    names: frozenset[bytes] = field(default=frozenset(), compare=False)  # text kids others call it by (UTF-8)

    # ----- construction -----
    @classmethod
    def from_key(
        cls,
        key: PublicKey | PrivateKey,
        *,
        kid: bytes | None = None,
        alg: Algorithm | None = None,
        names: Iterable[bytes] = (),
    ) -> CoseKey:
        """Wrap a `cryptography` key; `kid` defaults to the RFC 9679 thumbprint."""
        private: PrivateKey | None = None
        if isinstance(key, PRIVATE_KEY_TYPES):
            private = key
            public: PublicKey = key.public_key()
        elif isinstance(key, PUBLIC_KEY_TYPES):
            public = key
        else:
            raise UnsupportedError(f"key type {type(key).__name__} is not supported")
        if alg is None:
            alg = default_algorithm(public)
        if alg is not None:
            algorithms.check_key(alg, public)
        return cls(
            public=public,
            kid=kid if kid is not None else thumbprint(public),
            alg=alg,
            private=private,
            names=frozenset(names),
        )

    def named(self, *names: bytes) -> CoseKey:
        """This key, also answering to the text kids `names` (UTF-8 bytes), e.g. as a trust policy names it."""
        return CoseKey(self.public, self.kid, self.alg, self.private, self.names | frozenset(names))

    @cached_property
    def aliases(self) -> frozenset[bytes]:
        """Every byte string a peer may put in `kid` (a bstr, RFC 9052) to name this key (KID_FORMS):
        our kid, the RFC 9679 thumbprint and the SHA-256 of the SubjectPublicKeyInfo (CCF), each as raw
        bytes, as hex text or as base64url text, plus the text kids the key was given (`names`)."""
        spki = self.public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        out = set(self.names)
        for raw in (self.kid, thumbprint(self.public), hashlib.sha256(spki).digest()):
            out.update((raw, raw.hex().encode(), _b64u(raw).encode()))
        return frozenset(out)

    def answers_to(self, kid: bytes) -> bool:
        """Does `kid` name this key in one of KID_FORMS? (Hex text is matched in either case.)"""
        if kid in self.aliases:
            return True
        return kid.isascii() and kid.lower() in self.aliases

    # ----- COSE_Key -----
    def to_cose(self, *, include_kid: bool = True, include_alg: bool = True) -> dict[int, Any]:
        """The public COSE_Key map."""
        out = public_parameters(self.public)
        if include_kid:
            out[KID] = self.kid
        if include_alg and self.alg is not None:
            out[ALG] = self.alg.cose_id
        return out

    # ----- JWK -----
    def to_jwk(self) -> dict[str, str]:
        """The public JWK (RFC 7517), with `kid` as base64url of our kid and `alg` when known."""
        params = public_parameters(self.public)
        kty = params[KTY]
        jwk: dict[str, str]
        if kty == KTY_EC2:
            jwk = {"kty": "EC", "crv": _CURVES[params[CRV]][1], "x": _b64u(params[X]), "y": _b64u(params[Y])}
        elif kty == KTY_OKP:
            jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64u(params[X])}
        else:
            jwk = {"kty": "RSA", "n": _b64u(params[RSA_N]), "e": _b64u(params[RSA_E])}
        jwk["kid"] = _b64u(self.kid)
        if self.alg is not None:
            jwk["alg"] = self.alg.name
        return jwk

    # ----- PEM -----
    def public_pem(self) -> bytes:
        return self.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def private_pem(self) -> bytes:
        if self.private is None:
            raise KeyFormatError(f"key {self.kid.hex()} has no private half")
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


KID_FORMS = (
    "the key's kid, its RFC 9679 thumbprint or the SHA-256 of its SubjectPublicKeyInfo, as raw bytes, hex text "
    "or base64url text, or a text kid the key file or trust policy gives it, always as a byte string "
    "(RFC 9052: kid is bstr; a text kid is carried as its UTF-8 bytes)"
)


def kid_text(kid: bytes) -> str:
    """A kid for messages: printable ASCII as quoted text, anything else as hex (shortened)."""
    text = repr(kid.decode("ascii")) if kid.isascii() and kid.decode("ascii").isprintable() else kid.hex()
    return text[:40] + ("..." if len(text) > 40 else "")


def default_algorithm(key: PublicKey) -> Algorithm | None:
    """The algorithm a key of this type signs with unless told otherwise (None for RSA: PS256/384/512 all fit)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        crv = _CRV_BY_CURVE_NAME.get(key.curve.name)
        if crv is None:
            raise UnsupportedError(f"EC curve {key.curve.name} is not supported")
        return algorithms.ALGORITHMS[_DEFAULT_ALG_BY_CRV[crv]]
    if isinstance(key, ed25519.Ed25519PublicKey):
        return algorithms.BY_NAME["EdDSA"]
    return None


def public_parameters(key: PublicKey) -> dict[int, Any]:
    """The required public parameters of a key as COSE_Key labels (what RFC 9679 hashes)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        crv = _CRV_BY_CURVE_NAME.get(key.curve.name)
        if crv is None:
            raise UnsupportedError(f"EC curve {key.curve.name} is not supported")
        size = _CURVES[crv][2]
        numbers = key.public_numbers()
        return {KTY: KTY_EC2, CRV: crv, X: numbers.x.to_bytes(size, "big"), Y: numbers.y.to_bytes(size, "big")}
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {KTY: KTY_OKP, CRV: CRV_ED25519, X: raw}
    if isinstance(key, rsa.RSAPublicKey):
        rnum = key.public_numbers()
        return {KTY: KTY_RSA, RSA_N: _int_bytes(rnum.n), RSA_E: _int_bytes(rnum.e)}
    raise UnsupportedError(f"key type {type(key).__name__} is not supported")


def thumbprint(key: PublicKey) -> bytes:
    """RFC 9679 COSE Key Thumbprint with SHA-256: deterministic CBOR of the required parameters."""
    return hashlib.sha256(cbor.dumps_canonical(public_parameters(key))).digest()


def _require_bytes(m: dict[Any, Any], label: int, what: str) -> bytes:
    value = m.get(label)
    if not isinstance(value, bytes):
        raise KeyFormatError(f"COSE_Key parameter {what} ({label}) must be a byte string")
    return value


def from_cose(m: object) -> CoseKey:
    """Load a public COSE_Key map (private parameters are ignored: we never import them this way)."""
    if not isinstance(m, dict):
        raise KeyFormatError(f"COSE_Key must be a map, not {type(m).__name__}")
    kty = m.get(KTY)
    try:
        public: PublicKey
        if kty == KTY_EC2:
            crv = m.get(CRV)
            if type(crv) is not int or crv not in _CURVES:
                raise UnsupportedError(f"COSE_Key EC2 curve {crv!r} is not supported (P-256 1, P-384 2, P-521 3)")
            curve_cls, _name, size = _CURVES[crv]
            x = _require_bytes(m, X, "x")
            y = _require_bytes(m, Y, "y")
            if len(x) != size or len(y) != size:
                raise KeyFormatError(f"COSE_Key coordinates must be {size} bytes on this curve")
            public = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve_cls()
            ).public_key()
        elif kty == KTY_OKP:
            if m.get(CRV) != CRV_ED25519:
                raise UnsupportedError(f"COSE_Key OKP curve {m.get(CRV)!r} is not supported (Ed25519 6)")
            public = ed25519.Ed25519PublicKey.from_public_bytes(_require_bytes(m, X, "x"))
        elif kty == KTY_RSA:
            n = int.from_bytes(_require_bytes(m, RSA_N, "n"), "big")
            e = int.from_bytes(_require_bytes(m, RSA_E, "e"), "big")
            public = rsa.RSAPublicNumbers(e, n).public_key()
        else:
            raise UnsupportedError(f"COSE_Key kty {kty!r} is not supported (OKP 1, EC2 2, RSA 3)")
    except ValueError as exc:
        raise KeyFormatError(f"COSE_Key does not hold a valid public key: {exc}") from None
    kid = m.get(KID)
    if kid is not None and not isinstance(kid, bytes):
        raise KeyFormatError("COSE_Key kid (2) must be a byte string")
    alg_id = m.get(ALG)
    alg = algorithms.by_id(alg_id) if alg_id is not None else None
    return CoseKey.from_key(public, kid=kid, alg=alg)


def load_cose_key_set(data: bytes) -> list[CoseKey]:
    """Load a COSE Key Set (a CBOR array of COSE_Key maps) or a single COSE_Key."""
    decoded = cbor.loads(data)
    items = decoded if isinstance(decoded, list) else [decoded]
    return [from_cose(item) for item in items]


def dump_cose_key_set(keys: Iterable[CoseKey]) -> bytes:
    return cbor.dumps([k.to_cose() for k in keys])


def from_jwk(jwk: object) -> CoseKey:
    """Load a public JWK (RFC 7517/7518/8037)."""
    if not isinstance(jwk, dict):
        raise KeyFormatError("JWK must be a JSON object")
    kty = jwk.get("kty")
    try:
        public: PublicKey
        if kty == "EC":
            crv = _CRV_BY_JWK.get(str(jwk.get("crv")))
            if crv is None:
                raise UnsupportedError(f"JWK curve {jwk.get('crv')!r} is not supported (P-256, P-384, P-521)")
            curve_cls = _CURVES[crv][0]
            public = ec.EllipticCurvePublicNumbers(
                int.from_bytes(_unb64u(jwk.get("x"), "x"), "big"),
                int.from_bytes(_unb64u(jwk.get("y"), "y"), "big"),
                curve_cls(),
            ).public_key()
        elif kty == "OKP":
            if jwk.get("crv") != "Ed25519":
                raise UnsupportedError(f"JWK OKP curve {jwk.get('crv')!r} is not supported (Ed25519)")
            public = ed25519.Ed25519PublicKey.from_public_bytes(_unb64u(jwk.get("x"), "x"))
        elif kty == "RSA":
            public = rsa.RSAPublicNumbers(
                int.from_bytes(_unb64u(jwk.get("e"), "e"), "big"),
                int.from_bytes(_unb64u(jwk.get("n"), "n"), "big"),
            ).public_key()
        else:
            raise UnsupportedError(f"JWK kty {kty!r} is not supported (EC, OKP, RSA)")
    except ValueError as exc:
        raise KeyFormatError(f"JWK does not hold a valid public key: {exc}") from None
    jwk_kid = jwk.get("kid")
    kid = _jwk_kid(jwk_kid) if isinstance(jwk_kid, str) and jwk_kid else None
    alg_name = jwk.get("alg")
    alg = algorithms.by_name(alg_name) if isinstance(alg_name, str) else None
    # The JWK kid as text is a name too: pyscitt, transmute and others put it in COSE kid as UTF-8 bytes.
    names = [jwk_kid.encode("utf-8", "replace")] if isinstance(jwk_kid, str) and jwk_kid else []
    return CoseKey.from_key(public, kid=kid, alg=alg, names=names)


def _jwk_kid(text: str) -> bytes:
    """A JWK `kid` as bytes: CCF and others publish hex; we publish base64url; anything else is UTF-8."""
    try:
        if len(text) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in text):
            return bytes.fromhex(text)
        return b64url.decode(text)
    except ValueError:
        return text.encode("utf-8")


def load_jwks(data: bytes) -> list[CoseKey]:
    """Load a JWK Set (`{"keys": [...]}`) or a single JWK."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise KeyFormatError(f"JWKS is not valid JSON: {exc}") from None
    if isinstance(doc, dict) and "keys" in doc:
        keys = doc["keys"]
        if not isinstance(keys, list):
            raise KeyFormatError('JWKS member "keys" must be an array')
        return [from_jwk(k) for k in keys]
    return [from_jwk(doc)]


def load_pem_public_keys(data: bytes) -> list[CoseKey]:
    """Load every public key and certificate in a PEM file (certificate validity dates are not checked)."""
    keys: list[CoseKey] = []
    blocks = data.split(b"-----BEGIN ")[1:]
    if not blocks:
        raise KeyFormatError("no PEM block found")
    for block in blocks:
        pem = b"-----BEGIN " + block
        label = block.split(b"-----", 1)[0].strip()
        pub: object
        try:
            if label == b"CERTIFICATE":
                from cryptography import x509  # imported here: it is slow to import and rarely needed

                pub = x509.load_pem_x509_certificate(pem).public_key()
            elif label == b"PUBLIC KEY":
                pub = serialization.load_pem_public_key(pem)
            elif label.endswith(b"PRIVATE KEY"):
                pub = serialization.load_pem_private_key(pem, password=None).public_key()
            else:
                raise KeyFormatError(f"PEM block {label.decode(errors='replace')!r} is not a key or certificate")
        except (ValueError, TypeError) as exc:
            raise KeyFormatError(f"PEM {label.decode(errors='replace')} block cannot be loaded: {exc}") from None
        if not isinstance(pub, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, rsa.RSAPublicKey)):
            raise UnsupportedError(f"key type {type(pub).__name__} is not supported")
        keys.append(CoseKey.from_key(pub))
    return keys


def load_private_pem(data: bytes, *, alg: Algorithm | None = None) -> CoseKey:
    """Load an unencrypted PKCS#8 / SEC1 / PKCS#1 private key."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"private key cannot be loaded: {exc}") from None
    if not isinstance(key, PRIVATE_KEY_TYPES):
        raise UnsupportedError(f"private key type {type(key).__name__} is not supported")
    if alg is None and isinstance(key, rsa.RSAPrivateKey):
        alg = algorithms.BY_NAME["PS256"]
    return CoseKey.from_key(key, alg=alg)


def generate(alg: Algorithm) -> CoseKey:
    """A fresh private key for `alg`."""
    key: PrivateKey
    if alg.family == "ec":
        assert alg.curve is not None
        key = ec.generate_private_key(alg.curve())
    elif alg.family == "okp":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return CoseKey.from_key(key, alg=alg)


def load_key_file(data: bytes) -> list[CoseKey]:
    """Load public keys from bytes in any format we accept: PEM, JWK(S) or COSE_Key (Set)."""
    stripped = data.lstrip()
    if stripped.startswith(b"-----BEGIN"):
        return load_pem_public_keys(data)
    if stripped.startswith(b"{"):
        return load_jwks(data)
    try:
        return load_cose_key_set(data)
    except MalformedError as exc:
        raise KeyFormatError(f"not a PEM, JWK, JWKS or COSE Key Set file ({exc})") from None

"""did:x509 identifiers (method version 0): parse, resolve against a certificate chain, and create.

The method binds a compact issuer string to a certificate chain: the digest of one CA certificate in
the chain, and predicates the leaf must satisfy (`subject`, `san`, `eku`, `fulcio-issuer`). It is
what RFC 9943's examples put in `iss` for statements signed with an `x5chain`.

Resolving is pure: the chain given must already be path-validated (RFC 5280) by the caller; this
module checks the rules of the method itself: at least two certificates, the CA fingerprint on a
non-leaf certificate, each predicate against the leaf, no critical extension outside the method's
list, and a leaf allowed to sign (keyUsage digitalSignature, or no keyUsage).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtensionOID, NameOID

from scitt_oci import b64url
from scitt_oci.errors import MalformedError, UntrustedKeyError

PREFIX = "did:x509:"
VERSION = "0"
MAX_LENGTH = 8192
FINGERPRINT_ALGS = {"sha256": 32, "sha384": 48, "sha512": 64}
PREDICATES = ("subject", "san", "eku", "fulcio-issuer")
SAN_TYPES = ("email", "dns", "uri")

# The method's names for subject attributes; any other attribute is named by its dotted OID.
LABELS: dict[str, x509.ObjectIdentifier] = {
    "CN": NameOID.COMMON_NAME,
    "L": NameOID.LOCALITY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "C": NameOID.COUNTRY_NAME,
    "STREET": NameOID.STREET_ADDRESS,
}
_LABEL_OF = {oid.dotted_string: label for label, oid in LABELS.items()}

# Fulcio's issuer extensions: v2 (1.8, a DER UTF8String) and the legacy v1 (1.1, raw bytes).
FULCIO_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
FULCIO_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")

# Extensions that may be critical in a chain a did:x509 resolves against (the method's list).
_CRITICAL_OK = frozenset(
    {
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.NAME_CONSTRAINTS,
        ExtensionOID.POLICY_CONSTRAINTS,
        ExtensionOID.POLICY_MAPPINGS,
        ExtensionOID.CERTIFICATE_POLICIES,
        ExtensionOID.INHIBIT_ANY_POLICY,
    }
)

_IDCHARS = r"(?:[A-Za-z0-9._-]|%[0-9A-Fa-f]{2})"
_VALUE = re.compile(rf"^(?:{_IDCHARS}+:)*{_IDCHARS}+$")
OID = re.compile(r"^[0-9]+(?:\.[0-9]+)*$")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._")


@dataclass(frozen=True)
class DidX509:
    """A parsed did:x509 identifier."""

    did: str
    fingerprint_alg: str
    fingerprint: bytes
    predicates: tuple[tuple[str, str], ...]  # (name, raw value), in order


def is_did_x509(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def pct_decode(text: str, where: str) -> str:
    """Strict RFC 3986 percent-decoding into UTF-8 text."""
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "%":
            pair = text[i + 1 : i + 3]
            if len(pair) != 2 or not all(h in "0123456789abcdefABCDEF" for h in pair):
                raise MalformedError(f"did:x509 {where}: bad percent-encoding at {text[i : i + 3]!r}")
            out.append(int(pair, 16))
            i += 3
        else:
            out.extend(c.encode("ascii"))
            i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedError(f"did:x509 {where}: percent-encoded bytes are not UTF-8") from None


def pct_encode(text: str) -> str:
    """Percent-encode every character outside ALPHA / DIGIT / "-" / "." / "_" (the method's rule)."""
    return "".join(c if c in _UNRESERVED else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in text)


_b64u = b64url.encode


def parse(did: str) -> DidX509:
    """Parse a did:x509 identifier; MalformedError names the syntax rule it breaks."""
    if not isinstance(did, str) or not did.startswith(PREFIX):
        raise MalformedError(f"{did!r} is not a did:x509 identifier (it must start with {PREFIX!r})")
    if len(did) > MAX_LENGTH:
        raise MalformedError(f"did:x509 identifier is {len(did)} characters; at most {MAX_LENGTH} are accepted")
    parts = did[len(PREFIX) :].split("::")
    head = parts[0].split(":")
    if len(head) != 3:
        raise MalformedError(f"{did!r}: expected did:x509:<version>:<ca-fingerprint-alg>:<ca-fingerprint>::<predicate>")
    version, alg, fingerprint_text = head
    if version != VERSION:
        raise MalformedError(f"{did!r}: did:x509 version {version!r} is not supported (only {VERSION!r})")
    if alg not in FINGERPRINT_ALGS:
        raise MalformedError(f"{did!r}: CA fingerprint algorithm {alg!r} is not one of {', '.join(FINGERPRINT_ALGS)}")
    try:
        fingerprint = b64url.decode(fingerprint_text)
    except ValueError:
        fingerprint = b""
    if len(fingerprint) != FINGERPRINT_ALGS[alg]:
        raise MalformedError(f"{did!r}: the CA fingerprint is not a canonical {alg} digest in unpadded base64url")
    if len(parts) < 2:
        raise MalformedError(f"{did!r}: a did:x509 needs at least one predicate (::subject, ::san, ::eku, ...)")
    predicates = []
    for raw in parts[1:]:
        name, sep, value = raw.partition(":")
        if not sep or name not in PREDICATES:
            raise MalformedError(f"{did!r}: predicate {raw[:40]!r} is not one of {', '.join(PREDICATES)}")
        if not _VALUE.match(value):
            raise MalformedError(f"{did!r}: {name} predicate value {value[:40]!r} has characters outside idchar")
        _check_predicate_syntax(name, value)
        predicates.append((name, value))
    return DidX509(did, alg, fingerprint, tuple(predicates))


def _check_predicate_syntax(name: str, value: str) -> None:
    if name == "subject":
        items = value.split(":")
        if len(items) % 2:
            raise MalformedError(f"did:x509 subject predicate {value!r} must be key:value pairs")
        keys = items[0::2]
        for k in keys:
            if k not in LABELS and not OID.match(k):
                raise MalformedError(f"did:x509 subject key {k!r} is not one of {', '.join(LABELS)} or a dotted OID")
        if len(set(keys)) != len(keys):
            raise MalformedError(f"did:x509 subject predicate {value!r} repeats a key")
        for v in items[1::2]:
            pct_decode(v, "subject value")
    elif name == "san":
        items = value.split(":")
        if len(items) != 2 or items[0] not in SAN_TYPES:
            raise MalformedError(f"did:x509 san predicate {value!r} must be <{'|'.join(SAN_TYPES)}>:<value>")
        pct_decode(items[1], "san value")
    elif name == "eku":
        if not OID.match(value):
            raise MalformedError(f"did:x509 eku predicate {value!r} must be a dotted OID")
    else:
        pct_decode(value, "fulcio-issuer value")


# ----- the certificate model the predicates match on -----


def subject_map(cert: x509.Certificate) -> dict[str, str | None]:
    """The subject as {label or dotted OID: value}; a repeated attribute maps to None (not matchable)."""
    out: dict[str, str | None] = {}
    for attr in cert.subject:
        key = _LABEL_OF.get(attr.oid.dotted_string, attr.oid.dotted_string)
        value = attr.value if isinstance(attr.value, str) else attr.value.decode("utf-8", "replace")
        out[key] = None if key in out else value
    return out


def san_list(cert: x509.Certificate) -> list[tuple[str, str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    out = [("email", v) for v in san.get_values_for_type(x509.RFC822Name)]
    out += [("dns", v) for v in san.get_values_for_type(x509.DNSName)]
    out += [("uri", v) for v in san.get_values_for_type(x509.UniformResourceIdentifier)]
    return out


def eku_list(cert: x509.Certificate) -> list[str]:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return []
    return [oid.dotted_string for oid in eku]


def fulcio_issuer(cert: x509.Certificate) -> str | None:
    """The Fulcio OIDC issuer extension's value (v2 DER UTF8String, else v1 raw), if present."""
    for oid, der in ((FULCIO_ISSUER_V2, True), (FULCIO_ISSUER_V1, False)):
        try:
            ext = cert.extensions.get_extension_for_oid(oid)
        except x509.ExtensionNotFound:
            continue
        if ext.critical:
            raise UntrustedKeyError("the Fulcio issuer extension must not be critical (did:x509)")
        raw = ext.value.value if isinstance(ext.value, x509.UnrecognizedExtension) else b""
        if der:
            try:
                raw = der_utf8(raw)
            except ValueError as exc:
                raise UntrustedKeyError(f"the Fulcio issuer extension (1.3.6.1.4.1.57264.1.8) {exc}") from None
        return raw.decode("utf-8", "replace")
    return None


def der_utf8(raw: bytes) -> bytes:
    """The content of a DER UTF8String (tag 0x0c, short or long definite length), as Fulcio's v2 issuer
    extension holds it; ValueError saying what is wrong otherwise."""
    if len(raw) < 2 or raw[0] != 0x0C:
        raise ValueError("is not a DER UTF8String")
    length, offset = raw[1], 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 2 or len(raw) < 2 + n:
            raise ValueError("has a bad DER length")
        length, offset = int.from_bytes(raw[2 : 2 + n], "big"), 2 + n
    if len(raw) != offset + length:
        raise ValueError("has a bad DER length")
    return raw[offset:]


def fingerprint(cert: x509.Certificate, alg: str = "sha256") -> bytes:
    return hashlib.new(alg, cert.public_bytes(Encoding.DER)).digest()


# ----- resolution -----


_SAN_MODEL = (x509.RFC822Name, x509.DNSName, x509.UniformResourceIdentifier, x509.DirectoryName)


def resolve(
    did: str | DidX509, chain: Sequence[x509.Certificate], supplied: Sequence[x509.Certificate] | None = None
) -> DidX509:
    """Check `did` against `chain` (leaf first, root last, already path-validated); UntrustedKeyError if it fails.

    With `supplied` (the chain as the message carried it), the validated path must begin with exactly
    those certificates: a chain padded with unrelated certificates is refused, as the method does.
    """
    parsed = parse(did) if isinstance(did, str) else did
    if len(chain) < 2:
        raise UntrustedKeyError(f"{parsed.did}: did:x509 resolves against a chain of at least two certificates")
    if supplied is not None and list(chain[: len(supplied)]) != list(supplied):
        raise UntrustedKeyError(
            f"{parsed.did}: the certificate chain as supplied is not the validated path (it holds certificates "
            "that are not on the path, or is out of order)"
        )
    _check_certificate_model(parsed, chain)
    if not any(fingerprint(c, parsed.fingerprint_alg) == parsed.fingerprint for c in chain[1:]):
        raise UntrustedKeyError(
            f"{parsed.did}: no CA certificate in the chain has {parsed.fingerprint_alg} fingerprint "
            f"{_b64u(parsed.fingerprint)}"
        )
    leaf = chain[0]
    for name, value in parsed.predicates:
        problem = _predicate_problem(name, value, leaf)
        if problem:
            raise UntrustedKeyError(f"{parsed.did}: the leaf certificate does not satisfy {name}: {problem}")
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.digital_signature:
        raise UntrustedKeyError(f"{parsed.did}: the leaf certificate's keyUsage does not allow digitalSignature")
    return parsed


def _check_certificate_model(parsed: DidX509, chain: Sequence[x509.Certificate]) -> None:
    """What did:x509's certificate model allows: leaf SANs it can name, no critical extension it does not know."""
    try:
        sans = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = None
    for name in sans or ():
        if not isinstance(name, _SAN_MODEL):
            raise UntrustedKeyError(
                f"{parsed.did}: the leaf has a {type(name).__name__} SAN, which did:x509's certificate model "
                "(email, dns, uri, dn) does not support"
            )
    for cert in chain:
        for ext in cert.extensions:
            if ext.critical and ext.oid not in _CRITICAL_OK:
                raise UntrustedKeyError(
                    f"{parsed.did}: certificate {cert.subject.rfc4514_string()!r} has critical extension "
                    f"{ext.oid.dotted_string}, which did:x509 does not allow"
                )


def _predicate_problem(name: str, value: str, leaf: x509.Certificate) -> str | None:
    if name == "subject":
        items = value.split(":")
        have = subject_map(leaf)
        for key, encoded in zip(items[0::2], items[1::2], strict=True):
            want = pct_decode(encoded, "subject value")
            if key in have and have[key] is None:
                return f"the leaf subject repeats {key}, which did:x509 cannot match"
            if have.get(key) != want:
                return f"{key} is {have.get(key)!r}, not {want!r}"
        return None
    if name == "san":
        san_type, encoded = value.split(":")
        san = (san_type, pct_decode(encoded, "san value"))
        return None if san in san_list(leaf) else f"no {san_type} SAN {san[1]!r} (has {san_list(leaf)})"
    if name == "eku":
        return None if value in eku_list(leaf) else f"EKU {value} is not among {eku_list(leaf)}"
    issuer = fulcio_issuer(leaf)
    want_issuer = "https://" + pct_decode(value, "fulcio-issuer value")
    if issuer is None:
        return "the leaf has no Fulcio issuer extension"
    return None if issuer == want_issuer else f"Fulcio issuer is {issuer!r}, not {want_issuer!r}"


def create(
    ca: x509.Certificate,
    *,
    subject: Sequence[tuple[str, str]] = (),
    san: tuple[str, str] | None = None,
    eku: Sequence[str] = (),
    fulcio_issuer_url: str | None = None,
    alg: str = "sha256",
) -> str:
    """A did:x509 for leaves under `ca` with the given predicates (at least one)."""
    parts = [f"{PREFIX}{VERSION}:{alg}:{_b64u(fingerprint(ca, alg))}"]
    if subject:
        parts.append("subject:" + ":".join(f"{k}:{pct_encode(v)}" for k, v in subject))
    if san is not None:
        parts.append(f"san:{san[0]}:{pct_encode(san[1])}")
    parts += [f"eku:{oid}" for oid in eku]
    if fulcio_issuer_url is not None:
        parts.append("fulcio-issuer:" + pct_encode(fulcio_issuer_url.removeprefix("https://")))
    if len(parts) < 2:
        raise MalformedError("a did:x509 needs at least one predicate")
    return parse("::".join(parts)).did

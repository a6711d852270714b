"""Certificate paths for signatures: thumbprints, a validated path to configured roots at a given
time, and the distinguished-name matching of Notation's trusted identities.

Path validation is `cryptography`'s RFC 5280 verifier (Web PKI rules for the CAs, none for the
leaf: code-signing leaves carry no server or client EKU), preceded by our own validity-window
check so that an expired or not-yet-valid certificate is reported as exactly that.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID
from cryptography.x509.verification import ExtensionPolicy, PolicyBuilder, Store, VerificationError

from scitt_oci.signatures.model import NotVerified

MAX_CHAIN = 8


def der_certificate(der: bytes, what: str) -> x509.Certificate:
    """The X.509 certificate in `der`; `ValueError` naming `what` and the size if it is not one (the parser's
    own text is its internal state, a Rust debug string: not for a log line or a client)."""
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        raise ValueError(f"{what} ({len(der)} bytes) is not a DER-encoded X.509 certificate") from None


def thumbprint(cert: x509.Certificate) -> str:
    """`sha256:<hex>` of the certificate's DER: the form Notation's thumbprint annotation uses."""
    return "sha256:" + hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def key_id(key: object) -> str:
    """`sha256:<hex>` of a public key's SubjectPublicKeyInfo (DER)."""
    spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def describe(cert: x509.Certificate) -> str:
    return repr(cert.subject.rfc4514_string())


def check_window(cert: x509.Certificate, at: dt.datetime, what: str = "certificate") -> None:
    if at < cert.not_valid_before_utc:
        raise NotVerified(
            f"{what} {describe(cert)} is not valid before {cert.not_valid_before_utc.isoformat()} "
            f"(checked at {at.isoformat()})"
        )
    if at > cert.not_valid_after_utc:
        raise NotVerified(
            f"{what} {describe(cert)} expired at {cert.not_valid_after_utc.isoformat()} (checked at {at.isoformat()})"
        )


def validate(
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    at: dt.datetime,
    *,
    extra_intermediates: Sequence[x509.Certificate] = (),
) -> list[x509.Certificate]:
    """The validated path from `chain[0]` (leaf first; the rest are candidate intermediates) to one of
    `roots`, valid at `at`; `NotVerified` naming the rule broken."""
    if not chain:
        raise NotVerified("the signature carries no certificate")
    if len(chain) > MAX_CHAIN:
        raise NotVerified(f"the certificate chain holds {len(chain)} certificates; at most {MAX_CHAIN} are accepted")
    if not roots:
        raise NotVerified("no roots are configured for this trust entry")
    for cert in chain:
        check_window(cert, at)
    try:
        return path_to_root(chain[0], [*chain[1:], *extra_intermediates], roots, at)
    except VerificationError as exc:
        raise NotVerified(f"certificate {describe(chain[0])} does not chain to a configured root: {exc}") from None


def path_to_root(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    at: dt.datetime,
) -> list[x509.Certificate]:
    """The one path policy of the project, for signatures and for statements' x5chain alike: the RFC 5280
    path from `leaf` through some of `intermediates` to one of `roots`, valid at `at`, at most MAX_CHAIN
    deep, with Web PKI rules for the CAs and none for the leaf. Raises cryptography's `VerificationError`."""
    builder = (
        PolicyBuilder()
        .store(Store(list(roots)))
        .time(at)
        .max_chain_depth(MAX_CHAIN)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all())
    )
    return list(builder.build_client_verifier().verify(leaf, list(intermediates)).chain)


def check_code_signing(leaf: x509.Certificate) -> None:
    """The leaf may sign code: keyUsage digitalSignature and, when it has EKUs, codeSigning among them."""
    try:
        usage = leaf.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
        if not usage.digital_signature:  # type: ignore[attr-defined]
            raise NotVerified(f"certificate {describe(leaf)} is not for digital signatures (keyUsage)")
    except x509.ExtensionNotFound:
        pass
    try:
        eku = leaf.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value
    except x509.ExtensionNotFound:
        return
    if ExtendedKeyUsageOID.CODE_SIGNING not in eku:  # type: ignore[operator]
        raise NotVerified(f"certificate {describe(leaf)} is not for code signing (extendedKeyUsage)")


_DN_ATTRIBUTES = {
    "C": "2.5.4.6",
    "ST": "2.5.4.8",
    "S": "2.5.4.8",
    "L": "2.5.4.7",
    "O": "2.5.4.10",
    "OU": "2.5.4.11",
    "CN": "2.5.4.3",
    "SERIALNUMBER": "2.5.4.5",
    "EMAILADDRESS": "1.2.840.113549.1.9.1",
    "E": "1.2.840.113549.1.9.1",
}


_NAMES = {"2.5.4.6": "C", "2.5.4.8": "ST", "2.5.4.7": "L", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.3": "CN"}
_SPECIAL = frozenset('"+,;<>\\')


def escape_dn_value(value: str) -> str:
    """An attribute value escaped as RFC 4514 (section 2.4) has it, so that separators inside a value
    cannot read as separators: `\\` before `"+,;<>\\`, a leading `#` or space and a trailing space;
    control characters as `\\hh`."""
    out = []
    for i, ch in enumerate(value):
        if ch in _SPECIAL or (i == 0 and ch in "# ") or (i == len(value) - 1 and ch == " "):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def render_dn(name: x509.Name) -> str:
    """`name` as Notation writes identities (`C=US, ST=WA, O=Notary`: RDNs in certificate order, joined
    by ", "; the attributes of a multi-valued RDN joined by "+"), every value escaped (RFC 4514), and
    attributes without a short name by their dotted OID. Distinct names render as distinct text."""
    return ", ".join(
        "+".join(
            f"{_NAMES.get(a.oid.dotted_string, a.oid.dotted_string)}={escape_dn_value(_text(a.value))}" for a in rdn
        )
        for rdn in name.rdns
    )


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else "#" + value.hex()


def parse_dn(text: str) -> dict[str, str]:
    """A distinguished name as Notation's trust policy writes it ("C=US, ST=WA, O=Notary"; values escaped
    as RFC 4514 has it, the attributes of a multi-valued RDN joined by "+"): OID -> value.
    `ValueError` on an attribute it does not know or a repeated one."""
    out: dict[str, str] = {}
    for oid, value in dn_attributes(text):
        if not value:
            raise ValueError(f"attribute {oid} has an empty value")
        if oid in out:
            raise ValueError(f"attribute {_NAMES.get(oid, oid)} appears twice")
        out[oid] = value
    if not out:
        raise ValueError("the distinguished name is empty")
    return out


def dn_attributes(text: str) -> list[tuple[str, str]]:
    """(OID, value) of each attribute of `text`, in order; `ValueError` on a name it does not know."""
    out = []
    for name, value in split_dn(text):
        key = name.upper()
        oid = _DN_ATTRIBUTES.get(key) or (key if _is_oid(key) else None)
        if oid is None:
            raise ValueError(f"{name!r} is not one of {', '.join(sorted(_DN_ATTRIBUTES))} or an OID")
        out.append((oid, value))
    return out


def _is_oid(text: str) -> bool:
    parts = text.split(".")
    return len(parts) > 1 and all(p.isdigit() and p.isascii() for p in parts)


def split_dn(text: str) -> list[tuple[str, str]]:
    """(type, value) of each attribute of `text`, in order: split at unescaped "," and "+", the type
    before the first "=", escapes (`\\c`, `\\hh` hex pairs as UTF-8) undone, and unescaped blanks around
    types and values dropped. `ValueError` on a part without "=" or a bad escape."""
    attributes: list[tuple[str, str]] = []
    chars: list[tuple[str, bool]] = []  # (character, escaped)
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            escaped, i = _unescape(text, i)
            chars.extend((c, True) for c in escaped)
            continue
        if ch in ",+":
            _flush_attribute(chars, attributes)
        else:
            chars.append((ch, False))
        i += 1
    _flush_attribute(chars, attributes)
    return attributes


def _unescape(text: str, i: int) -> tuple[str, int]:
    """The characters the escape at `text[i]` (a backslash) stands for, and the index after it: a run of
    `\\hh` hex pairs decoded as UTF-8, or the one character after the backslash."""
    raw = bytearray()
    while i < len(text) and text[i] == "\\" and _hex_pair(text[i + 1 : i + 3]):
        raw.append(int(text[i + 1 : i + 3], 16))
        i += 3
    if raw:
        try:
            return raw.decode(), i
        except UnicodeDecodeError:
            raise ValueError(f"escaped bytes {raw.hex()} are not UTF-8") from None
    if i + 1 >= len(text):
        raise ValueError("the distinguished name ends with a lone backslash")
    return text[i + 1], i + 2


def _flush_attribute(chars: list[tuple[str, bool]], attributes: list[tuple[str, str]]) -> None:
    """Append the attribute `chars` spell (NAME=value, unescaped blanks around both dropped), unless they
    are only blanks; then empty `chars`."""
    if all(not esc and ch.isspace() for ch, esc in chars):
        chars.clear()
        return
    eq = next((k for k, (ch, esc) in enumerate(chars) if ch == "=" and not esc), None)
    if eq is None:
        raise ValueError(f"{''.join(ch for ch, _ in chars).strip()!r} is not NAME=value")
    name = "".join(ch for ch, _ in chars[:eq]).strip()
    value = chars[eq + 1 :]
    while value and not value[0][1] and value[0][0].isspace():
        value.pop(0)
    while value and not value[-1][1] and value[-1][0].isspace():
        value.pop()
    attributes.append((name, "".join(ch for ch, _ in value)))
    chars.clear()


def _hex_pair(text: str) -> bool:
    return len(text) == 2 and all(c in "0123456789abcdefABCDEF" for c in text)


def subject_attributes(cert: x509.Certificate) -> dict[str, list[str]]:
    """OID -> every value the subject gives it (a subject may repeat an attribute)."""
    out: dict[str, list[str]] = {}
    for a in cert.subject:
        out.setdefault(a.oid.dotted_string, []).append(_text(a.value))
    return out


def dn_matches(wanted: dict[str, str], cert: x509.Certificate) -> bool:
    """Notation's rule: every attribute the trusted identity names is in the leaf's subject, equal,
    compared parsed (never as rendered text). An attribute the subject repeats must equal it each time."""
    have = subject_attributes(cert)
    return all(have.get(oid) and all(v == value for v in have[oid]) for oid, value in wanted.items())


IDENTITY_PREFIX = "x509.subject:"


def signer_pattern(text: str) -> tuple[tuple[str, str], ...]:
    """A policy's Notation signer rule, `x509.subject: C=US, ST=WA, O=wabbit-networks.io*`, read as
    (OID, glob over that attribute's value) pairs; `ValueError` when it is not one."""
    prefix, sep, dn = text.partition(":")
    if not sep or prefix.strip() != IDENTITY_PREFIX[:-1]:
        raise ValueError(f"a Notation signer is written '{IDENTITY_PREFIX} <distinguished name>', not {text!r}")
    attributes = dn_attributes(dn)
    if not attributes or any(not value for _, value in attributes):
        raise ValueError(f"{text!r} names no attribute, or one with an empty value")
    if len({oid for oid, _ in attributes}) != len(attributes):
        raise ValueError(f"{text!r} names an attribute twice")
    return tuple(attributes)


def signer_matches(pattern: tuple[tuple[str, str], ...], signer: str) -> bool:
    """Does a recorded Notation signer (`x509.subject: <escaped DN>`) show every attribute `pattern`
    names, each value matching its glob? Compared attribute by attribute, never as text, so a value
    holding ", O=..." cannot stand in for an O attribute, nor a glob run across attributes."""
    try:
        recorded = dn_attributes(signer.partition(":")[2]) if signer.startswith(IDENTITY_PREFIX) else None
    except ValueError:
        return False
    if not recorded:
        return False
    for oid, glob in pattern:
        values = [value for have, value in recorded if have == oid]
        if not values or not all(fnmatch.fnmatchcase(value, glob) for value in values):
            return False
    return True

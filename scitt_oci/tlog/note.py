"""C2SP signed notes (c2sp.org/signed-note): Ed25519 note signatures, vkeys, and the note text form.

A note is text ending in a newline, a blank line, then signature lines `— <name> base64(keyid||sig)`.
A verifier knows keys by (name, key id); signatures from unknown keys are ignored, a signature from a
known key that fails makes the whole note invalid, and a note with no verified known signature is
rejected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from scitt_oci.errors import NoteError as NoteError  # defined there since #12; kept importable here
from scitt_oci.errors import NoteSignatureError as NoteSignatureError  # defined there since #12; kept importable here

ED25519 = 0x01  # signed-note's Ed25519 note signature
COSIGNATURE_V1 = 0x04  # tlog-cosignature's timestamped Ed25519 cosignature
EM_DASH = "\u2014"
MAX_NOTE_BYTES = 1 << 20
MAX_SIGNATURES = 64  # the spec asks verifiers to accept at least 16


def key_id(name: str, sig_type: int, public: bytes) -> bytes:
    """SHA-256(name || 0x0A || type || public key)[:4]: the 4-byte key id of a note key."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public).digest()[:4]


def check_key_name(name: str) -> str:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise NoteError(f"key name {name[:80]!r} must be non-empty without spaces or '+'")
    if any(ord(c) < 0x20 for c in name):
        raise NoteError("key name holds control characters")
    return name


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise NoteError(f"{what} is not base64") from None


@dataclass(frozen=True)
class Signature:
    """One signature line: key name, 4-byte key id, and the signature bytes after the id."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return f"{EM_DASH} {self.name} {base64.b64encode(self.key_id + self.signature).decode()}\n"

    @classmethod
    def parse(cls, line: str) -> Signature:
        """A signature line, with or without its final newline."""
        text = line[:-1] if line.endswith("\n") else line
        if not text.startswith(EM_DASH + " "):
            raise NoteError(f"signature line {text[:80]!r} does not start with '{EM_DASH} '")
        parts = text[2:].split(" ")
        if len(parts) != 2:
            raise NoteError(f"signature line {text[:80]!r} is not '{EM_DASH} <name> <base64>'")
        name = check_key_name(parts[0])
        raw = _b64decode(parts[1], f"signature of {name}")
        if len(raw) < 5:
            raise NoteError(f"signature of {name} is {len(raw)} bytes; it needs a 4-byte key id and a signature")
        return cls(name, raw[:4], raw[4:])


@dataclass(frozen=True)
class Verifier:
    """A note verifier key: (name, type, public key). `vkey` is its text form."""

    name: str
    sig_type: int
    public: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.sig_type, self.public)

    @property
    def vkey(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(bytes([self.sig_type]) + self.public).decode()}"

    def matches(self, sig: Signature) -> bool:
        return sig.name == self.name and sig.key_id == self.key_id

    def verify_text(self, text: bytes, sig: Signature) -> None:
        """Check an Ed25519 note signature (type 0x01) over the note text."""
        if self.sig_type != ED25519:
            raise NoteSignatureError(f"key {self.name} is of type {self.sig_type:#04x}, not an Ed25519 note key")
        _ed25519_verify(self.public, sig.signature, text, f"signature of {self.name}")


def _ed25519_verify(public: bytes, signature: bytes, message: bytes, what: str) -> None:
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        raise NoteSignatureError(f"{what} does not verify") from None


def parse_vkey(text: str) -> Verifier:
    """`<name>+<hex key id>+<base64(type || public key)>`; the key id must match the key."""
    parts = text.strip().split("+", 2)  # base64 may hold "+"
    if len(parts) != 3:
        raise NoteError(f"vkey {text[:80]!r} is not <name>+<key id>+<base64 key>")
    name = check_key_name(parts[0])
    try:
        kid = bytes.fromhex(parts[1])
    except ValueError:
        kid = b""
    if len(kid) != 4 or parts[1] != parts[1].lower():
        raise NoteError(f"vkey {name}: key id {parts[1][:16]!r} is not 8 lowercase hexadecimal digits")
    raw = _b64decode(parts[2], f"vkey {name}")
    if not raw:
        raise NoteError(f"vkey {name} holds no key")
    verifier = Verifier(name, raw[0], raw[1:])
    if verifier.sig_type in (ED25519, COSIGNATURE_V1) and len(verifier.public) != 32:
        raise NoteError(f"vkey {name}: an Ed25519 key is 32 bytes, not {len(verifier.public)}")
    if verifier.key_id != kid:
        raise NoteError(f"vkey {name}: key id {kid.hex()} does not match its key ({verifier.key_id.hex()})")
    return verifier


class NoteSigner:
    """Signs note text with an Ed25519 key under a key name (signature type 0x01)."""

    def __init__(self, name: str, key: ed25519.Ed25519PrivateKey) -> None:
        self.name = check_key_name(name)
        self._key = key
        self.verifier = Verifier(name, ED25519, key.public_key().public_bytes_raw())

    def sign(self, text: bytes) -> Signature:
        return Signature(self.name, self.verifier.key_id, self._key.sign(text))


@dataclass(frozen=True)
class Note:
    text: bytes  # including its final newline
    signatures: tuple[Signature, ...]

    def encode(self) -> bytes:
        return self.text + b"\n" + "".join(s.line() for s in self.signatures).encode()


def parse(data: bytes) -> Note:
    """Split a signed note into its text and its signature lines (nothing is verified here)."""
    if len(data) > MAX_NOTE_BYTES:
        raise NoteError(f"note is {len(data)} bytes; at most {MAX_NOTE_BYTES} are read")
    try:
        whole = data.decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError("note is not UTF-8") from None
    if any(ord(c) < 0x20 and c != "\n" for c in whole):
        raise NoteError("note holds control characters other than newline")
    if not whole.endswith("\n"):
        raise NoteError("note does not end with a newline")
    split = whole.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    text, sig_block = whole[: split + 1], whole[split + 2 :]
    lines = sig_block.split("\n")[:-1]
    if not lines:
        raise NoteError("note has no signature lines")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has {len(lines)} signatures; at most {MAX_SIGNATURES} are read")
    return Note(text.encode(), tuple(Signature.parse(line) for line in lines))


def verify(note: Note, verifiers: Iterable[Verifier]) -> list[Verifier]:
    """The note verifiers (type 0x01) whose signatures verify; `NoteSignatureError` if a known key's
    signature fails or none verifies. Unknown keys are ignored."""
    known = list(verifiers)
    ok: list[Verifier] = []
    for sig in note.signatures:
        for v in known:
            if v.matches(sig) and v.sig_type == ED25519:
                v.verify_text(note.text, sig)
                if v not in ok:
                    ok.append(v)
    if not ok:
        names = ", ".join(v.name for v in known) or "none"
        raise NoteSignatureError(f"the note carries no signature by a trusted key (trusted: {names})")
    return ok


def signed(text: bytes, signers: Sequence[NoteSigner]) -> Note:
    if not text.endswith(b"\n"):
        raise NoteError("note text must end with a newline")
    return Note(text, tuple(s.sign(text) for s in signers))


def ed25519_verify(public: bytes, signature: bytes, message: bytes, what: str) -> None:
    """Raise `NoteSignatureError` unless `signature` is an Ed25519 signature of `message` by `public`."""
    _ed25519_verify(public, signature, message, what)

"""C2SP checkpoints (c2sp.org/tlog-checkpoint) and Ed25519 cosignatures (c2sp.org/tlog-cosignature).

A checkpoint is a signed note whose text is: origin, tree size (decimal, no leading zeroes), base64
root hash, then optional non-empty extension lines. A cosignature/v1 is an Ed25519 signature (key
type 0x04) over `cosignature/v1\\ntime <t>\\n` followed by the checkpoint text, carried as a note
signature whose bytes are the 8-byte big-endian timestamp then the signature.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ed25519

from scitt_oci.tlog import note
from scitt_oci.tlog.note import COSIGNATURE_V1, Note, NoteError, NoteSignatureError, Signature, Verifier

HASH_SIZE = 32
MAX_TIMESTAMP = (1 << 63) - 1


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> bytes:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return ("\n".join(lines) + "\n").encode()


def parse_text(text: bytes) -> Checkpoint:
    """The checkpoint in a note's text (`NoteError` when it is not one)."""
    try:
        lines = text.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        raise NoteError("checkpoint text is not UTF-8") from None
    if lines[-1] != "" or len(lines) < 4:
        raise NoteError("a checkpoint has at least three newline-terminated lines: origin, size, root")
    lines = lines[:-1]
    origin, size_text, root_text, *extensions = lines
    if not origin:
        raise NoteError("checkpoint origin line is empty")
    if not size_text.isascii() or not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise NoteError(f"checkpoint size {size_text[:40]!r} is not a decimal number without leading zeroes")
    if len(size_text) > 20 or int(size_text) >= 1 << 63:
        raise NoteError(f"checkpoint size {size_text[:40]} is too large")
    try:
        root = base64.b64decode(root_text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise NoteError("checkpoint root hash is not base64") from None
    if len(root) != HASH_SIZE:
        raise NoteError(f"checkpoint root hash is {len(root)} bytes; expected {HASH_SIZE}")
    if any(not e for e in extensions):
        raise NoteError("checkpoint extension lines must not be empty")
    return Checkpoint(origin, int(size_text), root, tuple(extensions))


def sign(checkpoint: Checkpoint, signer: note.NoteSigner) -> Note:
    return note.signed(checkpoint.text(), [signer])


@dataclass(frozen=True)
class Verified:
    checkpoint: Checkpoint
    note: Note
    log_keys: tuple[Verifier, ...]


def open_signed(data: bytes, log_keys: Iterable[Verifier]) -> Verified:
    """Parse and verify a checkpoint note against the log's note key(s)."""
    n = note.parse(data)
    cp = parse_text(n.text)
    ok = note.verify(n, log_keys)
    return Verified(cp, n, tuple(ok))


# ----- cosignature/v1 -----
def cosigned_message(text: bytes, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n".encode() + text


class Cosigner:
    """A witness key: Ed25519 cosignatures (type 0x04) under a name."""

    def __init__(self, name: str, key: ed25519.Ed25519PrivateKey) -> None:
        self.name = note.check_key_name(name)
        self._key = key
        self.verifier = Verifier(name, COSIGNATURE_V1, key.public_key().public_bytes_raw())

    def cosign(self, checkpoint_text: bytes, timestamp: int) -> Signature:
        if not 0 < timestamp <= MAX_TIMESTAMP:
            raise NoteError(f"cosignature timestamp {timestamp} is out of range")
        sig = self._key.sign(cosigned_message(checkpoint_text, timestamp))
        return Signature(self.name, self.verifier.key_id, timestamp.to_bytes(8, "big") + sig)


def verify_cosignature(verifier: Verifier, checkpoint_text: bytes, sig: Signature) -> int:
    """Check one cosignature/v1 line; returns its timestamp."""
    if verifier.sig_type != COSIGNATURE_V1:
        raise NoteSignatureError(f"key {verifier.name} is not a cosignature/v1 key")
    if not verifier.matches(sig):
        raise NoteSignatureError(f"signature of {sig.name} is not by witness key {verifier.name}")
    if len(sig.signature) != 8 + 64:
        raise NoteSignatureError(f"cosignature of {sig.name} is {len(sig.signature)} bytes; expected 72")
    timestamp = int.from_bytes(sig.signature[:8], "big")
    if timestamp > MAX_TIMESTAMP:
        raise NoteSignatureError(f"cosignature of {sig.name} has timestamp {timestamp} beyond 2^63-1")
    message = cosigned_message(checkpoint_text, timestamp)
    note.ed25519_verify(verifier.public, sig.signature[8:], message, f"cosignature of {sig.name}")
    return timestamp


def cosigned_by(n: Note, witnesses: Iterable[Verifier]) -> list[Verifier]:
    """The witnesses whose cosignatures on the note verify. A known witness's failing cosignature makes
    the note invalid (`NoteSignatureError`), as signed-note asks."""
    out: list[Verifier] = []
    known = list(witnesses)
    for sig in n.signatures:
        for w in known:
            if w.matches(sig):
                verify_cosignature(w, n.text, sig)
                if w not in out:
                    out.append(w)
    return out

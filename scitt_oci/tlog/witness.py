"""The tlog-witness `add-checkpoint` request body (c2sp.org/tlog-witness): an `old <size>` line, up to 63
base64 consistency-proof lines, a blank line, then the signed checkpoint note."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from scitt_oci.tlog.note import NoteError

MAX_PROOF = 63
SIZE_MEDIA_TYPE = "text/x.tlog.size"


@dataclass(frozen=True)
class AddCheckpoint:
    old_size: int
    proof: tuple[bytes, ...]
    checkpoint: bytes  # the signed note, as sent


def encode(old_size: int, proof: Sequence[bytes], checkpoint: bytes) -> bytes:
    lines = [f"old {old_size}", *(base64.b64encode(h).decode() for h in proof)]
    return ("\n".join(lines) + "\n\n").encode() + checkpoint


def parse(body: bytes) -> AddCheckpoint:
    """`NoteError` names what is malformed (the witness answers 400 for it)."""
    head, sep, rest = body.partition(b"\n\n")
    if not sep:
        raise NoteError("the request has no blank line between the proof and the checkpoint")
    try:
        lines = head.decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise NoteError("the old size and proof lines are not ASCII") from None
    first = lines[0]
    number = first[4:]
    if not first.startswith("old ") or not number.isdigit() or (number != "0" and number.startswith("0")):
        raise NoteError(f"the first line {first[:40]!r} is not 'old <size>' without leading zeroes")
    if len(number) > 20 or int(number) >= 1 << 63:
        raise NoteError("the old size is too large")
    proof_lines = lines[1:]
    if len(proof_lines) > MAX_PROOF:
        raise NoteError(f"the consistency proof has {len(proof_lines)} lines; at most {MAX_PROOF} are allowed")
    proof: list[bytes] = []
    for line in proof_lines:
        try:
            h = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            raise NoteError(f"consistency proof line {line[:60]!r} is not base64") from None
        if len(h) != 32:
            raise NoteError(f"consistency proof line {line[:60]!r} is not a 32-byte hash")
        proof.append(h)
    return AddCheckpoint(int(number), tuple(proof), rest)


def encode_size(size: int) -> bytes:
    return f"{size}\n".encode()


def parse_size(body: bytes) -> int:
    text = body.decode("ascii", errors="replace")
    if not text.endswith("\n") or not text[:-1].isdigit() or len(text) > 21:
        raise NoteError(f"a {SIZE_MEDIA_TYPE} body {text[:40]!r} is not a decimal size and a newline")
    return int(text[:-1])

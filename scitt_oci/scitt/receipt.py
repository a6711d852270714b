"""COSE Receipts (RFC 9942): mint RFC9162_SHA256 (vds 1) receipts and verify vds 1 and CCF (vds 2).

Minting signs each tree head once; a receipt is that signature plus an inclusion proof, so every
entry integrated in a batch shares one protected header and one signature.

Verifying vds 1 tries two entry rules, since services disagree on what the leaf is:
- "statement": entry = the statement with an empty unprotected header (ours, transmute, emulator);
- "hash-first": entry = SHA-256 of those bytes (scitt-cose vectors, some services).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scitt_oci.cose import algorithms, cbor, headers, sign1
from scitt_oci.cose.cwt import CwtClaims, claims_of
from scitt_oci.cose.keys import KID_FORMS, CoseKey, kid_text
from scitt_oci.cose.sign1 import Sign1
from scitt_oci.errors import MalformedError, ScittOciError, SignatureError, UnsupportedError, UntrustedKeyError
from scitt_oci.scitt import merkle
from scitt_oci.scitt.reasons import Reason, VerificationFailure
from scitt_oci.scitt.statement import SignedStatement

MAX_PATH = 64  # a path longer than 64 hashes would need a tree of more than 2**64 leaves
ENTRY_RULES = ("statement", "hash-first")


@dataclass(frozen=True)
class SignedTreeHead:
    """One signature over a tree root: the shared part of every receipt for a batch."""

    protected_bytes: bytes
    signature: bytes
    tree_size: int
    root: bytes

    def message(self, unprotected: dict[Any, Any]) -> Sign1:
        return Sign1(self.protected_bytes, _protected_map(self.protected_bytes), unprotected, None, self.signature)


@functools.lru_cache(maxsize=1024)
def _protected_map(protected_bytes: bytes) -> dict[Any, Any]:
    """Tree heads are few and reused by every receipt of their batch: decode each once. Callers never mutate it."""
    return cbor.loads(protected_bytes)  # type: ignore[no-any-return]


def sign_tree_head(
    key: CoseKey, *, issuer: str, subject: str, tree_size: int, root: bytes, iat: int | None = None
) -> SignedTreeHead:
    """Sign the root of a tree of `tree_size` leaves (payload detached, vds 1); the size is signed too
    (protected header "tree_size"): RFC 9162 proofs alone do not pin it (an honest 4 -> 6 consistency
    proof also verifies as 4 -> 5, 7 or 8)."""
    claims = CwtClaims(iss=issuer, sub=subject, iat=iat)
    protected = {
        headers.KID: key.kid,
        headers.VDS: headers.VDS_RFC9162_SHA256,
        headers.CWT_CLAIMS: claims.to_map(),
        headers.TREE_SIZE: tree_size,
    }
    message = sign1.sign(key, protected, None, detached_payload=root)
    return SignedTreeHead(message.protected_bytes, message.signature, tree_size, root)


def verify_tree_head(sth: SignedTreeHead, key: CoseKey) -> None:
    sth.message({}).verify(key, sth.root)


# The unprotected header of an inclusion receipt up to its one proof: {396 (vdp): {-1 (inclusion): [proof]}}
_INCLUSION_VDP = b"\xa1" + cbor.uint(headers.VDP) + b"\xa1" + cbor.dumps(headers.VDP_INCLUSION) + b"\x81"


_SHA256_ONLY = {32}
_SHA256_HEAD = cbor.bstr_head(32)  # b"\x58\x20"


def inclusion_receipt(sth: SignedTreeHead, leaf_index: int, path: Sequence[bytes]) -> bytes:
    """A vds 1 inclusion receipt for leaf `leaf_index` of the tree `sth` signed.

    Encoded by hand (one per registration): the bytes `Sign1.encode` gives for
    `sth.message({396: {-1: [cbor([tree_size, leaf_index, path])]}})`, without building the maps."""
    return inclusion_receipts(sth, [(leaf_index, path)])[0]


def inclusion_receipts(sth: SignedTreeHead, leaves: Sequence[tuple[int, Sequence[bytes]]]) -> list[bytes]:
    """`inclusion_receipt` for each (leaf index, path) of one batch: what they share is encoded once."""
    head = b"\xd2\x84" + cbor.bstr(sth.protected_bytes) + _INCLUSION_VDP  # tag 18 (COSE_Sign1), array of 4
    tail = b"\xf6" + cbor.bstr(sth.signature)  # payload: nil (detached root); then the signature
    size = b"\x83" + cbor.uint(sth.tree_size)
    out = []
    for leaf_index, path in leaves:
        if set(map(len, path)) == _SHA256_ONLY:  # as this log's nodes always are: one join
            hashes = _SHA256_HEAD + _SHA256_HEAD.join(path)
        else:  # another width, or no path at all (b"")
            hashes = b"".join(map(cbor.bstr, path))
        proof = b"".join((size, cbor.uint(leaf_index), cbor.array_head(len(path)), hashes))
        out.append(b"".join((head, cbor.bstr(proof), tail)))
    return out


def consistency_receipt(sth: SignedTreeHead, old_size: int, path: Sequence[bytes]) -> bytes:
    """A vds 1 consistency receipt from the tree of `old_size` to the tree `sth` signed."""
    proof = cbor.dumps([old_size, sth.tree_size, list(path)])
    return sth.message({headers.VDP: {headers.VDP_CONSISTENCY: [proof]}}).encode()


def signed_tree_size(message: Sign1) -> int | None:
    """The tree size a vds 1 tree head signs (protected "tree_size"), or None when it signs none
    (other services, and heads signed before scitt-oci signed sizes)."""
    size = message.protected.get(headers.TREE_SIZE)
    if size is None:
        return None
    if type(size) is not int or size < 1:
        raise _fail(Reason.MALFORMED, f"protected tree_size must be a positive integer, not {size!r}")
    return size


def signs_its_size(sth: SignedTreeHead) -> bool:
    return _protected_map(sth.protected_bytes).get(headers.TREE_SIZE) == sth.tree_size


def checkpoint_bytes(sth: SignedTreeHead) -> bytes:
    """A checkpoint: the signed tree head with its root attached; its size is in the protected header."""
    if not signs_its_size(sth):
        raise UnsupportedError(f"the tree head of size {sth.tree_size} does not sign its size; sign a new one")
    return Sign1(sth.protected_bytes, _protected_map(sth.protected_bytes), {}, sth.root, sth.signature).encode()


def read_checkpoint(data: bytes, keys: Sequence[CoseKey]) -> tuple[int, bytes, CoseKey]:
    """Verify a checkpoint against `keys`; returns (tree size, root, the key that signed it).

    The size is the one under the signature (protected "tree_size"); a checkpoint without one is refused.
    """
    message = sign1.decode(data)
    try:
        size = signed_tree_size(message)
    except VerificationFailure as exc:
        raise MalformedError(f"checkpoint: {exc.message}") from None
    if size is None:
        raise MalformedError(
            'the checkpoint does not sign its tree size (protected header "tree_size"): '
            "an unsigned size can be changed without breaking the signature"
        )
    if message.payload is None or len(message.payload) != merkle.HASH_SIZE:
        raise MalformedError("checkpoint must carry a 32-byte root as its payload")
    if message.protected.get(headers.VDS) != headers.VDS_RFC9162_SHA256:
        raise UnsupportedError(f"checkpoint vds {message.protected.get(headers.VDS)!r} is not RFC9162_SHA256 (1)")
    kid = message.kid
    for key in (k for k in keys if kid is None or k.answers_to(kid)):
        try:
            message.verify(key)
        except ScittOciError:
            continue
        return size, message.payload, key
    raise UntrustedKeyError(
        f"the checkpoint's signature does not verify with any trusted service key "
        f"(kid {kid.hex() if kid else 'absent'}; {len(keys)} trusted)"
    )


@dataclass(frozen=True)
class VerifiedReceipt:
    """What a receipt proved once its signature verified."""

    vds: int
    entry_rule: str  # "statement", "hash-first" or "ccf"
    root: bytes
    key: CoseKey
    claims: CwtClaims | None
    tree_size: int | None = None  # vds 1: from the proof; the signature covers it only when `size_signed`
    leaf_index: int | None = None  # vds 1: from the proof, never signed (the path binds it to the root)
    txid: str | None = None
    size_signed: bool = False

    @property
    def issuer(self) -> str | None:
        return self.claims.iss if self.claims else None


def _fail(reason: Reason, message: str) -> VerificationFailure:
    return VerificationFailure(reason, message)


def decode(data: bytes) -> tuple[Sign1, int]:
    """Decode a receipt and read its vds from the protected header (never the unprotected one)."""
    try:
        message = sign1.decode(data)
    except ScittOciError as exc:
        raise _fail(Reason.MALFORMED, f"receipt is not a COSE_Sign1 message: {exc}") from None
    vds = message.protected.get(headers.VDS)
    if headers.ALG not in message.protected:
        raise _fail(Reason.MALFORMED, "receipt protected header has no alg (1)")
    if vds is None:
        raise _fail(Reason.MALFORMED, "receipt protected header has no vds (395)")
    if message.payload is not None:
        # An attached root would let the signature verify without binding anything to the entry.
        raise _fail(Reason.MALFORMED, "receipt payload must be detached (the verifier recomputes the root)")
    return message, vds


def _candidate_keys(message: Sign1, keys: Sequence[CoseKey]) -> list[CoseKey]:
    try:
        kid = message.kid  # the same rules as a statement's kid: a bstr, protected header first
    except MalformedError as exc:
        raise _fail(Reason.MALFORMED, f"receipt {exc}") from None
    if kid is None:
        return list(keys)
    matching = [k for k in keys if k.answers_to(kid)]  # the same forms as a statement kid (KID_FORMS)
    if not matching:
        known = ", ".join(k.kid.hex()[:16] for k in keys) or "none"
        raise _fail(
            Reason.UNKNOWN_RECEIPT_KEY,
            f"receipt kid {kid_text(kid)} is not a trusted service key (known: {known}; a kid may be {KID_FORMS})",
        )
    return matching


def _decode_proofs(message: Sign1, label: int) -> list[Any]:
    vdp = message.unprotected.get(headers.VDP)
    if not isinstance(vdp, dict):
        raise _fail(Reason.MALFORMED, "receipt has no vdp (396) map in its unprotected header")
    proofs = vdp.get(label)
    if isinstance(proofs, bytes):  # a single bstr, as some services emit
        proofs = [proofs]
    if not isinstance(proofs, list) or not proofs:
        kind = "inclusion (-1)" if label == headers.VDP_INCLUSION else "consistency (-2)"
        raise _fail(Reason.MALFORMED, f"receipt vdp carries no {kind} proofs")
    if len(proofs) > 8:
        raise _fail(Reason.MALFORMED, f"receipt carries {len(proofs)} proofs; at most 8 are accepted")
    out = []
    for p in proofs:
        if not isinstance(p, bytes):
            raise _fail(Reason.MALFORMED, "each receipt proof must be a byte string wrapping CBOR")
        try:
            out.append(cbor.loads(p))  # each caller validates the exact shape next
        except MalformedError as exc:
            raise _fail(Reason.MALFORMED, f"receipt proof is not valid CBOR: {exc}") from None
    return out


def _inclusion_proof(p: Any) -> tuple[int, int, list[bytes]]:
    if not (isinstance(p, list) and len(p) == 3):
        raise _fail(Reason.MALFORMED, "inclusion proof must be [tree-size, leaf-index, inclusion-path]")
    size, index, path = p
    if not (isinstance(size, int) and isinstance(index, int)) or isinstance(size, bool) or isinstance(index, bool):
        raise _fail(Reason.MALFORMED, "inclusion proof tree-size and leaf-index must be unsigned integers")
    if not isinstance(path, list) or len(path) > MAX_PATH:
        raise _fail(Reason.MALFORMED, "inclusion path must be an array of at most 64 byte strings")
    return size, index, path


def describe(data: bytes) -> dict[str, Any]:
    """What a receipt claims, unverified, for display: its service (iss), vds and, for vds 1, the tree
    size and leaf index of its first inclusion proof. Raises VerificationFailure if it is malformed."""
    message, vds = decode(data)
    claims = _claims(message)
    size = index = signed = None
    if vds == headers.VDS_RFC9162_SHA256:
        size, index, _path = _inclusion_proof(_decode_proofs(message, headers.VDP_INCLUSION)[0])
        signed = signed_tree_size(message) is not None
    return {
        "service": claims.iss if claims else None,
        "vds": vds,
        "tree_size": size,
        "tree_size_signed": signed,
        "leaf_index": index,
    }


def entry_for_rule(statement: SignedStatement, rule: str, entry: bytes | None = None) -> bytes:
    """The leaf entry of `statement` under a vds 1 entry rule."""
    entry = entry if entry is not None else statement.entry()
    return entry if rule == "statement" else hashlib.sha256(entry).digest()


def verify_receipt(receipt: bytes, statement: SignedStatement, keys: Sequence[CoseKey]) -> VerifiedReceipt:
    """Verify that `receipt` proves `statement` is in a log whose key is among `keys`.

    Raises `VerificationFailure` with the reason; never anything else.
    """
    message, vds = decode(receipt)
    try:
        message.alg  # noqa: B018 - an unknown alg is a malformed receipt for us
    except UnsupportedError as exc:
        raise _fail(Reason.MALFORMED, f"receipt {exc}") from None
    if vds == headers.VDS_RFC9162_SHA256:
        return _verify_rfc9162(message, statement, keys)
    if vds == headers.VDS_CCF_LEDGER_SHA256 and isinstance(message.protected.get("ccf.v1"), dict):
        return _verify_ccf(message, statement, keys)
    if vds == headers.VDS_CCF_LEDGER_SHA256:
        raise _fail(
            Reason.UNSUPPORTED_VDS,
            "receipt vds 2 is supported only in CCF's profile, which carries a ccf.v1 protected header; this receipt has none",
        )
    raise _fail(Reason.UNSUPPORTED_VDS, f"receipt vds {vds!r} is not supported (RFC9162_SHA256 1, CCF_LEDGER_SHA256 2)")


def _verify_signature(message: Sign1, key: CoseKey, root: bytes) -> bool:
    try:
        message.verify(key, root)
    except SignatureError:
        return False
    return True


def _verify_rfc9162(message: Sign1, statement: SignedStatement, keys: Sequence[CoseKey]) -> VerifiedReceipt:
    proofs = [_inclusion_proof(p) for p in _decode_proofs(message, headers.VDP_INCLUSION)]
    signed_size = signed_tree_size(message)
    _check_proof_sizes(signed_size, [size for size, _i, _p in proofs], "inclusion")
    candidates = _candidate_keys(message, keys)
    claims = _claims(message)
    entry = statement.entry()
    for size, index, path in proofs:
        for rule in ENTRY_RULES:
            try:
                root = merkle.root_from_inclusion(
                    merkle.leaf_hash(entry_for_rule(statement, rule, entry)), index, size, path
                )
            except ScittOciError as exc:
                raise _fail(Reason.TAMPERED_INCLUSION_PATH, f"inclusion proof does not fit its tree: {exc}") from None
            for key in candidates:
                if _verify_signature(message, key, root):
                    return VerifiedReceipt(1, rule, root, key, claims, size, index, size_signed=signed_size is not None)
    _check_signature_shape(message, candidates)
    raise _fail(
        Reason.TAMPERED_INCLUSION_PATH,
        "the root rebuilt from this statement and the receipt's inclusion path is not the root the service signed "
        "(under either entry rule): the path or the statement was altered",
    )


def _check_proof_sizes(signed: int | None, claimed: Sequence[int], kind: str) -> None:
    for size in claimed:
        if signed is not None and size != signed:
            raise _fail(
                Reason.TAMPERED_INCLUSION_PATH,
                f"the {kind} proof claims tree size {size}, but the service signed tree size {signed}",
            )


def _check_signature_shape(message: Sign1, candidates: Sequence[CoseKey]) -> None:
    """Tell a broken signature (wrong size or key type) from a root mismatch."""
    alg = message.alg
    if alg.family == "ec" and len(message.signature) != 2 * alg.coordinate_size:
        raise _fail(
            Reason.BAD_RECEIPT_SIGNATURE,
            f"receipt {alg.name} signature is {len(message.signature)} bytes; expected {2 * alg.coordinate_size}",
        )
    for key in candidates:
        try:
            algorithms.check_key(alg, key.public)
            return
        except SignatureError:
            continue
    raise _fail(
        Reason.BAD_RECEIPT_SIGNATURE, f"receipt is signed with {alg.name}, which none of the service's keys can verify"
    )


def _claims(message: Sign1) -> CwtClaims | None:
    try:
        return claims_of(message.protected)
    except MalformedError as exc:
        raise _fail(Reason.MALFORMED, f"receipt CWT Claims: {exc}") from None


def _verify_ccf(message: Sign1, statement: SignedStatement, keys: Sequence[CoseKey]) -> VerifiedReceipt:
    proofs = _decode_proofs(message, headers.VDP_INCLUSION)
    candidates = _candidate_keys(message, keys)
    claims = _claims(message)
    data_hash = hashlib.sha256(statement.entry()).digest()
    ccf = message.protected.get("ccf.v1", {})
    txid = ccf.get("txid") if isinstance(ccf.get("txid"), str) else None
    for proof in proofs:
        root = _ccf_root(proof, data_hash)
        for key in candidates:
            if _verify_signature(message, key, root):
                return VerifiedReceipt(2, "ccf", root, key, claims, txid=txid)
    raise _fail(
        Reason.BAD_RECEIPT_SIGNATURE, "the CCF receipt's signature does not verify over the root rebuilt from its proof"
    )


def _ccf_root(proof: Any, data_hash: bytes) -> bytes:
    if not isinstance(proof, dict) or not isinstance(proof.get(1), list) or len(proof[1]) != 3:
        raise _fail(Reason.MALFORMED, "CCF proof must be a map {1: [tx-hash, evidence, data-hash], 2: path}")
    tx_hash, evidence, leaf_data_hash = proof[1]
    if not (
        isinstance(tx_hash, bytes)
        and len(tx_hash) == 32
        and isinstance(evidence, str)
        and isinstance(leaf_data_hash, bytes)
        and len(leaf_data_hash) == 32
    ):
        raise _fail(Reason.MALFORMED, "CCF proof leaf must be [bstr .size 32, tstr, bstr .size 32]")
    if leaf_data_hash != data_hash:
        raise _fail(
            Reason.TAMPERED_INCLUSION_PATH,
            f"the CCF receipt is for data hash {leaf_data_hash.hex()[:16]}..., but this statement hashes to {data_hash.hex()[:16]}...",
        )
    h = hashlib.sha256(tx_hash + hashlib.sha256(evidence.encode()).digest() + data_hash).digest()
    path = proof.get(2, [])
    if not isinstance(path, list) or len(path) > MAX_PATH:
        raise _fail(Reason.MALFORMED, "CCF proof path must be an array of at most 64 steps")
    for step in path:
        if not (
            isinstance(step, list)
            and len(step) == 2
            and isinstance(step[0], bool)
            and isinstance(step[1], bytes)
            and len(step[1]) == 32
        ):
            raise _fail(Reason.MALFORMED, "CCF proof path steps must be [left: bool, hash: bstr .size 32]")
        h = hashlib.sha256(step[1] + h).digest() if step[0] else hashlib.sha256(h + step[1]).digest()
    return h


def verify_consistency_receipt(
    receipt: bytes, *, old_size: int, old_root: bytes, keys: Sequence[CoseKey], require_signed_size: bool = False
) -> tuple[int, bytes, VerifiedReceipt]:
    """Verify a vds 1 consistency receipt extending a tree head we already trust; returns (new size, new root, receipt).

    The new size must be the one the service signed when the receipt carries one (always, with
    `require_signed_size`): the proof alone does not pin it.
    """
    message, vds = decode(receipt)
    if vds != headers.VDS_RFC9162_SHA256:
        raise _fail(Reason.UNSUPPORTED_VDS, f"consistency receipts are read for vds 1 only, not {vds!r}")
    signed_size = signed_tree_size(message)
    if signed_size is None and require_signed_size:
        raise _fail(Reason.MALFORMED, 'the consistency receipt does not sign its tree size (protected "tree_size")')
    candidates = _candidate_keys(message, keys)
    for p in _decode_proofs(message, headers.VDP_CONSISTENCY):
        if not (
            isinstance(p, list)
            and len(p) == 3
            and all(isinstance(x, int) and not isinstance(x, bool) for x in p[:2])
            and isinstance(p[2], list)
            and len(p[2]) <= 2 * MAX_PATH
            and all(isinstance(h, bytes) for h in p[2])
        ):
            raise _fail(Reason.MALFORMED, "consistency proof must be [tree-size-1, tree-size-2, [bstr, ...]]")
        size1, size2, path = p
        if size1 != old_size:
            raise _fail(Reason.MALFORMED, f"consistency proof starts at size {size1}, not at the known size {old_size}")
        _check_proof_sizes(signed_size, [size2], "consistency")
        new_root = _new_root_from_consistency(size1, size2, path, old_root)
        for key in candidates:
            if _verify_signature(message, key, new_root):
                verified = VerifiedReceipt(
                    1, "consistency", new_root, key, _claims(message), size2, size_signed=signed_size is not None
                )
                return size2, new_root, verified
    raise _fail(Reason.INCONSISTENT_LOG, "the consistency proof does not lead to a root the service signed")


def _new_root_from_consistency(size1: int, size2: int, path: list[bytes], old_root: bytes) -> bytes:
    try:
        return merkle.root_from_consistency(size1, size2, path, old_root)
    except ScittOciError as exc:
        raise _fail(Reason.INCONSISTENT_LOG, f"consistency proof does not hold: {exc}") from None

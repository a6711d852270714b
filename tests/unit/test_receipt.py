"""COSE Receipts: minting vds 1, verifying under both entry rules, CCF, consistency, Transparent Statements,
and agreement with the independent scitt-cose implementation in both directions."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
import scitt_cose
from hypothesis import given, settings
from hypothesis import strategies as st

from scitt_oci.cose import cbor, headers, sign1
from scitt_oci.cose.keys import CoseKey
from scitt_oci.errors import MalformedError, ScittOciError
from scitt_oci.scitt import merkle, receipt, statement, transparent
from scitt_oci.scitt.reasons import Reason, VerificationFailure
from tests.helpers import MemoryLog, key

ISS = "https://wabbit-networks.example"


def _statement(n: int, k_slot: int = 0) -> statement.SignedStatement:
    return statement.build(key(slot=k_slot), issuer=ISS, subject=f"urn:test:{n}", payload=f"statement {n}".encode())


def _log(n: int, *, hash_first: bool = False) -> tuple[MemoryLog, list[statement.SignedStatement]]:
    log = MemoryLog(key(slot=9), hash_first=hash_first)
    stmts = [_statement(i) for i in range(n)]
    for s in stmts:
        log.add(s)
    return log, stmts


def test_one_signature_per_tree_head_covers_every_entry() -> None:
    log, stmts = _log(7)
    sth = log.head()
    receipts = [log.receipt(i, sth=sth) for i in range(7)]
    signatures = {sign1.decode(r).signature for r in receipts}
    protected = {sign1.decode(r).protected_bytes for r in receipts}
    assert len(signatures) == 1 and len(protected) == 1
    for i, (s, r) in enumerate(zip(stmts, receipts, strict=True)):
        v = receipt.verify_receipt(r, s, [log.signing_key])
        assert (v.entry_rule, v.tree_size, v.leaf_index, v.vds) == ("statement", 7, i, 1)
        assert v.issuer == "https://ts.example"


def test_hash_first_receipts_are_recognised_and_reported() -> None:
    log, stmts = _log(5, hash_first=True)
    v = receipt.verify_receipt(log.receipt(3), stmts[3], [log.signing_key])
    assert v.entry_rule == "hash-first"


def test_receipt_for_another_statement_is_rejected() -> None:
    log, stmts = _log(4)
    with pytest.raises(VerificationFailure) as info:
        receipt.verify_receipt(log.receipt(1), stmts[2], [log.signing_key])
    assert info.value.reason is Reason.TAMPERED_INCLUSION_PATH


def test_unknown_receipt_key_names_the_kid() -> None:
    log, stmts = _log(2)
    with pytest.raises(VerificationFailure, match="is not a trusted service key") as info:
        receipt.verify_receipt(log.receipt(0), stmts[0], [key(slot=8)])
    assert info.value.reason is Reason.UNKNOWN_RECEIPT_KEY


def test_unsupported_vds_and_attached_payload() -> None:
    k = key(slot=9)
    odd = sign1.sign(
        k, {headers.VDS: 7}, None, detached_payload=b"r" * 32, unprotected={396: {-1: [cbor.dumps([1, 0, []])]}}
    )
    with pytest.raises(VerificationFailure, match="vds 7 is not supported") as info:
        receipt.verify_receipt(odd.encode(), _statement(0), [k])
    assert info.value.reason is Reason.UNSUPPORTED_VDS
    attached = sign1.sign(k, {headers.VDS: 1}, b"r" * 32, unprotected={396: {-1: [cbor.dumps([1, 0, []])]}})
    with pytest.raises(VerificationFailure, match="must be detached") as info:
        receipt.verify_receipt(attached.encode(), _statement(0), [k])
    assert info.value.reason is Reason.MALFORMED


def test_signature_of_the_wrong_size_is_a_bad_receipt_signature() -> None:
    log, stmts = _log(2)
    m = sign1.decode(log.receipt(0))
    broken = sign1.Sign1(m.protected_bytes, m.protected, m.unprotected, None, m.signature[:-1]).encode()
    with pytest.raises(VerificationFailure) as info:
        receipt.verify_receipt(broken, stmts[0], [log.signing_key])
    assert info.value.reason is Reason.BAD_RECEIPT_SIGNATURE


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_flipped_bit_in_statement_or_receipt_is_rejected(data: st.DataObject) -> None:
    log, stmts = _log(6)
    index = data.draw(st.integers(0, 5))
    good_receipt = log.receipt(index)
    ts = transparent.add_receipts(stmts[index], [good_receipt])
    target = data.draw(st.sampled_from(["statement", "receipt"]))
    blob = bytearray(ts if target == "statement" else good_receipt)
    bit = data.draw(st.integers(0, len(blob) * 8 - 1))
    blob[bit // 8] ^= 1 << (bit % 8)
    try:
        if target == "statement":
            parsed = transparent.parse(bytes(blob))
            s = parsed.statement
            statement.verify(s, keys=[key()])
            for r in parsed.receipts:
                receipt.verify_receipt(r, s, [log.signing_key])
            # Only the receipts array in the unprotected header may change without breaking a signature.
            assert parsed.statement.entry() == stmts[index].entry()
            assert parsed.receipts != (good_receipt,) or bytes(blob) == ts
        else:
            receipt.verify_receipt(bytes(blob), stmts[index], [log.signing_key])
            # A flip inside the unprotected header that leaves the proof intact is harmless; the proof must be unchanged.
            assert sign1.decode(bytes(blob)).unprotected[396] == sign1.decode(good_receipt).unprotected[396]
    except (MalformedError, VerificationFailure):
        pass
    except Exception as exc:  # anything else is a bug: a typed error is always expected
        from scitt_oci.errors import ScittOciError

        assert isinstance(exc, ScittOciError), f"unexpected {type(exc).__name__}: {exc}"


def test_consistency_receipt_proves_the_log_only_grew() -> None:
    log, _ = _log(11)
    old = log.head(6)
    new = log.head(11)
    path = merkle.consistency_path(6, 11, merkle.list_hasher(log.leaves()))
    r = receipt.consistency_receipt(new, 6, path)
    size, root, _v = receipt.verify_consistency_receipt(r, old_size=6, old_root=old.root, keys=[log.signing_key])
    assert (size, root) == (11, new.root)
    with pytest.raises(VerificationFailure):
        receipt.verify_consistency_receipt(r, old_size=6, old_root=b"\x00" * 32, keys=[log.signing_key])


def test_describe_reads_a_receipt_without_keys_and_names_a_malformed_one() -> None:
    log, _ = _log(5)
    assert receipt.describe(log.receipt(3)) == {
        "service": "https://ts.example",
        "vds": 1,
        "tree_size": 5,
        "tree_size_signed": True,
        "leaf_index": 3,
    }
    consistency = receipt.consistency_receipt(
        log.head(5), 2, merkle.consistency_path(2, 5, merkle.list_hasher(log.leaves()))
    )
    with pytest.raises(VerificationFailure, match="no inclusion"):
        receipt.describe(consistency)


def test_checkpoint_round_trip_and_untrusted_key() -> None:
    log, _ = _log(6)
    sth = log.head()
    size, root, signer = receipt.read_checkpoint(receipt.checkpoint_bytes(sth), [key(slot=1), log.signing_key])
    assert (size, root, signer) == (6, sth.root, log.signing_key)
    with pytest.raises(ScittOciError, match="does not verify with any trusted service key"):
        receipt.read_checkpoint(receipt.checkpoint_bytes(sth), [key(slot=1)])


def test_transparent_statement_emits_bstr_receipts_and_reads_both_forms() -> None:
    log, stmts = _log(3)
    r = log.receipt(1)
    ts = transparent.add_receipts(stmts[1], [r, r])
    decoded = cbor2.loads(ts)
    assert decoded.value[1][394] == [r]  # bstr-wrapped, deduplicated
    unwrapped = cbor2.dumps(
        cbor2.CBORTag(18, [decoded.value[0], {394: [cbor2.loads(r)]}, decoded.value[2], decoded.value[3]])
    )
    parsed = transparent.parse(unwrapped)
    assert receipt.verify_receipt(parsed.receipts[0], parsed.statement, [log.signing_key]).leaf_index == 1
    assert parsed.statement.entry() == stmts[1].entry()


# ----------------------------------------------------------------------------- scitt-cose, both directions
def _pem(k: CoseKey) -> bytes:
    return k.public_pem()


def test_scitt_cose_verifies_our_statements_and_receipts() -> None:
    log, stmts = _log(9)
    for i in (0, 4, 8):
        parsed = scitt_cose.parse_signed_statement(stmts[i].encode(), public_key_pem=_pem(key()))
        assert parsed["signature_verified"] is True
        result = scitt_cose.verify_receipt(
            log.receipt(i), leaf_entry_hex=stmts[i].entry().hex(), log_public_key_pem=_pem(log.signing_key)
        )
        assert result.ok, result.errors
        assert (result.tree_size, result.leaf_index) == (9, i)
        assert result.root == log.head().root.hex()


def test_we_verify_scitt_cose_statements_and_receipts() -> None:
    k = key()
    log_key = key(slot=9)
    theirs = [
        scitt_cose.build_signed_statement(
            f"p{i}".encode(),
            alg="ES256",
            private_key_pem=k.private_pem(),
            issuer=ISS,
            subject=f"urn:x:{i}",
            content_type="text/plain",
            kid=k.kid,
        )
        for i in range(5)
    ]
    parsed = [statement.parse(t) for t in theirs]
    for p in parsed:
        statement.verify(p, keys=[k])
    # scitt-cose under our rule (entry = statement with empty unprotected header) ...
    entries = [p.entry().hex() for p in parsed]
    r = scitt_cose.build_receipt(
        leaf_entry_hex=entries[3],
        leaf_index=3,
        tree_entries_hex=entries,
        alg="ES256",
        log_private_key_pem=log_key.private_pem(),
        kid=log_key.kid,
        iss="https://them",
    )
    v = receipt.verify_receipt(r, parsed[3], [log_key])
    assert (v.entry_rule, v.tree_size, v.leaf_index) == ("statement", 5, 3)
    # ... and under theirs (entry = SHA-256 of the statement bytes).
    hashed = [hashlib.sha256(t).hexdigest() for t in theirs]
    r2 = scitt_cose.build_receipt(
        leaf_entry_hex=hashed[1],
        leaf_index=1,
        tree_entries_hex=hashed,
        alg="ES256",
        log_private_key_pem=log_key.private_pem(),
    )
    assert receipt.verify_receipt(r2, parsed[1], [log_key]).entry_rule == "hash-first"
    ts = scitt_cose.attach_receipts(theirs[3], [r])
    assert transparent.parse(ts).receipts == (r,)


def _unsized_head(log: MemoryLog, size: int) -> receipt.SignedTreeHead:
    """A tree head signed as scitt-oci did before it signed sizes (and as other services do)."""
    root = merkle.root_of(log.leaves()[:size])
    claims = {headers.CWT_ISS: log.issuer, headers.CWT_SUB: "log"}
    protected = {headers.KID: log.signing_key.kid, headers.VDS: headers.VDS_RFC9162_SHA256, headers.CWT_CLAIMS: claims}
    message = sign1.sign(log.signing_key, protected, None, detached_payload=root)
    return receipt.SignedTreeHead(message.protected_bytes, message.signature, size, root)


def test_tree_heads_sign_their_size_and_readers_hold_proofs_to_it() -> None:
    log, stmts = _log(8)
    sth6 = log.head(6)
    assert sign1.decode(log.receipt(2, sth=sth6)).protected[headers.TREE_SIZE] == 6
    assert receipt.read_checkpoint(receipt.checkpoint_bytes(sth6), [log.signing_key])[0] == 6
    path = merkle.consistency_path(4, 6, merkle.list_hasher(log.leaves()))
    old_root = log.head(4).root
    # The honest 4 -> 6 proof also computes the size-6 root when presented as 4 -> 5, 7 or 8 ...
    for size2 in (5, 7, 8):
        assert merkle.root_from_consistency(4, size2, path, old_root) == sth6.root
        forged = sth6.message({headers.VDP: {headers.VDP_CONSISTENCY: [cbor.dumps([4, size2, path])]}}).encode()
        # ... so only the signed size tells them apart
        with pytest.raises(VerificationFailure, match=f"claims tree size {size2}, but the service signed tree size 6"):
            receipt.verify_consistency_receipt(forged, old_size=4, old_root=old_root, keys=[log.signing_key])
    honest = receipt.consistency_receipt(sth6, 4, path)
    size, root, verified = receipt.verify_consistency_receipt(
        honest, old_size=4, old_root=old_root, keys=[log.signing_key], require_signed_size=True
    )
    assert (size, root, verified.size_signed) == (6, sth6.root, True)
    # An inclusion proof claiming another tree size than the signed one is refused too.
    index_path = merkle.inclusion_path(1, 6, merkle.list_hasher(log.leaves()))
    wrong = sth6.message({headers.VDP: {headers.VDP_INCLUSION: [cbor.dumps([7, 1, index_path])]}}).encode()
    with pytest.raises(VerificationFailure, match="claims tree size 7, but the service signed tree size 6"):
        receipt.verify_receipt(wrong, stmts[1], [log.signing_key])


def test_heads_that_do_not_sign_their_size() -> None:
    log, stmts = _log(6)
    old = _unsized_head(log, 6)
    # Their inclusion receipts still verify, and say the size is not signed.
    verified = receipt.verify_receipt(log.receipt(2, sth=old), stmts[2], [log.signing_key])
    assert (verified.tree_size, verified.leaf_index, verified.size_signed) == (6, 2, False)
    # A checkpoint must sign its size: the earlier form, size in the unprotected header, is refused.
    legacy = sign1.Sign1(old.protected_bytes, old.message({}).protected, {"tree_size": 6}, old.root, old.signature)
    with pytest.raises(ScittOciError, match="does not sign its tree size"):
        receipt.read_checkpoint(legacy.encode(), [log.signing_key])
    with pytest.raises(ScittOciError, match="does not sign its size"):
        receipt.checkpoint_bytes(old)
    path = merkle.consistency_path(4, 6, merkle.list_hasher(log.leaves()))
    unsized = receipt.consistency_receipt(old, 4, path)
    with pytest.raises(VerificationFailure, match="does not sign its tree size"):
        receipt.verify_consistency_receipt(
            unsized, old_size=4, old_root=log.head(4).root, keys=[log.signing_key], require_signed_size=True
        )
    # A protected tree_size that is not a positive integer is malformed.
    bad = sign1.sign(
        log.signing_key,
        {headers.KID: log.signing_key.kid, headers.VDS: 1, headers.TREE_SIZE: "6"},
        None,
        detached_payload=old.root,
    )
    forged = receipt.SignedTreeHead(bad.protected_bytes, bad.signature, 6, old.root)
    with pytest.raises(VerificationFailure, match="tree_size must be a positive integer"):
        receipt.verify_receipt(log.receipt(2, sth=forged), stmts[2], [log.signing_key])

"""C2SP formats against the specs' own examples, and cross-checked with tlog-scales (an independent
implementation from PyPI)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tlog_scales import signing as ts_signing
from tlog_scales import tiles as ts_tiles
from tlog_scales import tlog as ts_tlog

from scitt_oci.errors import MalformedError, PolicyError
from scitt_oci.scitt import merkle
from scitt_oci.tlog import checkpoint, note, policy, tiles, witness
from scitt_oci.tlog.note import NoteError, NoteSignatureError

# signed-note.md, "Example"
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n"
    "\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
).encode()


def test_spec_vkey_verifies_spec_note() -> None:
    v = note.parse_vkey(SPEC_VKEY)
    assert (v.name, v.sig_type, v.key_id.hex()) == ("example.com/foo", 1, "530d903a")
    assert v.vkey == SPEC_VKEY
    n = note.parse(SPEC_NOTE)
    assert n.text == b"This is an example message.\n"
    assert note.verify(n, [v]) == [v]
    assert n.encode() == SPEC_NOTE


def test_spec_note_with_a_changed_text_is_refused() -> None:
    v = note.parse_vkey(SPEC_VKEY)
    n = note.parse(SPEC_NOTE.replace(b"example", b"exemple", 1))
    with pytest.raises(NoteSignatureError, match="does not verify"):
        note.verify(n, [v])


def test_unknown_keys_are_ignored_and_no_known_key_is_refused() -> None:
    other = note.NoteSigner("example.com/other", ed25519.Ed25519PrivateKey.generate())
    n = note.parse(SPEC_NOTE)
    with pytest.raises(NoteSignatureError, match="no signature by a trusted key"):
        note.verify(n, [other.verifier])
    # Same name, other id: ignored, and the real one still verifies.
    extra = note.Signature("example.com/foo", b"\0\0\0\0", b"x" * 64)
    both = note.Note(n.text, (extra, *n.signatures))
    assert note.verify(both, [note.parse_vkey(SPEC_VKEY)])


@pytest.mark.parametrize(
    ("vkey", "why"),
    [
        ("example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "does not match"),
        ("example.com/foo+530D903A+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "lowercase"),
        ("example.com/foo+530d903a", "is not <name>"),
        ("example.com/foo+530d903a+!!!", "not base64"),
        ("ex ample+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "without spaces"),
        ("example.com/foo+530d903a+AQID", "32 bytes"),
    ],
)
def test_bad_vkeys_are_named(vkey: str, why: str) -> None:
    with pytest.raises(NoteError, match=why):
        note.parse_vkey(vkey)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"text\n", "no blank line"),
        (b"text\n\n", "no signature lines"),
        (b"text\n\nnot a signature\n", "does not start"),
        (b"te\x01xt\n\n\xe2\x80\x94 a AAAAAAA=\n", "control characters"),
        (b"\xff\n\n", "not UTF-8"),
        (b"text\n\n\xe2\x80\x94 a AAAA\n", "4-byte key id"),
    ],
)
def test_malformed_notes_are_named(data: bytes, why: str) -> None:
    with pytest.raises(NoteError, match=why):
        note.parse(data)


def test_key_id_is_the_spec_hash() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes_raw()
    signer = note.NoteSigner("log.example/a", key)
    assert signer.verifier.key_id == hashlib.sha256(b"log.example/a\n\x01" + pub).digest()[:4]
    assert signer.verifier.vkey.startswith("log.example/a+" + signer.verifier.key_id.hex() + "+")
    # tlog-scales computes the same vkey from the same key.
    theirs = ts_signing.PlainEd25519Signer("log.example/a", key).vkey.serialize()  # type: ignore[no-untyped-call]  # tlog-scales leaves Vkey.serialize unannotated
    assert theirs == signer.verifier.vkey


def test_checkpoint_round_trip_and_tlog_scales_verifies_it() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    signer = note.NoteSigner("example.com/behind-the-sofa", key)
    root = base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    cp = checkpoint.Checkpoint("example.com/behind-the-sofa", 20852163, root)
    assert cp.text() == b"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    data = checkpoint.sign(cp, signer).encode()
    opened = checkpoint.open_signed(data, [signer.verifier])
    assert opened.checkpoint == cp
    theirs = ts_tlog.Checkpoint.from_text(data.decode())
    theirs.verify(ts_signing.Vkey.from_string(signer.verifier.vkey))  # raises if it does not verify
    assert (theirs.origin, theirs.size, theirs.root_hash) == (cp.origin, cp.size, cp.root)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (b"o\n01\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "leading zeroes"),
        (b"o\n-1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "leading zeroes"),
        (b"o\n1\nAAAA\n", "3 bytes"),
        (b"o\n1\n", "at least three"),
        (b"\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "origin line is empty"),
        (b"o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n", "extension lines"),
    ],
)
def test_malformed_checkpoints_are_named(text: bytes, why: str) -> None:
    with pytest.raises(NoteError, match=why):
        checkpoint.parse_text(text)


def test_extension_lines_are_kept() -> None:
    text = b"o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\next one\n"
    assert checkpoint.parse_text(text).extensions == ("ext one",)
    assert checkpoint.parse_text(text).text() == text


def test_cosignature_v1_message_key_id_and_tlog_scales_cross_check() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes_raw()
    cosigner = checkpoint.Cosigner("witness.example.com/w1", key)
    assert cosigner.verifier.key_id == hashlib.sha256(b"witness.example.com/w1\n\x04" + pub).digest()[:4]
    cp = checkpoint.Checkpoint("example.com/behind-the-sofa", 20852163, b"\x07" * 32)
    sig = cosigner.cosign(cp.text(), 1679315147)
    assert sig.signature[:8] == (1679315147).to_bytes(8, "big")
    message = (
        b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
        + base64.b64encode(b"\x07" * 32)
        + b"\n"
    )
    key.public_key().verify(sig.signature[8:], message)
    assert checkpoint.verify_cosignature(cosigner.verifier, cp.text(), sig) == 1679315147
    # tlog-scales' Ed25519 cosignature verifier accepts it too.
    vk = ts_signing.Vkey.from_string(cosigner.verifier.vkey)
    assert vk.sig_type == 4
    ts_cp = ts_tlog.Checkpoint(cp.origin, cp.size, cp.root, [])
    vk.get_verifier().verify_note(ts_signing.NoteSignature.from_line(sig.line().rstrip("\n")), ts_cp)
    # Another size under the same cosignature fails.
    other = checkpoint.Checkpoint(cp.origin, cp.size + 1, cp.root)
    with pytest.raises(NoteSignatureError):
        checkpoint.verify_cosignature(cosigner.verifier, other.text(), sig)


def test_index_paths_match_the_spec_example() -> None:
    assert tiles.index_path(1234067) == "x001/x234/067"
    assert tiles.index_path(0) == "000"
    assert tiles.index_path(1000) == "x001/000"
    assert tiles.tile_path(0, 1234067, 112) == "tile/0/x001/x234/067.p/112"
    assert tiles.tile_path(tiles.ENTRIES, 5) == "tile/entries/005"
    for n in (0, 1, 999, 1000, 1234067, 10**9 + 7):
        for w in (1, 112, 256):
            path = tiles.tile_path(2, n, w)
            assert "/".join(ts_tiles.tile_path(2, n, 0 if w == 256 else w)) == path
            assert tiles.parse_tile_path(path) == tiles.TileRef(2, n, w)


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/1",
        "tile/00/001",
        "tile/64/001",
        "tile/0/001/002",
        "tile/0/x000/001",
        "tile/0/001.p/256",
        "tile/0/001.p/0",
        "tile/0/001.p/07",
        "tile/a/001",
        "tile/0/x1/001",
        "tiles/0/001",
    ],
)
def test_bad_tile_paths_are_refused(path: str) -> None:
    with pytest.raises(tiles.TilePathError):
        tiles.parse_tile_path(path)


def test_tiles_of_the_spec_examples() -> None:
    assert [t for t in tiles.tiles_for(70_000, 0) if t.partial] == [tiles.TileRef(0, 273, 112)]
    assert sum(1 for t in tiles.tiles_for(70_000, 0)) == 274
    assert list(tiles.tiles_for(70_000, 1)) == [tiles.TileRef(1, 0), tiles.TileRef(1, 1, 17)]
    assert list(tiles.tiles_for(70_000, 2)) == [tiles.TileRef(2, 0, 1)]
    assert tiles.levels(70_000) == 3
    assert list(tiles.tiles_for(256, 0)) == [tiles.TileRef(0, 0)]
    assert list(tiles.tiles_for(256, 1)) == [tiles.TileRef(1, 0, 1)]


def test_entry_bundles() -> None:
    entries = [b"", b"a", b"x" * 65535]
    data = tiles.encode_bundle(entries)
    assert data[:2] == b"\0\0" and data[2:5] == b"\0\x01a"
    assert tiles.decode_bundle(data, 3) == entries
    with pytest.raises(MalformedError, match="does not fit"):
        tiles.encode_bundle([b"x" * 65536])
    with pytest.raises(MalformedError, match="truncated"):
        tiles.decode_bundle(data[:-1])
    with pytest.raises(MalformedError, match="expected 2"):
        tiles.decode_bundle(data, 2)


@pytest.mark.parametrize("size", [1, 2, 255, 256, 257, 511, 4096, 65536, 65537, 70_000])
def test_root_from_tiles_equals_the_merkle_root(size: int) -> None:
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    # Build the C2SP tiles of the tree the plain way: level L hashes are roots of 256^L leaves.
    level_hashes = leaves
    stored: dict[tuple[int, int], bytes] = {}
    level = 0
    while level_hashes:
        for i in range(0, len(level_hashes), 256):
            stored[(level, i // 256)] = b"".join(level_hashes[i : i + 256])
        level_hashes = [merkle.root_of(level_hashes[i : i + 256]) for i in range(0, len(level_hashes) - 255, 256)]
        level += 1
    tree = tiles.TiledTree(lambda lv, ix: stored[(lv, ix)], size)
    assert tree.root() == merkle.root_of(leaves)
    assert tree.hash_range(1, size) == merkle.root_of(leaves[1:])


def test_witness_request_round_trip_and_errors() -> None:
    body = witness.encode(4, [b"\1" * 32, b"\2" * 32], b"cp\n\n\xe2\x80\x94 x AAAAAAA=\n")
    req = witness.parse(body)
    assert (req.old_size, req.proof, req.checkpoint) == (
        4,
        (b"\1" * 32, b"\2" * 32),
        b"cp\n\n\xe2\x80\x94 x AAAAAAA=\n",
    )
    for bad, why in [
        (b"old 01\n\ncp\n", "leading zeroes"),
        (b"new 1\n\ncp\n", "is not 'old"),
        (b"old 1\nAAAA\n\ncp\n", "32-byte"),
        (b"old 1\n", "no blank line"),
        (("old 1\n" + "\n".join([base64.b64encode(b"\0" * 32).decode()] * 64) + "\n\ncp\n").encode(), "at most 63"),
    ]:
        with pytest.raises(NoteError, match=why):
            witness.parse(bad)
    assert witness.parse_size(b"12\n") == 12


def _vkey(name: str, t: int) -> str:
    pub = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    return note.Verifier(name, t, pub).vkey


def test_tlog_policy_spec_example_and_quorum() -> None:
    w = {n: _vkey(f"w.example/{n}", 4) for n in ("X1", "X2", "X3", "Y1", "Y2", "Y3")}
    text = f"""
# the spec's example
log {_vkey("log.example/a", 1)} https://log.example/a
witness X1 {w["X1"]}
witness X2 {w["X2"]}
witness X3 {w["X3"]}
group X-witnesses 2 X1 X2 X3

witness Y1 {w["Y1"]}
witness Y2 {w["Y2"]}
\twitness   Y3 {w["Y3"]}
group Y-witnesses any Y1 Y2 Y3
group X-and-Y all X-witnesses Y-witnesses
quorum X-and-Y
"""
    p = policy.parse(text)
    keys = {n: p.witnesses[n].key for n in w}
    assert p.logs[0][1] == "https://log.example/a"
    assert not p.satisfied([keys["X1"], keys["X2"]])
    assert not p.satisfied([keys["X1"], keys["Y1"]])
    assert p.satisfied([keys["X1"], keys["X3"], keys["Y2"]])
    assert policy.parse("quorum none").satisfied([])


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "no quorum"),
        ("quorum X", "not a witness or group"),
        ("group G any X\nquorum G", "not defined on an earlier line"),
        ("quorum none\nquorum none", "exactly one quorum"),
        ("frobnicate\nquorum none", "unknown keyword"),
        (f"witness W {_vkey('w', 1)}\nquorum W", "type 0x04"),
        (f"log {_vkey('l', 4)}\nquorum none", "type 0x01"),
        (f"witness W {_vkey('w', 4)}\ngroup G 2 W\nquorum G", "threshold"),
        (f"witness W {_vkey('w', 4)}\ngroup G \u00b2 W\nquorum G", "threshold"),  # a digit to isdigit(), not to int()
    ],
)
def test_bad_tlog_policies_are_named(text: str, why: str) -> None:
    with pytest.raises(PolicyError, match=why):
        policy.parse(text)


def test_witness_policy_from_a_trust_policy_yaml(tmp_path: Path) -> None:
    import yaml

    from scitt_oci.verify import trust

    log_vkey, w1, w2 = _vkey("ts.example/tlog", 1), _vkey("acme/w", 4), _vkey("lab/w", 4)
    text = f"""
transparency_services:
  - name: wabbit
    keys: [{{path: keys.pem}}]
    tlog:
      vkey: "{log_vkey}"
      witnesses: [{{name: acme, vkey: "{w1}"}}, {{name: lab, vkey: "{w2}"}}]
      quorum: 2
"""
    p = policy.from_trust_policy(yaml.safe_load(text))
    assert p.log_keys == [note.parse_vkey(log_vkey)]
    assert not p.satisfied([note.parse_vkey(w1)])
    assert p.satisfied([note.parse_vkey(w1), note.parse_vkey(w2)])
    # The verifier's own reader accepts the same file (it ignores the tlog section).
    pem = (
        ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "keys.pem").write_bytes(pem)
    assert trust.parse_policy(text.encode(), tmp_path).services[0].name == "wabbit"
    with pytest.raises(PolicyError, match="quorum: expected a number from 0 to 2"):
        policy.from_trust_policy(yaml.safe_load(text.replace("quorum: 2", "quorum: 3")))
    with pytest.raises(PolicyError, match="found 0"):
        policy.from_trust_policy(yaml.safe_load(text), service="other")

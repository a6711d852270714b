"""RFC 9162 tree math: known answers, and generated proofs that verify for every index and size pair."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scitt_oci.errors import ProofError
from scitt_oci.scitt import merkle

# RFC 6962 test leaves and the roots of their prefixes (facts from the spec's test data).
LEAVES = [
    bytes.fromhex(h)
    for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
]


def test_empty_tree_and_empty_leaf_known_answers() -> None:
    assert merkle.root_of([]).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert merkle.leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"


def test_roots_of_the_rfc_leaves() -> None:
    hashed = [merkle.leaf_hash(x) for x in LEAVES]
    assert merkle.root_of(hashed[:1]).hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert merkle.root_of(hashed).hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


def _tree(n: int) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def _recursive_mth(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = merkle.split_point(len(leaves))
    return merkle.node_hash(_recursive_mth(leaves[:k]), _recursive_mth(leaves[k:]))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 64, 100])
def test_root_matches_the_recursive_definition(n: int) -> None:
    leaves = _tree(n)
    assert merkle.root_of(leaves) == _recursive_mth(leaves)


def test_inclusion_proofs_for_every_index_of_trees_up_to_300_leaves() -> None:
    leaves = _tree(300)
    hasher = merkle.list_hasher(leaves)
    for size in list(range(1, 40)) + [63, 64, 65, 127, 128, 129, 255, 256, 257, 300]:
        root = merkle.root_of(leaves[:size])
        for index in range(size):
            path = merkle.inclusion_path(index, size, hasher)
            merkle.verify_inclusion(leaves[index], index, size, path, root)


def test_consistency_proofs_between_every_pair_up_to_70_leaves() -> None:
    leaves = _tree(70)
    hasher = merkle.list_hasher(leaves)
    roots = [merkle.root_of(leaves[:n]) for n in range(71)]
    for size2 in range(1, 71):
        for size1 in range(1, size2 + 1):
            proof = merkle.consistency_path(size1, size2, hasher)
            merkle.verify_consistency(size1, size2, proof, roots[size1], roots[size2])


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 400), data=st.data())
def test_any_flipped_bit_in_an_inclusion_proof_is_rejected(size: int, data: st.DataObject) -> None:
    leaves = _tree(size)
    index = data.draw(st.integers(0, size - 1))
    path = merkle.inclusion_path(index, size, merkle.list_hasher(leaves))
    root = merkle.root_of(leaves)
    target = data.draw(st.integers(0, len(path)))  # len(path) means: flip a bit of the leaf instead
    bit = data.draw(st.integers(0, 255))
    if target == len(path):
        leaf = bytearray(leaves[index])
        leaf[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ProofError):
            merkle.verify_inclusion(bytes(leaf), index, size, path, root)
    else:
        node = bytearray(path[target])
        node[bit // 8] ^= 1 << (bit % 8)
        path[target] = bytes(node)
        with pytest.raises(ProofError):
            merkle.verify_inclusion(leaves[index], index, size, path, root)


@settings(max_examples=300, deadline=None)
@given(size2=st.integers(2, 300), data=st.data())
def test_any_flipped_bit_in_a_consistency_proof_is_rejected(size2: int, data: st.DataObject) -> None:
    leaves = _tree(size2)
    size1 = data.draw(st.integers(1, size2 - 1))
    proof = merkle.consistency_path(size1, size2, merkle.list_hasher(leaves))
    target = data.draw(st.integers(0, len(proof) - 1))
    bit = data.draw(st.integers(0, 255))
    node = bytearray(proof[target])
    node[bit // 8] ^= 1 << (bit % 8)
    proof[target] = bytes(node)
    with pytest.raises(ProofError):
        merkle.verify_consistency(size1, size2, proof, merkle.root_of(leaves[:size1]), merkle.root_of(leaves))


def test_wrong_size_or_index_names_the_numbers() -> None:
    leaves = _tree(8)
    path = merkle.inclusion_path(2, 8, merkle.list_hasher(leaves))
    with pytest.raises(ProofError, match="leaf index 8 is outside a tree of size 8"):
        merkle.verify_inclusion(leaves[2], 8, 8, path, merkle.root_of(leaves))
    with pytest.raises(ProofError, match="inclusion path has 3 hashes; leaf 2 of 4 needs 2"):
        merkle.verify_inclusion(leaves[2], 2, 4, path, merkle.root_of(leaves))
    with pytest.raises(ProofError, match="inclusion path leads to root"):
        merkle.verify_inclusion(leaves[3], 2, 8, path, merkle.root_of(leaves))
    with pytest.raises(ProofError, match="went down from 5 to 4"):
        merkle.verify_consistency(5, 4, [], b"", b"")

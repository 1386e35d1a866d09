"""RFC 6962 hashing, proofs and verifiers: known-answer vectors, hand-computed trees, a naïve cross-check."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.trail.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MerkleTree,
    ProofError,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).resolve().parents[1] / "data" / "rfc6962"

# The leaves of the RFC 6962 reference tests (as used by transparency-dev/merkle and Certificate Transparency).
RFC_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
RFC_ROOTS = {
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}


# ---- an independent, deliberately naïve implementation straight from RFC 6962 §2.1 -------------------------


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def naive_mth(data: list[bytes]) -> bytes:
    n = len(data)
    if n == 0:
        return _sha(b"")
    if n == 1:
        return _sha(b"\x00" + data[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _sha(b"\x01" + naive_mth(data[:k]) + naive_mth(data[k:]))


def naive_path(m: int, data: list[bytes]) -> list[bytes]:
    n = len(data)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*naive_path(m, data[:k]), naive_mth(data[k:])]
    return [*naive_path(m - k, data[k:]), naive_mth(data[:k])]


def naive_subproof(m: int, data: list[bytes], whole: bool) -> list[bytes]:
    n = len(data)
    if m == n:
        return [] if whole else [naive_mth(data)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*naive_subproof(m, data[:k], whole), naive_mth(data[k:])]
    return [*naive_subproof(m - k, data[k:], False), naive_mth(data[:k])]


# ---- known-answer vectors -----------------------------------------------------------------------------------


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def _vector_files(kind: str) -> list[Path]:
    return sorted((VECTORS / kind).rglob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_the_vector_folder_is_complete() -> None:
    assert (VECTORS / "PROVENANCE.md").exists()
    assert len(_vector_files("inclusion")) >= 90
    assert len(_vector_files("consistency")) >= 90
    assert sum(_load(p)["wantErr"] for p in _vector_files("inclusion") + _vector_files("consistency")) > 150


@pytest.mark.parametrize("path", _vector_files("inclusion"), ids=lambda p: str(p.relative_to(VECTORS)))
def test_inclusion_vector(path: Path) -> None:
    case = _load(path)
    proof = [_b64(p) for p in case["proof"] or []]

    def run() -> None:
        verify_inclusion(_b64(case["leafHash"]), case["leafIdx"], case["treeSize"], proof, _b64(case["root"]))

    if case["wantErr"]:
        with pytest.raises(ProofError):
            run()
    else:
        run()


@pytest.mark.parametrize("path", _vector_files("consistency"), ids=lambda p: str(p.relative_to(VECTORS)))
def test_consistency_vector(path: Path) -> None:
    case = _load(path)
    proof = [_b64(p) for p in case["proof"] or []]

    def run() -> None:
        verify_consistency(case["size1"], case["size2"], proof, _b64(case["root1"]), _b64(case["root2"]))

    if case["wantErr"]:
        with pytest.raises(ProofError):
            run()
    else:
        run()


# ---- hand-computed small trees ------------------------------------------------------------------------------


def test_empty_tree_root_is_the_hash_of_nothing() -> None:
    assert root_of([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert MerkleTree([]).root() == EMPTY_ROOT


def test_leaves_and_nodes_are_domain_separated() -> None:
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert a == hashlib.sha256(b"\x00a").digest()
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    # A leaf whose data is two concatenated hashes must not collide with the node over them.
    assert leaf_hash(a + b) != node_hash(a, b)


def test_three_leaf_tree_splits_at_two_by_hand() -> None:
    l0, l1, l2 = (leaf_hash(d) for d in RFC_LEAVES[:3])
    expected = node_hash(node_hash(l0, l1), l2)
    assert root_of([l0, l1, l2]) == expected
    assert MerkleTree([l0, l1, l2]).inclusion_proof(2) == [node_hash(l0, l1)]
    assert MerkleTree([l0, l1, l2]).inclusion_proof(0) == [l1, l2]
    assert MerkleTree([l0, l1, l2]).consistency_proof(2) == [l2]


def test_seven_leaf_tree_by_hand() -> None:
    h = [leaf_hash(d) for d in RFC_LEAVES[:7]]
    left = node_hash(node_hash(h[0], h[1]), node_hash(h[2], h[3]))
    right = node_hash(node_hash(h[4], h[5]), h[6])
    assert root_of(h) == node_hash(left, right)
    assert MerkleTree(h).inclusion_proof(6) == [node_hash(h[4], h[5]), left]


@pytest.mark.parametrize("size", range(1, 9))
def test_reference_roots_for_sizes_one_to_eight(size: int) -> None:
    leaves = [leaf_hash(d) for d in RFC_LEAVES[:size]]
    assert root_of(leaves).hex() == RFC_ROOTS[size]
    assert MerkleTree(leaves).root().hex() == RFC_ROOTS[size]
    assert naive_mth(RFC_LEAVES[:size]).hex() == RFC_ROOTS[size]


@pytest.mark.parametrize("size", range(0, 9))
def test_small_trees_match_the_naive_implementation(size: int) -> None:
    data = RFC_LEAVES[:size]
    tree = MerkleTree([leaf_hash(d) for d in data])
    for m in range(size + 1):
        assert tree.root(m) == naive_mth(data[:m])
    for n in range(1, size + 1):
        for i in range(n):
            assert tree.inclusion_proof(i, n) == naive_path(i, data[:n])
            verify_inclusion(leaf_hash(data[i]), i, n, tree.inclusion_proof(i, n), tree.root(n))
        for m in range(1, n + 1):
            assert tree.consistency_proof(m, n) == naive_subproof(m, data[:n], True)
            verify_consistency(m, n, tree.consistency_proof(m, n), tree.root(m), tree.root(n))


def test_compact_range_resumes_from_its_state() -> None:
    leaves = [leaf_hash(bytes([i])) for i in range(37)]
    head = CompactRange()
    head.extend(leaves[:21])
    resumed = CompactRange(head.size, head.hashes)
    resumed.extend(leaves[21:])
    assert resumed.root() == root_of(leaves) == naive_mth([bytes([i]) for i in range(37)])


def test_proofs_outside_the_tree_are_refused() -> None:
    tree = MerkleTree([leaf_hash(b"x")] * 5)
    with pytest.raises(ValueError):
        tree.inclusion_proof(5)
    with pytest.raises(ValueError):
        tree.inclusion_proof(0, 6)
    with pytest.raises(ValueError):
        tree.consistency_proof(0, 5)
    with pytest.raises(ValueError):
        tree.consistency_proof(4, 3)
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(b"x"), 5, 5, tree.inclusion_proof(4), tree.root())


# ---- properties -----------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=12), min_size=1, max_size=40))
def test_every_inclusion_and_consistency_proof_verifies(data: list[bytes]) -> None:
    tree = MerkleTree([leaf_hash(d) for d in data])
    n = len(data)
    assert tree.root() == naive_mth(data)
    for i in range(n):
        verify_inclusion(leaf_hash(data[i]), i, n, tree.inclusion_proof(i), tree.root())
    for m in range(1, n):
        verify_consistency(m, n, tree.consistency_proof(m), tree.root(m), tree.root())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=8), min_size=2, max_size=24), st.data())
def test_a_flipped_bit_anywhere_in_a_proof_fails(data: list[bytes], draw: st.DataObject) -> None:
    tree = MerkleTree([leaf_hash(d) for d in data])
    n = len(data)
    i = draw.draw(st.integers(0, n - 1))
    path = tree.inclusion_proof(i)
    if path:
        j = draw.draw(st.integers(0, len(path) - 1))
        bit = draw.draw(st.integers(0, 255))
        broken = list(path)
        broken[j] = bytes(b ^ (1 << (bit % 8)) if k == bit // 8 else b for k, b in enumerate(broken[j]))
        with pytest.raises(ProofError):
            verify_inclusion(leaf_hash(data[i]), i, n, broken, tree.root())
    m = draw.draw(st.integers(1, n - 1))
    proof = tree.consistency_proof(m)
    j = draw.draw(st.integers(0, len(proof) - 1))
    broken = list(proof)
    broken[j] = bytes([broken[j][0] ^ 1]) + broken[j][1:]
    with pytest.raises(ProofError):
        verify_consistency(m, n, broken, tree.root(m), tree.root())


def test_a_million_leaves_root_and_proofs_are_fast_enough() -> None:
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(1 << 20)]
    tree = MerkleTree(leaves)
    root = tree.root()
    assert root == root_of(leaves)
    for i in (0, 1, 524_287, (1 << 20) - 1):
        verify_inclusion(leaves[i], i, len(leaves), tree.inclusion_proof(i), root)
    verify_consistency(1000, len(leaves), tree.consistency_proof(1000), tree.root(1000), root)

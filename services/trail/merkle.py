"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and proof verification. Pure functions over bytes.

Leaf hash ``H(0x00 ‖ data)``, interior node ``H(0x01 ‖ left ‖ right)`` (domain separation against
second-preimage forgeries), H = SHA-256. The tree of ``n`` leaves splits at the largest power of two < n.

Building: :class:`CompactRange` folds leaf hashes into at most log2(n) perfect-subtree roots, so the root of a
growing log is computed iteratively in O(n) time and O(log n) memory. :class:`MerkleTree` keeps every level of
perfect subtrees (about 2n hashes) so that any inclusion or consistency proof, for the full tree or any earlier
size, costs O(log² n) lookups rather than a recursion over the leaves.

Verifying: :func:`verify_inclusion` and :func:`verify_consistency` follow RFC 9162 §2.1.3.2 and §2.1.4.2 and
raise :class:`ProofError` on any failure.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


class ProofError(ValueError):
    """A proof did not verify, or its inputs are malformed."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """Largest power of two strictly less than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class CompactRange:
    """The roots of the perfect subtrees covering leaves [0, size), largest first."""

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != size.bit_count():
            raise ValueError(f"a compact range of size {size} has {size.bit_count()} hashes, got {len(hashes)}")
        self.size = size
        self.hashes = list(hashes)

    def append(self, leaf: bytes) -> None:
        node = leaf
        size = self.size
        # Each trailing 1 bit of the old size is a perfect subtree that the new leaf completes.
        while size & 1:
            node = node_hash(self.hashes.pop(), node)
            size >>= 1
        self.hashes.append(node)
        self.size += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        node = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            node = node_hash(left, node)
        return node

    def copy(self) -> CompactRange:
        return CompactRange(self.size, self.hashes)


def root_of(leaf_hashes: Iterable[bytes]) -> bytes:
    """Merkle Tree Hash (RFC 6962 §2.1) of the given leaf hashes, computed iteratively."""
    compact = CompactRange()
    compact.extend(leaf_hashes)
    return compact.root()


class MerkleTree:
    """An in-memory tree over leaf hashes that answers roots and proofs for any size up to its own."""

    def __init__(self, leaf_hashes: Iterable[bytes]) -> None:
        level = list(leaf_hashes)
        for leaf in level:
            if len(leaf) != HASH_SIZE:
                raise ValueError("leaf hashes must be 32 bytes")
        self._levels: list[list[bytes]] = [level]
        while len(level) > 1:
            level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            self._levels.append(level)

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def leaf(self, index: int) -> bytes:
        return self._levels[0][index]

    def _subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a subtree that occurs in the RFC 6962 decomposition of some tree."""
        chunks: list[bytes] = []
        while start < end:
            # The largest aligned perfect subtree starting at `start` that fits before `end`.
            width = start & -start if start else 1 << (end.bit_length())
            while start + width > end:
                width >>= 1
            chunks.append(self._levels[width.bit_length() - 1][start // width])
            start += width
        node = chunks[-1]
        for left in reversed(chunks[:-1]):
            node = node_hash(left, node)
        return node

    def _check_size(self, size: int | None) -> int:
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} outside 0..{self.size}")
        return size

    def root(self, size: int | None = None) -> bytes:
        size = self._check_size(size)
        return self._subtree(0, size) if size else EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[0:size]) from RFC 6962 §2.1.1, deepest sibling first."""
        size = self._check_size(size)
        if not 0 <= index < size:
            raise ValueError(f"leaf index {index} outside tree of size {size}")
        path: list[bytes] = []
        start, end = 0, size
        while end - start > 1:
            k = _largest_power_of_two_below(end - start)
            if index < start + k:
                path.append(self._subtree(start + k, end))
                end = start + k
            else:
                path.append(self._subtree(start, start + k))
                start += k
        path.reverse()
        return path

    def consistency_proof(self, old_size: int, size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[0:size]) from RFC 6962 §2.1.2; empty when the sizes are equal."""
        size = self._check_size(size)
        if not 0 < old_size <= size:
            raise ValueError(f"consistency proofs need 0 < old size <= size, got {old_size}, {size}")
        path: list[bytes] = []
        start, end, whole = 0, size, True
        while end != old_size:
            k = _largest_power_of_two_below(end - start)
            if old_size - start <= k:
                path.append(self._subtree(start + k, end))
                end = start + k
            else:
                path.append(self._subtree(start, start + k))
                start += k
                whole = False
        if not whole:
            path.append(self._subtree(start, end))
        path.reverse()
        return path


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, expected {HASH_SIZE}")


def _match(calculated: bytes, expected: bytes, what: str) -> None:
    if not hmac.compare_digest(calculated, expected):
        raise ProofError(f"calculated {what} does not match the expected one")


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2: the root implied by ``proof`` for ``leaf`` at ``index`` in a tree of ``size``."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not inside a tree of size {size}")
    _check_hash(leaf, "leaf hash")
    fn, sn, node = index, size - 1, leaf
    for i, sibling in enumerate(proof):
        _check_hash(sibling, f"proof element {i}")
        if sn == 0:
            raise ProofError("proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            node = node_hash(sibling, node)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            node = node_hash(node, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof is shorter than the tree is deep")
    return node


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Raise :class:`ProofError` unless ``proof`` shows ``leaf`` at ``index`` in the tree ``(size, root)``."""
    _match(root_from_inclusion_proof(leaf, index, size, proof), root, "root")


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """RFC 9162 §2.1.4.2: raise :class:`ProofError` unless tree ``(size1, root1)`` is a prefix of ``(size2, root2)``.

    Equal sizes need an empty proof and equal roots (the empty tree's root is fixed: SHA-256 of nothing). A proof
    from the empty tree is refused as meaningless, as transparency-dev/merkle does.
    """
    if size1 < 0 or size2 < size1:
        raise ProofError(f"old size {size1} is larger than new size {size2}")
    if size1 == size2:
        if proof:
            raise ProofError("equal sizes need an empty proof")
        if size1 == 0:
            _match(root1, EMPTY_ROOT, "empty-tree root")
        _match(root1, root2, "root")
        return
    if size1 == 0:
        raise ProofError("a consistency proof from the empty tree is meaningless")
    if not proof:
        raise ProofError("empty consistency proof for different sizes")
    _check_hash(root1, "old root")
    _check_hash(root2, "new root")
    for i, element in enumerate(proof):
        _check_hash(element, f"proof element {i}")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # exact power of two: the old root is the first node
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for element in path[1:]:
        if sn == 0:
            raise ProofError("proof is longer than needed")
        if fn & 1 or fn == sn:
            fr = node_hash(element, fr)
            sr = node_hash(element, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, element)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof is shorter than needed")
    _match(fr, root1, "old root")
    _match(sr, root2, "new root")

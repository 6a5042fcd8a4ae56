"""RFC 9162 Merkle maths: published vectors, an independent reference, attacks."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest

from credence.errors import ClaimMismatch, InvalidInput, NotFound
from credence.transparency import merkle

# --- independent reference: RFC 9162 section 2.1 written literally ----------
# Used only here. It works over the list of entries and recomputes everything
# from scratch, so it shares nothing with the incremental code but SHA-256.


def _ref_hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _ref_k(n: int) -> int:
    # "the largest power of two smaller than n (i.e., k < n <= 2k)"
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: Sequence[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return _ref_hash(b"")
    if n == 1:
        return _ref_hash(b"\x00" + d[0])
    k = _ref_k(n)
    return _ref_hash(b"\x01" + ref_mth(d[0:k]) + ref_mth(d[k:n]))


def ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = _ref_k(n)
    if m < k:
        return [*ref_path(m, d[0:k]), ref_mth(d[k:n])]
    return [*ref_path(m - k, d[k:n]), ref_mth(d[0:k])]


def ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _ref_k(n)
    if m <= k:
        return [*ref_subproof(m, d[0:k], b), ref_mth(d[k:n])]
    return [*ref_subproof(m - k, d[k:n], False), ref_mth(d[0:k])]


def ref_proof(m: int, d: Sequence[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True)


# --- fixtures ----------------------------------------------------------------

MAX_SIZE = 70
ENTRIES = [f"entry {i}".encode() * (i % 3 + 1) for i in range(MAX_SIZE)]


def _build(entries: Sequence[bytes]) -> merkle.MemorySubtrees:
    store = merkle.MemorySubtrees()
    for size, entry in enumerate(entries):
        merkle.append(store, size, merkle.leaf_hash(entry))
    return store


@pytest.fixture(scope="module")
def store() -> merkle.MemorySubtrees:
    return _build(ENTRIES)


def _flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 0x08]) + h[1:]


# --- published vectors ------------------------------------------------------
# transparency-dev/merkle testonly/constants.go (LeafInputs, RootHashes) and
# proof/verify_test.go (inclusionProofs with 1-based leaf, consistencyProofs).

CT_LEAVES = [
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
CT_ROOTS = [
    bytes.fromhex(h)
    for h in (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
# (0-based index, size, path)
CT_INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CT_CONSISTENCY = [
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


def test_empty_root_is_sha256_of_nothing() -> None:
    assert merkle.EMPTY_ROOT.hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert merkle.root(merkle.MemorySubtrees(), 0) == merkle.EMPTY_ROOT


def test_published_roots_for_every_size() -> None:
    ct = _build(CT_LEAVES)
    for size, expected in enumerate(CT_ROOTS):
        assert merkle.root(ct, size) == expected, size
        assert ref_mth(CT_LEAVES[:size]) == expected, size


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION)
def test_published_inclusion_proofs(index: int, size: int, path: list[str]) -> None:
    ct = _build(CT_LEAVES)
    proof = merkle.inclusion_proof(ct, index, size)
    assert [p.hex() for p in proof] == path
    merkle.verify_inclusion(merkle.leaf_hash(CT_LEAVES[index]), index, size, proof, CT_ROOTS[size])


@pytest.mark.parametrize(("first", "second", "path"), CT_CONSISTENCY)
def test_published_consistency_proofs(first: int, second: int, path: list[str]) -> None:
    ct = _build(CT_LEAVES)
    proof = merkle.consistency_proof(ct, first, second)
    assert [p.hex() for p in proof] == path
    merkle.verify_consistency(first, second, CT_ROOTS[first], CT_ROOTS[second], proof)


# --- the incremental code agrees with the reference, every size and pair ----


def test_append_writes_the_subtrees_it_completes() -> None:
    store = merkle.MemorySubtrees()
    leaves = [merkle.leaf_hash(e) for e in ENTRIES[:8]]
    written = [merkle.append(store, i, leaf) for i, leaf in enumerate(leaves)]
    assert [[(lv, ix) for lv, ix, _ in w] for w in written] == [
        [(0, 0)],
        [(0, 1), (1, 0)],
        [(0, 2)],
        [(0, 3), (1, 1), (2, 0)],
        [(0, 4)],
        [(0, 5), (1, 2)],
        [(0, 6)],
        [(0, 7), (1, 3), (2, 1), (3, 0)],
    ]
    assert written[7][-1][2] == ref_mth(ENTRIES[:8])
    assert len(store) == 15


def test_roots_match_reference(store: merkle.MemorySubtrees) -> None:
    for size in range(MAX_SIZE + 1):
        assert merkle.root(store, size) == ref_mth(ENTRIES[:size]), size


def test_subtree_hash_matches_reference_for_every_range(store: merkle.MemorySubtrees) -> None:
    for start in range(MAX_SIZE):
        for end in range(start + 1, MAX_SIZE + 1):
            assert merkle.subtree_hash(store, start, end) == ref_mth(ENTRIES[start:end])


def test_inclusion_proofs_match_reference_and_verify(store: merkle.MemorySubtrees) -> None:
    for size in range(1, MAX_SIZE + 1):
        root = ref_mth(ENTRIES[:size])
        for index in range(size):
            proof = merkle.inclusion_proof(store, index, size)
            assert proof == ref_path(index, ENTRIES[:size]), (index, size)
            merkle.verify_inclusion(merkle.leaf_hash(ENTRIES[index]), index, size, proof, root)


def test_consistency_proofs_match_reference_and_verify(store: merkle.MemorySubtrees) -> None:
    for second in range(MAX_SIZE + 1):
        second_root = ref_mth(ENTRIES[:second])
        for first in range(second + 1):
            proof = merkle.consistency_proof(store, first, second)
            expected = ref_proof(first, ENTRIES[:second]) if 0 < first < second else []
            assert proof == expected, (first, second)
            merkle.verify_consistency(first, second, ref_mth(ENTRIES[:first]), second_root, proof)


# --- tampering: every inclusion proof fails when anything is changed --------


def test_every_tampered_inclusion_proof_is_refused(store: merkle.MemorySubtrees) -> None:
    roots = [merkle.root(store, n) for n in range(MAX_SIZE + 1)]
    for size in (1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 32, 33, 64, 65, 70):
        root = ref_mth(ENTRIES[:size])
        for index in range(size):
            leaf = merkle.leaf_hash(ENTRIES[index])
            proof = merkle.inclusion_proof(store, index, size)
            for i in range(len(proof)):
                bad = [*proof[:i], _flip(proof[i]), *proof[i + 1 :]]
                with pytest.raises(ClaimMismatch, match="not the signed root"):
                    merkle.verify_inclusion(leaf, index, size, bad, root)
            with pytest.raises(ClaimMismatch, match="not the signed root"):
                merkle.verify_inclusion(_flip(leaf), index, size, proof, root)
            with pytest.raises(ClaimMismatch, match="not the signed root"):
                merkle.verify_inclusion(leaf, index, size, proof, _flip(root))
            with pytest.raises(ClaimMismatch):
                merkle.verify_inclusion(leaf, index, size, [*proof, root], root)
            if proof:
                with pytest.raises(ClaimMismatch):
                    merkle.verify_inclusion(leaf, index, size, proof[:-1], root)
            for other in (index - 1, index + 1, index ^ 2):
                if 0 <= other < size and other != index:
                    with pytest.raises(ClaimMismatch):
                        merkle.verify_inclusion(leaf, other, size, proof, root)
            # Halving or doubling the size changes the path's shape (as in
            # transparency-dev/merkle's probes); any other size is refused once
            # the root is that size's own (see the next test for why).
            for other_size in (size * 2, size // 2):
                if other_size > index:
                    with pytest.raises(ClaimMismatch):
                        merkle.verify_inclusion(leaf, index, other_size, proof, root)
            for other_size in range(index + 1, MAX_SIZE + 1):
                if other_size != size:
                    with pytest.raises(ClaimMismatch):
                        merkle.verify_inclusion(leaf, index, other_size, proof, roots[other_size])


def test_inclusion_takes_the_size_from_the_caller(store: merkle.MemorySubtrees) -> None:
    # MEASURED.md: leaf 0's proof in a 3-leaf tree also verifies as "leaf 0 of
    # a 4-leaf tree" against the 3-leaf root. The size shapes the path only; a
    # verifier that let the prover name size and root would accept a lie, so
    # both come from the signed tree head.
    leaf = merkle.leaf_hash(ENTRIES[0])
    proof3 = merkle.inclusion_proof(store, 0, 3)
    root3 = merkle.root(store, 3)
    merkle.verify_inclusion(leaf, 0, 3, proof3, root3)
    merkle.verify_inclusion(leaf, 0, 4, proof3, root3)
    # Not only neighbours: leaf 0's path in an 8-leaf tree fits sizes 5 to 7.
    proof8, root8 = merkle.inclusion_proof(store, 0, 8), merkle.root(store, 8)
    for size in (5, 6, 7):
        merkle.verify_inclusion(leaf, 0, size, proof8, root8)
    with pytest.raises(ClaimMismatch, match="not the signed root"):
        merkle.verify_inclusion(leaf, 0, 4, proof3, merkle.root(store, 4))


def test_inclusion_refuses_malformed_arguments() -> None:
    h = merkle.leaf_hash(b"x")
    with pytest.raises(InvalidInput, match="leaf index 0 is not in a tree of 0 leaves"):
        merkle.verify_inclusion(h, 0, 0, [], merkle.EMPTY_ROOT)
    with pytest.raises(InvalidInput, match="leaf index 3 is not in a tree of 3 leaves"):
        merkle.verify_inclusion(h, 3, 3, [], h)
    with pytest.raises(InvalidInput, match="leaf index -1"):
        merkle.verify_inclusion(h, -1, 3, [], h)
    with pytest.raises(InvalidInput, match="leaf hash must be a 32-byte"):
        merkle.verify_inclusion(b"short", 0, 1, [], h)
    with pytest.raises(InvalidInput, match="root hash must be a 32-byte"):
        merkle.verify_inclusion(h, 0, 1, [], b"")
    with pytest.raises(InvalidInput, match="inclusion proof element 1 must be a 32-byte"):
        merkle.verify_inclusion(h, 0, 4, [h, h[:31]], h)


def test_single_leaf_tree_has_an_empty_path() -> None:
    h = merkle.leaf_hash(b"only")
    merkle.verify_inclusion(h, 0, 1, [], h)
    with pytest.raises(ClaimMismatch, match="more than the tree is deep"):
        merkle.verify_inclusion(h, 0, 1, [h], h)


# --- tampering: consistency -------------------------------------------------


def test_every_tampered_consistency_proof_is_refused(store: merkle.MemorySubtrees) -> None:
    for second in (2, 3, 4, 5, 7, 8, 9, 16, 17, 33, 64, 65, 70):
        r2 = ref_mth(ENTRIES[:second])
        for first in range(1, second):
            r1 = ref_mth(ENTRIES[:first])
            proof = merkle.consistency_proof(store, first, second)
            for i in range(len(proof)):
                bad = [*proof[:i], _flip(proof[i]), *proof[i + 1 :]]
                with pytest.raises(ClaimMismatch, match="consistency proof from"):
                    merkle.verify_consistency(first, second, r1, r2, bad)
            with pytest.raises(ClaimMismatch, match="not the signed"):
                merkle.verify_consistency(first, second, _flip(r1), r2, proof)
            with pytest.raises(ClaimMismatch, match="not the signed"):
                merkle.verify_consistency(first, second, r1, _flip(r2), proof)
            with pytest.raises(ClaimMismatch):
                merkle.verify_consistency(first, second, r2, r1, proof)
            with pytest.raises(ClaimMismatch):
                merkle.verify_consistency(first, second, r1, r2, [])
            with pytest.raises(ClaimMismatch):
                merkle.verify_consistency(first, second, r1, r2, [*proof, r2])
            with pytest.raises(ClaimMismatch):
                merkle.verify_consistency(first, second, r1, r2, [r1, *proof])
            with pytest.raises(ClaimMismatch):
                merkle.verify_consistency(first, second, r1, r2, proof[:-1])
            for other in (first - 1, first + 1):
                if 0 < other < second:
                    with pytest.raises(ClaimMismatch):
                        merkle.verify_consistency(other, second, r1, r2, proof)


def test_consistency_edge_sizes(store: merkle.MemorySubtrees) -> None:
    r5 = merkle.root(store, 5)
    r6 = merkle.root(store, 6)
    merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])
    merkle.verify_consistency(0, 5, merkle.EMPTY_ROOT, r5, [])
    merkle.verify_consistency(5, 5, r5, r5, [])
    with pytest.raises(ClaimMismatch, match="root of the empty tree must be e3b0c442"):
        merkle.verify_consistency(0, 5, r5, r5, [])
    with pytest.raises(ClaimMismatch, match="from 0 to 5 leaves must be empty, got 1"):
        merkle.verify_consistency(0, 5, merkle.EMPTY_ROOT, r5, [r5])
    with pytest.raises(ClaimMismatch, match="two tree heads of 5 leaves disagree"):
        merkle.verify_consistency(5, 5, r5, r6, [])
    with pytest.raises(ClaimMismatch, match="from 5 to 5 leaves must be empty"):
        merkle.verify_consistency(5, 5, r5, r5, [r5])
    with pytest.raises(InvalidInput, match="0 <= first <= second, got 6 and 5"):
        merkle.verify_consistency(6, 5, r6, r5, [])
    with pytest.raises(InvalidInput, match="got -1 and 5"):
        merkle.verify_consistency(-1, 5, r5, r5, [])
    with pytest.raises(InvalidInput, match="first root must be a 32-byte"):
        merkle.verify_consistency(5, 6, b"", r6, [])
    with pytest.raises(InvalidInput, match="consistency proof element 0 must be a 32-byte"):
        merkle.verify_consistency(5, 6, r5, r6, [b"\x00"])


# --- proof generation refuses what it cannot prove ---------------------------


def test_generators_refuse_bad_arguments(store: merkle.MemorySubtrees) -> None:
    with pytest.raises(InvalidInput, match="leaf index 0 is not in a tree of 0 leaves"):
        merkle.inclusion_proof(store, 0, 0)
    with pytest.raises(InvalidInput, match="leaf index 5 is not in a tree of 5 leaves"):
        merkle.inclusion_proof(store, 5, 5)
    with pytest.raises(InvalidInput, match="got 6 and 5"):
        merkle.consistency_proof(store, 6, 5)
    with pytest.raises(InvalidInput, match="must be non-empty"):
        merkle.subtree_hash(store, 3, 3)
    with pytest.raises(InvalidInput, match="tree size must be >= 0, got -1"):
        merkle.root(store, -1)
    with pytest.raises(NotFound, match="no complete subtree at level 0 index 70"):
        merkle.root(store, MAX_SIZE + 1)
    with pytest.raises(NotFound, match="fewer than 71 leaves"):
        merkle.inclusion_proof(store, 0, MAX_SIZE + 1)


def test_append_refuses_bad_arguments() -> None:
    store = merkle.MemorySubtrees()
    with pytest.raises(InvalidInput, match="leaf hash must be a 32-byte SHA-256 hash, got 5"):
        merkle.append(store, 0, b"entry")
    with pytest.raises(InvalidInput, match="tree size must be >= 0"):
        merkle.append(store, -1, merkle.leaf_hash(b"x"))
    # Appending at a size the store does not hold needs a missing left sibling.
    with pytest.raises(NotFound, match="level 0 index 2"):
        merkle.append(store, 3, merkle.leaf_hash(b"x"))

"""Merkle log maths in memory: ``python -m bench.bench_merkle --leaves 1000000``.

Appends N leaf hashes to a :class:`credence.transparency.merkle.MemorySubtrees` and prints
appends per second, then the mean time of a root, an inclusion proof (plus its
verification) and a consistency proof (plus its verification) at N leaves,
over random indices and sizes. MEASURED.md's ballpark: 250-340k appends/s,
tens of microseconds per proof at 1M leaves. No SQL here: this is the cost of
the maths and the store interface alone.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time

from credence.transparency import merkle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    n: int = args.leaves
    rng = random.Random(args.seed)

    leaves = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n)]
    store = merkle.MemorySubtrees()
    started = time.perf_counter()
    for size, leaf in enumerate(leaves):
        merkle.append(store, size, leaf)
    elapsed = time.perf_counter() - started
    print(f"appends:      {n / elapsed:>12,.0f} /s  ({n:,} leaves in {elapsed:.2f} s)")

    q: int = args.queries
    started = time.perf_counter()
    for _ in range(q):
        root = merkle.root(store, n)
    print(f"root:         {(time.perf_counter() - started) / q * 1e6:>12.1f} us")

    indices = [rng.randrange(n) for _ in range(q)]
    started = time.perf_counter()
    proofs = [merkle.inclusion_proof(store, i, n) for i in indices]
    print(f"inclusion:    {(time.perf_counter() - started) / q * 1e6:>12.1f} us")
    started = time.perf_counter()
    for i, proof in zip(indices, proofs, strict=True):
        merkle.verify_inclusion(leaves[i], i, n, proof, root)
    print(f"  verify:     {(time.perf_counter() - started) / q * 1e6:>12.1f} us")

    firsts = [rng.randrange(1, n) for _ in range(q)]
    first_roots = [merkle.root(store, m) for m in firsts]
    started = time.perf_counter()
    cproofs = [merkle.consistency_proof(store, m, n) for m in firsts]
    print(f"consistency:  {(time.perf_counter() - started) / q * 1e6:>12.1f} us")
    started = time.perf_counter()
    for m, first_root, proof in zip(firsts, first_roots, cproofs, strict=True):
        merkle.verify_consistency(m, n, first_root, root, proof)
    print(f"  verify:     {(time.perf_counter() - started) / q * 1e6:>12.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())

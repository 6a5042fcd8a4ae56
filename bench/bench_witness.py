"""A checkpoint and cosignature round per k witnesses: ``python -m bench.bench_witness``.

One round is what the registry and its k witnesses compute for one published
checkpoint, with the product's own functions and no network: the registry
signs the checkpoint of a grown log and proves consistency from the size
each witness holds; each witness parses the tlog-witness add-checkpoint body,
checks the log signature and the consistency proof and cosigns
(:func:`credence.transparency.cosignature.witness_check`); the registry reads
and verifies each cosignature line, merges them into the note and checks the
manifest's quorum (:func:`credence.transparency.witness_policy.verify_cosigned`),
as every node then does once. Printed for k = 1, 4 and 8 (quorum: a
majority) as process CPU per round (this machine is shared: CPU time is the
figure to compare; wall time is printed with that caveat).

The gRPC hop (one unary call per witness, in parallel, over kept-alive mTLS
channels) is not in these figures; tests/test_witness_federation.py drives
the whole path.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from datetime import UTC, datetime, timedelta

from credence.keys import SigningKey
from credence.transparency import merkle
from credence.transparency.checkpoint import Checkpoint, sign_checkpoint
from credence.transparency.cosignature import (
    AddCheckpointRequest,
    WitnessKey,
    WitnessState,
    format_add_checkpoint,
    open_cosignature,
    parse_add_checkpoint,
    response_signatures,
    signature_line,
    witness_check,
)
from credence.transparency.log_audit import LogIdentity
from credence.transparency.note import add_signatures, parse_note
from credence.transparency.witness_policy import (
    Witness,
    WitnessPolicy,
    majority,
    verify_cosigned,
    witness_name,
)

ORIGIN = "credence/bench/log"


def _grow(store: merkle.MemorySubtrees, start: int, count: int) -> None:
    for index in range(start, start + count):
        merkle.append(store, index, merkle.leaf_hash(hashlib.sha256(index.to_bytes(8)).digest()))


def _round(
    store: merkle.MemorySubtrees,
    old: int,
    new: int,
    states: list[WitnessState],
    witnesses: list[WitnessKey],
    log_key: SigningKey,
    policy: WitnessPolicy,
    now: datetime,
) -> list[WitnessState]:
    log = LogIdentity(ORIGIN, log_key.public.raw())
    note = sign_checkpoint(Checkpoint(ORIGIN, new, merkle.root(store, new)), log_key)
    proof = tuple(merkle.consistency_proof(store, old, new))
    text = parse_note(note).text
    lines = []
    next_states = []
    for state, witness in zip(states, witnesses, strict=True):
        body = format_add_checkpoint(AddCheckpointRequest(old, proof, note))
        # The witness's side.
        new_state, line = witness_check(
            state, parse_add_checkpoint(body), log=log, witness=witness, now=now
        )
        next_states.append(new_state)
        # The registry's side: read and check the response.
        (received,) = response_signatures(note, signature_line(line))
        open_cosignature(text, received, witness.name, witness.key.public.raw())
        lines.append(received)
    verify_cosigned(add_signatures(note, lines), policy, now=now)
    return next_states


def measure(k: int, size: int, growth: int, rounds: int) -> tuple[float, float]:
    """(CPU ms, wall ms) per round for ``k`` witnesses, the log growing ``growth`` a round."""
    log_key = SigningKey.generate()
    witnesses = [
        WitnessKey(witness_name("bench", f"w{i}"), SigningKey.generate()) for i in range(k)
    ]
    policy = WitnessPolicy(
        origin=ORIGIN,
        log_public_key=log_key.public.raw(),
        witnesses=tuple(Witness(w.name, w.key.public.raw()) for w in witnesses),
        threshold=majority(k),
    )
    store = merkle.MemorySubtrees()
    _grow(store, 0, size + growth * rounds)
    now = datetime.now(UTC)
    states = [WitnessState(ORIGIN, size, merkle.root(store, size))] * k
    cpu = time.process_time()
    wall = time.perf_counter()
    old = size
    for number in range(rounds):
        new = old + growth
        states = _round(
            store, old, new, states, witnesses, log_key, policy, now + timedelta(seconds=number)
        )
        old = new
    return (
        (time.process_time() - cpu) * 1000 / rounds,
        (time.perf_counter() - wall) * 1000 / rounds,
    )


def main() -> None:
    """Print the figure for k = 1, 4, 8."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=100_000, help="log size at the first round")
    parser.add_argument("--growth", type=int, default=500, help="entries added per round")
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    print(
        f"checkpoint + cosignature round, log of {args.size:,} entries growing "
        f"{args.growth} per round, {args.rounds} rounds (no network)"
    )
    for k in (1, 4, 8):
        cpu_ms, wall_ms = measure(k, args.size, args.growth, args.rounds)
        print(
            f"  k={k} witnesses (quorum {majority(k)}): {cpu_ms:.2f} ms CPU per round "
            f"({cpu_ms / k:.2f} ms per witness); wall {wall_ms:.2f} ms (shared machine)"
        )


if __name__ == "__main__":
    main()

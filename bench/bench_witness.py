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

With ``--grpc`` the same rounds also run over the wire: k node witnesses
(the product's ``NodeWitness`` behind its ``WitnessService``, each with its own
SQLite database, on loopback mTLS with certificates from an offline
federation) asked in parallel per round as the registry asks them, every
witness's state written per round; that figure is the process CPU of both
sides per round (witness servers in the same process).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import grpc.aio

from agency_node import database as node_database
from agency_node.manifest_holder import ManifestHolder
from agency_node.witness import NodeWitness
from agency_node.witness_service import WitnessServicer
from credence.clock import utc_now
from credence.dev.offline_federation import REGISTRY_ID, Federation
from credence.keys import KeySet, SigningKey
from credence.manifest import verify_manifest
from credence.rpc.tls import channel_credentials, server_credentials
from credence.storage import sqlite_url
from credence.transparency import merkle
from credence.transparency.checkpoint import Checkpoint, log_origin, sign_checkpoint
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
from credence.v1 import witness_pb2, witness_pb2_grpc

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


async def _grpc_rounds(k: int, size: int, growth: int, rounds: int, root: Path) -> float:
    """CPU ms per round for ``k`` witnesses over loopback mTLS (both sides in this process)."""
    federation = Federation.create()
    witnesses = [federation.add_agency(f"w{i}", ["court_judgment"]) for i in range(k)]
    manifest = verify_manifest(
        federation.manifest_envelope(),
        trusted_root=KeySet([federation.root_key.public]),
        threshold=1,
        now=datetime.now(UTC),
    )
    holder = ManifestHolder(manifest, root / "manifest.bin")
    ca_pem = federation.ca.certificate_pem
    registry = federation.members[REGISTRY_ID]
    pool = ThreadPoolExecutor(max_workers=8)
    keys, servers, stubs, engines = [], [], [], []
    for index, member in enumerate(witnesses):
        engine = node_database.create_engine_for(sqlite_url(root / f"w{index}.db"))
        node_database.upgrade_schema(engine)
        key = WitnessKey(
            witness_name(manifest.federation_id, member.member_id), SigningKey.generate()
        )
        witness = NodeWitness(
            member_id=member.member_id, key=key.key, engine=engine, manifests=holder, clock=utc_now
        )
        server = grpc.aio.server()
        witness_pb2_grpc.add_WitnessServiceServicer_to_server(
            WitnessServicer(witness, pool), server
        )
        port = server.add_secure_port(
            "127.0.0.1:0", server_credentials(member.tls_key_pem, member.cert_pem, ca_pem)
        )
        await server.start()
        channel = grpc.aio.secure_channel(
            f"127.0.0.1:{port}",
            channel_credentials(registry.tls_key_pem, registry.cert_pem, ca_pem),
        )
        keys.append(key)
        servers.append((server, channel))
        stubs.append(witness_pb2_grpc.WitnessServiceStub(channel))
        engines.append(engine)
    origin = log_origin(manifest.federation_id)
    log_key = federation.registry_key
    policy = WitnessPolicy(
        origin=origin,
        log_public_key=log_key.public.raw(),
        witnesses=tuple(Witness(w.name, w.key.public.raw()) for w in keys),
        threshold=majority(k),
    )
    store = merkle.MemorySubtrees()
    _grow(store, 0, size + growth * rounds)

    async def one_round(old: int, new: int) -> None:
        note = sign_checkpoint(Checkpoint(origin, new, merkle.root(store, new)), log_key)
        proof = tuple(merkle.consistency_proof(store, old, new)) if old else ()
        body = format_add_checkpoint(AddCheckpointRequest(old, proof, note))
        replies = await asyncio.gather(
            *(stub.AddCheckpoint(witness_pb2.AddCheckpointRequest(body=body), timeout=30)
              for stub in stubs)
        )  # fmt: skip
        text = parse_note(note).text
        lines = []
        for key, reply in zip(keys, replies, strict=True):
            (line,) = response_signatures(note, bytes(reply.cosignatures))
            open_cosignature(text, line, key.name, key.key.public.raw())
            lines.append(line)
        verify_cosigned(add_signatures(note, lines), policy, now=datetime.now(UTC))

    try:
        await one_round(0, size)  # untimed: every witness's first checkpoint
        cpu = time.process_time()
        old = size
        for _ in range(rounds):
            await one_round(old, old + growth)
            old += growth
        return (time.process_time() - cpu) * 1000 / rounds
    finally:
        for server, channel in servers:
            await channel.close()
            await server.stop(0)
        pool.shutdown(wait=True)
        for engine in engines:
            engine.dispose()


def main() -> None:
    """Print the figure for k = 1, 4, 8."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=100_000, help="log size at the first round")
    parser.add_argument("--growth", type=int, default=500, help="entries added per round")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--grpc", action="store_true", help="also over loopback mTLS")
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
    if args.grpc:
        print("the same rounds over loopback mTLS (k node witnesses, each state in SQLite)")
        for k in (1, 4, 8):
            with tempfile.TemporaryDirectory() as directory:
                cpu_ms = asyncio.run(
                    _grpc_rounds(k, args.size, args.growth, args.rounds, Path(directory))
                )
            print(
                f"  k={k} witnesses (quorum {majority(k)}): {cpu_ms:.2f} ms CPU per round, "
                "both sides"
            )


if __name__ == "__main__":
    main()

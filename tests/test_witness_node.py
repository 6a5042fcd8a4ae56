"""The node's witness on SQLite and PostgreSQL: what it keeps, and that refusals change nothing.

The registry side is played with the offline federation's registry key; the
witness is the product's ``NodeWitness`` over the node's own database.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from support.fixtures import Schema

from agency_node import database
from agency_node.manifest_holder import ManifestHolder
from agency_node.models import WitnessedCheckpoint
from agency_node.witness import NodeWitness
from credence.dev.offline_federation import Federation
from credence.errors import CredenceError, InvalidInput, NotFound, PermissionDenied
from credence.keys import KeySet, SigningKey
from credence.manifest import verify_manifest
from credence.transparency import merkle
from credence.transparency.checkpoint import Checkpoint, log_origin, sign_checkpoint
from credence.transparency.cosignature import (
    AddCheckpointRequest,
    BadConsistencyProof,
    SizeConflict,
    format_add_checkpoint,
    open_cosignature,
    response_signatures,
)
from credence.transparency.note import parse_note
from credence.transparency.witness_policy import witness_name


@pytest.fixture
def schema() -> Schema:
    return database


def _tree(size: int, salt: bytes = b"") -> merkle.MemorySubtrees:
    store = merkle.MemorySubtrees()
    for index in range(size):
        merkle.append(store, index, merkle.leaf_hash(salt + index.to_bytes(32 - len(salt))))
    return store


class Bed:
    def __init__(self, engine: Engine, root: Path) -> None:
        self.federation = Federation.create()
        manifest = verify_manifest(
            self.federation.manifest_envelope(),
            trusted_root=KeySet([self.federation.root_key.public]),
            threshold=1,
            now=datetime.now(UTC),
        )
        self.origin = log_origin(manifest.federation_id)
        self.key = SigningKey.generate()
        self.name = witness_name(manifest.federation_id, "court")
        self.engine = engine
        self.witness = NodeWitness(
            member_id="court",
            key=self.key,
            engine=engine,
            manifests=ManifestHolder(manifest, root / "manifest.bin"),
            clock=lambda: datetime.now(UTC),
        )

    def note(self, store: merkle.MemorySubtrees, size: int, key: SigningKey | None = None) -> bytes:
        log_key = key or self.federation.registry_key
        return sign_checkpoint(Checkpoint(self.origin, size, merkle.root(store, size)), log_key)

    def add(self, store: merkle.MemorySubtrees, old: int, new: int, **kw: object) -> bytes:
        proof = tuple(merkle.consistency_proof(store, old, new)) if 0 < old < new else ()
        note = kw.get("note") or self.note(store, new)
        assert isinstance(note, bytes)
        return self.witness.add_checkpoint(
            format_add_checkpoint(AddCheckpointRequest(old, proof, note))
        )

    def held(self) -> tuple[int, bytes, bytes] | None:
        with Session(self.engine) as session:
            row = session.get(WitnessedCheckpoint, self.origin)
            return None if row is None else (row.tree_size, row.root, row.note)


@pytest.fixture
def bed(engine: Engine, tmp_path: Path) -> Bed:
    return Bed(engine, tmp_path)


def test_the_witness_keeps_what_it_cosigned_and_grows_only_by_proof(bed: Bed) -> None:
    store = _tree(40)
    body = bed.add(store, 0, 10)
    note = bed.note(store, 10)
    (line,) = response_signatures(note, body)
    open_cosignature(parse_note(note).text, line, bed.name, bed.key.public.raw())
    assert bed.held() == (10, merkle.root(store, 10), note)
    bed.add(store, 10, 40)
    assert bed.held() == (40, merkle.root(store, 40), bed.note(store, 40))
    assert bed.witness.state(bed.origin) is not None


def test_every_refusal_leaves_the_witness_as_it_was(bed: Bed) -> None:
    store = _tree(20)
    bed.add(store, 0, 20)
    before = bed.held()
    forked = _tree(24, salt=b"x")
    attempts: list[tuple[type[CredenceError], str, AddCheckpointRequest]] = [
        # A stale old size: told the witness's size.
        (SizeConflict, "last cosigned size 20", AddCheckpointRequest(10, (), bed.note(store, 20))),
        # A split view: same size, another root.
        (SizeConflict, "split view", AddCheckpointRequest(20, (), bed.note(_tree(20, b"y"), 20))),
        # A fork that grew: its own proof leads elsewhere.
        (
            BadConsistencyProof,
            "does not extend",
            AddCheckpointRequest(
                20, tuple(merkle.consistency_proof(forked, 20, 24)), bed.note(forked, 24)
            ),
        ),
        # Not the log key.
        (
            PermissionDenied,
            "not signed by the log key",
            AddCheckpointRequest(20, (), bed.note(store, 20, SigningKey.generate())),
        ),
        # Another log.
        (
            NotFound,
            "follows the log",
            AddCheckpointRequest(
                20,
                (),
                sign_checkpoint(
                    Checkpoint("credence/other/log", 20, merkle.root(store, 20)),
                    bed.federation.registry_key,
                ),
            ),
        ),
    ]
    for error, words, request in attempts:
        with pytest.raises(error, match=words):
            bed.witness.add_checkpoint(format_add_checkpoint(request))
        assert bed.held() == before
    with pytest.raises(InvalidInput):
        bed.witness.add_checkpoint(b"old 20\nnot a proof line\n\n")
    assert bed.held() == before


def test_concurrent_requests_never_roll_the_witness_back(bed: Bed) -> None:
    store = _tree(64)
    bed.add(store, 0, 8)
    outcomes: list[str] = []

    def offer(new: int) -> None:
        try:
            bed.add(store, 8, new)
            outcomes.append(f"cosigned {new}")
        except CredenceError as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=offer, args=(size,)) for size in (16, 32, 48, 64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    held = bed.held()
    assert held is not None
    # Exactly one growth from 8 won; the others found the witness moved on.
    cosigned = [o for o in outcomes if o.startswith("cosigned")]
    assert len(cosigned) == 1
    assert held[0] == int(cosigned[0].split()[1])
    assert sorted(o for o in outcomes if not o.startswith("cosigned")) == ["SizeConflict"] * 3

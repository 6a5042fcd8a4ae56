"""The pure witness: cosignature/v1 bytes, add-checkpoint bodies, the decision, k-of-n.

Known answers are rebuilt from the C2SP texts with nothing but hashlib and
pyca/cryptography; refusals are written from the side of a log that tries to
get a cosignature it should not, and show the witness's state did not move.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from credence import errors
from credence.keys import SigningKey
from credence.transparency import merkle
from credence.transparency.checkpoint import Checkpoint, format_checkpoint, sign_checkpoint
from credence.transparency.cosignature import (
    MAX_PROOF_LINES,
    AddCheckpointRequest,
    BadConsistencyProof,
    LogSignatureRefused,
    SizeConflict,
    UnknownLog,
    WitnessKey,
    WitnessState,
    cosign,
    cosignature_message,
    format_add_checkpoint,
    open_cosignature,
    parse_add_checkpoint,
    response_signatures,
    signature_line,
    witness_check,
)
from credence.transparency.log_audit import LogIdentity
from credence.transparency.note import add_signatures
from credence.transparency.witness_policy import (
    QuorumNotMet,
    Witness,
    WitnessPolicy,
    format_policy,
    majority,
    parse_policy,
    verify_cosigned,
)

NOW = datetime(2026, 12, 2, 1, 30, tzinfo=UTC)
ORIGIN = "credence/test-fed/log"
# RFC 8032 test 1's secret key, as a fixed witness key.
SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
LOG_KEY = SigningKey.from_seed(bytes(range(32)))
LOG = LogIdentity(origin=ORIGIN, public_key=LOG_KEY.public.raw())


def _witness(name: str = "credence/test-fed/witness/agency-a", seed: bytes = SEED) -> WitnessKey:
    return WitnessKey(name=name, key=SigningKey.from_seed(seed))


def _tree(size: int) -> merkle.MemorySubtrees:
    store = merkle.MemorySubtrees()
    for index in range(size):
        merkle.append(store, index, merkle.leaf_hash(index.to_bytes(32, "big")))
    return store


def _checkpoint(store: merkle.MemorySubtrees, size: int, key: SigningKey = LOG_KEY) -> bytes:
    return sign_checkpoint(Checkpoint(ORIGIN, size, merkle.root(store, size)), key)


def _request(store: merkle.MemorySubtrees, old: int, new: int) -> AddCheckpointRequest:
    proof = merkle.consistency_proof(store, old, new) if old else []
    return AddCheckpointRequest(
        old_size=old, proof=tuple(proof), checkpoint_note=_checkpoint(store, new)
    )


# --- known answers ------------------------------------------------------------


def test_cosignature_signs_the_exact_c2sp_message_with_a_type_4_key_id() -> None:
    witness = _witness()
    text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    line = cosign(text, witness, NOW)

    public = witness.key.public.raw()
    expected_id = hashlib.sha256(witness.name.encode() + b"\n\x04" + public).digest()[:4]
    assert line.key_id == expected_id
    timestamp = int(NOW.timestamp())
    assert line.signature[:8] == timestamp.to_bytes(8, "big")
    message = (
        b"cosignature/v1\ntime 1796175000\nexample.com/behind-the-sofa\n20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )
    assert timestamp == 1796175000
    assert cosignature_message(text, timestamp) == message
    # Verified by pyca alone over the bytes the spec writes out.
    Ed25519PublicKey.from_public_bytes(public).verify(line.signature[8:], message)
    encoded = base64.b64encode(expected_id + line.signature).decode()
    assert signature_line(line) == f"\u2014 {witness.name} {encoded}\n".encode()
    assert len(line.signature) == 72
    assert open_cosignature(text, line, witness.name, public) == NOW


def test_add_checkpoint_body_round_trips_in_the_spec_layout() -> None:
    store = _tree(7)
    request = _request(store, 3, 7)
    body = format_add_checkpoint(request)
    head, _, note = body.partition(b"\n\n")
    lines = head.split(b"\n")
    assert lines[0] == b"old 3"
    assert [base64.b64decode(line) for line in lines[1:]] == list(request.proof)
    assert note == request.checkpoint_note
    assert parse_add_checkpoint(body) == request


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"old 03\n\nx", "leading zeros"),
        (b"old -1\n\nx", "leading zeros"),
        (b"new 3\n\nx", "must start with 'old"),
        (b"old 3\nnot base64!\n\nx", "base64"),
        (b"old 3\n" + base64.b64encode(b"short") + b"\n\nx", "32-byte"),
        (b"old 3\n" + b"".join([base64.b64encode(bytes(32)) + b"\n"] * 64) + b"\nx", "63"),
        (b"old 3\nno blank line", "blank line"),
    ],
)
def test_malformed_add_checkpoint_bodies_are_refused_saying_what(body: bytes, words: str) -> None:
    with pytest.raises(errors.InvalidInput, match=words):
        parse_add_checkpoint(body)


def test_an_oversized_body_is_refused_before_it_is_read() -> None:
    with pytest.raises(errors.MessageTooLarge):
        parse_add_checkpoint(b"old 0\n\n" + b"x" * 40_000)
    assert MAX_PROOF_LINES == 63


# --- the witness's decision ---------------------------------------------------


def test_a_witness_cosigns_a_first_checkpoint_then_only_consistent_growth() -> None:
    store = _tree(20)
    witness = _witness()
    state, line = witness_check(None, _request(store, 0, 5), log=LOG, witness=witness, now=NOW)
    assert (state.size, state.root_hash) == (5, merkle.root(store, 5))
    text = format_checkpoint(Checkpoint(ORIGIN, 5, merkle.root(store, 5)))
    assert open_cosignature(text, line, witness.name, witness.key.public.raw()) == NOW

    later = NOW + timedelta(seconds=10)
    state, line = witness_check(state, _request(store, 5, 20), log=LOG, witness=witness, now=later)
    assert state.size == 20
    # The same checkpoint again gets a fresh timestamp: it is still the newest seen.
    again, line = witness_check(
        state, _request(store, 20, 20), log=LOG, witness=witness, now=later + timedelta(seconds=1)
    )
    assert again == state
    assert int.from_bytes(line.signature[:8], "big") == int(later.timestamp()) + 1


def test_a_stale_old_size_gets_a_conflict_with_the_witness_size() -> None:
    store = _tree(9)
    state = WitnessState(ORIGIN, 6, merkle.root(store, 6))
    with pytest.raises(SizeConflict, match="last cosigned size 6") as caught:
        witness_check(state, _request(store, 4, 9), log=LOG, witness=_witness(), now=NOW)
    assert caught.value.size == 6
    assert isinstance(caught.value, errors.FailedPrecondition)


def test_a_split_view_of_the_same_size_is_refused_naming_the_inconsistency() -> None:
    honest, forked = _tree(8), merkle.MemorySubtrees()
    for index in range(8):
        merkle.append(forked, index, merkle.leaf_hash(bytes([index + 1]) * 32))
    state = WitnessState(ORIGIN, 8, merkle.root(honest, 8))
    request = AddCheckpointRequest(8, (), _checkpoint(forked, 8))
    with pytest.raises(SizeConflict, match=r"inconsistent checkpoint.*split view"):
        witness_check(state, request, log=LOG, witness=_witness(), now=NOW)


def test_a_fork_that_grew_is_refused_as_a_bad_consistency_proof() -> None:
    honest, forked = _tree(8), merkle.MemorySubtrees()
    for index in range(12):
        merkle.append(forked, index, merkle.leaf_hash(bytes([index + 1]) * 32))
    state = WitnessState(ORIGIN, 8, merkle.root(honest, 8))
    # The best the log can send: forked's own proof, which leads to forked's old root.
    request = AddCheckpointRequest(
        8, tuple(merkle.consistency_proof(forked, 8, 12)), _checkpoint(forked, 12)
    )
    with pytest.raises(BadConsistencyProof, match=r"inconsistent checkpoint.*does not extend"):
        witness_check(state, request, log=LOG, witness=_witness(), now=NOW)
    # 422 maps to INVALID_ARGUMENT through InvalidInput.
    assert issubclass(BadConsistencyProof, errors.InvalidInput)


def test_a_proof_from_size_zero_must_be_empty() -> None:
    store = _tree(4)
    request = AddCheckpointRequest(0, (bytes(32),), _checkpoint(store, 4))
    with pytest.raises(BadConsistencyProof, match="must be empty"):
        witness_check(None, request, log=LOG, witness=_witness(), now=NOW)


def test_a_checkpoint_not_signed_by_the_log_key_is_forbidden() -> None:
    store = _tree(4)
    impostor = SigningKey.from_seed(bytes(32))
    request = AddCheckpointRequest(0, (), _checkpoint(store, 4, impostor))
    with pytest.raises(LogSignatureRefused, match="not signed by the log key"):
        witness_check(None, request, log=LOG, witness=_witness(), now=NOW)
    assert issubclass(LogSignatureRefused, errors.PermissionDenied)


def test_another_logs_checkpoint_is_an_unknown_origin() -> None:
    store = _tree(4)
    other = sign_checkpoint(Checkpoint("credence/other/log", 4, merkle.root(store, 4)), LOG_KEY)
    with pytest.raises(UnknownLog, match="follows the log 'credence/test-fed/log'"):
        witness_check(
            None, AddCheckpointRequest(0, (), other), log=LOG, witness=_witness(), now=NOW
        )


def test_an_old_size_above_the_checkpoint_is_a_bad_request() -> None:
    store = _tree(4)
    state = WitnessState(ORIGIN, 6, merkle.root(_tree(6), 6))
    with pytest.raises(errors.InvalidInput, match="above the checkpoint's size"):
        witness_check(
            state,
            AddCheckpointRequest(6, (), _checkpoint(store, 4)),
            log=LOG,
            witness=_witness(),
            now=NOW,
        )


def test_response_lines_are_read_as_the_note_they_extend() -> None:
    store = _tree(3)
    note = _checkpoint(store, 3)
    _, line = witness_check(None, _request(store, 0, 3), log=LOG, witness=_witness(), now=NOW)
    assert response_signatures(note, signature_line(line)) == (line,)
    with pytest.raises(errors.InvalidInput):
        response_signatures(note, b"not a signature line\n")


# --- k of n -------------------------------------------------------------------


def _witnesses(count: int) -> list[WitnessKey]:
    return [
        _witness(f"credence/test-fed/witness/w{i}", hashlib.sha256(bytes([i])).digest())
        for i in range(count)
    ]


def _policy(keys: list[WitnessKey], threshold: int) -> WitnessPolicy:
    return WitnessPolicy(
        origin=ORIGIN,
        log_public_key=LOG_KEY.public.raw(),
        witnesses=tuple(Witness(k.name, k.key.public.raw()) for k in keys),
        threshold=threshold,
    )


def _cosigned(store: merkle.MemorySubtrees, size: int, signers: list[WitnessKey]) -> bytes:
    note = _checkpoint(store, size)
    text = format_checkpoint(Checkpoint(ORIGIN, size, merkle.root(store, size)))
    lines = [
        cosign(text, key, NOW - timedelta(seconds=position)) for position, key in enumerate(signers)
    ]
    return add_signatures(note, lines)


@pytest.mark.parametrize(
    ("signed", "threshold", "ok"),
    [([0, 1], 2, True), ([0], 2, False), ([0, 1, 2], 2, True), ([], 0, True), ([2], 1, True)],
)
def test_quorum_is_k_distinct_listed_witnesses(signed: list[int], threshold: int, ok: bool) -> None:
    keys = _witnesses(3)
    store = _tree(5)
    data = _cosigned(store, 5, [keys[i] for i in signed])
    policy = _policy(keys, threshold)
    if ok:
        cosigned = verify_cosigned(data, policy, now=NOW)
        assert cosigned.checkpoint.size == 5
        assert len(cosigned.cosigners) == len(signed)
        expected = NOW - timedelta(seconds=threshold - 1) if threshold else None
        assert cosigned.cosigned_at == expected
    else:
        with pytest.raises(QuorumNotMet, match=r"cosigned by 1 of the 3 witnesses.*requires 2"):
            verify_cosigned(data, policy, now=NOW)


def test_an_attacker_cannot_reach_quorum_with_repeats_strangers_or_forged_lines() -> None:
    keys = _witnesses(3)
    store = _tree(5)
    stranger = _witness("credence/test-fed/witness/w0", hashlib.sha256(b"x").digest())
    note = _cosigned(store, 5, [keys[0]])
    text = format_checkpoint(Checkpoint(ORIGIN, 5, merkle.root(store, 5)))
    # Same witness twice (another timestamp), a stranger under a listed name,
    # a listed witness's line over another checkpoint, a future-dated one.
    other_text = format_checkpoint(Checkpoint(ORIGIN, 4, merkle.root(store, 4)))
    extra = [
        cosign(text, keys[0], NOW - timedelta(seconds=30)),
        cosign(text, stranger, NOW),
        cosign(other_text, keys[1], NOW),
        cosign(text, keys[2], NOW + timedelta(hours=1)),
    ]
    with pytest.raises(QuorumNotMet, match="cosigned by 1 of the 3"):
        verify_cosigned(add_signatures(note, extra), _policy(keys, 2), now=NOW)


def test_the_log_signature_is_needed_whatever_the_cosignatures() -> None:
    keys = _witnesses(1)
    store = _tree(2)
    text = format_checkpoint(Checkpoint(ORIGIN, 2, merkle.root(store, 2)))
    forged = sign_checkpoint(Checkpoint(ORIGIN, 2, merkle.root(store, 2)), keys[0].key)
    data = add_signatures(forged, [cosign(text, keys[0], NOW)])
    with pytest.raises(errors.BadSignature):
        verify_cosigned(data, _policy(keys, 1), now=NOW)


def test_policy_file_round_trips_and_refuses_bad_quorums() -> None:
    keys = _witnesses(3)
    policy = _policy(keys, 2)
    text = format_policy(policy)
    assert text.startswith(f"log {ORIGIN}+")
    assert "group quorum 2 w1 w2 w3\nquorum quorum\n" in text
    assert parse_policy(text) == policy
    assert parse_policy(format_policy(_policy(keys, 0))).threshold == 0
    assert [majority(n) for n in (0, 1, 4, 5)] == [0, 1, 3, 3]
    with pytest.raises(errors.InvalidInput, match="between 0 and the 3"):
        _policy(keys, 4)
    with pytest.raises(errors.InvalidInput, match="not witnesses defined above"):
        parse_policy(text.replace("w1 w2 w3", "w1 w2 w9"))
    with pytest.raises(errors.InvalidInput, match="no quorum line"):
        parse_policy(text.replace("quorum quorum\n", ""))
    with pytest.raises(errors.InvalidInput, match="key id"):
        parse_policy(text.replace(keys[0].key_id.hex(), "00000000", 1))

"""Write the test vectors of docs/protocol.md to docs/protocol-vectors.json.

Deterministic: fixed key seeds, salts, ids and times, and Ed25519 signatures
are deterministic, so running it again gives the same file byte for byte
(tests/test_protocol_doc.py checks that, and that the vectors verify).

    .venv/bin/python scripts/protocol_vectors.py [--out PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from google.protobuf import json_format

from credence import payloads
from credence.blind import layout as blind_layout
from credence.blind import masks as blind_masks
from credence.blind import recovery as blind_recovery
from credence.blind import sums as blind_sums
from credence.encoding import b64url_encode
from credence.envelope import pae
from credence.grants.binding import issue_binding
from credence.grants.consent import (
    ConsentTerms,
    PurposePolicy,
    countersign_consent,
    sign_consent_request,
)
from credence.keys import KeySet, SigningKey
from credence.scorecard import Aggregator, default_scorecard
from credence.subjects import SUBJECT_REF_DOMAIN, PseudonymisationKey, normalise, subject_ref
from credence.transparency import merkle, tiles
from credence.transparency.checkpoint import Checkpoint, log_origin, sign_checkpoint
from credence.transparency.log_promise import LogEntry, make_promise, sign_promise
from credence.transparency.note import ED25519_TYPE, key_id, vkey
from credence.v1 import agency_pb2, common_pb2, registry_pb2
from credence.verdicts import sign_verdict, verdict_claims, verdict_file, verdict_jws

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "protocol-vectors.json"

NOW = datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC)
REGISTRY_ID = "registry"
REQUESTER = "acme"
IDENTITY_MEMBER = "idp"
AGENCY = "court-1"
#: (what it shows, identifier as typed).
SUBJECT_INPUTS = (
    ("separators are removed and the value upper-cased", "nin: p-123 456.7"),
    (
        "full-width forms become ASCII (NFKC)",
        "".join(chr(ord(c) + 0xFEE0) for c in "reg:cn:abc123"),
    ),
    ("an organisation under a checked scheme", "cn-uscc:91350100M000100Y43"),
)
PERSON_INPUT = SUBJECT_INPUTS[0][1]
#: The log's leaves in the inclusion vector; the verdict's lookup is this one.
LEAF_COUNT = 5
LEAF_INDEX = 2
FEDERATION_ID = "vectors"


def _seed(label: str) -> bytes:
    return hashlib.sha256(f"credence protocol vectors: {label}".encode()).digest()


def _key(label: str) -> SigningKey:
    return SigningKey.from_seed(_seed(label))


def _key_vector(key: SigningKey, label: str) -> dict[str, Any]:
    return {"seed": _seed(label).hex(), "kid": key.kid, "jwk": key.public.to_jwk()}


def _subjects(pseudonymisation: PseudonymisationKey) -> list[dict[str, Any]]:
    vectors = []
    for note, typed in SUBJECT_INPUTS:
        normalised = normalise(typed)
        canonical = f"{normalised.scheme}:{normalised.value}"
        ref = subject_ref(pseudonymisation, normalised)
        vectors.append(
            {
                "note": note,
                "input": typed,
                "canonical": canonical,
                "subject_type": normalised.subject_type.name.lower(),
                "mac_input_hex": (SUBJECT_REF_DOMAIN + canonical.encode()).hex(),
                "ref_hex": ref.ref.hex(),
            }
        )
    return vectors


def _consent_chain(
    subject_hex: str, registry: SigningKey, identity: SigningKey, personal: SigningKey
) -> dict[str, Any]:
    binding = issue_binding(
        subject_ref_hex=subject_hex,
        subject_key=personal.public,
        member_id=IDENTITY_MEMBER,
        member_key=identity,
        now=NOW,
        validity=timedelta(days=365),
        jti="binding-0001",
    )
    terms = ConsentTerms(
        subject_ref=subject_hex,
        requester=REQUESTER,
        purpose="credit_assessment",
        scope=("blacklist", "credit"),
        not_before=NOW,
        expires_at=NOW + timedelta(days=30),
        max_uses=3,
        data_life=timedelta(days=30),
    )
    request = sign_consent_request(terms, personal, NOW, jti="request-0001")
    policy = {"credit_assessment": PurposePolicy(timedelta(days=90), 10, timedelta(days=90))}
    consent = countersign_consent(
        request,
        binding,
        registry_key=registry,
        registry_id=REGISTRY_ID,
        identity_keys=KeySet([identity.public]),
        now=NOW,
        policy=policy,
        jti="grant-0001",
        status_index=7,
    )
    return {
        "now": int(NOW.timestamp()),
        "policy": {"purpose": "credit_assessment", "max_validity_days": 90, "max_uses": 10},
        "binding": binding,
        "request": request,
        "consent": consent,
    }


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(8, "big") + data


def commitment_input(salt: bytes, entry: LogEntry) -> bytes:
    """The bytes whose SHA-256 is the entry commitment, built from the document's rule.

    Written here from docs/protocol.md, not taken from the library, so that the
    test comparing its hash with the library's commitment checks the document.
    """
    fields = (
        entry.query_id,
        entry.requester,
        str(entry.subject_type),
        entry.subject_ref,
        str(entry.purpose),
        ",".join(str(kind) for kind in sorted(entry.kinds)),
        entry.grant_id,
        str(int(entry.issued_at.timestamp())),
        entry.outcome,
    )
    encoded = (f if isinstance(f, bytes) else f.encode() for f in fields)
    return b"credence-log-entry-v1\x00" + salt + b"".join(_field(f) for f in encoded)


def _log(subject: bytes, log_key: SigningKey) -> tuple[dict[str, Any], common_pb2.Envelope]:
    entries = []
    leaves = []
    store = merkle.MemorySubtrees()
    for index in range(LEAF_COUNT):
        entry = LogEntry(
            query_id=f"query-{index:04d}",
            requester=REQUESTER,
            subject_type=common_pb2.SUBJECT_TYPE_PERSON,
            subject_ref=subject if index == LEAF_INDEX else hashlib.sha256(bytes([index])).digest(),
            purpose=common_pb2.PURPOSE_CREDIT_ASSESSMENT,
            kinds=(common_pb2.VERDICT_KIND_CREDIT, common_pb2.VERDICT_KIND_BLACKLIST),
            grant_id="grant-0001",
            issued_at=NOW + timedelta(seconds=index),
        )
        salt = hashlib.sha256(f"salt {index}".encode()).digest()[:16]
        promise = make_promise(
            entry,
            salt,
            log_id=log_key.kid,
            promised_at=entry.issued_at,
            max_merge_delay=timedelta(seconds=60),
        )
        leaf = merkle.leaf_hash(promise.entry_commitment)
        merkle.append(store, index, leaf)
        entries.append((entry, salt, promise))
        leaves.append(leaf)
    entry, salt, promise = entries[LEAF_INDEX]
    envelope = sign_promise(promise, log_key)
    origin = log_origin(FEDERATION_ID)
    root = merkle.root(store, LEAF_COUNT)
    note = sign_checkpoint(Checkpoint(origin, LEAF_COUNT, root), log_key)
    vector = {
        "entry": {
            "query_id": entry.query_id,
            "requester": entry.requester,
            "subject_type": entry.subject_type,
            "subject_ref_hex": entry.subject_ref.hex(),
            "purpose": entry.purpose,
            "kinds": list(entry.kinds),
            "grant_id": entry.grant_id,
            "issued_at": int(entry.issued_at.timestamp()),
            "outcome": entry.outcome,
        },
        "salt_hex": salt.hex(),
        "commitment_input_hex": commitment_input(salt, entry).hex(),
        "commitment_hex": promise.entry_commitment.hex(),
        "leaf_hash_hex": leaves[LEAF_INDEX].hex(),
        "log_promise_envelope": json.loads(envelope.to_json()),
        "log_promise_payload_sha256_b64url": b64url_encode(
            hashlib.sha256(envelope.payload).digest()
        ),
        "tree": {
            "size": LEAF_COUNT,
            "leaf_hashes_hex": [leaf.hex() for leaf in leaves],
            "root_hex": merkle.root(store, LEAF_COUNT).hex(),
        },
        "inclusion": {
            "index": LEAF_INDEX,
            "size": LEAF_COUNT,
            "proof_hex": [h.hex() for h in merkle.inclusion_proof(store, LEAF_INDEX, LEAF_COUNT)],
        },
        "checkpoint": {
            "federation_id": FEDERATION_ID,
            "origin": origin,
            "key_id_hex": key_id(origin, ED25519_TYPE, log_key.public.raw()).hex(),
            "vkey": vkey(origin, ED25519_TYPE, log_key.public.raw()),
            "note": note.decode(),
        },
        "tiles": {
            "hash_tile_path": tiles.tile_path(0, 0, LEAF_COUNT),
            "hash_tile_hex": b"".join(leaves).hex(),
            "entry_bundle_path": tiles.entries_path(0, LEAF_COUNT),
            "entry_bundle_hex": tiles.encode_entry_bundle(
                [p.entry_commitment for _, _, p in entries]
            ).hex(),
        },
        "consistency": {
            "first": 3,
            "second": LEAF_COUNT,
            "first_root_hex": merkle.root(store, 3).hex(),
            "proof_hex": [h.hex() for h in merkle.consistency_proof(store, 3, LEAF_COUNT)],
        },
    }
    return vector, envelope.to_proto()


def _verdict(subject: bytes, registry: SigningKey, promise: common_pb2.Envelope) -> dict[str, Any]:
    answer_hash = hashlib.sha256(b"an agency answer payload").digest()
    verdict = registry_pb2.Verdict(
        verdict_id="verdict-0001",
        query_id=f"query-{LEAF_INDEX:04d}",
        subject=common_pb2.SubjectRef(type=common_pb2.SUBJECT_TYPE_PERSON, ref=subject),
        requester=REQUESTER,
        purpose=common_pb2.PURPOSE_CREDIT_ASSESSMENT,
        kinds=[common_pb2.VERDICT_KIND_BLACKLIST, common_pb2.VERDICT_KIND_CREDIT],
        blacklist=registry_pb2.BlacklistVerdict(
            status=common_pb2.BLACKLIST_STATUS_CLEAR, listing_agencies=0
        ),
        credit=registry_pb2.CreditVerdict(score=702, band="good", reason_codes=["P02"]),
        coverage=common_pb2.Coverage(
            agencies=[
                common_pb2.AgencyCoverage(
                    member_id=AGENCY,
                    state=common_pb2.COVERAGE_STATE_ANSWERED,
                    answer_hash=answer_hash,
                )
            ],
            answered=1,
            expected=1,
        ),
        scorecard_version="credence-scorecard-v1",
        log_promise=promise,
        answer_hashes=[answer_hash],
        grant_id="grant-0001",
    )
    verdict.issued_at.FromDatetime(NOW + timedelta(seconds=LEAF_INDEX))
    verdict.expires_at.FromDatetime(NOW + timedelta(days=1))
    envelope = sign_verdict(verdict, registry)
    jws = verdict_jws(verdict, registry, REGISTRY_ID)
    return {
        "issuer": REGISTRY_ID,
        "payload_type": payloads.VERDICT,
        "pae_hex": pae(envelope.payload_type, envelope.payload).hex(),
        "envelope": json.loads(envelope.to_json()),
        "envelope_proto_hex": envelope.to_bytes().hex(),
        "jws": jws,
        "claims": verdict_claims(verdict, REGISTRY_ID),
        "file": verdict_file(envelope, jws),
    }


#: The audience of the blind-aggregation vector, and the one that does not answer.
BLIND_AUDIENCE = ("bank-2", "court-1", "tax-3")
BLIND_MISSING = "tax-3"
BLIND_QUERY_ID = "query-blind-0001"


def _blind() -> dict[str, Any]:
    """Pair keys, masks, a dropout's recovery and the verdict read from the sum."""
    layout = blind_layout.for_scorecard(default_scorecard())
    keys = {
        member: X25519PrivateKey.from_private_bytes(_seed(f"agreement key {member}"))
        for member in BLIND_AUDIENCE
    }
    pair_keys = {
        own: {
            peer: blind_masks.pair_key(
                keys[own],
                blind_masks.public_bytes(keys[peer]),
                federation_id=FEDERATION_ID,
                own_id=own,
                peer_id=peer,
            )
            for peer in BLIND_AUDIENCE
            if peer != own
        }
        for own in BLIND_AUDIENCE
    }
    listed = agency_pb2.BlacklistAssertion(
        listed=True, categories=["dishonest_debtor"], disputed=True
    )
    vectors = {
        "bank-2": layout.fill(
            None,
            agency_pb2.CreditContribution(
                partial_points=-90, reason_codes=["L03"], has_history=True
            ),
        ),
        "court-1": layout.fill(
            listed,
            agency_pb2.CreditContribution(
                partial_points=-120, reason_codes=["J01"], has_history=True
            ),
        ),
        "tax-3": layout.fill(agency_pb2.BlacklistAssertion(listed=False), None),
    }
    masked = {
        member: blind_masks.mask_vector(
            vectors[member],
            own_id=member,
            audience=BLIND_AUDIENCE,
            pair_keys=pair_keys[member],
            query_id=BLIND_QUERY_ID,
        )
        for member in BLIND_AUDIENCE
    }
    answered = [member for member in BLIND_AUDIENCE if member != BLIND_MISSING]
    shares = {
        member: blind_recovery.recovery_share(
            member,
            [BLIND_MISSING],
            audience=BLIND_AUDIENCE,
            pair_keys=pair_keys[member],
            query_id=BLIND_QUERY_ID,
            length=layout.length,
        )
        for member in answered
    }
    summed = blind_sums.add(masked[member] for member in answered)
    unmasked = blind_recovery.remove_recovery(summed, shares.values())
    blacklist, credit = blind_sums.verdict_from_sum(
        layout,
        unmasked,
        answering=len(answered),
        expected=len(BLIND_AUDIENCE),
        aggregator=Aggregator(default_scorecard()),
    )
    low, high = BLIND_AUDIENCE[0], BLIND_AUDIENCE[1]
    return {
        "federation_id": FEDERATION_ID,
        "query_id": BLIND_QUERY_ID,
        "layout": {
            "layout_id": layout.layout_id,
            "layout_hash": layout.layout_hash,
            "slots": list(layout.slots),
        },
        "agencies": {
            member: {
                "agreement_seed_hex": _seed(f"agreement key {member}").hex(),
                "agreement_public_hex": blind_masks.public_bytes(keys[member]).hex(),
                "vector": vectors[member],
                "masked": masked[member],
            }
            for member in BLIND_AUDIENCE
        },
        "pair_keys_hex": {
            f"{own}|{peer}": pair_keys[own][peer].hex()
            for own in BLIND_AUDIENCE
            for peer in BLIND_AUDIENCE
            if own < peer
        },
        "pair_info": (
            blind_masks.PAIR_INFO_PREFIX + f"{FEDERATION_ID}|{low}|{high}".encode()
        ).decode(),
        "stream_nonce_hex": hashlib.sha256(BLIND_QUERY_ID.encode()).digest()[:16].hex(),
        "stream_first_words": blind_masks.mask_stream(pair_keys[low][high], BLIND_QUERY_ID, 4),
        "dropout": {
            "missing": [BLIND_MISSING],
            "answered": answered,
            "masked_sum": summed,
            "shares": shares,
            "unmasked_sum": unmasked,
        },
        "verdict": {
            "blacklist": json_format.MessageToDict(blacklist, preserving_proto_field_name=True),
            "credit": json_format.MessageToDict(credit, preserving_proto_field_name=True),
        },
    }


def build() -> str:
    """The vectors file's text."""
    registry, log_key = _key("registry"), _key("log")
    identity, personal = _key("identity member"), _key("subject personal key")
    pseudonymisation = PseudonymisationKey(_seed("pseudonymisation key"))
    subjects = _subjects(pseudonymisation)
    person = bytes.fromhex(next(s["ref_hex"] for s in subjects if s["input"] == PERSON_INPUT))
    log, promise = _log(person, log_key)
    document = {
        "about": "Test vectors of docs/protocol.md, written by scripts/protocol_vectors.py.",
        "keys": {
            "registry": _key_vector(registry, "registry"),
            "log": _key_vector(log_key, "log"),
            "identity_member": {
                "member_id": IDENTITY_MEMBER,
                **_key_vector(identity, "identity member"),
            },
            "subject_personal": _key_vector(personal, "subject personal key"),
            "pseudonymisation_key_hex": pseudonymisation.secret.hex(),
        },
        "subject_references": subjects,
        "consent_chain": _consent_chain(person.hex(), registry, identity, personal),
        "log": log,
        "verdict": _verdict(person, registry, promise),
        "blind_aggregation": _blind(),
    }
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the vectors (to ``--out``, by default docs/protocol-vectors.json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(build(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

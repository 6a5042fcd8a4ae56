"""docs/protocol.md cannot drift from the code.

The vectors file is what scripts/protocol_vectors.py writes, byte for byte;
every vector verifies with the library and, where the document gives the rule
in a few lines (subject MAC input, leaf hash, PAE, log_promise claim, blind
aggregation's pair keys, masks and recovery), with plain hashlib/cryptography
too; the document quotes the vectors' values and
names every payload type; every Envelope field of the protos names its payload.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from credence import payloads
from credence.blind import layout as blind_layout
from credence.blind import sums as blind_sums
from credence.envelope import Envelope, pae
from credence.errors import ClaimMismatch
from credence.grants.consent import PurposePolicy, verify_consent
from credence.jws import sign_compact
from credence.keys import KeySet, SigningKey, VerifyKey
from credence.scorecard import Aggregator, default_scorecard
from credence.subjects import PseudonymisationKey, normalise, ref_for
from credence.transparency import merkle
from credence.transparency.checkpoint import log_origin, open_checkpoint
from credence.transparency.log_promise import open_promise
from credence.transparency.tiles import decode_entry_bundle, tile_path
from credence.verdicts import verify_verdict_file

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "docs" / "protocol-vectors.json"
DOC = ROOT / "docs" / "protocol.md"


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(VECTORS.read_text(encoding="utf-8"))
    return document


def key(vectors: dict[str, Any], name: str) -> VerifyKey:
    return VerifyKey.from_jwk(vectors["keys"][name]["jwk"])


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_regenerating_gives_the_committed_file(tmp_path: Path) -> None:
    out = tmp_path / "vectors.json"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "protocol_vectors.py"), "--out", str(out)],
        check=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.read_bytes() == VECTORS.read_bytes(), (
        "docs/protocol-vectors.json is stale: run scripts/protocol_vectors.py"
    )


def test_subject_references(vectors: dict[str, Any]) -> None:
    secret = bytes.fromhex(vectors["keys"]["pseudonymisation_key_hex"])
    for vector in vectors["subject_references"]:
        normalised = normalise(vector["input"])
        assert f"{normalised.scheme}:{normalised.value}" == vector["canonical"]
        mac_input = b"credence-subject-v1\x00" + vector["canonical"].encode()
        assert mac_input.hex() == vector["mac_input_hex"]
        plain = hmac.new(secret, mac_input, hashlib.sha256).hexdigest()
        assert plain == vector["ref_hex"]
        assert ref_for(PseudonymisationKey(secret), vector["input"]).ref.hex() == plain


def test_consent_chain_verifies(vectors: dict[str, Any]) -> None:
    chain = vectors["consent_chain"]
    consent = verify_consent(
        chain["consent"],
        registry_keys=KeySet([key(vectors, "registry")]),
        identity_keys=KeySet([key(vectors, "identity_member")]),
        expected_audience="acme",
        expected_issuer="registry",
        now=datetime.fromtimestamp(chain["now"], tz=UTC),
        policy={"credit_assessment": PurposePolicy(max_validity=timedelta(days=90), max_uses=10)},
    )
    assert consent.grant_id == "grant-0001"
    assert consent.status_index == 7
    assert consent.request.subject_kid == vectors["keys"]["subject_personal"]["kid"]
    assert consent.subject_ref == vectors["subject_references"][0]["ref_hex"]


def test_verdict_envelope_jws_and_file_verify(vectors: dict[str, Any]) -> None:
    verdict_vectors = vectors["verdict"]
    registry = KeySet([key(vectors, "registry")])
    envelope = Envelope.from_json(json.dumps(verdict_vectors["envelope"]))
    assert envelope.payload_type == payloads.VERDICT
    assert pae(envelope.payload_type, envelope.payload).hex() == verdict_vectors["pae_hex"]
    assert envelope.to_bytes().hex() == verdict_vectors["envelope_proto_hex"]
    # The signature, checked with cryptography alone over the PAE bytes.
    raw = base64.urlsafe_b64decode(vectors["keys"]["registry"]["jwk"]["x"] + "=")
    Ed25519PublicKey.from_public_bytes(raw).verify(
        envelope.signatures[0].sig, bytes.fromhex(verdict_vectors["pae_hex"])
    )
    now = datetime.fromtimestamp(verdict_vectors["claims"]["iat"], tz=UTC)
    verdict, claims = verify_verdict_file(
        verdict_vectors["file"],
        registry_keys=registry,
        now=now,
        requester="acme",
        issuer="registry",
    )
    assert claims == verdict_vectors["claims"]
    assert claims["sub"] == verdict.subject.ref.hex()
    # log_promise: SHA-256 of the promise envelope's payload bytes as received.
    promise_payload = base64.b64decode(vectors["log"]["log_promise_envelope"]["payload"])
    assert verdict.log_promise.payload == promise_payload
    assert claims["log_promise"] == b64url(hashlib.sha256(promise_payload).digest())
    assert claims["answers"] == [b64url(h) for h in verdict.answer_hashes]


def test_a_verdict_file_whose_log_promise_claim_differs_is_refused(
    vectors: dict[str, Any],
) -> None:
    """What a verdict file made before the log_promise rule change meets."""
    verdict_vectors = vectors["verdict"]
    document = json.loads(verdict_vectors["file"])
    legacy = dict(verdict_vectors["claims"], log_promise=b64url(hashlib.sha256(b"old").digest()))
    # Re-sign the claims as the old code would have, under the registry's key.
    signing = SigningKey.from_seed(bytes.fromhex(vectors["keys"]["registry"]["seed"]))
    document["jws"] = sign_compact(legacy, signing, "verdict+jwt")
    now = datetime.fromtimestamp(legacy["iat"], tz=UTC)
    with pytest.raises(ClaimMismatch, match="disagree on log_promise"):
        verify_verdict_file(
            json.dumps(document),
            registry_keys=KeySet([signing.public]),
            now=now,
            requester="acme",
            issuer="registry",
        )


def test_log_leaf_and_proofs(vectors: dict[str, Any]) -> None:
    log = vectors["log"]
    commitment = bytes.fromhex(log["commitment_hex"])
    assert hashlib.sha256(bytes.fromhex(log["commitment_input_hex"])).digest() == commitment
    leaf = hashlib.sha256(b"\x00" + commitment).digest()
    assert leaf.hex() == log["leaf_hash_hex"] == merkle.leaf_hash(commitment).hex()
    tree, inclusion, consistency = log["tree"], log["inclusion"], log["consistency"]
    assert tree["leaf_hashes_hex"][inclusion["index"]] == log["leaf_hash_hex"]
    root = bytes.fromhex(tree["root_hex"])
    proof = [bytes.fromhex(h) for h in inclusion["proof_hex"]]
    merkle.verify_inclusion(leaf, inclusion["index"], inclusion["size"], proof, root)
    merkle.verify_consistency(
        consistency["first"],
        consistency["second"],
        bytes.fromhex(consistency["first_root_hex"]),
        root,
        [bytes.fromhex(h) for h in consistency["proof_hex"]],
    )
    envelope = Envelope.from_json(json.dumps(log["log_promise_envelope"]))
    promise = open_promise(envelope, KeySet([key(vectors, "log")]))
    assert promise.entry_commitment == commitment
    assert promise.salt.hex() == log["salt_hex"]
    assert promise.promised_at.seconds == log["entry"]["issued_at"]


def test_checkpoint_and_tiles(vectors: dict[str, Any]) -> None:
    log, checkpoint = vectors["log"], vectors["log"]["checkpoint"]
    origin, public = checkpoint["origin"], key(vectors, "log").raw()
    # The note rules in a few lines: text, blank line, "<em dash> name base64(id || sig)".
    text, _, signature_line = checkpoint["note"].partition("\n\n")
    text += "\n"
    assert text == f"{origin}\n{log['tree']['size']}\n" + (
        base64.b64encode(bytes.fromhex(log["tree"]["root_hex"])).decode() + "\n"
    )
    dash, name, encoded = signature_line.rstrip("\n").split(" ")
    assert (dash, name) == ("\u2014", origin)
    raw = base64.b64decode(encoded, validate=True)
    key_id = hashlib.sha256(origin.encode() + b"\n\x01" + public).digest()[:4]
    assert raw[:4] == key_id == bytes.fromhex(checkpoint["key_id_hex"])
    Ed25519PublicKey.from_public_bytes(public).verify(raw[4:], text.encode())
    typed_key = base64.b64encode(b"\x01" + public).decode()
    assert checkpoint["vkey"] == f"{origin}+{key_id.hex()}+{typed_key}"
    assert log_origin(checkpoint["federation_id"]) == origin
    opened, _ = open_checkpoint(checkpoint["note"].encode(), origin, public)
    assert (opened.size, opened.root_hash.hex()) == (log["tree"]["size"], log["tree"]["root_hex"])
    # A tile is the level's hashes back to back; an entry bundle 2-byte-length-prefixed leaves.
    tile_vectors = log["tiles"]
    assert tile_vectors["hash_tile_hex"] == "".join(log["tree"]["leaf_hashes_hex"])
    bundle = bytes.fromhex(tile_vectors["entry_bundle_hex"])
    entries = [bundle[i + 2 : i + 34] for i in range(0, len(bundle), 34)]
    assert all(bundle[i : i + 2] == b"\x00\x20" for i in range(0, len(bundle), 34))
    assert [merkle.leaf_hash(e).hex() for e in entries] == log["tree"]["leaf_hashes_hex"]
    assert decode_entry_bundle(bundle) == entries
    size = log["tree"]["size"]
    assert tile_vectors["hash_tile_path"] == f"tile/0/000.p/{size}" == tile_path(0, 0, size)
    assert tile_vectors["entry_bundle_path"] == f"tile/entries/000.p/{size}"


def _prg(key: bytes, label: str, words: int) -> list[int]:
    """The masks' PRG from its description: AES-256-CTR, little-endian uint64 words."""
    block = hashlib.sha256(label.encode()).digest()[:16]
    stream = Cipher(algorithms.AES256(key), modes.CTR(block)).encryptor().update(bytes(8 * words))
    return [int.from_bytes(stream[i : i + 8], "little") for i in range(0, len(stream), 8)]


def test_blind_aggregation_from_the_description(vectors: dict[str, Any]) -> None:
    blind = vectors["blind_aggregation"]
    agencies = blind["agencies"]
    audience = sorted(agencies)
    mod = 1 << 64
    slots = blind["layout"]["slots"]
    assert slots == list(default_scorecard().vector_layout.slots)
    layout_hash = hashlib.sha256("\n".join(slots).encode()).hexdigest()
    assert layout_hash == blind["layout"]["layout_hash"]
    assert blind["layout"]["layout_id"] == f"{default_scorecard().version}/{layout_hash[:16]}"
    secrets = {
        member: X25519PrivateKey.from_private_bytes(bytes.fromhex(agency["agreement_seed_hex"]))
        for member, agency in agencies.items()
    }
    for member, key in secrets.items():
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        assert public.hex() == agencies[member]["agreement_public_hex"]

    def pair(own: str, peer: str) -> bytes:
        shared = secrets[own].exchange(
            X25519PublicKey.from_public_bytes(bytes.fromhex(agencies[peer]["agreement_public_hex"]))
        )
        low, high = sorted((own, peer))
        info = f"credence/blind/v1|{blind['federation_id']}|{low}|{high}".encode()
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)

    for names, key_hex in blind["pair_keys_hex"].items():
        own, peer = names.split("|")
        assert pair(own, peer).hex() == pair(peer, own).hex() == key_hex
    first = blind["pair_keys_hex"][f"{audience[0]}|{audience[1]}"]
    assert blind["pair_info"] == f"credence/blind/v1|vectors|{audience[0]}|{audience[1]}"
    assert _prg(bytes.fromhex(first), blind["query_id"], 4) == blind["stream_first_words"]
    length = len(slots)

    def masks(own: str, peers: list[str]) -> list[int]:
        total = [0] * length
        for peer in peers:
            stream = _prg(pair(own, peer), blind["query_id"], length)
            sign = 1 if peer > own else -1
            total = [(t + sign * w) % mod for t, w in zip(total, stream, strict=True)]
        return total

    for member in audience:
        others = [peer for peer in audience if peer != member]
        expected = [
            (v + m) % mod
            for v, m in zip(agencies[member]["vector"], masks(member, others), strict=True)
        ]
        assert expected == agencies[member]["masked"]
    dropout = blind["dropout"]
    missing, answered = dropout["missing"], dropout["answered"]
    assert sorted(missing + answered) == audience
    summed = [
        sum(column) % mod for column in zip(*(agencies[m]["masked"] for m in answered), strict=True)
    ]
    assert summed == dropout["masked_sum"]
    for member in answered:
        assert masks(member, missing) == dropout["shares"][member]
    unmasked = [
        (total - sum(parts)) % mod
        for total, *parts in zip(summed, *dropout["shares"].values(), strict=True)
    ]
    plain = [
        sum(column) % mod for column in zip(*(agencies[m]["vector"] for m in answered), strict=True)
    ]
    assert unmasked == plain == dropout["unmasked_sum"]
    layout = blind_layout.for_scorecard(default_scorecard())
    assert blind_sums.check_sum(layout, unmasked, len(answered)) is None
    blacklist, credit = blind_sums.verdict_from_sum(
        layout,
        unmasked,
        answering=len(answered),
        expected=len(audience),
        aggregator=Aggregator(default_scorecard()),
    )
    named = dict(zip(slots, unmasked, strict=True))
    assert named["listed"] == blacklist.listing_agencies == 1
    assert blind["verdict"]["blacklist"]["categories"] == list(blacklist.categories)
    base = default_scorecard().base_points
    points = named["credit_points"]
    points = points - mod if points >= 1 << 63 else points
    assert blind["verdict"]["credit"]["score"] == credit.score == base + points
    assert blind["verdict"]["credit"]["reason_codes"] == list(credit.reason_codes)


def test_the_document_quotes_the_vectors(vectors: dict[str, Any]) -> None:
    text = DOC.read_text(encoding="utf-8")
    quoted = [
        vectors["subject_references"][0]["canonical"],
        vectors["subject_references"][0]["mac_input_hex"],
        vectors["subject_references"][0]["ref_hex"],
        vectors["keys"]["pseudonymisation_key_hex"],
        vectors["keys"]["registry"]["kid"],
        vectors["log"]["commitment_hex"],
        vectors["log"]["leaf_hash_hex"],
        vectors["log"]["tree"]["root_hex"],
        vectors["log"]["checkpoint"]["note"].split("\n\n")[0].replace("\n", "\\n"),
        vectors["log"]["checkpoint"]["vkey"],
        *vectors["log"]["inclusion"]["proof_hex"],
        vectors["verdict"]["claims"]["log_promise"],
        vectors["blind_aggregation"]["layout"]["layout_id"],
        vectors["blind_aggregation"]["pair_info"],
        vectors["blind_aggregation"]["pair_keys_hex"]["bank-2|court-1"],
        vectors["blind_aggregation"]["stream_nonce_hex"],
        *map(str, vectors["blind_aggregation"]["stream_first_words"][:2]),
    ]
    missing = [value for value in quoted if value not in text]
    assert not missing, f"docs/protocol.md does not quote {missing}"
    unnamed = [
        value
        for name, value in vars(payloads).items()
        if name.isupper() and isinstance(value, str) and value not in text
    ]
    assert not unnamed, f"docs/protocol.md does not name payload types {unnamed}"
    assert "docs/protocol.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_envelope_field_of_the_protos_names_its_payload_type() -> None:
    known = {value for name, value in vars(payloads).items() if name.isupper()}
    unnamed = []
    for proto in sorted((ROOT / "proto" / "credence" / "v1").glob("*.proto")):
        comment: list[str] = []
        for number, line in enumerate(proto.read_text().splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith("//"):
                comment.append(stripped)
                continue
            if re.match(r"(repeated\s+)?Envelope\s+\w+\s*=", stripped):
                named = set(
                    re.findall(r"application/vnd\.credence\.[a-z-]+\.v1\+proto", " ".join(comment))
                )
                if not named or not named <= known:
                    unnamed.append(f"{proto.name}:{number}")
            comment = []
    assert not unnamed, f"Envelope fields without a known payload type in their comment: {unnamed}"

"""The registry's side of a dropout: the signed recovery request and the shares it accepts.

The fan-out is replaced by a stand-in that hands each node's reply back, so
every share a node could send (honest, late, forged, for another request or
missing set, misshaped) is checked without servers; tests/test_blind_registry.py
recovers a stopped node's masks over a real federation.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from central_registry.aggregation import Recovery
from central_registry.fanout import AgencyTarget
from central_registry.mask_recovery import recover, recovery_request
from credence import payloads
from credence.envelope import Envelope, sign, verify_message
from credence.keys import KeySet, SigningKey
from credence.v1 import agency_pb2

NOW = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
REGISTRY = SigningKey.generate()
KEYS = {member: SigningKey.generate() for member in ("a1", "a2", "a3")}
ANSWERING = [AgencyTarget(m, "127.0.0.1:1", KeySet([KEYS[m].public])) for m in ("a1", "a2")]
WORDS = 4

Reply = Callable[[AgencyTarget, Envelope], agency_pb2.RecoverMasksResponse | str]


class StandIn:
    """The fan-out's recover(), answering for each node as ``reply`` says."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[Envelope] = []

    async def recover(
        self, targets: Sequence[AgencyTarget], request: Envelope
    ) -> list[agency_pb2.RecoverMasksResponse | str]:
        self.requests.append(request)
        return [self.reply(target, request) for target in targets]


def share(
    target: AgencyTarget,
    request: Envelope,
    *,
    key: SigningKey | None = None,
    missing: Sequence[str] = ("a3",),
    words: int = WORDS,
    request_hash: bytes | None = None,
    agency: str | None = None,
) -> agency_pb2.RecoverMasksResponse:
    """A node's signed share for ``request``, honest unless told otherwise."""
    body = agency_pb2.RecoveryShare(
        query_id="q-1",
        agency=agency or target.member_id,
        share=[7] * words,
        request_hash=request_hash or hashlib.sha256(request.payload).digest(),
        missing=missing,
    )
    signer = key or KEYS[target.member_id]
    envelope = sign(payloads.RECOVERY_SHARE, body.SerializeToString(), [signer])
    return agency_pb2.RecoverMasksResponse(share=envelope.to_proto())


def run(reply: Reply) -> tuple[StandIn, Recovery]:
    stand_in = StandIn(reply)
    recovery = asyncio.run(
        recover(
            stand_in,  # type: ignore[arg-type]
            ANSWERING,
            query_id="q-1",
            missing=["a3"],
            log_promise_hash=b"p" * 32,
            layout_id="layout/1",
            count=WORDS,
            batch=False,
            now=NOW,
            lifetime=timedelta(seconds=30),
            key=REGISTRY,
            registry_id="registry",
            log=lambda rows: 7,
        )
    )
    return stand_in, recovery


def test_the_request_is_signed_and_names_missing_and_answering_members() -> None:
    stand_in, recovery = run(share)
    (request,) = stand_in.requests
    body = verify_message(
        request, payloads.RECOVERY_REQUEST, KeySet([REGISTRY.public]), agency_pb2.RecoveryRequest
    )
    assert (list(body.missing), list(body.answered)) == (["a3"], ["a1", "a2"])
    assert (body.query_id, body.count, body.layout_id, body.batch) == (
        "q-1",
        WORDS,
        "layout/1",
        False,
    )
    assert body.expires_at.ToDatetime(tzinfo=UTC) == NOW + timedelta(seconds=30)
    assert recovery.failure == ""
    assert recovery.shares == {"a1": [7] * WORDS, "a2": [7] * WORDS}
    assert len(recovery.envelopes) == 2


def _late(target: AgencyTarget, request: Envelope) -> agency_pb2.RecoverMasksResponse | str:
    if target.member_id == "a2":
        return "no recovery share within 2.0 s"
    return share(target, request)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (_late, "a2: no recovery share within 2.0 s"),
        (
            lambda t, r: (
                share(t, r, key=SigningKey.generate()) if t.member_id == "a2" else share(t, r)
            ),
            "a2: envelope is signed only by keys that are not trusted",
        ),
        (
            lambda t, r: share(t, r, missing=["a1", "a3"]) if t.member_id == "a2" else share(t, r),
            "a2: share covers missing ['a1', 'a3'], not ['a3']",
        ),
        (
            lambda t, r: share(t, r, words=WORDS - 1) if t.member_id == "a2" else share(t, r),
            f"a2: share has {WORDS - 1} words, not {WORDS}",
        ),
        (
            lambda t, r: (
                share(t, r, request_hash=b"x" * 32) if t.member_id == "a2" else share(t, r)
            ),
            "a2: share's request_hash is not the SHA-256 of the request sent",
        ),
        (
            lambda t, r: (
                share(t, r, agency="a1", key=KEYS["a2"]) if t.member_id == "a2" else share(t, r)
            ),
            "a2: share is 'a1''s for 'q-1', not 'a2''s for 'q-1'",
        ),
    ],
    ids=["late", "forged", "other missing set", "misshaped", "other request", "other agency"],
)
def test_a_share_that_does_not_come_or_fails_a_check_leaves_the_sum_unreadable(
    reply: Reply, reason: str
) -> None:
    _, recovery = run(reply)
    failure = recovery.failure
    assert failure.startswith("an answering agency gave no recovery share (")
    assert reason in failure, failure
    # The honest agency's share is kept, the other's is not: aggregation then
    # finds a1's alone and makes the verdict INCOMPLETE with this reason.
    assert set(recovery.shares) == {"a1"}


def test_a_recovery_request_lists_the_missing_members_sorted() -> None:
    request = recovery_request(
        query_id="b-1", missing=["z", "a"], answered=["m"], log_promise_hash=b"", log_index=3,
        layout_id="l", count=8, batch=True, now=NOW, lifetime=timedelta(seconds=5), key=REGISTRY,
    )  # fmt: skip
    body = agency_pb2.RecoveryRequest.FromString(request.payload)
    assert list(body.missing) == ["a", "z"]  # sorted, as the nodes compare them
    assert body.batch

"""What the fan-out learns from each agency: the one type fan-out and aggregation share."""

from __future__ import annotations

from dataclasses import dataclass

from credence.v1 import agency_pb2, common_pb2


@dataclass(frozen=True, slots=True)
class AgencyOutcome:
    """One agency's part in one lookup.

    Attributes:
        member_id: the agency.
        state: a ``common_pb2.CoverageState`` value (ANSWERED, TIMEOUT, UNAVAILABLE,
            REFUSED, INVALID_ANSWER).
        reason: one line when it did not answer, e.g. ``"PERMISSION_DENIED: ..."``.
        answer: the verified answer when ``state`` is ANSWERED.
        answer_hash: SHA-256 of the signed answer payload it came in (for a
            batch: of the signed batch answer), empty when not answered.
        envelope: the node-signed answer as received (single lookups; a batch
            item's is its batch answer, referenced by ``answer_hash``).
    """

    member_id: str
    state: int
    reason: str = ""
    answer: agency_pb2.Answer | None = None
    answer_hash: bytes = b""
    envelope: common_pb2.Envelope | None = None

    @property
    def answered(self) -> bool:
        """Whether a valid answer came back."""
        return self.state == common_pb2.COVERAGE_STATE_ANSWERED

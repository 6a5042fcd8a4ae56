"""What the requester SDK hands back, and the offline checks that produce it.

Pure functions over received messages with the clock passed in:
:func:`verify_single` for one verdict (envelope and JWS credential),
:func:`outcomes_from_response` for one screening response (the batch
signature checked once, then each row's cheap rules), and
:func:`check_answers` that a verdict answers the question that was asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from credence import payloads
from credence.client.errors import error_from_code
from credence.encoding import format_time
from credence.envelope import Envelope, verify_message
from credence.errors import (
    ClaimMismatch,
    CredenceError,
    Expired,
    InvalidInput,
    NotYetValid,
    WrongAudience,
)
from credence.keys import KeySet
from credence.manifest import TrustedManifest
from credence.subjects import SubjectRef
from credence.v1 import agency_pb2, common_pb2, registry_pb2
from credence.verdicts import verdict_claims, verdict_file, verify_verdict, verify_verdict_jws

__all__ = [
    "ScreenOutcome",
    "ScreenRow",
    "VerifiedVerdict",
    "check_answers",
    "outcomes_from_response",
    "verify_single",
]

_BLACKLIST_STATUSES = {
    value: name.removeprefix("BLACKLIST_STATUS_").lower()
    for name, value in common_pb2.BlacklistStatus.items()
    if value
}
_COVERAGE_STATES = {
    value: name.removeprefix("COVERAGE_STATE_").lower()
    for name, value in common_pb2.CoverageState.items()
}


@dataclass(frozen=True)
class VerifiedVerdict:
    """A verdict that verified, with the signed form it came in.

    ``envelope`` is the verdict's own envelope, or for a screened row the
    signed batch holding it; ``jws`` is empty for screened rows.
    ``explanation`` is the registry's signed explanation of a credit verdict
    asked for a credit decision, checked against the verdict
    (:func:`credence.explanations.check_explanation`), with its envelope.
    """

    verdict: registry_pb2.Verdict
    envelope: Envelope
    jws: str = ""
    explanation: registry_pb2.Explanation | None = None
    explanation_envelope: Envelope | None = None

    @property
    def status(self) -> str | None:
        """``clear``, ``listed`` or ``incomplete``; None when no blacklist was asked."""
        if common_pb2.VERDICT_KIND_BLACKLIST not in self.verdict.kinds:
            return None
        return _BLACKLIST_STATUSES.get(self.verdict.blacklist.status)

    @property
    def categories(self) -> tuple[str, ...]:
        """The listing categories (empty unless listed)."""
        return tuple(self.verdict.blacklist.categories)

    @property
    def score(self) -> int | None:
        """The credit score; None when no credit verdict was asked."""
        if common_pb2.VERDICT_KIND_CREDIT not in self.verdict.kinds:
            return None
        return self.verdict.credit.score

    @property
    def band(self) -> str | None:
        """The score's band; None when no credit verdict was asked."""
        return None if self.score is None else self.verdict.credit.band

    @property
    def reason_codes(self) -> tuple[str, ...]:
        """Up to four adverse reason codes, most important first."""
        return tuple(self.verdict.credit.reason_codes)

    @property
    def provisional(self) -> bool:
        """Whether coverage fell short of what the scorecard requires."""
        return self.verdict.credit.provisional

    @property
    def coverage(self) -> str:
        """E.g. ``2/3 agencies answered; b: timeout (no answer within 250 ms)``.

        When the answers' sum could not be read, its ``incomplete_reason`` ends it.
        """
        coverage = self.verdict.coverage
        parts = [f"{coverage.answered}/{coverage.expected} agencies answered"]
        for agency in coverage.agencies:
            if agency.state != common_pb2.COVERAGE_STATE_ANSWERED:
                state = _COVERAGE_STATES.get(agency.state, str(agency.state))
                reason = f" ({agency.reason})" if agency.reason else ""
                parts.append(f"{agency.member_id}: {state}{reason}")
        if self.verdict.incomplete_reason:
            # Why the answers' sum was not read (docs/protocol.md section 10).
            parts.append(f"sum not read: {self.verdict.incomplete_reason}")
        return "; ".join(parts)

    def to_file(self) -> str:
        """The verdict file (``credence verdict check FILE``) holding both forms.

        Raises:
            InvalidInput: a screened row, which has no JWS credential.
        """
        if not self.jws:
            raise InvalidInput(
                "a screened row has no JWS credential; ask for the subject with "
                "request_verdict to get a verdict file"
            )
        return verdict_file(self.envelope, self.jws)


@dataclass(frozen=True)
class ScreenRow:
    """One subject to screen; no grant means the public-register basis."""

    row_key: str
    subject: SubjectRef
    grant: agency_pb2.Grant | None = None


@dataclass(frozen=True)
class ScreenOutcome:
    """A screened row: a verified verdict or the registry's refusal."""

    row_key: str
    verdict: VerifiedVerdict | None
    refusal: tuple[int, str] | None = None

    @property
    def error(self) -> CredenceError | None:
        """The refusal as a domain error, or None for a verdict."""
        if self.refusal is None:
            return None
        code, reason = self.refusal
        return error_from_code(code, f"row {self.row_key!r}: {reason}")


# --- offline verification ---------------------------------------------------------


def verify_single(
    envelope: Envelope, jws: str, *, manifest: TrustedManifest, requester: str, now: datetime
) -> VerifiedVerdict:
    """Verify a verdict envelope, and its JWS credential when given, offline.

    Raises:
        VerificationError: a refusal of :func:`credence.verdicts.verify_verdict`
            or :func:`~credence.verdicts.verify_verdict_jws` (a subclass).
        InvalidInput: a malformed verdict or token.
        ClaimMismatch: the JWS states another verdict than the envelope.
    """
    keys = manifest.registry_keys
    verdict = verify_verdict(envelope, registry_keys=keys, now=now, requester=requester)
    if jws:
        issuer = manifest.registry.member_id
        claims = verify_verdict_jws(
            jws, registry_keys=keys, now=now, requester=requester, issuer=issuer
        )
        expected = verdict_claims(verdict, issuer)
        differing = sorted(
            name
            for name in expected.keys() | claims.keys()
            if expected.get(name) != claims.get(name)
        )
        if differing:
            raise ClaimMismatch(
                f"verdict JWS and envelope disagree on {', '.join(differing)} "
                f"(verdict {verdict.verdict_id!r})"
            )
    return VerifiedVerdict(verdict, envelope, jws)


def outcomes_from_response(
    response: registry_pb2.ScreenBatchResponse,
    manifest_keys: KeySet,
    requester: str,
    now: datetime,
) -> list[ScreenOutcome]:
    """Verify one screening response: its batch signature once, then each row cheaply.

    Raises:
        VerificationError: the batch envelope does not verify under
            ``manifest_keys`` (e.g. tampered), or a row's verdict expired, is
            issued in the future, or is for another requester.
        InvalidInput: a malformed response (no batch for a verdict row, an
            index outside the batch, a row with neither outcome).
    """
    batch: registry_pb2.VerdictBatch | None = None
    envelope: Envelope | None = None
    if response.HasField("verdicts"):
        envelope = Envelope.from_proto(response.verdicts)
        batch = verify_message(
            envelope, payloads.VERDICT_BATCH, manifest_keys, registry_pb2.VerdictBatch
        )
    outcomes: list[ScreenOutcome] = []
    times = _RowTimes.at(now)
    verdicts = batch.verdicts if batch is not None else None
    held = len(verdicts) if verdicts is not None else 0
    for result in response.results:
        which = result.WhichOneof("outcome")
        row_key = result.row_key
        if which == "verdict_index":
            index = result.verdict_index
            if verdicts is None or envelope is None:
                raise InvalidInput(
                    f"screening result for row {row_key!r} points at a verdict, "
                    "but the response carries no signed verdict batch"
                )
            if index >= held:
                raise InvalidInput(
                    f"screening result for row {row_key!r} points at verdict {index}, "
                    f"but the signed batch holds {held}"
                )
            verdict = verdicts[index]
            _check_row(verdict, requester, times, row_key)
            outcomes.append(ScreenOutcome(row_key, VerifiedVerdict(verdict, envelope)))
        elif which == "refusal":
            refusal = (result.refusal.code, result.refusal.reason)
            outcomes.append(ScreenOutcome(row_key, None, refusal))
        else:
            raise InvalidInput(f"screening result for row {row_key!r} has no outcome")
    return outcomes


@dataclass(frozen=True, slots=True)
class _RowTimes:
    """``now`` and ``now`` plus the clock skew as (seconds, nanos), compared as tuples.

    A screened row's times are compared without converting each Timestamp to
    a datetime (the conversion cost more than the rest of a row's checks);
    datetimes are made only for the message of a refusal.
    """

    now: datetime
    now_pair: tuple[int, int]
    latest_issue: tuple[int, int]

    @classmethod
    def at(cls, now: datetime) -> _RowTimes:
        return cls(now, _pair(now), _pair(now + payloads.CLOCK_SKEW))


def _pair(moment: datetime) -> tuple[int, int]:
    since = moment - _EPOCH
    seconds = since.days * 86_400 + since.seconds
    return seconds, since.microseconds * 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _check_row(verdict: registry_pb2.Verdict, requester: str, times: _RowTimes, row: str) -> None:
    # The batch signature covers every row; what is left are the per-row rules
    # of credence.verdicts.verify_verdict.
    # An unset expires_at reads as the epoch and fails the expiry test, which
    # then tells the two apart; an unset issued_at would pass, so it is asked.
    if not verdict.HasField("issued_at"):
        raise InvalidInput(f"verdict for row {row!r} lacks issued_at or expires_at")
    expires = verdict.expires_at
    issued = verdict.issued_at
    now = times.now
    if times.now_pair >= (expires.seconds, expires.nanos):
        if not verdict.HasField("expires_at"):
            raise InvalidInput(f"verdict for row {row!r} lacks issued_at or expires_at")
        expires_at = expires.ToDatetime(tzinfo=UTC)
        raise Expired(
            f"verdict for row {row!r} expired at {format_time(expires_at)} (now {format_time(now)})"
        )
    if (issued.seconds, issued.nanos) > times.latest_issue:
        issued_at = issued.ToDatetime(tzinfo=UTC)
        raise NotYetValid(
            f"verdict for row {row!r} claims to be issued at {format_time(issued_at)}, "
            f"in the future (now {format_time(now)})"
        )
    if verdict.requester != requester:
        raise WrongAudience(
            f"verdict for row {row!r} was issued to {verdict.requester!r}, not {requester!r}"
        )


def check_answers(
    verdict: registry_pb2.Verdict,
    subject: common_pb2.SubjectRef,
    purpose: int,
    kinds: Sequence[int],
    what: str = "verdict",
) -> None:
    """Check that a verified verdict answers the question asked.

    Raises:
        ClaimMismatch: another subject, purpose or kinds (a verdict replayed
            or mixed up by the registry).
    """
    if verdict.subject.type != subject.type or verdict.subject.ref != subject.ref:
        raise ClaimMismatch(
            f"{what} is about subject {verdict.subject.ref.hex()}, not {subject.ref.hex()}"
        )
    if verdict.purpose != purpose or sorted(verdict.kinds) != sorted(kinds):
        raise ClaimMismatch(f"{what} answers another purpose or other kinds than were asked")

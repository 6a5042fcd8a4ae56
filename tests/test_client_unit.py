"""The requester SDK without servers: offline verification, screening, errors, config."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from credence import payloads
from credence.client.errors import error_from_rpc, error_from_status, rpc_errors
from credence.client.requester import (
    MemberCredentials,
    Requester,
    ScreenRow,
    _Rows,
    outcomes_from_response,
    verify_single,
)
from credence.dev.offline_federation import NOW, REGISTRY_ID, Federation
from credence.envelope import Envelope, sign
from credence.errors import (
    AlreadyExists,
    BadSignature,
    ClaimMismatch,
    CredenceError,
    DeadlineExceeded,
    Expired,
    FailedPrecondition,
    InvalidInput,
    NotFound,
    NotYetValid,
    PermissionDenied,
    ResourceExhausted,
    RolledBack,
    Unauthenticated,
    Unavailable,
    UnknownKey,
    WrongAudience,
)
from credence.keys import KeySet, SigningKey, save_signing_key
from credence.manifest import TrustedManifest, verify_manifest
from credence.queries import subject_to_proto
from credence.subjects import SubjectRef, SubjectType
from credence.v1 import agency_pb2, common_pb2, registry_pb2
from credence.verdicts import sign_verdict, verdict_jws, verify_verdict_file

REQUESTER = "acme"
ORG = "reg:CN:CLEAR0001"
OTHER_ORG = "reg:CN:LISTED001"
PERSON = "nin:P1234567"


@pytest.fixture(scope="module")
def federation() -> Federation:
    federation = Federation.create()
    federation.enrol(REQUESTER)
    federation.add_agency("agency-a", ["blacklist"])
    return federation


def trust(federation: Federation, held: TrustedManifest | None = None) -> TrustedManifest:
    return verify_manifest(
        federation.manifest_envelope(),
        trusted_root=KeySet([federation.root_key.public]),
        threshold=1,
        now=NOW,
        held=held,
    )


@pytest.fixture(scope="module")
def manifest(federation: Federation) -> TrustedManifest:
    return trust(federation)


def credentials(federation: Federation) -> MemberCredentials:
    member = federation.members[REQUESTER]
    return MemberCredentials(
        REQUESTER, member.tls_key_pem, member.cert_pem, federation.ca.certificate_pem
    )


def make_requester(federation: Federation, manifest: TrustedManifest) -> Requester:
    # Nothing listens at port 1: every test that needs the registry gives a fake stub.
    return Requester(
        "127.0.0.1:1",
        credentials(federation),
        root_keys=KeySet([federation.root_key.public]),
        manifest=manifest,
        clock=lambda: NOW,
    )


def make_verdict(
    federation: Federation,
    *,
    subject: SubjectRef | None = None,
    requester: str = REQUESTER,
    expires: datetime = NOW + timedelta(hours=1),
    kinds: Sequence[common_pb2.VerdictKind.ValueType] = (common_pb2.VERDICT_KIND_BLACKLIST,),
) -> registry_pb2.Verdict:
    verdict = registry_pb2.Verdict(
        verdict_id="v-1",
        query_id="q-1",
        subject=subject_to_proto(subject or federation.subject(ORG)),
        requester=requester,
        purpose=common_pb2.PURPOSE_COUNTERPARTY_VERIFICATION,
        kinds=kinds,
        blacklist=registry_pb2.BlacklistVerdict(
            status=common_pb2.BLACKLIST_STATUS_LISTED, categories=["fraud"], listing_agencies=1
        ),
        credit=registry_pb2.CreditVerdict(
            score=612, band="fair", reason_codes=["D01", "L02"], provisional=True
        ),
        coverage=common_pb2.Coverage(
            agencies=[
                common_pb2.AgencyCoverage(
                    member_id="agency-a", state=common_pb2.COVERAGE_STATE_ANSWERED
                ),
                common_pb2.AgencyCoverage(
                    member_id="agency-b",
                    state=common_pb2.COVERAGE_STATE_TIMEOUT,
                    reason="no answer within 250 ms",
                ),
            ],
            answered=1,
            expected=2,
        ),
        scorecard_version="credence-scorecard-v1",
    )
    verdict.issued_at.FromDatetime(NOW - timedelta(minutes=1))
    verdict.expires_at.FromDatetime(expires)
    return verdict


def signed(federation: Federation, verdict: registry_pb2.Verdict) -> tuple[Envelope, str]:
    key = federation.registry_key
    return sign_verdict(verdict, key), verdict_jws(verdict, key, REGISTRY_ID)


def flip(envelope: Envelope, position: int) -> Envelope:
    payload = bytearray(envelope.payload)
    payload[position] ^= 0x01
    return Envelope(envelope.payload_type, bytes(payload), envelope.signatures)


# ----------------------------------------------------------- offline verify


def test_verify_accepts_a_good_verdict_and_reads_it(
    federation: Federation, manifest: TrustedManifest
) -> None:
    verdict = make_verdict(
        federation, kinds=(common_pb2.VERDICT_KIND_BLACKLIST, common_pb2.VERDICT_KIND_CREDIT)
    )
    envelope, jws = signed(federation, verdict)
    with make_requester(federation, manifest) as requester:
        verified = requester.verify(envelope, jws)
    assert verified.verdict == verdict
    assert (verified.status, verified.categories) == ("listed", ("fraud",))
    assert (verified.score, verified.band, verified.reason_codes) == (612, "fair", ("D01", "L02"))
    assert verified.provisional
    assert verified.coverage == (
        "1/2 agencies answered; agency-b: timeout (no answer within 250 ms)"
    )
    checked, _ = verify_verdict_file(
        verified.to_file(),
        registry_keys=manifest.registry_keys,
        now=NOW,
        requester=REQUESTER,
        issuer=REGISTRY_ID,
    )
    assert checked == verdict


def test_kinds_not_asked_read_as_none(federation: Federation, manifest: TrustedManifest) -> None:
    envelope, _ = signed(
        federation, make_verdict(federation, kinds=(common_pb2.VERDICT_KIND_CREDIT,))
    )
    verified = verify_single(envelope, "", manifest=manifest, requester=REQUESTER, now=NOW)
    assert (verified.status, verified.score) == (None, 612)
    with pytest.raises(InvalidInput, match="screened row has no JWS"):
        verified.to_file()


@pytest.mark.parametrize("position", [0, 5, -1])
def test_a_flipped_byte_is_refused(
    federation: Federation, manifest: TrustedManifest, position: int
) -> None:
    envelope, _ = signed(federation, make_verdict(federation))
    with (
        make_requester(federation, manifest) as requester,
        pytest.raises(BadSignature, match="does not verify"),
    ):
        requester.verify(flip(envelope, position))


def test_an_expired_verdict_is_refused(federation: Federation, manifest: TrustedManifest) -> None:
    envelope, _ = signed(federation, make_verdict(federation, expires=NOW))
    with (
        make_requester(federation, manifest) as requester,
        pytest.raises(Expired, match=r"expired at 2026-11-28T10:00:00Z \(now 2026-11-28T10:00:00Z"),
    ):
        requester.verify(envelope)


def test_a_verdict_for_another_requester_is_refused(
    federation: Federation, manifest: TrustedManifest
) -> None:
    envelope, jws = signed(federation, make_verdict(federation, requester="rival"))
    with (
        make_requester(federation, manifest) as requester,
        pytest.raises(WrongAudience, match="issued to 'rival', not 'acme'"),
    ):
        requester.verify(envelope, jws)


def test_a_verdict_by_an_unknown_key_is_refused(
    federation: Federation, manifest: TrustedManifest
) -> None:
    envelope = sign_verdict(make_verdict(federation), SigningKey.generate())
    with pytest.raises(UnknownKey, match="signed only by keys that are not trusted"):
        verify_single(envelope, "", manifest=manifest, requester=REQUESTER, now=NOW)


def test_a_jws_of_another_verdict_is_refused(
    federation: Federation, manifest: TrustedManifest
) -> None:
    envelope, _ = signed(federation, make_verdict(federation))
    _, other_jws = signed(federation, make_verdict(federation, subject=federation.subject(PERSON)))
    with pytest.raises(ClaimMismatch, match="disagree on sub, sub_type"):
        verify_single(envelope, other_jws, manifest=manifest, requester=REQUESTER, now=NOW)


# ------------------------------------------------------------------ fake stub


class FakeRpcError(grpc.RpcError):
    def __init__(
        self, code: grpc.StatusCode, details: str, trailers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(details)
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:  # type: ignore[override]
        return self._trailers


class FakeCall:
    def __init__(self, responses: list[registry_pb2.ScreenBatchResponse]) -> None:
        self._responses = responses
        self.cancelled = False

    def __iter__(self) -> Iterator[registry_pb2.ScreenBatchResponse]:
        return iter(self._responses)

    def cancel(self) -> bool:
        self.cancelled = True
        return True


@dataclass
class FakeStub:
    """Plays the registry's side of the calls the tests make."""

    manifests: list[Envelope] = field(default_factory=list)
    verdict: registry_pb2.RequestVerdictResponse | None = None
    error: grpc.RpcError | None = None
    screen: Any = None
    requests: list[Any] = field(default_factory=list)

    def GetManifest(
        self, request: registry_pb2.GetManifestRequest, timeout: float
    ) -> registry_pb2.GetManifestResponse:
        self.requests.append(request)
        return registry_pb2.GetManifestResponse(manifest=self.manifests.pop(0).to_proto())

    def RequestVerdict(
        self, request: registry_pb2.RequestVerdictRequest, timeout: float
    ) -> registry_pb2.RequestVerdictResponse:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        assert self.verdict is not None
        return self.verdict

    def ScreenBatch(
        self, requests: Iterator[registry_pb2.ScreenBatchRequest], timeout: float | None
    ) -> FakeCall:
        messages = list(requests)
        self.requests.extend(messages)
        call = FakeCall(self.screen(messages))
        self.screen_call = call
        return call


def with_stub(requester: Requester, stub: FakeStub, monkeypatch: pytest.MonkeyPatch) -> Requester:
    monkeypatch.setattr(requester, "_stub", stub)
    return requester


def test_a_rotated_registry_key_is_learnt_from_a_newer_manifest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    federation = Federation.create()
    federation.enrol(REQUESTER)
    held = trust(federation)
    federation.registry_key = SigningKey.generate()
    newer = federation.manifest_envelope()
    stub = FakeStub(manifests=[newer])
    envelope, jws = signed(federation, make_verdict(federation))
    with make_requester(federation, held) as requester:
        with_stub(requester, stub, monkeypatch)
        assert requester.verify(envelope, jws).verdict.verdict_id == "v-1"
        assert requester.manifest().version == 2
    assert stub.requests == [registry_pb2.GetManifestRequest(have_version=1)]


def test_an_unknown_key_stays_refused_when_the_manifest_has_not_changed(
    federation: Federation, manifest: TrustedManifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = FakeStub(manifests=[manifest.envelope])
    envelope = sign_verdict(make_verdict(federation), SigningKey.generate())
    with make_requester(federation, manifest) as requester:
        with_stub(requester, stub, monkeypatch)
        with pytest.raises(UnknownKey, match="not trusted"):
            requester.verify(envelope)


def test_an_older_manifest_is_refused_on_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    federation = Federation.create()
    federation.enrol(REQUESTER)
    older = federation.manifest_envelope()
    held = trust(federation, trust(federation))
    stub = FakeStub(manifests=[older])
    envelope = sign_verdict(make_verdict(federation), SigningKey.generate())
    with make_requester(federation, held) as requester:
        with_stub(requester, stub, monkeypatch)
        with pytest.raises(RolledBack, match="version 1 is older than the held version 3"):
            requester.verify(envelope)


def test_an_unknown_key_with_the_registry_down_says_both(
    federation: Federation, manifest: TrustedManifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    class DownStub(FakeStub):
        def GetManifest(
            self, request: registry_pb2.GetManifestRequest, timeout: float
        ) -> registry_pb2.GetManifestResponse:
            raise FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused")

    envelope = sign_verdict(make_verdict(federation), SigningKey.generate())
    with make_requester(federation, manifest) as requester:
        with_stub(requester, DownStub(), monkeypatch)
        with pytest.raises(UnknownKey, match=r"could not be refreshed.*connection refused"):
            requester.verify(envelope)


def test_request_verdict_sends_the_question_and_checks_the_answer(
    federation: Federation, manifest: TrustedManifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    envelope, jws = signed(federation, make_verdict(federation))
    stub = FakeStub(
        verdict=registry_pb2.RequestVerdictResponse(verdict=envelope.to_proto(), verdict_jws=jws)
    )
    with make_requester(federation, manifest) as requester:
        with_stub(requester, stub, monkeypatch)
        verified = requester.verify_organisation(federation.subject(ORG))
        assert verified.status == "listed"
        assert stub.requests == [
            registry_pb2.RequestVerdictRequest(
                subject=subject_to_proto(federation.subject(ORG)),
                kinds=[common_pb2.VERDICT_KIND_BLACKLIST],
                purpose=common_pb2.PURPOSE_COUNTERPARTY_VERIFICATION,
                grant=agency_pb2.Grant(public_register=agency_pb2.PublicRegisterBasis()),
            )
        ]
        with pytest.raises(ClaimMismatch, match="is about subject"):
            requester.verify_organisation(federation.subject(OTHER_ORG))
        with pytest.raises(ClaimMismatch, match="another purpose or other kinds"):
            requester.request_verdict(
                federation.subject(ORG),
                kinds=["blacklist", "credit"],
                purpose="counterparty_verification",
                grant=agency_pb2.Grant(),
            )


def test_request_verdict_refuses_bad_questions_before_asking(
    federation: Federation, manifest: TrustedManifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = FakeStub()
    with make_requester(federation, manifest) as requester:
        with_stub(requester, stub, monkeypatch)
        with pytest.raises(InvalidInput, match="organisations only"):
            requester.verify_organisation(federation.subject(PERSON))
        with pytest.raises(InvalidInput, match="unknown verdict kind 'score'"):
            requester.request_verdict(
                federation.subject(ORG),
                kinds=["score"],
                purpose="credit_assessment",
                grant=agency_pb2.Grant(),
            )
        with pytest.raises(InvalidInput, match="not a string"):
            requester.request_verdict(
                federation.subject(ORG),
                kinds="credit",
                purpose="credit_assessment",
                grant=agency_pb2.Grant(),
            )
        with pytest.raises(InvalidInput, match="unknown purpose 'marketing'"):
            requester.request_verdict(
                federation.subject(ORG),
                kinds=["credit"],
                purpose="marketing",
                grant=agency_pb2.Grant(),
            )
    assert stub.requests == []


def test_a_refused_call_raises_the_domain_error_with_retry_after(
    federation: Federation, manifest: TrustedManifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = FakeStub(
        error=FakeRpcError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "acme made more than 50 requests per second; retry after 0.2s",
            (("retry-after", "0.200"),),
        )
    )
    with make_requester(federation, manifest) as requester:
        with_stub(requester, stub, monkeypatch)
        with pytest.raises(ResourceExhausted, match="more than 50 requests") as caught:
            requester.verify_organisation(federation.subject(ORG))
    assert caught.value.retry_after == pytest.approx(0.2)


# ---------------------------------------------------------------- screening


def screen_response(
    federation: Federation,
    rows: Iterable[tuple[str, registry_pb2.Verdict | None]],
    *,
    key: SigningKey | None = None,
) -> registry_pb2.ScreenBatchResponse:
    response = registry_pb2.ScreenBatchResponse()
    batch = registry_pb2.VerdictBatch()
    for row_key, verdict in rows:
        if verdict is None:
            response.results.add(
                row_key=row_key,
                refusal=agency_pb2.ItemRefusal(code=7, reason="no grant for a person"),
            )
        else:
            response.results.add(row_key=row_key, verdict_index=len(batch.verdicts))
            batch.verdicts.append(verdict)
    if batch.verdicts:
        envelope = sign(
            payloads.VERDICT_BATCH,
            batch.SerializeToString(),
            [key or federation.registry_key],
        )
        response.verdicts.CopyFrom(envelope.to_proto())
    return response


def test_a_good_batch_becomes_outcomes(federation: Federation, manifest: TrustedManifest) -> None:
    first = make_verdict(federation)
    second = make_verdict(federation, subject=federation.subject(OTHER_ORG))
    response = screen_response(federation, [("r1", first), ("r2", None), ("r3", second)])
    outcomes = outcomes_from_response(response, manifest.registry_keys, REQUESTER, NOW)
    assert [outcome.row_key for outcome in outcomes] == ["r1", "r2", "r3"]
    assert outcomes[0].verdict is not None
    assert outcomes[0].verdict.verdict == first
    assert outcomes[0].verdict.jws == ""
    assert outcomes[2].verdict is not None
    assert outcomes[2].verdict.verdict == second
    assert (outcomes[1].verdict, outcomes[1].refusal) == (None, (7, "no grant for a person"))
    error = outcomes[1].error
    assert isinstance(error, PermissionDenied)
    assert str(error) == "row 'r2': no grant for a person"
    assert outcomes[0].error is None


def test_a_tampered_batch_is_refused(federation: Federation, manifest: TrustedManifest) -> None:
    response = screen_response(federation, [("r1", make_verdict(federation))])
    response.verdicts.payload = flip(Envelope.from_proto(response.verdicts), 3).payload
    with pytest.raises(BadSignature, match="does not verify"):
        outcomes_from_response(response, manifest.registry_keys, REQUESTER, NOW)


def test_a_batch_by_another_key_is_refused(
    federation: Federation, manifest: TrustedManifest
) -> None:
    response = screen_response(
        federation, [("r1", make_verdict(federation))], key=SigningKey.generate()
    )
    with pytest.raises(UnknownKey, match="not trusted"):
        outcomes_from_response(response, manifest.registry_keys, REQUESTER, NOW)


def test_an_index_outside_the_batch_is_refused(
    federation: Federation, manifest: TrustedManifest
) -> None:
    response = screen_response(federation, [("r1", make_verdict(federation))])
    response.results.add(row_key="r9", verdict_index=1)
    with pytest.raises(
        InvalidInput, match="row 'r9' points at verdict 1, but the signed batch holds 1"
    ):
        outcomes_from_response(response, manifest.registry_keys, REQUESTER, NOW)


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (
            registry_pb2.ScreenResult(row_key="r1", verdict_index=0),
            "carries no signed verdict batch",
        ),
        (registry_pb2.ScreenResult(row_key="r1"), "row 'r1' has no outcome"),
    ],
)
def test_malformed_results_are_refused(
    manifest: TrustedManifest, result: registry_pb2.ScreenResult, message: str
) -> None:
    response = registry_pb2.ScreenBatchResponse(results=[result])
    with pytest.raises(InvalidInput, match=message):
        outcomes_from_response(response, manifest.registry_keys, REQUESTER, NOW)


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"requester": "rival"}, WrongAudience, "row 'r1' was issued to 'rival', not 'acme'"),
        (
            {"expires": NOW - timedelta(seconds=1)},
            Expired,
            "row 'r1' expired at 2026-11-28T09:59:59Z",
        ),
    ],
)
def test_rows_are_checked_for_requester_and_expiry(
    federation: Federation,
    manifest: TrustedManifest,
    changes: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    response = screen_response(federation, [("r1", make_verdict(federation, **changes))])
    with pytest.raises(error, match=message):
        outcomes_from_response(response, manifest.registry_keys, REQUESTER, NOW)


@pytest.mark.parametrize("missing", ["issued_at", "expires_at"])
def test_rows_without_their_times_are_refused(
    federation: Federation, manifest: TrustedManifest, missing: str
) -> None:
    verdict = make_verdict(federation)
    verdict.ClearField(missing)  # type: ignore[arg-type]
    response = screen_response(federation, [("r1", make_verdict(federation)), ("r2", verdict)])
    with pytest.raises(InvalidInput, match="row 'r2' lacks issued_at or expires_at"):
        outcomes_from_response(response, manifest.registry_keys, REQUESTER, NOW)


@pytest.mark.parametrize(
    ("offset", "error"), [(timedelta(0), None), (timedelta(microseconds=1), NotYetValid)]
)
def test_a_row_issued_just_within_the_skew_passes_and_just_beyond_is_refused(
    federation: Federation,
    manifest: TrustedManifest,
    offset: timedelta,
    error: type[Exception] | None,
) -> None:
    verdict = make_verdict(federation)
    verdict.issued_at.FromDatetime(NOW + payloads.CLOCK_SKEW + offset)
    response = screen_response(federation, [("r1", verdict)])
    if error is None:
        assert len(outcomes_from_response(response, manifest.registry_keys, REQUESTER, NOW)) == 1
    else:
        with pytest.raises(error, match="row 'r1' claims to be issued at"):
            outcomes_from_response(response, manifest.registry_keys, REQUESTER, NOW)


def echo_screen(
    federation: Federation, *, drop: int = 0, swap_subject: bool = False, extra: str = ""
) -> Any:
    """A fake registry answering each message's rows; the refusal for persons."""

    def screen(
        messages: list[registry_pb2.ScreenBatchRequest],
    ) -> list[registry_pb2.ScreenBatchResponse]:
        responses = []
        for message in messages:
            rows: list[tuple[str, registry_pb2.Verdict | None]] = []
            for item in message.items:
                if item.subject.type == common_pb2.SUBJECT_TYPE_PERSON:
                    rows.append((item.row_key, None))
                    continue
                verdict = make_verdict(federation)
                verdict.subject.CopyFrom(item.subject)
                if swap_subject:
                    verdict.subject.ref = bytes(32)
                rows.append((item.row_key, verdict))
            if extra:
                rows.append((extra, None))
            responses.append(screen_response(federation, rows[drop:]))
        return responses

    return screen


def rows_of(federation: Federation, count: int) -> Iterator[ScreenRow]:
    for index in range(count):
        yield ScreenRow(f"row-{index}", federation.subject(f"reg:CN:ORG{index:05d}"))


def test_screen_streams_messages_and_yields_verified_outcomes(
    federation: Federation, manifest: TrustedManifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = FakeStub(screen=echo_screen(federation))
    rows = [*rows_of(federation, 4), ScreenRow("person", federation.subject(PERSON))]
    with make_requester(federation, manifest) as requester:
        with_stub(requester, stub, monkeypatch)
        outcomes = list(requester.screen(rows, message_size=2))
    assert [len(message.items) for message in stub.requests] == [2, 2, 1]
    assert all(
        message.purpose == common_pb2.PURPOSE_COUNTERPARTY_VERIFICATION
        and list(message.kinds) == [common_pb2.VERDICT_KIND_BLACKLIST]
        and message.items[0].grant.HasField("public_register")
        for message in stub.requests
    )
    assert [outcome.row_key for outcome in outcomes] == [
        "row-0",
        "row-1",
        "row-2",
        "row-3",
        "person",
    ]
    assert all(outcome.verdict is not None for outcome in outcomes[:4])
    assert isinstance(outcomes[4].error, PermissionDenied)


@pytest.mark.parametrize(
    ("fake", "error", "message"),
    [
        ({"drop": 1}, Unavailable, "without results for 2 row keys"),
        ({"swap_subject": True}, ClaimMismatch, "verdict for row 'row-0' is about subject 0000"),
        ({"extra": "row-77"}, ClaimMismatch, "row 'row-77', which was not sent"),
    ],
)
def test_screen_refuses_answers_that_do_not_match_the_rows(
    federation: Federation,
    manifest: TrustedManifest,
    monkeypatch: pytest.MonkeyPatch,
    fake: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    stub = FakeStub(screen=echo_screen(federation, **fake))
    with make_requester(federation, manifest) as requester:
        with_stub(requester, stub, monkeypatch)
        with pytest.raises(error, match=message):
            list(requester.screen(rows_of(federation, 4), message_size=2))
    assert stub.screen_call.cancelled


def test_a_failing_row_source_is_raised_to_the_caller(
    federation: Federation, manifest: TrustedManifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_rows() -> Iterator[ScreenRow]:
        yield from rows_of(federation, 3)
        raise OSError("input file truncated")

    stub = FakeStub(screen=echo_screen(federation))
    with make_requester(federation, manifest) as requester:
        with_stub(requester, stub, monkeypatch)
        screened = requester.screen(broken_rows(), message_size=2)
        with pytest.raises(OSError, match="input file truncated"):
            list(screened)
        with pytest.raises(InvalidInput, match="message_size must be at least 1"):
            requester.screen([], message_size=0)


# ------------------------------------------------------------- error mapping


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidInput),
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPrecondition),
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.ALREADY_EXISTS, AlreadyExists),
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded),
    ],
)
def test_status_codes_map_to_domain_errors(
    code: grpc.StatusCode, error: type[CredenceError]
) -> None:
    mapped = error_from_status(code, "grant g-1 was revoked")
    assert type(mapped) is error
    assert str(mapped).startswith("grant g-1 was revoked")


@pytest.mark.parametrize("code", [grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED])
def test_other_codes_are_credence_errors_with_the_code_name(code: grpc.StatusCode) -> None:
    mapped = error_from_status(code, "")
    assert type(mapped) is CredenceError
    assert str(mapped) == f"{code.name}: the server gave no reason ({code.name})"


def test_transport_errors_say_what_to_do() -> None:
    unavailable = error_from_status(grpc.StatusCode.UNAVAILABLE, "connection refused")
    deadline = error_from_status(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    assert "check the address and that the server runs" in str(unavailable)
    assert "allow a longer timeout" in str(deadline)


@pytest.mark.parametrize(
    ("trailers", "retry_after"),
    [
        ((("retry-after", "1.500"),), 1.5),
        ((("Retry-After", b"2"),), 2.0),
        ((("other", "x"), ("retry-after", "soon")), None),
        ((("retry-after", "nan"),), None),
        ((("retry-after", "-1"),), None),
        ((), None),
    ],
)
def test_retry_after_is_parsed_from_trailers(
    trailers: tuple[tuple[str, str | bytes], ...], retry_after: float | None
) -> None:
    mapped = error_from_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", trailers)
    assert isinstance(mapped, ResourceExhausted)
    assert mapped.retry_after == retry_after


def test_rpc_errors_translates_calls_and_bare_errors() -> None:
    call_error = FakeRpcError(grpc.StatusCode.NOT_FOUND, "no member 'x'")
    with pytest.raises(NotFound, match="no member 'x'") as caught, rpc_errors():
        raise call_error
    assert caught.value.__cause__ is call_error
    bare = error_from_rpc(grpc.RpcError("channel closed"))
    assert type(bare) is CredenceError
    assert "channel closed" in str(bare)


# ---------------------------------------------------------------- credentials


def write_credentials(federation: Federation, directory: Path) -> dict[str, Path]:
    member = federation.members[REQUESTER]
    paths = {
        "key": directory / "tls.key",
        "cert": directory / "tls.crt",
        "ca": directory / "ca.crt",
        "signing_key": directory / "signing.key",
    }
    paths["key"].write_bytes(member.tls_key_pem)
    paths["cert"].write_bytes(member.cert_pem)
    paths["ca"].write_bytes(federation.ca.certificate_pem)
    save_signing_key(paths["signing_key"], member.signing_key)
    return paths


def test_credentials_load_from_files(federation: Federation, tmp_path: Path) -> None:
    paths = write_credentials(federation, tmp_path)
    loaded = MemberCredentials.from_files(REQUESTER, **paths)
    assert loaded.cert_pem == federation.members[REQUESTER].cert_pem
    assert loaded.signing_key is not None
    assert loaded.signing_key.kid == federation.members[REQUESTER].signing_key.kid


def test_credentials_for_another_member_are_refused(federation: Federation, tmp_path: Path) -> None:
    paths = write_credentials(federation, tmp_path)
    with pytest.raises(InvalidInput, match="is for member 'acme', not 'rival'"):
        MemberCredentials.from_files("rival", key=paths["key"], cert=paths["cert"], ca=paths["ca"])


def test_a_missing_credentials_file_is_named(federation: Federation, tmp_path: Path) -> None:
    paths = write_credentials(federation, tmp_path)
    paths["key"].unlink()
    with pytest.raises(InvalidInput, match=r"cannot read the TLS key file .*tls\.key"):
        MemberCredentials.from_files(
            REQUESTER, key=paths["key"], cert=paths["cert"], ca=paths["ca"]
        )


def test_a_mismatched_tls_key_is_refused_at_connect(
    federation: Federation, manifest: TrustedManifest
) -> None:
    other = federation.members["agency-a"]
    mixed = MemberCredentials(
        REQUESTER,
        other.tls_key_pem,
        federation.members[REQUESTER].cert_pem,
        federation.ca.certificate_pem,
    )
    with pytest.raises(InvalidInput, match="does not certify the TLS key"):
        Requester(
            "127.0.0.1:1", mixed, root_keys=KeySet([federation.root_key.public]), manifest=manifest
        )


def test_a_repeated_row_key_is_owed_once_per_time_it_was_sent() -> None:
    first = SubjectRef(SubjectType.ORGANISATION, b"\x01" * 32)
    second = SubjectRef(SubjectType.ORGANISATION, b"\x02" * 32)
    owed = _Rows()
    owed.sent([ScreenRow("k", first), ScreenRow("k", second), ScreenRow("other", first)])
    assert owed.answered(["k", "other"]) == [first, first]
    with pytest.raises(Unavailable, match="without results for 1 row keys"):
        owed.check_complete()
    assert owed.answered(["k"]) == [second]
    owed.check_complete()
    with pytest.raises(ClaimMismatch, match="'k', which was not sent or was answered already"):
        owed.answered(["k"])

"""The requester SDK: ask the registry for verdicts and verify them offline.

A member connects over mutual TLS with its certificate (:class:`Requester`),
asks for one verdict or screens many subjects, and gets back only verdicts
that verified: the registry's signature under a key of the federation
manifest, expiry, that the verdict was issued to this member, and that it
answers what was asked. The manifest is verified against the root keys the
member pinned, and refreshed (never rolled back) when a verdict names a
registry key the held manifest does not list.

Failed calls raise :mod:`credence.errors` classes, mapped in one place
(:mod:`credence.client.errors`). Enrolment and the subject's own calls, made
without a member certificate, live in :mod:`credence.client.enrol` and
:mod:`credence.client.subject`.
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import grpc

from credence.client.channel import ChannelClient
from credence.client.errors import error_from_rpc, error_from_status, rpc_errors
from credence.client.results import (
    ScreenOutcome,
    ScreenRow,
    VerifiedVerdict,
    check_answers,
    outcomes_from_response,
    verify_single,
)
from credence.clock import Clock, utc_now
from credence.envelope import Envelope
from credence.errors import (
    ClaimMismatch,
    DeadlineExceeded,
    InvalidInput,
    Unavailable,
    UnknownKey,
)
from credence.explanations import verify_explanation
from credence.keys import KeySet, SigningKey, load_signing_key
from credence.manifest import TrustedManifest, verify_manifest
from credence.names import kind_value, purpose_value
from credence.pki import load_certificate_pem, member_id_from_certificate, validate_member_id
from credence.queries import public_register, subject_to_proto, subject_type_value
from credence.rpc.tls import channel_credentials
from credence.subjects import SubjectRef, SubjectType
from credence.v1 import agency_pb2, common_pb2, registry_pb2, registry_pb2_grpc

__all__ = [
    "MemberCredentials",
    "Requester",
    "ScreenOutcome",
    "ScreenRow",
    "VerifiedVerdict",
    "error_from_rpc",
    "error_from_status",
    "outcomes_from_response",
    "rpc_errors",
    "verify_single",
]

DEFAULT_TIMEOUT = 10.0
# A screening response of a few thousand verdicts outgrows gRPC's 4 MiB default.
CHANNEL_OPTIONS = (("grpc.max_receive_message_length", 64 * 1024 * 1024),)

_T = TypeVar("_T")


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read the {what} file {path}: {exc.strerror}") from exc


@dataclass(frozen=True)
class MemberCredentials:
    """What a member connects and signs with."""

    member_id: str
    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes
    signing_key: SigningKey | None = None

    @classmethod
    def from_files(
        cls,
        member_id: str,
        *,
        key: Path,
        cert: Path,
        ca: Path,
        signing_key: Path | None = None,
    ) -> MemberCredentials:
        """Load credentials from PEM files and check that the certificate names the member.

        Raises:
            InvalidInput: a file is unreadable or malformed, the member id is
                invalid, or the certificate is for another member.
            CertificateRefused: the certificate names no member.
        """
        validate_member_id(member_id)
        cert_pem = _read(cert, "member certificate")
        named = member_id_from_certificate(load_certificate_pem(cert_pem))
        if named != member_id:
            raise InvalidInput(
                f"certificate {cert} is for member {named!r}, not {member_id!r}; "
                "pass the certificate the registry issued to this member"
            )
        return cls(
            member_id=member_id,
            key_pem=_read(key, "TLS key"),
            cert_pem=cert_pem,
            ca_pem=_read(ca, "federation CA"),
            signing_key=None if signing_key is None else load_signing_key(signing_key),
        )


def _kind_values(kinds: Sequence[str]) -> list[common_pb2.VerdictKind.ValueType]:
    if isinstance(kinds, str):
        raise InvalidInput(f"kinds must be a list of kind names, e.g. [{kinds!r}], not a string")
    if not kinds:
        raise InvalidInput("ask for at least one verdict kind ('blacklist' or 'credit')")
    return [kind_value(kind) for kind in kinds]


class _Rows:
    """The screened rows still owed a result, shared by the request and response sides.

    Rows are registered a message at a time and settled a response at a
    time, one lock each, not one per row.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owed: dict[str, SubjectRef] = {}
        # Further rows under a row key already owed, in the order sent.
        self._repeated: dict[str, deque[SubjectRef]] = {}
        self.failure: BaseException | None = None

    def sent(self, rows: Sequence[ScreenRow]) -> None:
        with self._lock:
            owed = self._owed
            for row in rows:
                if row.row_key in owed:
                    self._repeated.setdefault(row.row_key, deque()).append(row.subject)
                else:
                    owed[row.row_key] = row.subject

    def answered(self, row_keys: Sequence[str]) -> list[SubjectRef]:
        """The subjects of ``row_keys``, each owed once per time it was sent.

        Raises:
            ClaimMismatch: a row key not sent, or answered already.
        """
        subjects = []
        with self._lock:
            owed = self._owed
            for row_key in row_keys:
                subject = owed.pop(row_key, None)
                if subject is None:
                    raise ClaimMismatch(
                        f"registry returned a result for row {row_key!r}, which was not sent "
                        "or was answered already"
                    )
                repeated = self._repeated.get(row_key)
                if repeated:
                    owed[row_key] = repeated.popleft()
                    if not repeated:
                        del self._repeated[row_key]
                subjects.append(subject)
        return subjects

    def check_complete(self) -> None:
        with self._lock:
            missing = sorted(self._owed)
        if missing:
            raise Unavailable(
                f"registry ended the screening stream without results for {len(missing)} "
                f"row keys (first {missing[0]!r}); screen those rows again"
            )


class Requester(ChannelClient):
    """A member's connection to the registry: verdicts in, verified verdicts out.

    Args:
        address: the registry's ``host:port``.
        credentials: the member's TLS key, certificate and the federation CA.
        root_keys: the federation's pinned root keys (its JWKS file).
        root_threshold: how many pinned root keys must sign the first manifest.
        timeout: the deadline of each unary call, in seconds.
        manifest: a manifest already verified (e.g. kept from an earlier run);
            fetched with GetManifest when not given.
        clock: the time source for verification.

    Raises:
        InvalidInput: the TLS key or certificate is unreadable or not a pair.
    """

    def __init__(
        self,
        address: str,
        credentials: MemberCredentials,
        *,
        root_keys: KeySet,
        root_threshold: int = 1,
        timeout: float = DEFAULT_TIMEOUT,
        manifest: TrustedManifest | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.member_id = credentials.member_id
        self._root_keys = root_keys
        self._root_threshold = root_threshold
        self._timeout = timeout
        self._clock = clock
        self._held = manifest
        self._lock = threading.Lock()
        creds = channel_credentials(credentials.key_pem, credentials.cert_pem, credentials.ca_pem)
        self._channel = grpc.secure_channel(address, creds, options=CHANNEL_OPTIONS)
        self._stub = registry_pb2_grpc.RegistryServiceStub(self._channel)

    # -- manifest ---------------------------------------------------------------

    def manifest(self) -> TrustedManifest:
        """The held manifest, fetched first when none is held or it has expired.

        Raises:
            CredenceError: the fetch failed (e.g. Unavailable), or the manifest
                did not verify (BadSignature, RolledBack, Expired, ...).
        """
        held = self._held
        if held is None or self._clock() >= held.expires_at:
            return self.refresh_manifest()
        return held

    def refresh_manifest(self) -> TrustedManifest:
        """Fetch the current manifest and verify it as the successor of the held one.

        Raises:
            CredenceError: as :meth:`manifest`.
        """
        with self._lock:
            held = self._held
            request = registry_pb2.GetManifestRequest(have_version=held.version if held else 0)
            with rpc_errors():
                response = self._stub.GetManifest(request, timeout=self._timeout)
            self._held = verify_manifest(
                Envelope.from_proto(response.manifest),
                trusted_root=self._root_keys,
                threshold=self._root_threshold,
                now=self._clock(),
                held=held,
            )
            return self._held

    def _under_manifest(self, check: Callable[[TrustedManifest], _T]) -> _T:
        # A registry key unknown to the held manifest may be a rotation the
        # member has not seen yet: fetch once, then decide.
        manifest = self.manifest()
        try:
            return check(manifest)
        except UnknownKey as unknown:
            try:
                fresh = self.refresh_manifest()
            except (Unavailable, DeadlineExceeded) as exc:
                raise UnknownKey(
                    f"{unknown}; the manifest could not be refreshed to look for a new "
                    f"registry key: {exc}"
                ) from exc
            if fresh is manifest:
                raise
            return check(fresh)

    # -- verdicts -----------------------------------------------------------------

    def verify(self, envelope: Envelope, jws: str = "") -> VerifiedVerdict:
        """Verify a verdict offline, and that its JWS credential agrees when given.

        Checks the registry's signature under a key of the manifest, expiry,
        and that the verdict was issued to this member.

        Raises:
            VerificationError: a subclass naming the failed check (BadSignature,
                UnknownKey, Expired, WrongAudience, ClaimMismatch, ...).
            InvalidInput: a malformed verdict or token.
        """
        return self._under_manifest(
            lambda manifest: verify_single(
                envelope, jws, manifest=manifest, requester=self.member_id, now=self._clock()
            )
        )

    def request_verdict(
        self,
        subject: SubjectRef,
        *,
        kinds: Sequence[str],
        purpose: str,
        grant: agency_pb2.Grant,
    ) -> VerifiedVerdict:
        """Ask for one subject's verdict and verify it.

        Args:
            subject: who to look up.
            kinds: ``"blacklist"`` and/or ``"credit"``.
            purpose: e.g. ``"credit_assessment"``.
            grant: the consent, mandate or public-register basis.

        Raises:
            InvalidInput: unknown kinds or purpose, or refused as malformed.
            PermissionDenied, Unauthenticated, FailedPrecondition, NotFound,
                ResourceExhausted, Unavailable, DeadlineExceeded: the registry
                refused or could not be reached.
            VerificationError: the verdict did not verify (see :meth:`verify`),
                or answers another subject, purpose or kinds (ClaimMismatch).
        """
        kind_values = _kind_values(kinds)
        purpose_number = purpose_value(purpose)
        wire_subject = subject_to_proto(subject)
        request = registry_pb2.RequestVerdictRequest(
            subject=wire_subject, kinds=kind_values, purpose=purpose_number, grant=grant
        )
        with rpc_errors():
            response = self._stub.RequestVerdict(request, timeout=self._timeout)
        verified = self.verify(Envelope.from_proto(response.verdict), response.verdict_jws)
        check_answers(verified.verdict, wire_subject, purpose_number, kind_values)
        explained = (
            purpose_number == common_pb2.PURPOSE_CREDIT_ASSESSMENT
            and common_pb2.VERDICT_KIND_CREDIT in kind_values
        )
        if not explained:
            return verified
        if not response.HasField("explanation"):
            raise ClaimMismatch(
                f"verdict {verified.verdict.verdict_id!r} is a credit decision's verdict but "
                "the registry sent no explanation of it"
            )
        signed = Envelope.from_proto(response.explanation)
        explanation = self._under_manifest(
            lambda manifest: verify_explanation(
                signed, verified.verdict, verified.envelope, manifest
            )
        )
        return replace(verified, explanation=explanation, explanation_envelope=signed)

    def verify_organisation(
        self, subject: SubjectRef, *, purpose: str = "counterparty_verification"
    ) -> VerifiedVerdict:
        """An organisation's blacklist status on the public-register basis.

        Raises:
            InvalidInput: the subject is a person, who needs a consent or mandate
                (use :meth:`request_verdict`).
            CredenceError: as :meth:`request_verdict`.
        """
        if subject.subject_type != SubjectType.ORGANISATION:
            raise InvalidInput(
                "the public-register basis covers organisations only; look up a person "
                "with request_verdict and their consent or a mandate"
            )
        return self.request_verdict(
            subject, kinds=("blacklist",), purpose=purpose, grant=public_register()
        )

    def screen(
        self,
        rows: Iterable[ScreenRow],
        *,
        kinds: Sequence[str] = ("blacklist",),
        purpose: str = "counterparty_verification",
        message_size: int = 1000,
        timeout: float | None = None,
    ) -> Iterator[ScreenOutcome]:
        """Screen many subjects through one ScreenBatch stream.

        Rows are read lazily and sent ``message_size`` at a time; outcomes are
        yielded as the registry's responses arrive, in any order, each tagged
        with its row key. Each response's signed batch is verified once.

        Args:
            rows: the subjects, each with the caller's row key.
            kinds: verdict kinds asked for every row.
            purpose: the purpose of every row.
            message_size: rows per request message.
            timeout: deadline of the whole stream in seconds; None for none.

        Returns:
            An iterator of outcomes; iterate it to the end to learn of rows the
            registry never answered. Stopping early cancels the stream.

        Raises:
            InvalidInput: unknown kinds or purpose, or ``message_size`` below 1
                (at once); while iterating, anything ``rows`` raises, and:
            CredenceError: the stream was refused (as :meth:`request_verdict`),
                a response did not verify, a row's verdict answers another
                subject, purpose or kinds (ClaimMismatch), or rows were left
                unanswered (Unavailable).
        """
        if message_size < 1:
            raise InvalidInput(f"message_size must be at least 1, got {message_size}")
        kind_values = _kind_values(kinds)
        purpose_number = purpose_value(purpose)
        owed = _Rows()
        requests = _requests(rows, kind_values, purpose_number, message_size, owed)
        return self._screen(requests, owed, kind_values, purpose_number, timeout)

    def _screen(
        self,
        requests: Iterator[registry_pb2.ScreenBatchRequest],
        owed: _Rows,
        kinds: Sequence[int],
        purpose: int,
        timeout: float | None,
    ) -> Iterator[ScreenOutcome]:
        call = self._stub.ScreenBatch(requests, timeout=timeout)
        asked_kinds = sorted(kinds)
        try:
            with rpc_errors():
                for response in call:
                    outcomes = self._under_manifest(functools.partial(self._outcomes, response))
                    subjects = owed.answered([outcome.row_key for outcome in outcomes])
                    for outcome, subject in zip(outcomes, subjects, strict=True):
                        if outcome.verdict is not None:
                            _check_screened(outcome, subject, purpose, asked_kinds)
                        yield outcome
                    if owed.failure is not None:
                        raise owed.failure
            if owed.failure is not None:
                raise owed.failure
            owed.check_complete()
        finally:
            call.cancel()

    def _outcomes(
        self, response: registry_pb2.ScreenBatchResponse, manifest: TrustedManifest
    ) -> list[ScreenOutcome]:
        return outcomes_from_response(
            response, manifest.registry_keys, self.member_id, self._clock()
        )

    # -- grants -------------------------------------------------------------------

    def issue_consent(self, consent_request_token: str, binding_token: str) -> tuple[str, str]:
        """Have the registry countersign a subject's signed consent request.

        Returns:
            The consent token (use it as ``agency_pb2.Grant(consent_token=...)``)
            and its grant id.

        Raises:
            CredenceError: refused (e.g. PermissionDenied beyond the purpose's
                fair-use cap) or the registry could not be reached.
        """
        request = registry_pb2.IssueConsentRequest(
            consent_request_token=consent_request_token, binding_token=binding_token
        )
        with rpc_errors():
            response = self._stub.IssueConsent(request, timeout=self._timeout)
        return response.consent_token, response.grant_id

    def register_binding(self, binding_token: str) -> str:
        """Bind a subject's personal key (identity-verifying members only).

        Returns:
            The key id of the bound personal key.

        Raises:
            CredenceError: refused or the registry could not be reached.
        """
        request = registry_pb2.RegisterBindingRequest(binding_token=binding_token)
        with rpc_errors():
            return self._stub.RegisterBinding(request, timeout=self._timeout).subject_kid

    def register_mandate(self, mandate_token: str) -> str:
        """Register an authority's mandate.

        Returns:
            The mandate's grant id.

        Raises:
            CredenceError: refused (e.g. an embargo beyond the maximum) or the
                registry could not be reached.
        """
        request = registry_pb2.RegisterMandateRequest(mandate_token=mandate_token)
        with rpc_errors():
            return self._stub.RegisterMandate(request, timeout=self._timeout).grant_id


def _requests(
    rows: Iterable[ScreenRow],
    kinds: Sequence[common_pb2.VerdictKind.ValueType],
    purpose: common_pb2.Purpose.ValueType,
    size: int,
    owed: _Rows,
) -> Iterator[registry_pb2.ScreenBatchRequest]:
    # gRPC reads this on its own thread and would only log an exception from
    # it; it is kept for the reading side to raise, and the stream ends.
    try:
        public = public_register()
        pending: list[ScreenRow] = []
        message = registry_pb2.ScreenBatchRequest(kinds=kinds, purpose=purpose)
        add_item = message.items.add
        for row in rows:
            grant = row.grant if row.grant is not None else public
            item = add_item(row_key=row.row_key, grant=grant)
            item.subject.type = subject_type_value(row.subject)  # type: ignore[assignment]
            item.subject.ref = row.subject.ref
            pending.append(row)
            if len(pending) >= size:
                owed.sent(pending)
                yield message
                pending = []
                message = registry_pb2.ScreenBatchRequest(kinds=kinds, purpose=purpose)
                add_item = message.items.add
        if pending:
            owed.sent(pending)
            yield message
    except Exception as exc:
        owed.failure = exc


def _check_screened(
    outcome: ScreenOutcome, subject: SubjectRef, purpose: int, asked_kinds: list[int]
) -> None:
    """:func:`check_answers` for a screened row, against the subject as the caller gave it.

    Raises:
        ClaimMismatch: another subject, purpose or kinds than the row asked.
    """
    verdict = outcome.verdict.verdict  # type: ignore[union-attr]
    asked = verdict.subject
    if asked.ref != subject.ref or asked.type != subject_type_value(subject):
        raise ClaimMismatch(
            f"verdict for row {outcome.row_key!r} is about subject {asked.ref.hex()}, "
            f"not {subject.ref.hex()}"
        )
    kinds = list(verdict.kinds)
    if verdict.purpose != purpose or (kinds != asked_kinds and sorted(kinds) != asked_kinds):
        raise ClaimMismatch(
            f"verdict for row {outcome.row_key!r} answers another purpose or other kinds "
            "than were asked"
        )

"""The node's proof that the registry logged every query it was asked to answer.

Every answered query carries the registry's log promise. Once the promise's
merge delay has passed, the node fetches the log's checkpoint (verified with
the log's origin and key from the manifest), checks it is consistent with the last head it saw
(the log only grows), and checks an inclusion proof for each promised entry.
A missing entry or a failed proof is evidence of registry misbehaviour: an
alarm row in the node's database, an error line in its log, and a
NOT_SERVING health status for the audit component until the check passes.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import grpc
from sqlalchemy import ColumnElement, Engine, Row, func, select, update

from agency_node import config as node_config
from agency_node import database
from agency_node.log_gate import LogGate
from agency_node.manifest_holder import ManifestHolder, load_manifest
from agency_node.models import AuditAlarm, QueryLogEntry, SeenTreeHead
from agency_node.tile_audit import GATING, run_tile_pass
from credence.clock import Clock
from credence.errors import CredenceError, FailedPrecondition, NotFound, Unavailable
from credence.rpc.tls import RECONNECT_OPTIONS
from credence.storage import immediate_writer, reader, session_factory
from credence.transparency.log_audit import (
    MAX_PROOFS_PER_CALL,
    MISSING_ENTRY,
    LogClient,
    LogIdentity,
    TrustedHead,
    check_consistency,
    check_inclusions,
    open_tree_head,
)
from credence.transparency.tile_reader import TileReader
from credence.v1 import registry_pb2, registry_pb2_grpc

_log = logging.getLogger(__name__)

AUDIT_SERVICE = "credence.audit"
#: Promises proved per request (the registry's bound).
CHUNK = MAX_PROOFS_PER_CALL

_LOGGED_PROBLEMS = 20
#: The kind of problem ``credence node audit`` reports when it could check nothing.
UNREACHABLE = "registry_unreachable"

#: The audit component turns NOT_SERVING when a promise is this far past its merge delay.
DEFAULT_MAX_LAG_SECONDS = 600

Progress = Callable[[int, int], None]
Answer = Callable[[], registry_pb2.GetInclusionProofsResponse]


@dataclass
class AuditReport:
    """What one audit pass found."""

    tree_size: int = 0
    checked: int = 0
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # kind, query id, detail
    #: Answered promises not yet proved to be in the log, after this pass.
    unchecked: int = 0
    #: Of those, how many are past their merge delay.
    overdue: int = 0
    #: How long the oldest overdue promise is past its merge delay, in seconds.
    lag_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return not self.problems


def log_identity(manifests: ManifestHolder) -> LogIdentity:
    """The registry's log (origin and key) from the current manifest.

    Raises:
        UnknownKey: the manifest's log key is revoked or missing.
    """
    return LogIdentity.from_manifest(manifests.current())


class LogAuditor:
    """Checks the node's accepted promises against the registry's log."""

    def __init__(
        self,
        *,
        engine: Engine,
        manifests: ManifestHolder,
        client: LogClient,
        clock: Clock,
        merge_delay: timedelta,
        tiles: TileReader | None = None,
        gate: LogGate | None = None,
        alarms: AlarmReporter | None = None,
        member_id: str | None = None,
    ) -> None:
        # Its transactions read, then write, beside a busy server: take the lock up front.
        self._sessions = session_factory(immediate_writer(engine))
        self._manifests = manifests
        self._client = client
        self._clock = clock
        self._merge_delay = merge_delay
        # With the registry's tiles, a pass reads them against the cosigned checkpoint
        # (agency_node.tile_audit); without, it asks the public port for proofs.
        self._tiles = tiles
        self._gate = gate
        # Tells the registry's operator about new alarms (the console's alarms page).
        self._alarms = alarms
        # With it, a pass from tiles also looks for recovery leaves naming this node missing.
        self._member_id = member_id

    def close(self) -> None:
        """Close the connections to the registry's log."""
        self._client.close()
        if self._tiles is not None:
            self._tiles.close()
        if self._alarms is not None:
            self._alarms.close()

    def run_once(
        self,
        *,
        everything: bool = False,
        progress: Progress | None = None,
        stop: threading.Event | None = None,
    ) -> AuditReport:
        """One pass over every promise due; ``everything`` re-checks verified ones too.

        Promises are proved :data:`CHUNK` at a time, each chunk with one request
        against the one signed head of the pass; ``progress(done, total)`` is
        called after each chunk, and a set ``stop`` ends the pass early. The
        report ends with the lag that remains.
        """
        now = self._clock()
        report = AuditReport()
        if self._tiles is not None:
            return self._run_from_tiles(
                self._tiles, report, now, everything=everything, progress=progress, stop=stop
            )
        try:
            head = self._client.tree_head(log_identity(self._manifests))
        except CredenceError as exc:
            report.problems.append(("bad_tree_head", "", str(exc)))
            self._record(report, now)
            self._measure_lag(report, now)
            return report
        report.tree_size = head.tree_size
        self._check_growth(head, report, now)
        cutoff = now if everything else now - self._merge_delay
        due: tuple[ColumnElement[bool], ...] = (
            QueryLogEntry.outcome == "answered",
            QueryLogEntry.entry_commitment.is_not(None),
            QueryLogEntry.received_at <= cutoff,
        )
        if not everything:
            due = (*due, QueryLogEntry.inclusion_checked_at.is_(None))
        with reader(self._sessions()) as session:
            total = int(session.scalar(select(func.count()).where(*due)) or 0)
        done = last_id = 0
        # One request in flight while the previous answer is checked: the registry
        # proves the next batch while this process verifies and records the last.
        pending: tuple[list[Row[int, str, bytes | None]], list[bytes], Answer] | None = None
        while True:
            with reader(self._sessions()) as session:
                rows = list(
                    session.execute(
                        select(
                            QueryLogEntry.id, QueryLogEntry.query_id, QueryLogEntry.entry_commitment
                        )
                        .where(*due, QueryLogEntry.id > last_id)
                        .order_by(QueryLogEntry.id)
                        .limit(CHUNK)
                    )
                )
            following = None
            if rows and not (stop is not None and stop.is_set()):
                last_id = rows[-1][0]
                commitments = [bytes(commitment or b"") for _, _, commitment in rows]
                answer = self._client.inclusion_proofs_later(commitments, head.tree_size)
                following = (rows, commitments, answer)
            if pending is not None:
                self._check_chunk(head, *pending, report=report, now=now)
                done += len(pending[0])
                if progress is not None:
                    progress(done, max(total, done))
            if following is None:
                break
            pending = following
        self._record(report, now)
        self._measure_lag(report, now)
        return report

    def _run_from_tiles(
        self,
        tiles: TileReader,
        report: AuditReport,
        now: datetime,
        *,
        everything: bool,
        progress: Progress | None,
        stop: threading.Event | None,
    ) -> AuditReport:
        checked = run_tile_pass(
            sessions=self._sessions, tiles=tiles, note=self._client.cosigned_checkpoint(),
            manifest=self._manifests.current(), report=report, now=now,
            merge_delay=self._merge_delay, everything=everything, progress=progress, stop=stop,
            member_id=self._member_id,
        )  # fmt: skip
        self._record(report, now)
        self._measure_lag(report, now)
        # A pass that checked nothing (no cosigned checkpoint yet) leaves the gate as it was.
        # Only this pass tells the gate: its evidence is against a checkpoint the witnesses
        # vouched for. The bulk pass keeps to alarms and the audit's health, as before.
        if self._gate is None or not checked:
            return report
        gating = [detail for kind, _, detail in report.problems if kind in GATING]
        more = f" (and {len(gating) - 1} more problem(s))" if len(gating) > 1 else ""
        self._gate.audit_problem(f"the log audit failed: {gating[0]}{more}" if gating else None)
        return report

    def _check_chunk(
        self,
        head: TrustedHead,
        rows: Sequence[tuple[int, str, bytes | None]],
        commitments: Sequence[bytes],
        answer: Answer,
        *,
        report: AuditReport,
        now: datetime,
    ) -> None:
        try:
            check = check_inclusions(head, commitments, answer())
        except CredenceError as exc:
            # The answer as a whole is unusable: every entry in it stays unchecked.
            report.problems.extend(
                ("bad_inclusion_proof", query_id, str(exc)) for _, query_id, _ in rows
            )
            return
        for position, kind, detail in check.failed:
            query_id = rows[position][1]
            report.problems.append(
                (kind, query_id,
                 f"query {query_id} was promised but is not in the log of "
                 f"{head.tree_size} entries" if kind == MISSING_ENTRY else detail)
            )  # fmt: skip
        verified = [rows[position][0] for position in check.included]
        report.checked += len(verified)
        if verified:
            with self._sessions.begin() as session:
                session.execute(
                    update(QueryLogEntry)
                    .where(QueryLogEntry.id.in_(verified))
                    .values(inclusion_checked_at=now)
                )

    def lag_only(self) -> AuditReport:
        """A report of the lag alone, without asking the registry (it may be down)."""
        report = AuditReport()
        self._measure_lag(report, self._clock())
        return report

    def _measure_lag(self, report: AuditReport, now: datetime) -> None:
        unchecked = (
            QueryLogEntry.outcome == "answered",
            QueryLogEntry.entry_commitment.is_not(None),
            QueryLogEntry.inclusion_checked_at.is_(None),
        )
        with reader(self._sessions()) as session:
            report.unchecked = int(session.scalar(select(func.count()).where(*unchecked)) or 0)
            overdue, oldest = session.execute(
                select(func.count(), func.min(QueryLogEntry.received_at)).where(
                    *unchecked, QueryLogEntry.received_at <= now - self._merge_delay
                )
            ).one()
        report.overdue = int(overdue or 0)
        if oldest is not None:
            report.lag_seconds = max(0.0, (now - self._merge_delay - oldest).total_seconds())

    def _check_growth(self, head: TrustedHead, report: AuditReport, now: datetime) -> None:
        with reader(self._sessions()) as session:
            previous = session.scalars(
                select(SeenTreeHead).order_by(SeenTreeHead.tree_size.desc()).limit(1)
            ).first()
        if previous is not None and previous.tree_size != head.tree_size:
            try:
                older = open_tree_head(previous.envelope, log_identity(self._manifests))
                path = (
                    self._client.consistency(older.tree_size, head.tree_size)
                    if head.tree_size >= older.tree_size
                    else []
                )
                check_consistency(older, head, path)
            except CredenceError as exc:
                report.problems.append(("inconsistent_log", "", str(exc)))
                return
        if previous is None or head.tree_size > previous.tree_size:
            with self._sessions.begin() as session:
                session.merge(
                    SeenTreeHead(
                        tree_size=head.tree_size,
                        root=head.root_hash,
                        envelope=head.to_bytes(),
                        seen_at=now,
                    )
                )

    def _record(self, report: AuditReport, now: datetime) -> None:
        if not report.problems:
            return
        with self._sessions.begin() as session:
            rows = session.execute(select(AuditAlarm.kind, AuditAlarm.query_id))
            known = {(kind, query_id) for kind, query_id in rows}
            fresh = [kind for kind, query_id, _ in report.problems if (kind, query_id) not in known]
            for number, (kind, query_id, detail) in enumerate(report.problems):
                if number < _LOGGED_PROBLEMS:
                    _log.error("registry log audit failed (%s): %s", kind, detail)
                elif number == _LOGGED_PROBLEMS:
                    _log.error(
                        "registry log audit: %d more problem(s), see the audit_alarms table",
                        len(report.problems) - number,
                    )
                if (kind, query_id) not in known or not query_id:
                    session.add(
                        AuditAlarm(raised_at=now, kind=kind, query_id=query_id, detail=detail)
                    )
        if self._alarms is not None:
            self._alarms.report(fresh, report.tree_size, now)


class AlarmReporter:
    """Reports alarms to the registry's operator (``ReportAlarm`` on the members' port).

    Counts per kind of the problems a pass found first (not already in the
    node's ``audit_alarms``, which keeps which queries). A registry that cannot
    be reached, or refuses, costs a warning: the alarm is in the node's own table.
    """

    def __init__(self, registry: str, credentials: grpc.ChannelCredentials) -> None:
        self._channel = grpc.secure_channel(registry, credentials, options=RECONNECT_OPTIONS)
        self._stub = registry_pb2_grpc.RegistryServiceStub(self._channel)

    def report(self, kinds: Sequence[str], tree_size: int, now: datetime) -> None:
        """Report how many problems of each kind this pass found first."""
        for kind, count in sorted(Counter(kinds).items()):
            request = registry_pb2.ReportAlarmRequest(kind=kind, count=count, tree_size=tree_size)
            request.raised_at.FromDatetime(now)
            try:
                self._stub.ReportAlarm(request, timeout=5)
            except grpc.RpcError as exc:
                _log.warning(
                    "could not report the %s alarm to the registry (%s): it stays in the "
                    "audit_alarms table", kind, exc.code().name,
                )  # fmt: skip

    def close(self) -> None:
        """Close the channel to the registry."""
        self._channel.close()


class AuditThread(threading.Thread):
    """Runs :class:`LogAuditor` on a schedule and reflects the outcome in health.

    The audit component is NOT_SERVING while a check fails, and while the oldest
    unchecked promise is more than ``max_lag_seconds`` past its merge delay (the
    registry unreachable, or the audit falling behind): an alarm that would come
    late is reported as one.
    """

    def __init__(
        self,
        auditor: LogAuditor,
        *,
        interval_seconds: float,
        on_status: Callable[[bool], None],
        max_lag_seconds: float = DEFAULT_MAX_LAG_SECONDS,
    ) -> None:
        super().__init__(name="node-audit", daemon=True)
        self._auditor = auditor
        self._interval = interval_seconds
        self._on_status = on_status
        self._max_lag = max_lag_seconds
        self.stopping = threading.Event()
        #: The latest pass's report (the node's /metrics shows its lag); None before one.
        self.last_report: AuditReport | None = None

    def run(self) -> None:
        """Audit every interval until stopped."""
        while not self.stopping.wait(self._interval):
            try:
                self.last_report = self.run_pass()
            except Exception:
                _log.exception("log audit pass failed")
        self._auditor.close()

    def run_pass(self) -> AuditReport:
        """One pass: check, log the lag, set the health status.

        When the registry cannot be reached the lag is still measured and reported.
        """
        try:
            report = self._auditor.run_once(stop=self.stopping)
        except (grpc.RpcError, Unavailable, NotFound) as exc:
            report = self._auditor.lag_only()
            _log.warning(
                "log audit: registry unreachable (%s); %d promise(s) unchecked, %d overdue, "
                "lag %.0f s",
                _unreachable(exc), report.unchecked, report.overdue, report.lag_seconds,
            )  # fmt: skip
            if report.lag_seconds > self._max_lag:
                self._lagging(report)
            return report
        _log.info(
            "log audit: %d promise(s) proved against a log of %d; %d unchecked, %d overdue, "
            "lag %.0f s",
            report.checked, report.tree_size, report.unchecked, report.overdue,
            report.lag_seconds,
        )  # fmt: skip
        if report.lag_seconds > self._max_lag:
            self._lagging(report)
        else:
            self._on_status(report.ok)
        return report

    def _lagging(self, report: AuditReport) -> None:
        _log.error(
            "log audit lag %.0f s exceeds the bound of %.0f s (%d promise(s) overdue): "
            "audit component NOT_SERVING",
            report.lag_seconds, self._max_lag, report.overdue,
        )  # fmt: skip
        self._on_status(False)


def audit_node(
    data_dir: Path, *, clock: Clock, everything: bool = True, progress: Progress | None = None
) -> tuple[AuditReport, list[tuple[str, str, str]]]:
    """``credence node audit``: check every answered query of a node against the log.

    Returns:
        This pass's report and every alarm the node has recorded.

    Raises:
        FailedPrecondition: the node is not enrolled (no registry address).
    """
    config = node_config.load_config(data_dir)
    if not config.registry_public:
        raise FailedPrecondition(
            f"{data_dir} knows no registry log address: enrol it with `credence node enrol`"
        )
    manifests = ManifestHolder(
        load_manifest(config, clock()), config.path(node_config.MANIFEST_FILE)
    )
    ca_pem = config.path(node_config.CA_CERT_FILE).read_bytes()
    engine = database.create_engine_for(config.effective_database_url)
    auditor = LogAuditor(
        engine=engine,
        manifests=manifests,
        client=LogClient(
            config.registry_public, grpc.ssl_channel_credentials(root_certificates=ca_pem)
        ),
        clock=clock,
        merge_delay=timedelta(seconds=config.audit_merge_delay_seconds),
        tiles=tile_reader(config, ca_pem),
        member_id=config.member_id,
    )
    try:
        try:
            report = auditor.run_once(everything=everything, progress=progress)
        except (grpc.RpcError, Unavailable, NotFound) as exc:
            # Nothing could be checked; what is still owed is worth saying all the more.
            report = auditor.lag_only()
            where = " and ".join(filter(None, (config.registry_public, config.registry_http)))
            report.problems.append(
                (UNREACHABLE, "",
                 f"cannot reach the registry's log at {where} ({_unreachable(exc)}): "
                 "check the address and that the registry is up")
            )  # fmt: skip
        with session_factory(engine)() as session:
            alarms = [
                (alarm.kind, alarm.query_id, alarm.detail)
                for alarm in session.scalars(select(AuditAlarm).order_by(AuditAlarm.id))
            ]
    finally:
        auditor.close()
        engine.dispose()
    return report, alarms


#: Where a node keeps the log's full tiles (they never change) between audit passes.
TILE_CACHE_DIR = "tiles"


def tile_reader(config: node_config.NodeConfig, ca_pem: bytes) -> TileReader | None:
    """The reader of the registry's tiles, if the node knows its HTTP side (``registry_http``).

    Full tiles are cached in the node's data directory.

    Raises:
        InvalidInput: ``registry_http`` is not an https:// URL.
    """
    if not config.registry_http:
        return None
    return TileReader(
        config.registry_http, ca_pem, cache_dir=config.path(TILE_CACHE_DIR), memory_tiles=2048
    )


def _unreachable(exc: Exception) -> str:
    return exc.code().name if isinstance(exc, grpc.RpcError) else str(exc)

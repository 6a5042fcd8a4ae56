"""The node's proof that the registry logged every query it was asked to answer.

Every answered query carries the registry's log promise. Once the promise's
merge delay has passed, the node fetches a signed tree head (verified with the
log key from the manifest), checks it is consistent with the last head it saw
(the log only grows), and checks an inclusion proof for each promised entry.
A missing entry or a failed proof is evidence of registry misbehaviour: an
alarm row in the node's database, an error line in its log, and a
NOT_SERVING health status for the audit component until the check passes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import grpc
from sqlalchemy import Engine, select, update

from agency_node import config as node_config
from agency_node import database
from agency_node.manifest_holder import ManifestHolder, load_manifest
from agency_node.models import AuditAlarm, QueryLogEntry, SeenTreeHead
from credence.envelope import Envelope
from credence.errors import CredenceError, FailedPrecondition
from credence.keys import KeySet
from credence.log_audit import (
    LogClient,
    TrustedHead,
    check_consistency,
    check_inclusion,
    open_tree_head,
)
from credence.storage import immediate_writer, session_factory

_log = logging.getLogger(__name__)

AUDIT_SERVICE = "credence.audit"
BATCH = 500

Clock = Callable[[], datetime]


@dataclass
class AuditReport:
    """What one audit pass found."""

    tree_size: int = 0
    checked: int = 0
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # kind, query id, detail

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return not self.problems


def log_keys(manifests: ManifestHolder) -> KeySet:
    """The registry's log key(s) from the current manifest."""
    manifest = manifests.current
    return KeySet(
        key for kid, key in manifest.registry_keys.items() if kid == manifest.registry.log_id
    )


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
    ) -> None:
        # Its transactions read, then write, beside a busy server: take the lock up front.
        self._sessions = session_factory(immediate_writer(engine))
        self._manifests = manifests
        self._client = client
        self._clock = clock
        self._merge_delay = merge_delay

    def close(self) -> None:
        """Close the connection to the registry's log."""
        self._client.close()

    def run_once(self, *, everything: bool = False) -> AuditReport:
        """One pass; ``everything`` re-checks already verified entries too (``credence audit``)."""
        now = self._clock()
        report = AuditReport()
        try:
            head = self._client.tree_head(log_keys(self._manifests))
        except CredenceError as exc:
            report.problems.append(("bad_tree_head", "", str(exc)))
            self._record(report, now)
            return report
        report.tree_size = head.tree_size
        self._check_growth(head, report, now)
        cutoff = now if everything else now - self._merge_delay
        with self._sessions() as session:
            query = select(QueryLogEntry.id, QueryLogEntry.query_id, QueryLogEntry.entry_commitment)
            query = query.where(
                QueryLogEntry.outcome == "answered",
                QueryLogEntry.entry_commitment.is_not(None),
                QueryLogEntry.received_at <= cutoff,
            )
            if not everything:
                query = query.where(QueryLogEntry.inclusion_checked_at.is_(None)).limit(BATCH)
            rows = list(session.execute(query.order_by(QueryLogEntry.id)))
        verified: list[int] = []
        for row_id, query_id, commitment in rows:
            assert commitment is not None
            try:
                check_inclusion(
                    head, commitment, self._client.inclusion(commitment, head.tree_size)
                )
            except grpc.RpcError as exc:
                if exc.code() is grpc.StatusCode.NOT_FOUND:
                    report.problems.append(
                        ("missing_entry", query_id,
                         f"query {query_id} was promised but is not in the log of "
                         f"{head.tree_size} entries")
                    )  # fmt: skip
                else:
                    raise
            except CredenceError as exc:
                report.problems.append(("bad_inclusion_proof", query_id, str(exc)))
            else:
                verified.append(row_id)
        report.checked = len(verified)
        if verified:
            with self._sessions.begin() as session:
                session.execute(
                    update(QueryLogEntry)
                    .where(QueryLogEntry.id.in_(verified))
                    .values(inclusion_checked_at=now)
                )
        self._record(report, now)
        return report

    def _check_growth(self, head: TrustedHead, report: AuditReport, now: datetime) -> None:
        with self._sessions() as session:
            previous = session.scalars(
                select(SeenTreeHead).order_by(SeenTreeHead.tree_size.desc()).limit(1)
            ).first()
        if previous is not None and previous.tree_size != head.tree_size:
            try:
                older = open_tree_head(
                    Envelope.from_bytes(previous.envelope), log_keys(self._manifests)
                )
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
            for kind, query_id, detail in report.problems:
                _log.error("registry log audit failed (%s): %s", kind, detail)
                if (kind, query_id) not in known or not query_id:
                    session.add(
                        AuditAlarm(raised_at=now, kind=kind, query_id=query_id, detail=detail)
                    )


class AuditThread(threading.Thread):
    """Runs :class:`LogAuditor` on a schedule and reflects the outcome in health."""

    def __init__(
        self,
        auditor: LogAuditor,
        *,
        interval_seconds: float,
        on_status: Callable[[bool], None],
    ) -> None:
        super().__init__(name="node-audit", daemon=True)
        self._auditor = auditor
        self._interval = interval_seconds
        self._on_status = on_status
        self.stopping = threading.Event()

    def run(self) -> None:
        """Audit every interval until stopped."""
        while not self.stopping.wait(self._interval):
            try:
                report = self._auditor.run_once()
            except grpc.RpcError as exc:
                _log.warning("log audit: registry unreachable (%s)", exc.code().name)
                continue
            except Exception:
                _log.exception("log audit pass failed")
                continue
            self._on_status(report.ok)
        self._auditor.close()


def audit_node(
    data_dir: Path, *, clock: Clock, everything: bool = True
) -> tuple[AuditReport, list[tuple[str, str, str]]]:
    """``credence audit node``: check every answered query of a node against the log.

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
    )
    try:
        report = auditor.run_once(everything=everything)
        with session_factory(engine)() as session:
            alarms = [
                (alarm.kind, alarm.query_id, alarm.detail)
                for alarm in session.scalars(select(AuditAlarm).order_by(AuditAlarm.id))
            ]
    finally:
        auditor.close()
        engine.dispose()
    return report, alarms

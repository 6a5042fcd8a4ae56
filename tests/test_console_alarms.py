"""What a real federation's agency does reaches the console: its calls and its alarms.

A real federation in-process (registry with its console, one agency node
started through the CLI's init/enrol/import). The fan-out's calls to the
agency show on the agencies page. The node's query log gains a
promise the registry never logged; the node's next audit pass raises the
alarm, reports it over ReportAlarm, and the console's alarms page shows the
node, the kind and the count, while the query id stays in the node's own table.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select
from support.console import admin_console, admin_token, issue_admin_token
from support.inprocess import InProcessFederation
from support.registry import init_registry

from agency_node import database as node_database
from agency_node.audit import AuditReport
from agency_node.models import AuditAlarm, QueryLogEntry
from central_registry import database
from central_registry.models import Alarm
from central_registry.server import RegistryThread
from credence.dev import synthetic
from credence.storage import session_factory

PROFILE = synthetic.AGENCY_PROFILES[0]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessFederation]:
    root = tmp_path_factory.mktemp("console-alarms")
    registry_dir = init_registry(
        root / "registry", {"console_listen": "127.0.0.1:0", "fanout_deadline_seconds": 8.0}
    )
    federation = InProcessFederation(root, RegistryThread(registry_dir))
    try:
        federation.enrol_member("lender", "company", "--purposes", "counterparty_verification")
        federation.add_agency(PROFILE, subjects=10, settings={"audit_interval_seconds": 3600})
        # One real lookup: the log the node audits against is not empty.
        expected = synthetic.expected([PROFILE], 10)
        subject = (expected.listed_organisations + expected.clear_organisations)[0]
        with federation.requester("lender") as client:
            client.verify_organisation(federation.subject(subject))
        issue_admin_token(federation)
        yield federation
    finally:
        federation.stop()


def _audit_until_problem(fed: InProcessFederation) -> AuditReport:
    auditor = fed.nodes[PROFILE.name].auditor
    assert auditor is not None
    deadline = time.monotonic() + 60
    while True:
        report = auditor.run_pass()
        if report.problems or time.monotonic() > deadline:
            return report
        time.sleep(0.3)


def _registry_alarms(fed: InProcessFederation) -> list[tuple[str, str, int]]:
    engine = database.create_engine_for(database.sqlite_url_for(fed.registry_dir))
    try:
        with session_factory(engine)() as session:
            rows = session.scalars(select(Alarm).order_by(Alarm.id))
            return [(row.member_id, row.kind, row.count) for row in rows]
    finally:
        engine.dispose()


def _console_page(fed: InProcessFederation, path: str) -> str:
    """``path`` of the console, logged in as alice."""
    with admin_console(fed, admin_token(fed)) as client:
        page = client.get(path)
        assert page.status_code == 200
        return page.text


def test_a_node_audit_alarm_is_on_the_console_without_its_query(fed: InProcessFederation) -> None:
    withheld = f"q-withheld-{secrets.token_hex(4)}"
    node_dir = fed.node_dir(PROFILE.name)
    engine = node_database.create_engine_for(node_database.sqlite_url_for(node_dir))
    try:
        with node_database.session_factory(engine).begin() as session:
            session.execute(
                insert(QueryLogEntry),
                [{
                    "query_id": withheld, "requester": "lender",
                    "received_at": datetime.now(UTC) - timedelta(minutes=5),
                    "purpose": "counterparty_verification", "kinds": "blacklist",
                    "outcome": "answered", "status_code": "OK", "reason": "",
                    "entry_commitment": secrets.token_bytes(32),
                }],
            )  # fmt: skip
        report = _audit_until_problem(fed)
        assert [(kind, query) for kind, query, _ in report.problems] == [
            ("missing_entry", withheld)
        ]
        with node_database.session_factory(engine)() as session:
            kept = session.scalars(select(AuditAlarm.query_id)).all()
        assert withheld in kept  # the node keeps which query
        assert _registry_alarms(fed) == [(PROFILE.name, "missing_entry", 1)]
        # A later pass finding the same problem again reports nothing new.
        assert _audit_until_problem(fed).problems
        assert len(_registry_alarms(fed)) == 1
        page = _console_page(fed, "/alarms")
        row = page[page.index("<tbody>") : page.index("</tbody>")]
        assert PROFILE.name in row
        assert "missing_entry" in row
        assert withheld not in page
    finally:
        engine.dispose()


def test_the_agencies_page_shows_the_calls_the_fan_out_made(fed: InProcessFederation) -> None:
    stats = fed.registry.running.agency_stats
    assert stats is not None
    [court] = stats.summary(datetime.now(UTC))
    # The fixture's lookup asked the agency, and it answered.
    assert court.agency_id == PROFILE.name
    assert court.calls >= 1
    assert court.timeouts == court.errors == court.invalid == 0
    assert court.last_seen is not None
    assert court.p50_seconds is not None
    assert court.p50_seconds > 0
    page = _console_page(fed, "/agencies")
    row = page[page.index(f'id="agency-{PROFILE.name}"') :].split("</tr>")[0]
    assert re.findall(r'class="num">([^<]*)<', row)[0] == str(court.calls)
    assert " ms" in row
    assert "<path d=" in page  # this minute's median is on the chart

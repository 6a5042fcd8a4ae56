"""The operator's console over real TLS (httpx), against a registry running in-process.

Written from the attacker's side where it matters: no cookie, a wrong, expired
or revoked token, a forged cookie, a form without its CSRF token. Each is
refused and nothing changes (the member's state, the admin_actions table).
The pages show members' and agencies' own ids, never a subject. Alarms
reach the registry through ReportAlarm over mutual TLS, bounded and rate-limited.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import httpx
import pytest
from sqlalchemy import func, select
from support.console import (
    TOKEN_FILE,
    admin_console,
    admin_token,
    console_federation,
    csrf_of,
    enrol,
)
from support.inprocess import InProcessFederation
from support.registry import init_registry, run

from agency_node.audit import AlarmReporter
from central_registry import alarms as registry_alarms
from central_registry import database
from central_registry.console import admin_tokens
from central_registry.console.app import MAX_FORM_BYTES
from central_registry.console.sessions import COOKIE_NAME
from central_registry.models import AdminAction, AdminToken, Alarm, Contest
from central_registry.models import Member as MemberRow
from central_registry.server import RegistryThread
from credence.cli import main
from credence.client import enrol as client_enrol
from credence.errors import FailedPrecondition, PermissionDenied
from credence.keys import SigningKey
from credence.pki import generate_tls_key, make_csr
from credence.rpc.tls import channel_credentials
from credence.storage import session_factory
from credence.v1 import registry_pb2, registry_pb2_grpc

PAGES = ("/members", "/agencies", "/log", "/alarms", "/contests")
SUBJECT_REF = "5a" * 32


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessFederation]:
    with console_federation(tmp_path_factory.mktemp("console")) as federation:
        yield federation


def _login(client: httpx.Client, token: str) -> httpx.Response:
    """Log in with ``token`` through the login form: the console's answer, unchecked."""
    return client.post("/login", data={"csrf": csrf_of(client.get("/login").text), "token": token})


@pytest.fixture
def admin(fed: InProcessFederation) -> Iterator[httpx.Client]:
    with admin_console(fed, None) as client:
        assert _login(client, admin_token(fed)).headers["location"] == "/members"
        yield client


def _state(fed: InProcessFederation, member_id: str) -> str | None:
    engine = database.create_engine_for(database.sqlite_url_for(fed.registry_dir))
    try:
        with session_factory(engine)() as session:
            member = session.get(MemberRow, member_id)
            return None if member is None else member.state
    finally:
        engine.dispose()


def _actions(fed: InProcessFederation) -> list[tuple[str, str, str, str]]:
    engine = database.create_engine_for(database.sqlite_url_for(fed.registry_dir))
    try:
        with session_factory(engine)() as session:
            rows = session.scalars(select(AdminAction).order_by(AdminAction.id))
            return [(row.admin, row.action, row.member_id, row.outcome) for row in rows]
    finally:
        engine.dispose()


def _add(fed: InProcessFederation, *rows: object) -> None:
    engine = database.create_engine_for(database.sqlite_url_for(fed.registry_dir))
    try:
        with session_factory(engine).begin() as session:
            session.add_all(rows)
    finally:
        engine.dispose()


def test_the_login_cookie_is_host_only_secure_httponly_strict(fed: InProcessFederation) -> None:
    with admin_console(fed, None) as client:
        page = client.get("/login")
    assert page.status_code == 200
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    for attribute in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
        assert attribute in cookie
    assert "Domain" not in cookie
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "<script" not in page.text


def test_metrics_are_served_beside_the_console_for_prometheus(fed: InProcessFederation) -> None:
    pytest.importorskip("prometheus_client", reason="/metrics is mounted with prometheus-client")
    with admin_console(fed, None) as client:
        scraped = client.get("/metrics")
    assert scraped.status_code == 200
    assert "process_cpu_seconds_total" in scraped.text


@pytest.mark.parametrize("path", PAGES)
def test_every_page_needs_a_login(fed: InProcessFederation, path: str) -> None:
    with admin_console(fed, None) as client:
        response = client.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == "/login"


def test_a_wrong_token_is_refused_and_logs_no_one_in(fed: InProcessFederation) -> None:
    before = _actions(fed)
    with admin_console(fed, None) as client:
        forged = admin_tokens.new_token()
        refused = _login(client, forged)
        assert refused.status_code == 401
        assert "not known here" in refused.text
        assert client.get("/members").status_code == 303
        assert _login(client, "password").status_code == 401
    assert _actions(fed) == before


def test_an_expired_token_is_refused(fed: InProcessFederation) -> None:
    token = admin_tokens.new_token()
    past = datetime.now(UTC) - timedelta(days=2)
    hashed = admin_tokens.token_hash(token)
    expired = past + timedelta(days=1)
    _add(fed, AdminToken(token_hash=hashed, name="bob", created_at=past, expires_at=expired))
    with admin_console(fed, None) as client:
        refused = _login(client, token)
        assert refused.status_code == 401
        assert "expired" in refused.text
        assert client.get("/members").status_code == 303


def test_a_login_form_without_its_csrf_token_is_refused(fed: InProcessFederation) -> None:
    with admin_console(fed, None) as client:
        client.get("/login")
        refused = client.post("/login", data={"csrf": "x" * 43, "token": admin_token(fed)})
        assert refused.status_code == 401
        assert client.get("/members").status_code == 303


def test_a_forged_or_altered_cookie_is_refused(
    fed: InProcessFederation, admin: httpx.Client
) -> None:
    genuine = admin.cookies[COOKIE_NAME]
    body, _, mac = genuine.partition(".")
    with admin_console(fed, None) as client:
        # Same signature, a different body; and a body with a signature of our own.
        for cookie in (f"{body[:-2]}AA.{mac}", f"{body}.{'A' * len(mac)}", "e30.e30"):
            client.cookies.set(COOKIE_NAME, cookie)
            assert client.get("/members").status_code == 303


def test_a_member_action_without_its_csrf_token_changes_nothing(
    fed: InProcessFederation, admin: httpx.Client
) -> None:
    before = _actions(fed)
    for csrf in (None, "forged"):
        data = {"member_id": "bank-a", "action": "suspend"}
        if csrf:
            data["csrf"] = csrf
        refused = admin.post("/members/action", data=data)
        assert refused.status_code == 401
    assert _state(fed, "bank-a") == "active"
    assert _actions(fed) == before


def test_an_action_without_a_session_changes_nothing(fed: InProcessFederation) -> None:
    before = _actions(fed)
    with admin_console(fed, None) as client:
        csrf = csrf_of(client.get("/login").text)  # a pre-login session's token is no admin's
        refused = client.post(
            "/members/action", data={"member_id": "bank-a", "action": "suspend", "csrf": csrf}
        )
    assert refused.status_code == 401
    assert _state(fed, "bank-a") == "active"
    assert _actions(fed) == before


def test_an_oversized_form_is_refused_unread(admin: httpx.Client) -> None:
    refused = admin.post(
        "/members/action", data={"member_id": "x" * MAX_FORM_BYTES, "action": "suspend"}
    )
    assert refused.status_code == 400
    assert f"at most {MAX_FORM_BYTES} bytes" in refused.text


def test_a_revoked_token_ends_its_sessions(fed: InProcessFederation) -> None:
    run("registry", "admin-token", "--dir", fed.registry_dir, "--name", "carol",
        "--out", fed.root / "carol.token")  # fmt: skip
    with admin_console(fed, None) as client:
        assert _login(client, (fed.root / "carol.token").read_text()).status_code == 303
        assert client.get("/members").status_code == 200
        run("registry", "admin-token", "--dir", fed.registry_dir, "--revoke", "carol")
        assert client.get("/members").status_code == 303
        assert _login(client, (fed.root / "carol.token").read_text()).status_code == 401


def test_the_token_file_is_private_and_only_its_hash_is_stored(fed: InProcessFederation) -> None:
    path = fed.root / TOKEN_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    token = path.read_text().strip()
    assert token.startswith(admin_tokens.TOKEN_PREFIX)
    assert token.encode() not in (fed.registry_dir / "registry.db").read_bytes()
    code = main(["registry", "admin-token", "--dir", str(fed.registry_dir), "--name", "dave",
                 "--out", str(path)])  # fmt: skip
    assert code != 0  # an existing file is never overwritten
    assert path.read_text().strip() == token


def test_approve_refuse_suspend_and_reinstate_are_done_and_logged(
    fed: InProcessFederation, admin: httpx.Client
) -> None:
    enrol(fed, "shop-7", "company", approve=False)
    enrol(fed, "spam-1", "company", approve=False)
    page = admin.get("/members")
    assert 'id="pending-shop-7"' in page.text
    csrf = csrf_of(page.text)

    def act(action: str, member_id: str) -> httpx.Response:
        return admin.post(
            "/members/action", data={"csrf": csrf, "action": action, "member_id": member_id}
        )

    assert act("approve", "shop-7").headers["location"] == "/members?done=approve&member=shop-7"
    assert _state(fed, "shop-7") == "active"
    assert act("refuse", "spam-1").status_code == 303
    assert _state(fed, "spam-1") is None
    # Refusing an approved member is not a refusal of an enrolment: nothing changes.
    refused = act("refuse", "shop-7")
    assert refused.status_code == 409
    assert "not pending" in refused.text
    assert _state(fed, "shop-7") == "active"
    assert act("suspend", "shop-7").status_code == 303
    assert _state(fed, "shop-7") == "suspended"
    assert act("reinstate", "shop-7").status_code == 303
    assert _state(fed, "shop-7") == "active"
    logged = [row for row in _actions(fed) if row[2] in {"shop-7", "spam-1"}]
    assert [row[:3] for row in logged] == [
        ("alice", "approve", "shop-7"),
        ("alice", "refuse", "spam-1"),
        ("alice", "refuse", "shop-7"),
        ("alice", "suspend", "shop-7"),
        ("alice", "reinstate", "shop-7"),
    ]
    assert logged[2][3].startswith("refused: ")
    assert all(row[3] == "ok" for index, row in enumerate(logged) if index != 2)


def test_a_member_suspended_in_the_console_is_refused_by_the_registry(
    fed: InProcessFederation, admin: httpx.Client
) -> None:
    csrf = csrf_of(admin.get("/members").text)
    with fed.requester("bank-a") as client:
        client.refresh_manifest()
        done = admin.post(
            "/members/action", data={"csrf": csrf, "action": "suspend", "member_id": "bank-a"}
        )
        assert done.status_code == 303
        try:
            with pytest.raises(PermissionDenied, match="suspended"):
                client.refresh_manifest()
        finally:
            admin.post(
                "/members/action",
                data={"csrf": csrf, "action": "reinstate", "member_id": "bank-a"},
            )
        client.refresh_manifest()


def test_each_page_shows_its_figures_and_no_subject(
    fed: InProcessFederation, admin: httpx.Client
) -> None:
    now = datetime.now(UTC)
    _add(
        fed,
        Contest(contest_id="c-1", subject_ref=SUBJECT_REF, agency="court-1",
                record_kind="court_judgment", statement="my name is Jane Roe", state="open",
                filed_at=now - timedelta(hours=3)),
        Alarm(member_id="court-1", kind="missing_entry", count=3, tree_size=77,
              raised_at=now, received_at=now),
    )  # fmt: skip
    stats = fed.registry.running.agency_stats
    assert stats is not None
    for seconds in (0.010, 0.020, 0.030):
        stats.observe("court-1", seconds, "ok", now)
    stats.observe("court-1", 2.0, "timeout", now)
    pages = {path: admin.get(path) for path in PAGES}
    assert all(page.status_code == 200 for page in pages.values())
    members = pages["/members"].text
    assert 'id="member-bank-a"' in members
    assert 'id="member-court-1"' in members
    agencies = pages["/agencies"].text
    row = agencies[agencies.index('id="agency-court-1"') :].split("</tr>")[0]
    assert re.findall(r'class="num">([^<]*)<', row) == ["4", "20 ms", "2000 ms", "1", "0", "0"]
    assert "<svg" in agencies
    assert "<path d=" in agencies
    assert 'id="log-size">0<' in pages["/log"].text
    assert "missing_entry" in pages["/alarms"].text
    contests = pages["/contests"].text
    assert "court-1" in contests
    assert "3 h ago" in contests
    for page in pages.values():
        assert SUBJECT_REF not in page.text
        assert "Jane Roe" not in page.text
        assert "c-1" not in page.text


def _agency_channel(fed: InProcessFederation, member_id: str) -> grpc.Channel:
    credentials = fed.members[member_id].credentials
    return grpc.secure_channel(
        fed.address,
        channel_credentials(credentials.key_pem, credentials.cert_pem, credentials.ca_pem),
    )


def _alarm_count(fed: InProcessFederation, member_id: str) -> int:
    engine = database.create_engine_for(database.sqlite_url_for(fed.registry_dir))
    try:
        with session_factory(engine)() as session:
            statement = select(func.count()).select_from(Alarm).where(Alarm.member_id == member_id)
            return int(session.scalar(statement) or 0)
    finally:
        engine.dispose()


def test_a_node_reports_alarms_by_kind_and_count(fed: InProcessFederation) -> None:
    credentials = fed.members["court-1"].credentials
    reporter = AlarmReporter(
        fed.address,
        channel_credentials(credentials.key_pem, credentials.cert_pem, credentials.ca_pem),
    )
    before = _alarm_count(fed, "court-1")
    try:
        reporter.report(
            ["missing_entry", "missing_entry", "inconsistent_log"], 120, datetime.now(UTC)
        )
    finally:
        reporter.close()
    assert _alarm_count(fed, "court-1") == before + 2
    engine = database.create_engine_for(database.sqlite_url_for(fed.registry_dir))
    try:
        with session_factory(engine)() as session:
            newest = session.scalars(select(Alarm).order_by(Alarm.id.desc()).limit(2)).all()
    finally:
        engine.dispose()
    assert sorted((alarm.kind, alarm.count, alarm.tree_size) for alarm in newest) == [
        ("inconsistent_log", 1, 120),
        ("missing_entry", 2, 120),
    ]


def test_report_alarm_refuses_non_agencies_bad_kinds_and_floods(fed: InProcessFederation) -> None:
    now = datetime.now(UTC)

    def request(kind: str = "missing_entry", count: int = 1) -> registry_pb2.ReportAlarmRequest:
        message = registry_pb2.ReportAlarmRequest(kind=kind, count=count, tree_size=5)
        message.raised_at.FromDatetime(now)
        return message

    with _agency_channel(fed, "bank-a") as channel:
        with pytest.raises(grpc.RpcError) as caught:
            registry_pb2_grpc.RegistryServiceStub(channel).ReportAlarm(request(), timeout=30)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _alarm_count(fed, "bank-a") == 0
    with _agency_channel(fed, "court-1") as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        before = _alarm_count(fed, "court-1")
        for kind, count in (("Missing Entry <b>", 1), ("x" * 49, 1), ("missing_entry", 0)):
            with pytest.raises(grpc.RpcError) as caught:
                stub.ReportAlarm(request(kind, count), timeout=30)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _alarm_count(fed, "court-1") == before
        for _ in range(registry_alarms.ALARMS_PER_HOUR - before):
            stub.ReportAlarm(request(), timeout=30)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ReportAlarm(request(), timeout=30)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "in the last hour" in (caught.value.details() or "")
    assert _alarm_count(fed, "court-1") == registry_alarms.ALARMS_PER_HOUR


def test_a_taken_console_port_fails_the_start_with_the_fix(
    fed: InProcessFederation, tmp_path: Path
) -> None:
    registry_dir = init_registry(tmp_path / "registry")
    taken = f"127.0.0.1:{fed.registry.console_port}"
    with pytest.raises(FailedPrecondition, match="console cannot listen on"):
        RegistryThread(registry_dir, console_listen=taken)


def test_an_enrolment_cannot_inject_markup_into_the_console(
    fed: InProcessFederation, admin: httpx.Client
) -> None:
    hostile = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    client_enrol.enrol(
        fed.public, fed.ca_pem, member_id="mallory", display_name=hostile, role="company",
        csr_pem=make_csr(generate_tls_key(), "mallory"), signing_key=SigningKey.generate(),
    )  # fmt: skip
    page = admin.get("/members").text
    assert 'id="pending-mallory"' in page
    assert hostile not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page

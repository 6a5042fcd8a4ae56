"""A consent is used as the subject granted it, never more: the attacker's side.

A registry and one agency node run in this process and talk over loopback
mutual TLS. The attacker is a member replaying a subject's signed consent
request: to get more lookups than granted, to undo a revocation, or to have
another member's request countersigned for itself. Every refusal leaves the
registry's grants exactly as they were.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from support.fixtures import StartFederation
from support.inprocess import InProcessFederation

from central_registry.models import Grant
from central_registry.status_publisher import StatusListPublisher
from central_registry.store import grant_rows
from credence.client.subject import SubjectClient
from credence.dev import synthetic
from credence.encoding import b64url_decode
from credence.errors import PermissionDenied, ResourceExhausted, Unavailable
from credence.grants import tokens
from credence.grants.status_list import verify_status_list
from credence.keys import SigningKey
from credence.v1 import agency_pb2, common_pb2

pytestmark = pytest.mark.slow

BANK = synthetic.AGENCY_PROFILES[2]
CREDIT = "credit_assessment"


@pytest.fixture(scope="module")
def fed(start_federation: StartFederation) -> InProcessFederation:
    fed = start_federation("consent-reuse")
    fed.enrol_member("acme", "company", "--purposes", f"counterparty_verification,{CREDIT}")
    fed.enrol_member("rival", "company", "--purposes", f"counterparty_verification,{CREDIT}")
    fed.enrol_member("idp", "company", "--identity-verifier")
    fed.add_agency(BANK)
    return fed


def _request_of(consent_token: str) -> str:
    claims = json.loads(b64url_decode(consent_token.split(".")[1]))
    return str(claims["req"])


def _signed_request(
    fed: InProcessFederation, person: str, *, requester: str, max_uses: int = 3
) -> tuple[str, str, SigningKey]:
    """(request, binding, subject key): signed by the subject, not yet countersigned."""
    now = datetime.now(UTC)
    subject_key = SigningKey.generate()
    idp_key = fed.members["idp"].credentials.signing_key
    assert idp_key is not None
    binding = tokens.issue_binding(
        subject_ref_hex=fed.subject(person).hex(), subject_key=subject_key.public,
        member_id="idp", member_key=idp_key, now=now, validity=timedelta(days=30),
    )  # fmt: skip
    with fed.requester("idp") as idp:
        idp.register_binding(binding)
    request = tokens.sign_consent_request(
        tokens.ConsentTerms(
            subject_ref=fed.subject(person).hex(), requester=requester, purpose=CREDIT,
            scope=("blacklist", "credit"), not_before=now - timedelta(minutes=1),
            expires_at=now + timedelta(days=10), max_uses=max_uses, data_life=timedelta(days=1),
        ),
        subject_key,
        now,
    )  # fmt: skip
    return request, binding, subject_key


def _grants(fed: InProcessFederation) -> list[dict[str, Any]]:
    """Every grant row, as the registry's database holds it."""
    with Session(fed.registry.running.engine) as session:
        rows = session.scalars(select(Grant).order_by(Grant.status_index))
        return [
            {column.key: getattr(row, column.key) for column in Grant.__table__.columns}
            for row in rows
        ]


def _lookup(fed: InProcessFederation, person: str, token: str) -> Any:
    with fed.requester("acme") as acme:
        return acme.request_verdict(
            fed.subject(person),
            kinds=("credit",),
            purpose=CREDIT,
            grant=agency_pb2.Grant(consent_token=token),
        )


def _subject(fed: InProcessFederation, person: str, key: SigningKey) -> SubjectClient:
    return SubjectClient(
        fed.public, fed.ca_pem, subject_key=key, subject_ref_hex=fed.subject(person).hex(),
        registry_id="registry",
    )  # fmt: skip


def _node_state(verdict: Any) -> tuple[int, str]:
    (agency,) = verdict.verdict.coverage.agencies
    return int(agency.state), str(agency.reason)


def _eventually(condition: Callable[[], bool], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_reissuing_a_used_up_consent_gives_no_extra_lookup(fed: InProcessFederation) -> None:
    person = synthetic.person(10)
    token, grant_id, _, binding = fed.consent(person, requester="acme", idp="idp")
    for _ in range(3):
        _lookup(fed, person, token)
    before = _grants(fed)
    with fed.requester("acme") as acme:
        reissued = [acme.issue_consent(_request_of(token), binding) for _ in range(3)]
    # The same grant each time: same id, same token, its uses still spent.
    assert reissued == [(token, grant_id)] * 3
    assert _grants(fed) == before
    for again, _ in reissued:
        with pytest.raises(ResourceExhausted, match="allowed 3 uses, all used"):
            _lookup(fed, person, again)
    assert [row["uses"] for row in _grants(fed) if row["grant_id"] == grant_id] == [3]


def test_reissuing_a_revoked_consent_keeps_it_revoked(fed: InProcessFederation) -> None:
    person = synthetic.person(11)
    token, grant_id, key, binding = fed.consent(person, requester="acme", idp="idp")
    with _subject(fed, person, key) as me:
        me.revoke(grant_id)
    before = _grants(fed)
    with fed.requester("acme") as acme:
        assert acme.issue_consent(_request_of(token), binding) == (token, grant_id)
    assert _grants(fed) == before
    with pytest.raises(PermissionDenied, match=f"grant {grant_id} was revoked"):
        _lookup(fed, person, token)


def test_another_member_cannot_have_the_request_countersigned(fed: InProcessFederation) -> None:
    person = synthetic.person(12)
    request, binding, _ = _signed_request(fed, person, requester="acme")
    before = _grants(fed)
    with fed.requester("rival") as rival, pytest.raises(PermissionDenied, match="names requester"):
        rival.issue_consent(request, binding)
    assert _grants(fed) == before
    # The requester the subject named still can, once.
    with fed.requester("acme") as acme:
        _, grant_id = acme.issue_consent(request, binding)
    # ... and the rival cannot fetch that grant by replaying the request either.
    with fed.requester("rival") as rival, pytest.raises(PermissionDenied, match="names requester"):
        rival.issue_consent(request, binding)
    assert [row["grant_id"] for row in _grants(fed)][len(before) :] == [grant_id]


def test_two_concurrent_issues_of_one_request_make_one_grant(fed: InProcessFederation) -> None:
    person = synthetic.person(13)
    request, binding, _ = _signed_request(fed, person, requester="acme")
    results: list[tuple[str, str] | BaseException] = []
    start_together = threading.Barrier(4)

    def issue() -> None:
        with fed.requester("acme") as acme:
            start_together.wait(timeout=30)
            try:
                results.append(acme.issue_consent(request, binding))
            except BaseException as exc:  # reported below
                results.append(exc)

    threads = [threading.Thread(target=issue) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(set(results)) == 1, results
    ((_, grant_id),) = set(results)  # type: ignore[misc]
    ref = fed.subject(person).hex()
    assert [row["grant_id"] for row in _grants(fed) if row["subject_ref"] == ref] == [grant_id]


def test_node_refuses_a_revoked_consent_the_registry_still_signs(
    fed: InProcessFederation, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The registry is the attacker here: it skips its own revocation check.
    person = synthetic.person(14)
    token, grant_id, key, _ = fed.consent(person, requester="acme", idp="idp")
    monkeypatch.setattr(grant_rows, "use_grant", lambda *args, **kwargs: None)
    answered = common_pb2.COVERAGE_STATE_ANSWERED
    assert _node_state(_lookup(fed, person, token))[0] == answered
    with _subject(fed, person, key) as me:
        me.revoke(grant_id)
    # Within a refresh interval (1 s here) the node's list shows the revocation.
    assert _eventually(lambda: _node_state(_lookup(fed, person, token))[0] != answered)
    state, reason = _node_state(_lookup(fed, person, token))
    assert state != answered
    assert f"grant {grant_id} is revoked" in reason


def test_node_with_a_stale_list_refuses_consent_lookups(
    fed: InProcessFederation, monkeypatch: pytest.MonkeyPatch
) -> None:
    person = synthetic.person(15)
    token, _, _, _ = fed.consent(person, requester="acme", idp="idp")
    answered = common_pb2.COVERAGE_STATE_ANSWERED
    # Uses are not what this test counts: many lookups poll the node's state.
    monkeypatch.setattr(grant_rows, "use_grant", lambda *args, **kwargs: None)
    # The registry hands out lists that live 3 s, then stops handing any out.
    original = StatusListPublisher.current
    serving = threading.Event()
    serving.set()

    def short_lived(self: StatusListPublisher) -> str:
        if not serving.is_set():
            raise Unavailable("status list withheld by the test")
        kept, self._lifetime, self._signed = self._lifetime, timedelta(seconds=3), None
        try:
            return original(self)
        finally:
            self._lifetime, self._signed = kept, None

    monkeypatch.setattr(StatusListPublisher, "current", short_lived)
    refresher = fed.nodes[BANK.name].refresher
    assert refresher is not None
    held = refresher._status_lists

    def holds_short_list() -> bool:
        current = held.current if held is not None else None
        return current is not None and current.expires_at - current.issued_at <= timedelta(
            seconds=3
        )

    assert _eventually(holds_short_list)
    serving.clear()
    assert _eventually(lambda: _node_state(_lookup(fed, person, token))[0] != answered)
    state, reason = _node_state(_lookup(fed, person, token))
    assert state != answered
    assert "revocation list expired at" in reason
    assert "refusing consent lookups until it refreshes" in reason
    # Once the registry serves a list again, the node answers again.
    serving.set()
    assert _eventually(lambda: _node_state(_lookup(fed, person, token))[0] == answered)


def test_the_list_is_served_signed_over_http_and_not_rebuilt_per_request(
    fed: InProcessFederation,
) -> None:
    running = fed.registry.running
    url = f"https://127.0.0.1:{running.http.port}/status-list"
    tls = ssl.create_default_context(cadata=fed.ca_pem.decode())
    with urllib.request.urlopen(url, timeout=10, context=tls) as reply:
        assert reply.headers["Content-Type"] == "application/statuslist+jwt"
        first = reply.read().decode()
    with urllib.request.urlopen(url, timeout=10, context=tls) as reply:
        second = reply.read().decode()
    manifest = running.manifests.current()
    held = verify_status_list(
        first,
        registry_keys=manifest.registry_keys,
        registry_id=manifest.registry.member_id,
        now=datetime.now(UTC),
    )
    assert held.size >= len(_grants(fed))
    # Nothing was issued or revoked in between: the same signed list, not a new one.
    assert second == first

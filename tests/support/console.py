"""A registry with its operator's console, an admin token and members, for the console tests."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from central_registry.server import RegistryThread
from credence.client import enrol as client_enrol
from credence.client.requester import MemberCredentials
from credence.keys import SigningKey, private_key_pem
from credence.pki import generate_tls_key, make_csr
from support.inprocess import InProcessFederation, Member
from support.registry import init_registry, run

#: The admin token file :func:`console_federation` writes, under its root.
TOKEN_FILE = "alice.token"


def enrol(fed: InProcessFederation, member_id: str, role: str, *, approve: bool) -> Member | None:
    """Enrol a member on the public port; approve it with the CLI when asked."""
    tls_key, signing_key = generate_tls_key(), SigningKey.generate()
    agency = role == "agency"
    client_enrol.enrol(
        fed.public, fed.ca_pem, member_id=member_id, display_name=f"{member_id} Ltd", role=role,
        csr_pem=make_csr(tls_key, member_id), signing_key=signing_key,
        endpoint="127.0.0.1:9" if agency else "",
        record_kinds=("court_judgment",) if agency else (),
    )  # fmt: skip
    if not approve:
        return None
    run("registry", "members", "approve", "--dir", fed.registry_dir, member_id)
    result = client_enrol.collect_enrolment(
        fed.public, fed.ca_pem, member_id=member_id, signing_key=signing_key
    )
    credentials = MemberCredentials(
        member_id, private_key_pem(tls_key), result.certificate_pem, result.ca_pem, signing_key
    )
    fed.members[member_id] = Member(member_id, credentials)
    return fed.members[member_id]


def issue_admin_token(fed: InProcessFederation) -> None:
    """Issue admin alice's token with the CLI, into ``fed.root / TOKEN_FILE``."""
    run("registry", "admin-token", "--dir", fed.registry_dir, "--name", "alice",
        "--out", fed.root / TOKEN_FILE)  # fmt: skip


def admin_token(fed: InProcessFederation) -> str:
    """Admin alice's token, as :func:`issue_admin_token` wrote it."""
    return (fed.root / TOKEN_FILE).read_text()


@contextmanager
def console_federation(root: Path) -> Iterator[InProcessFederation]:
    """A registry serving its console on a free loopback port, a company (bank-a), an
    agency (court-1) and admin alice's token in ``root / TOKEN_FILE``; stopped afterwards.
    """
    registry_dir = init_registry(root / "registry", {"console_listen": "127.0.0.1:0"})
    federation = InProcessFederation(root, RegistryThread(registry_dir))
    try:
        enrol(federation, "bank-a", "company", approve=True)
        enrol(federation, "court-1", "agency", approve=True)
        issue_admin_token(federation)
        yield federation
    finally:
        federation.stop()


def csrf_of(page: str) -> str:
    """The CSRF token of a console page's forms."""
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page[:400]
    return found.group(1)


@contextmanager
def admin_console(fed: InProcessFederation, token: str | None) -> Iterator[httpx.Client]:
    """An HTTPS client of the registry's console, logged in with ``token`` (None: anonymous)."""
    context = ssl.create_default_context(cadata=fed.ca_pem.decode())
    with httpx.Client(
        base_url=f"https://127.0.0.1:{fed.registry.console_port}", verify=context, timeout=30
    ) as client:
        if token is not None:
            login = client.post("/login", data={"csrf": csrf_of(client.get("/login").text),
                                                 "token": token})  # fmt: skip
            assert login.status_code == 303, login.text
        yield client

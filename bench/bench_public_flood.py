"""Enrolment refusals under a burst (issue 10): ``python -m bench.bench_public_flood``.

A registry with the default ``[public]`` limits of ``credence registry init``
is flooded from one address with distinct, valid, signed enrolments, as fast
as one client sends them (issue 10 saw 200 accepted in 6.3 s before the
limits). Product code only: ``credence registry init``, the registry in a
:class:`central_registry.server.RegistryThread`, and the SDK's
:func:`credence.client.enrol.enrol` (one TLS channel per enrolment, as a
scripted attacker using the SDK would send them). Prints how many were
refused and how many wait for the operator.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from central_registry.config import load_config
from central_registry.models import Member
from central_registry.server import RegistryThread
from credence.cli import main as credence_main
from credence.client.enrol import enrol
from credence.errors import CredenceError, ResourceExhausted
from credence.keys import SigningKey
from credence.pki import generate_tls_key, make_csr

LOOPBACK = (
    "--listen", "127.0.0.1:0", "--public-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
)  # fmt: skip


def _flood(address: str, ca_pem: bytes, member_ids: list[str]) -> list[str]:
    """Enrol each of ``member_ids`` in turn with the SDK; the outcome of each."""
    # Keys and CSRs first: the flood times the registry, not key generation.
    made = [(member_id, make_csr(generate_tls_key(), member_id)) for member_id in member_ids]
    keys = [SigningKey.generate() for _ in made]
    outcomes = []
    for (member_id, csr), key in zip(made, keys, strict=True):
        try:
            enrol(
                address, ca_pem, member_id=member_id, display_name=member_id,
                role="company", csr_pem=csr, signing_key=key, timeout=60,
            )  # fmt: skip
            outcomes.append("accepted")
        except ResourceExhausted:
            outcomes.append("refused")
        except CredenceError as exc:
            outcomes.append(type(exc).__name__)
    return outcomes


def main() -> None:
    """Run the flood and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--enrolments", type=int, default=200)
    args = parser.parse_args()
    member_ids = [f"flood-{i:05d}" for i in range(args.enrolments)]
    with tempfile.TemporaryDirectory() as temp:
        directory = Path(temp) / "registry"
        if credence_main(["registry", "init", "--dir", str(directory), *LOOPBACK]) != 0:
            raise SystemExit("credence registry init failed")
        limits = load_config(directory).public
        registry = RegistryThread(directory)
        try:
            started = time.perf_counter()
            outcomes = _flood(
                f"127.0.0.1:{registry.public_port}",
                (directory / "ca.crt").read_bytes(),
                member_ids,
            )
            elapsed = time.perf_counter() - started
            with registry.running.engine.connect() as connection:
                pending = connection.scalar(
                    select(func.count()).select_from(Member).where(Member.state == "pending")
                )
        finally:
            registry.stop()
    refused = outcomes.count("refused")
    other = len(outcomes) - refused - outcomes.count("accepted")
    print(
        f"limits: {limits.enrolment_burst_per_address} per address then "
        f"{limits.enrolments_per_second_per_address:g}/s; overall "
        f"{limits.enrolment_burst} then {limits.enrolments_per_second:g}/s; "
        f"at most {limits.max_pending_enrolments} pending"
    )
    print(
        f"enrolment refusals under a burst: {refused} of {len(outcomes)} refused "
        f"(RESOURCE_EXHAUSTED) in {elapsed:.1f} s; {pending or 0} pending; {other} other outcomes"
    )


if __name__ == "__main__":
    main()

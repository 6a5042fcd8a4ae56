"""Enrolment refusals under a burst (issue 10): ``python -m bench.bench_public_flood``.

A registry with the default ``[public]`` limits of ``credence registry init``
is flooded from one address with distinct, valid, signed enrolments, as fast
as one client sends them (issue 10 saw 200 accepted in 6.3 s before the
limits). Prints how many were refused and how many wait for the operator.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import grpc

from central_registry.config import load_config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.public_port import enrol_outcomes, enrol_request, public_stub, row_counts
from support.registry import init_registry, running_registry


def main() -> None:
    """Run the flood and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--enrolments", type=int, default=200)
    args = parser.parse_args()
    requests = [enrol_request(f"flood-{i:05d}") for i in range(args.enrolments)]
    with tempfile.TemporaryDirectory() as temp:
        directory = init_registry(Path(temp) / "registry")
        limits = load_config(directory).public
        with running_registry(directory) as registry, public_stub(registry, directory) as stub:
            started = time.perf_counter()
            codes = enrol_outcomes(stub, requests)
            elapsed = time.perf_counter() - started
            _, pending, _ = row_counts(registry)
    refused = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    other = len(codes) - refused - codes.count(grpc.StatusCode.OK)
    print(
        f"limits: {limits.enrolment_burst_per_address} per address then "
        f"{limits.enrolments_per_second_per_address:g}/s; overall "
        f"{limits.enrolment_burst} then {limits.enrolments_per_second:g}/s; "
        f"at most {limits.max_pending_enrolments} pending"
    )
    print(
        f"enrolment refusals under a burst: {refused} of {len(codes)} refused "
        f"(RESOURCE_EXHAUSTED) in {elapsed:.1f} s; {pending} pending; {other} other outcomes"
    )


if __name__ == "__main__":
    main()

"""Bytes a hostile request adds to the registry database (issue 10).

Run: ``python -m bench.bench_amplification``.

A registry of ``credence registry init`` defaults runs in-process; one member
sends each hostile input of ``tests/hostile/amplification_inputs.py`` over
mutual TLS, and the registry's SQLite database is measured before and after
(in-use pages after a WAL checkpoint). Before issue 10 a 105 KB message of
repeated kinds added 38.6 MiB (x386). Prints, per input, the bytes sent (the
serialized request: a lower bound of what crossed the wire), the bytes added
and their ratio; the target is at most 2.

The last line is the one case the ratio does not bound: a flood of single
refused lookups, each logged as one row (~550 bytes) so that the subject sees
every attempt. The request rate and the log-row quota bound that flood instead.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from hostile.amplification_inputs import (
    BLACKLIST,
    COUNTERPARTY,
    INPUTS,
    PUBLIC,
    measure,
    request,
)
from hostile.members_port import members_port, organisation, person

from credence.v1 import registry_pb2


def main() -> None:
    """Send each input once to a fresh member and print what it cost the database."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--single-lookups", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp, members_port(Path(temp) / "registry") as port:
        warm = registry_pb2.RequestVerdictRequest(
            subject=organisation(0), kinds=[BLACKLIST], purpose=COUNTERPARTY, grant=PUBLIC
        )
        request(port, warm)  # the member's buckets exist before anything is measured
        print(f"{'input':<20} {'sent':>12} {'added':>12} {'ratio':>7}  status")
        worst = 0.0
        for name in INPUTS:
            measured = measure(port, name)
            worst = max(worst, measured.ratio)
            print(
                f"{name:<20} {measured.sent:>12,} {measured.added:>12,} "
                f"{measured.ratio:>7.3f}  {measured.code.name}"
            )
        print(f"amplification factor (worst of the inputs above): x{worst:.3f}")
        before, sent = port.database_bytes(), 0
        for number in range(args.single_lookups):
            lookup = registry_pb2.RequestVerdictRequest(
                subject=person(10_000 + number), kinds=[BLACKLIST], purpose=COUNTERPARTY
            )
            sent += lookup.ByteSize()
            request(port, lookup)
        added = port.database_bytes() - before
        print(
            f"{args.single_lookups} single refused lookups: {sent:,} bytes sent, {added:,} added, "
            f"x{added / sent:.1f} (one log row each, bounded by the rate limit and quota)"
        )


if __name__ == "__main__":
    main()

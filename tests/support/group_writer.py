"""A registry process's log writer alone: groups of single lookups, written until stopped.

``python group_writer.py URL GROUPS SIZE`` writes ``GROUPS`` groups of
``SIZE`` public-register lookups through
:meth:`central_registry.lookup_log.LookupLog.write_verdicts` (0: until
killed), and prints ``index query_id`` for each lookup once its group is
committed. A parent kills it mid-group, or runs several against one database.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import sys
from datetime import UTC, datetime

from central_registry.config import RateLimits
from central_registry.database import create_engine_for, session_factory
from central_registry.limits.lookup_quotas import LookupQuotas
from central_registry.log.rows import LogRow, dispatched_row
from central_registry.lookup_log import LookupLog
from central_registry.verdict_writes import VerdictWrite
from credence.errors import CredenceError

UNLIMITED = RateLimits(requests_per_second=1e9, burst=10**9, log_rows_per_minute=10**9)


def _never_refused(error: CredenceError) -> LogRow | None:
    raise AssertionError(f"the writer's lookups are never refused: {error}")


def lookup(query_id: str, now: datetime) -> VerdictWrite:
    """One public-register lookup of an organisation, checked, ready to write."""
    digest = hashlib.sha256(query_id.encode()).digest()
    row = dispatched_row(
        query_id=query_id,
        requester="writer",
        subject_type=2,
        subject_ref=digest,
        purpose=1,
        kinds=(1,),
        grant_id="",
        issued_at=now,
        salt=digest[:16],
        commitment=hashlib.sha256(b"leaf " + digest).digest(),
        basis="public register",
        embargo_until=None,
    )
    return VerdictWrite("writer", now, _never_refused, row=row)


def main(url: str, groups: int, size: int) -> None:
    engine = create_engine_for(url)
    log = LookupLog(session_factory(engine), LookupQuotas(UNLIMITED))
    prefix = f"{os.getpid()}-{os.urandom(4).hex()}"
    counter = itertools.count()
    for _ in range(groups) if groups else itertools.count():
        now = datetime.now(UTC)
        writes = [lookup(f"{prefix}-{next(counter)}", now) for _ in range(size)]
        outcomes = log.write_verdicts(writes)
        lines = [
            f"{outcome.index} {write.row.query_id}"
            for write, outcome in zip(writes, outcomes, strict=True)
            if write.row is not None
        ]
        print("\n".join(lines), flush=True)
    engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))

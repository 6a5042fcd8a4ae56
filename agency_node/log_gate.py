"""No answers without witnesses: whether the node may answer, and if not, why.

A node answers only while the registry's latest checkpoint cosigned by the
manifest's quorum of witnesses is recent, that checkpoint agrees with what
the node's own witness cosigned, and the node's audit found every promise
older than the merge delay in it. A registry that stops publishing, shows a
split view or withholds an entry then stops the federation instead of hiding
(as X-Road stops exchange when timestamping fails). Answering and Health read
:meth:`LogGate.refusal`; the checkpoint watcher and the audit report in.
"""

from __future__ import annotations

import base64
import threading
from datetime import datetime, timedelta

from credence.encoding import format_time
from credence.errors import Unavailable
from credence.transparency.checkpoint import Checkpoint


class LogGate:
    """Holds why the node must not answer (``None`` from :meth:`refusal` when it may).

    Thread-safe: the checkpoint watcher, the audit and the answer pool share it.
    """

    def __init__(self, max_age: timedelta, *, enforced: bool = True) -> None:
        self._max_age = max_age
        self._enforced = enforced
        self._lock = threading.Lock()
        self._cosigned: tuple[Checkpoint, datetime] | None = None
        self._audit: str | None = None
        self._inconsistent: str | None = None
        self._fetch_problem: str | None = None

    @property
    def enforced(self) -> bool:
        """Whether the gate refuses at all (a node with no registry to watch has none)."""
        return self._enforced

    def saw_cosigned(self, checkpoint: Checkpoint, cosigned_at: datetime) -> None:
        """Record the latest quorum-cosigned checkpoint the node verified.

        ``cosigned_at`` is when the quorum had cosigned it (the k-th newest
        cosignature), so re-serving an old checkpoint does not look fresh.
        """
        with self._lock:
            held = self._cosigned
            if held is None or (checkpoint.size, cosigned_at) >= (held[0].size, held[1]):
                self._cosigned = (checkpoint, cosigned_at)
            self._fetch_problem = None

    def fetch_problem(self, reason: str | None) -> None:
        """Why the latest fetch gave no usable checkpoint (shown while none is recent)."""
        with self._lock:
            self._fetch_problem = reason

    def inconsistent(self, reason: str) -> None:
        """The registry's cosigned checkpoint contradicts what this node witnessed.

        Evidence of a split view: the node stops answering for good (until an
        operator restarts it after looking into the evidence).
        """
        with self._lock:
            if self._inconsistent is None:
                self._inconsistent = reason

    def audit_problem(self, reason: str | None) -> None:
        """A promise older than the merge delay is missing from the cosigned checkpoint.

        ``None`` when the audit found every promise it checked.
        """
        with self._lock:
            self._audit = reason

    def latest(self) -> tuple[Checkpoint, datetime] | None:
        """The latest cosigned checkpoint the node verified, and its quorum time."""
        with self._lock:
            return self._cosigned

    def refusal(self, now: datetime) -> str | None:
        """Why the node must not answer at ``now``, or ``None`` when it may."""
        if not self._enforced:
            return None
        with self._lock:
            if self._inconsistent is not None:
                return self._inconsistent
            if self._audit is not None:
                return self._audit
            if self._cosigned is None:
                why = f": {self._fetch_problem}" if self._fetch_problem else ""
                return (
                    "no checkpoint of the registry's log cosigned by the manifest's quorum of "
                    f"witnesses has been verified yet{why}"
                )
            checkpoint, cosigned_at = self._cosigned
            if now - cosigned_at > self._max_age:
                why = f" ({self._fetch_problem})" if self._fetch_problem else ""
                return (
                    f"the registry's latest cosigned checkpoint (size {checkpoint.size}, root "
                    f"{base64.b64encode(checkpoint.root_hash).decode()}) was cosigned at "
                    f"{format_time(cosigned_at)}, more than {int(self._max_age.total_seconds())} s "
                    f"before {format_time(now)}: the registry stopped publishing cosigned "
                    f"checkpoints{why}"
                )
            return None

    def check(self, now: datetime) -> None:
        """Raise when the node must not answer.

        Raises:
            Unavailable: the reason, from :meth:`refusal`.
        """
        if (reason := self.refusal(now)) is not None:
            raise Unavailable(f"this node answers no queries: {reason}")

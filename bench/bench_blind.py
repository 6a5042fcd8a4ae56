"""What blind aggregation costs in CPU (issue 14): ``python -m bench.bench_blind``.

Process CPU time (``time.process_time``) per operation, the best of
``--rounds`` runs of ``--repeat`` operations each, so a busy machine inflates
the figures less than wall time would. Printed beside the plain costs it adds
to, measured here the same way (a node's evaluation of a subject, the
registry's cleartext credit sum), and beside the whole-system CPU per verdict
and per screened subject of ``make bench`` before this work
(bench_before.txt: c=16, 8 agencies):

* node, per answer: fill the vector from the evaluation and mask it for an
  audience of 4 and 8 (pair keys cached, as the node keeps them), and once
  per new audience member the X25519 + HKDF pair key;
* node, per screened subject: a 1,000-row batch filled and masked with one
  keystream per pair;
* registry, per verdict: add the masked vectors, ``check_sum`` and
  ``verdict_from_sum`` (beside the cleartext credit sum it replaces,
  ``Aggregator.aggregate``), with every agency answering and with one missing
  (removing the answering agencies' recovery shares); the node's recovery
  share is timed too. The extra round trip of a recovery is not in these
  figures: it happens only when an agency misses the deadline;
* registry, per screened subject: the same per row of a 1,000-row batch.

The signatures of the answers are unchanged in number; their payloads grow by
the vector (8 bytes a slot).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from agency_node.evaluation import Evaluation, Evaluator, RecordFacts
from credence.blind import layout as layouts
from credence.blind import masks, recovery, sums
from credence.record_kinds import KINDS
from credence.scorecard import Aggregator, default_scorecard

NOW = datetime(2026, 6, 1, tzinfo=UTC)
BATCH = 1_000
#: make bench before this work (/tmp/iss/bench_before.txt), c=16 and ScreenBatch, 8 agencies.
SYSTEM_PER_VERDICT_US = {"registry": 13_162.0, "nodes": 20_270.0, "client": 1_581.0}
SYSTEM_PER_SUBJECT_US = {"registry": 304.0, "nodes": 164.0, "client": 38.0}


def cpu_us(operation: Callable[[], object], *, repeat: int, rounds: int) -> float:
    """The best, over ``rounds``, of the process CPU microseconds per call of ``operation``."""
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(repeat):
            operation()
        best = min(best, (time.process_time() - start) / repeat * 1e6)
    return best


def _records() -> list[RecordFacts]:
    """A listed subject with credit history: a court judgment and two late payments."""
    return [
        RecordFacts(
            kind="court_judgment",
            category="dishonest_debtor",
            status="active",
            occurred_at=NOW - timedelta(days=200),
            expires_at=None,
            disputed=False,
        ),
        *(
            RecordFacts(
                kind="late_payment",
                category="loan",
                status="settled",
                occurred_at=NOW - timedelta(days=40 * n),
                expires_at=None,
                disputed=False,
                days_overdue=35 * n,
            )
            for n in (1, 2)
        ),
    ]


def _pair_keys(audience: list[str]) -> dict[str, dict[str, bytes]]:
    keys = {member: masks.agreement_key() for member in audience}
    return {
        own: {
            peer: masks.pair_key(
                keys[own],
                masks.public_bytes(keys[peer]),
                federation_id="bench",
                own_id=own,
                peer_id=peer,
            )
            for peer in audience
            if peer != own
        }
        for own in audience
    }


def _line(what: str, us: float, beside: str = "") -> None:
    print(f"  {what:<62} {us:>10,.1f} us{('   ' + beside) if beside else ''}")


def run(rounds: int) -> None:
    """Measure and print every figure."""
    scorecard = default_scorecard()
    layout = layouts.for_scorecard(scorecard)
    aggregator = Aggregator(scorecard)
    evaluator = Evaluator(scorecard, KINDS)
    records = _records()
    evaluation = evaluator.evaluate(records, NOW)
    print(f"layout {layout.layout_id}: {layout.length} slots; best of {rounds} rounds, CPU time")

    plain_eval = cpu_us(lambda: evaluator.evaluate(records, NOW), repeat=2_000, rounds=rounds)
    print("node, plain")
    _line("evaluate one subject (3 records)", plain_eval)
    own_key, peer_key = masks.agreement_key(), masks.public_bytes(masks.agreement_key())
    pair_us = cpu_us(
        lambda: masks.pair_key(own_key, peer_key, federation_id="b", own_id="a", peer_id="b"),
        repeat=500,
        rounds=rounds,
    )
    _line("pair key (X25519 + HKDF), once per audience member", pair_us)
    for size in (4, 8):
        _per_size(size, rounds, layout, aggregator, evaluation)


def _per_size(
    size: int,
    rounds: int,
    layout: layouts.VectorLayout,
    aggregator: Aggregator,
    evaluation: Evaluation,
) -> None:
    """The node's and the registry's figures for an audience of ``size`` agencies."""
    audience = [f"agency-{n}" for n in range(size)]
    pair_keys = _pair_keys(audience)
    own = audience[size // 2]
    mask_us = cpu_us(
        lambda: masks.mask_vector(
            layout.fill(evaluation.blacklist, evaluation.credit),
            own_id=own,
            audience=audience,
            pair_keys=pair_keys[own],
            query_id="query-0001",
        ),
        repeat=1_000,
        rounds=rounds,
    )
    vectors = [layout.fill(evaluation.blacklist, evaluation.credit)] * BATCH
    batch_us = (
        cpu_us(
            lambda: masks.mask_batch(
                vectors,
                own_id=own,
                audience=audience,
                pair_keys=pair_keys[own],
                batch_id="batch-0001",
            ),
            repeat=5,
            rounds=rounds,
        )
        / BATCH
    )
    share_us = cpu_us(
        lambda: recovery.recovery_share(
            own,
            [audience[0]],
            audience=audience,
            pair_keys=pair_keys[own],
            query_id="query-0001",
            length=layout.length,
        ),
        repeat=1_000,
        rounds=rounds,
    )
    nodes = size * mask_us
    nodes_batch = size * batch_us
    print(f"node, {size} agencies")
    _line(
        "fill + mask one answer",
        mask_us,
        f"x{size} nodes = {nodes:,.0f} us/verdict, "
        f"{100 * nodes / SYSTEM_PER_VERDICT_US['nodes']:.2f}% of nodes' CPU per verdict",
    )
    _line(
        "fill + mask per screened subject (1,000-row batch)",
        batch_us,
        f"x{size} = {nodes_batch:,.1f} us/subject, "
        f"{100 * nodes_batch / SYSTEM_PER_SUBJECT_US['nodes']:.2f}% of nodes' CPU per subject",
    )
    _line("recovery share (one missing agency)", share_us)

    masked = [
        masks.mask_vector(
            layout.fill(evaluation.blacklist, evaluation.credit),
            own_id=member,
            audience=audience,
            pair_keys=pair_keys[member],
            query_id="query-0001",
        )
        for member in audience
    ]
    shares = [
        recovery.recovery_share(
            member,
            [audience[0]],
            audience=audience,
            pair_keys=pair_keys[member],
            query_id="query-0001",
            length=layout.length,
        )
        for member in audience[1:]
    ]

    def unmask(answered: list[list[int]], removed: list[list[int]], count: int) -> None:
        summed = recovery.remove_recovery(sums.add(answered), removed)
        if sums.check_sum(layout, summed, count) is None:
            sums.verdict_from_sum(
                layout, summed, answering=count, expected=size, aggregator=aggregator
            )

    blind_us = cpu_us(lambda: unmask(masked, [], size), repeat=1_000, rounds=rounds)
    dropout_us = cpu_us(lambda: unmask(masked[1:], shares, size - 1), repeat=1_000, rounds=rounds)
    partials = [(evaluation.credit.partial_points, evaluation.credit.reason_codes)] * size
    plain_us = cpu_us(lambda: aggregator.aggregate(partials), repeat=2_000, rounds=rounds)
    print(f"registry, {size} agencies")
    _line("cleartext credit: Aggregator.aggregate of the partials", plain_us)
    _line(
        "add masked vectors, check_sum, verdict_from_sum",
        blind_us,
        f"{100 * blind_us / SYSTEM_PER_VERDICT_US['registry']:.2f}% of registry CPU per "
        f"verdict, {100 * blind_us / SYSTEM_PER_SUBJECT_US['registry']:.2f}% per screened "
        "subject (same work per row; counted in full, though it replaces the cleartext sums)",
    )
    _line("the same with one agency missing (shares removed)", dropout_us)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="runs per figure; the best is kept")
    args = parser.parse_args(argv)
    run(args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How many rows each apply transaction of an import takes."""

from __future__ import annotations

from agency_node.import_staging import (
    APPLY_CHUNK,
    APPLY_CHUNK_MAX,
    APPLY_TARGET_SECONDS,
    next_chunk_size,
)


def test_a_transaction_under_the_target_grows_the_next_at_most_twofold() -> None:
    assert next_chunk_size(APPLY_CHUNK, APPLY_TARGET_SECONDS / 10) == 2 * APPLY_CHUNK
    assert next_chunk_size(1000, APPLY_TARGET_SECONDS / 2) == 2000
    assert next_chunk_size(1000, 0.0) == 2000


def test_a_transaction_over_the_target_shrinks_the_next_at_most_fourfold() -> None:
    assert next_chunk_size(4000, 2 * APPLY_TARGET_SECONDS) == 2000
    assert next_chunk_size(4000, 100 * APPLY_TARGET_SECONDS) == 1000


def test_the_size_stays_within_its_bounds() -> None:
    assert next_chunk_size(APPLY_CHUNK_MAX, APPLY_TARGET_SECONDS / 10) == APPLY_CHUNK_MAX
    assert next_chunk_size(250, 100 * APPLY_TARGET_SECONDS) == 250


def test_sizes_come_in_few_steps_so_the_driver_caches_few_statements() -> None:
    sizes = {next_chunk_size(3000, held / 1000) for held in range(1, 400)}
    assert all(size % 250 == 0 for size in sizes)
    assert len(sizes) <= APPLY_CHUNK_MAX // 250


def test_the_first_transactions_stay_small_so_a_short_file_still_applies_in_several() -> None:
    # 500, then at most 1,000: a 3,000-row file takes at least three transactions.
    second = next_chunk_size(APPLY_CHUNK, 0.0)
    assert APPLY_CHUNK + second < 3000

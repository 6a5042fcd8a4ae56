"""Counting calls in flight per peer (credence.rpc.peer_limits), without a server."""

from __future__ import annotations

from typing import Any

import pytest

from credence.rpc.peer_limits import ConcurrencyLimit, address_of_peer


def test_one_peer_is_refused_at_its_limit_while_others_go_on() -> None:
    limit = ConcurrencyLimit("streams", 2)
    assert limit.acquire("mallory") is None
    assert limit.acquire("mallory") is None
    refusal = limit.acquire("mallory")
    assert refusal is not None
    assert "mallory already has 2 streams in flight" in refusal
    assert limit.acquire("acme") is None
    assert (limit.in_flight("mallory"), limit.in_flight()) == (2, 3)
    limit.release("mallory")
    assert limit.acquire("mallory") is None


def test_the_total_bounds_all_peers_together_and_a_refusal_takes_nothing() -> None:
    limit = ConcurrencyLimit("calls", 5, total=3)
    for peer in ("a", "b", "c"):
        assert limit.acquire(peer) is None
    refusal = limit.acquire("d")
    assert refusal is not None
    assert "this server already has 3 calls in flight" in refusal
    assert (limit.in_flight("d"), limit.in_flight()) == (0, 3)


def test_a_peer_may_have_its_own_limit() -> None:
    limit = ConcurrencyLimit("calls", lambda peer: 3 if peer == "registry" else 1)
    assert limit.acquire("acme") is None
    assert limit.acquire("acme") is not None
    assert [limit.acquire("registry") for _ in range(3)] == [None, None, None]
    assert limit.acquire("registry") is not None


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ConcurrencyLimit("calls", 0)
    with pytest.raises(ValueError, match="at least 1"):
        ConcurrencyLimit("calls", 1, total=0)


class _Context:
    def __init__(self, peer: str) -> None:
        self._peer = peer

    def peer(self) -> str:
        return self._peer


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ("ipv4:127.0.0.1:50312", "ipv4:127.0.0.1"),
        ("ipv6:[::1]:50312", "ipv6:[::1]"),
        ("unix:/tmp/socket", "unix:/tmp/socket"),
    ],
)
def test_an_address_is_keyed_without_its_port(peer: str, key: str) -> None:
    context: Any = _Context(peer)
    assert address_of_peer(context) == key

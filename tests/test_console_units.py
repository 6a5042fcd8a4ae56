"""The console's pure parts: sessions and CSRF, admin token names, the chart, agency figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from central_registry.agency_stats import AgencyStats
from central_registry.console import admin_tokens, sessions
from central_registry.console.chart import latency_chart
from central_registry.console.views import MemberRow
from credence.errors import InvalidInput, Unauthenticated

NOW = datetime(2026, 12, 2, 10, 30, 15, tzinfo=UTC)
KEY = b"k" * 32


def test_a_session_opens_only_under_its_key_and_before_it_ends() -> None:
    session = sessions.new_session("ab" * 32, NOW, timedelta(hours=1))
    cookie = sessions.seal(KEY, session)
    opened = sessions.open_session(KEY, cookie, NOW + timedelta(minutes=59))
    assert opened.token_hash == "ab" * 32
    assert opened.logged_in
    for key, cookie_value, at, why in (
        (b"x" * 32, cookie, NOW, "not valid here"),
        (KEY, cookie, NOW + timedelta(hours=1), "ended"),
        (KEY, None, NOW, "not logged in"),
        (KEY, "", NOW, "not logged in"),
        (KEY, cookie.replace(".", ".A", 1), NOW, "not valid here"),
        (KEY, "x" * 600, NOW, "not valid here"),
        (KEY, "no-dot-here", NOW, "not valid here"),
    ):
        with pytest.raises(Unauthenticated, match=why):
            sessions.open_session(key, cookie_value, at)


def test_a_session_cookie_cannot_be_rewritten_to_another_token() -> None:
    cookie = sessions.seal(KEY, sessions.new_session("", NOW, timedelta(minutes=5)))
    body, _, mac = cookie.partition(".")
    forged = sessions.seal(b"attacker" * 4, sessions.new_session("cd" * 32, NOW, timedelta(days=9)))
    forged_body = forged.partition(".")[0]
    with pytest.raises(Unauthenticated):
        sessions.open_session(KEY, f"{forged_body}.{mac}", NOW)
    assert not sessions.open_session(KEY, f"{body}.{mac}", NOW).logged_in


def test_csrf_tokens_are_per_session() -> None:
    one = sessions.new_session("ab" * 32, NOW, timedelta(hours=1))
    two = sessions.new_session("ab" * 32, NOW, timedelta(hours=1))
    sessions.check_csrf(KEY, one, sessions.csrf_token(KEY, one))
    for submitted in (None, "", sessions.csrf_token(KEY, two), sessions.csrf_token(b"y" * 32, one)):
        with pytest.raises(Unauthenticated, match="did not come from your console session"):
            sessions.check_csrf(KEY, one, submitted)


def test_admin_names_and_tokens() -> None:
    assert admin_tokens.check_name("alice.ops-1") == "alice.ops-1"
    for bad in ("", "Alice", "-x", "a" * 65, "a b", "a/b"):
        with pytest.raises(InvalidInput, match="lower-case"):
            admin_tokens.check_name(bad)
    token = admin_tokens.new_token()
    assert token.startswith(admin_tokens.TOKEN_PREFIX)
    assert len(token) < admin_tokens.MAX_TOKEN_LENGTH
    assert admin_tokens.token_hash(token) != admin_tokens.token_hash(admin_tokens.new_token())


def test_agency_stats_over_the_last_hour() -> None:
    stats = AgencyStats()
    stats.observe("court", 9.0, "ok", NOW - timedelta(minutes=61))  # out of the hour
    for number in range(1, 101):
        stats.observe("court", number / 1000, "ok", NOW - timedelta(minutes=2))
    stats.observe("court", 5.0, "timeout", NOW)
    stats.observe("tax", 0.2, "invalid", NOW)
    with pytest.raises(ValueError, match="unknown outcome"):
        stats.observe("tax", 0.2, "maybe", NOW)
    court, tax = stats.summary(NOW)
    assert (court.agency_id, court.calls, court.timeouts, court.errors) == ("court", 101, 1, 0)
    assert court.p50_seconds == pytest.approx(0.051)
    assert court.p95_seconds == pytest.approx(0.096)
    assert court.last_seen == NOW - timedelta(minutes=2)
    assert (tax.calls, tax.invalid, tax.last_seen) == (1, 1, None)
    series = stats.latency_series("court", NOW)
    assert len(series) == 60
    assert series[-1] == (NOW.replace(second=0), 5.0)
    assert series[-3][1] == pytest.approx(0.050)
    assert [value for _, value in series[:-3]] == [None] * 57


def test_the_chart_escapes_names_and_breaks_lines_at_gaps() -> None:
    start = NOW.replace(second=0)
    minutes = [start + timedelta(minutes=index) for index in range(4)]
    svg = str(
        latency_chart(
            {
                "<script>alert(1)</script>": list(
                    zip(minutes, [0.01, None, 0.02, 0.03], strict=True)
                ),
                "court": list(zip(minutes, [None] * 4, strict=True)),
            }
        )
    )
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    [path] = svg.split("<path ")[1:]
    moves = path.split('"')[1].split()
    assert [move[0] for move in moves] == ["M", "M", "L"]
    assert "50 ms" in svg  # the axis tops out at a round figure above 30 ms


def test_certificates_close_to_expiry_are_flagged() -> None:
    def row(expires: datetime | None) -> MemberRow:
        return MemberRow("bank-a", "Bank A", "company", "active", "", expires, NOW)

    assert row(NOW + timedelta(days=6, hours=23)).expires_within(NOW)
    assert row(NOW - timedelta(days=1)).expires_within(NOW)
    assert not row(NOW + timedelta(days=7, minutes=1)).expires_within(NOW)
    assert not row(None).expires_within(NOW)

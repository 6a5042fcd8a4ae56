"""A server-rendered SVG line chart: each agency's median answer time per minute.

Pure: series in, SVG markup out (names escaped). No script; the browser draws it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 150, 12, 28
#: Line colours, one per agency in turn (distinct for the common colour blindnesses).
COLOURS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#000000")

Series = Sequence[tuple[datetime, float | None]]


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 x 10^n at or above ``value`` (milliseconds)."""
    step = 1.0
    while True:
        for factor in (1.0, 2.0, 5.0):
            if step * factor >= value:
                return step * factor
        step *= 10


def latency_chart(series: Mapping[str, Series]) -> Markup:
    """An SVG chart of per-minute median latency (seconds in, milliseconds shown) per agency.

    Every series must cover the same minutes (as
    :meth:`~central_registry.agency_stats.AgencyStats.latency_series` gives them);
    a minute without calls leaves a gap in its line.
    """
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    points = max((len(values) for values in series.values()), default=0)
    peak = max(
        (value * 1000 for values in series.values() for _, value in values if value is not None),
        default=0.0,
    )
    top = _nice_ceiling(max(peak, 1.0))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" '
        'aria-label="median answer time per agency and minute, last hour">',
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa" '
        'stroke="#999"/>',
    ]
    for tick in range(5):
        value = top * tick / 4
        y = _TOP + plot_h - plot_h * tick / 4
        parts.append(f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
                     'stroke="#ddd"/>')  # fmt: skip
        parts.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" '
                     f'font-size="11">{value:g} ms</text>')  # fmt: skip
    for label, x in (("-60 min", _LEFT), ("now", _LEFT + plot_w)):
        parts.append(f'<text x="{x}" y="{HEIGHT - 8}" text-anchor="middle" '
                     f'font-size="11">{label}</text>')  # fmt: skip
    for number, (agency, values) in enumerate(sorted(series.items())):
        colour = COLOURS[number % len(COLOURS)]
        step = plot_w / max(points - 1, 1)
        path: list[str] = []
        pen_down = False
        for index, (_, seconds) in enumerate(values):
            if seconds is None:
                pen_down = False
                continue
            px = _LEFT + index * step
            py = _TOP + plot_h - plot_h * min(seconds * 1000 / top, 1.0)
            path.append(f"{'L' if pen_down else 'M'}{px:.1f},{py:.1f}")
            pen_down = True
        if path:
            parts.append(f'<path d="{" ".join(path)}" fill="none" stroke="{colour}" '
                         'stroke-width="2"/>')  # fmt: skip
        legend_y = _TOP + 14 + 16 * number
        parts.append(f'<rect x="{WIDTH - _RIGHT + 10}" y="{legend_y - 9}" width="10" '
                     f'height="10" fill="{colour}"/>')  # fmt: skip
        parts.append(f'<text x="{WIDTH - _RIGHT + 26}" y="{legend_y}" font-size="12">'
                     f"{escape(agency)}</text>")  # fmt: skip
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every name interpolated is escaped above

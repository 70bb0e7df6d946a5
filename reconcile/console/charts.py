"""Bar charts as inline SVG, drawn on the server: no chart library in the browser.

Each chart carries a text title and a description for screen readers, and every bar its own
`<title>`; the page shows the same figures as a table beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 640
HEIGHT = 180
PAD_LEFT = 36
PAD_BOTTOM = 22


@dataclass(frozen=True)
class Bar:
    label: str  # under the bar, may be empty
    value: int
    title: str  # the tooltip and accessible name


def bar_chart(chart_id: str, title: str, bars: Sequence[Bar], colour: str = "#1f5fa8") -> Markup:
    peak = max((b.value for b in bars), default=0)
    top = _nice(peak)
    inner_w = WIDTH - PAD_LEFT - 4
    inner_h = HEIGHT - PAD_BOTTOM - 8
    step = inner_w / max(len(bars), 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d">',
        f'<title id="{chart_id}-t">{escape(title)}</title>',
        f'<desc id="{chart_id}-d">Highest value {peak}; the table below lists every '
        'figure.</desc>',
    ]
    for fraction in (0, 0.5, 1):
        y = 8 + inner_h * (1 - fraction)
        parts.append(f'<line x1="{PAD_LEFT}" x2="{WIDTH - 4}" y1="{y:.1f}" y2="{y:.1f}" '
                     'stroke="#c9ced6" stroke-width="1"/>')
        parts.append(f'<text x="{PAD_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" '
                     f'font-size="12" fill="#3b4350">{top * fraction:g}</text>')
    for n, bar in enumerate(bars):
        h = 0 if top == 0 else inner_h * bar.value / top
        x = PAD_LEFT + n * step + step * 0.12
        y = 8 + inner_h - h
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{step * 0.76:.1f}" '
                     f'height="{h:.1f}" fill="{colour}"><title>{escape(bar.title)}</title>'
                     '</rect>')
        if bar.label:
            parts.append(f'<text x="{x + step * 0.38:.1f}" y="{HEIGHT - 6}" font-size="12" '
                         f'text-anchor="middle" fill="#3b4350">{escape(bar.label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  every interpolated text is escaped above


def _nice(value: int) -> int:
    """A round axis top at or above `value`."""
    if value <= 5:
        return 5
    magnitude: int = 10 ** (len(str(value)) - 1)
    for factor in (1, 2, 5, 10):
        if value <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude

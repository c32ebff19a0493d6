"""Charts drawn by the hub as SVG (no script, no style attribute: the console's CSP holds): horizontal bars
with their values written out, so the picture and its CSV say the same."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH = 560
BAR_HEIGHT = 22
GAP = 8
LABEL_WIDTH = 150
VALUE_WIDTH = 90


def bars(title: str, rows: Sequence[tuple[str, float | None]], *, unit: str = "", fmt: str = "{:g}") -> str:
    """One horizontal bar per (label, value); ``None`` is drawn as no bar and written as —."""
    values = [v for _, v in rows if v is not None]
    top = max(values, default=0) or 1
    height = 30 + len(rows) * (BAR_HEIGHT + GAP)
    span = WIDTH - LABEL_WIDTH - VALUE_WIDTH
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{escape(title)}" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}">',
        f"<title>{escape(title)}</title>",
        f'<text x="0" y="18" font-size="15" font-weight="bold" fill="#1c2430">{escape(title)}</text>',
    ]
    for index, (label, value) in enumerate(rows):
        y = 30 + index * (BAR_HEIGHT + GAP)
        length = 0 if value is None else max(1.0, span * value / top)
        text = "—" if value is None else fmt.format(value) + unit
        parts.append(
            f'<text x="{LABEL_WIDTH - 8}" y="{y + 16}" font-size="13" text-anchor="end" fill="#1c2430">'
            f"{escape(label)}</text>"
        )
        parts.append(f'<rect x="{LABEL_WIDTH}" y="{y}" width="{length:.1f}" height="{BAR_HEIGHT}" fill="#0b5cad"/>')
        parts.append(
            f'<text x="{LABEL_WIDTH + length + 6:.1f}" y="{y + 16}" font-size="13" fill="#1c2430">{escape(text)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)

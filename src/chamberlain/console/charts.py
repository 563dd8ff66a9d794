"""Charts as SVG rendered on the server from data: no script, no external library, readable by screen readers
(the chart is an `img` named by its title; every bar has a <title> with its label and value). All text goes through
Jinja's autoescaping, so a label from data cannot become markup."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

from chamberlain.console.access import render_fragment

WIDTH = 720
HEIGHT = 240
_LEFT = 64  # room for the value axis' labels
_BOTTOM = 36  # room for the category labels
_TOP = 12
_TICKS = 4


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: str
    show_label: bool


@dataclass(frozen=True)
class Tick:
    y: float
    text: str


def bar_chart(
    points: Sequence[tuple[str, float]],
    *,
    title: str,
    testid: str,
    chart_id: str,
    unit: str = "",
    label_every: int = 1,
) -> Markup:
    """Bars for (label, value) pairs, left to right, with a value axis from 0 to a round maximum."""
    top = _round_up(max((value for _, value in points), default=0.0))
    plot_width = WIDTH - _LEFT - 8
    plot_height = HEIGHT - _TOP - _BOTTOM
    step = plot_width / max(len(points), 1)
    bars = []
    for index, (label, value) in enumerate(points):
        height = plot_height * value / top if top else 0.0
        bars.append(
            Bar(
                x=_LEFT + index * step + step * 0.15,
                y=_TOP + plot_height - height,
                width=step * 0.7,
                height=height,
                label=label,
                value=_format(value, unit),
                show_label=index % label_every == 0 or index == len(points) - 1,
            )
        )
    ticks = [
        Tick(_TOP + plot_height - plot_height * part / _TICKS, _format(top * part / _TICKS, unit))
        for part in range(_TICKS + 1)
    ]
    context = {
        "width": WIDTH,
        "height": HEIGHT,
        "left": _LEFT,
        "baseline": _TOP + plot_height,
        "bars": bars,
        "ticks": ticks,
        "title": title,
        "testid": testid,
        "chart_id": chart_id,
        "label_y": HEIGHT - _BOTTOM / 3,
    }
    return Markup(render_fragment("chart.svg", context))  # noqa: S704 - rendered by the autoescaping environment


def _round_up(value: float) -> float:
    """A round axis maximum at or above `value` (1, 2 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** (len(str(int(value))) - 1) if value >= 1 else 0.01
    while magnitude * 10 < value:
        magnitude *= 10
    for factor in (1, 2, 5, 10):
        if magnitude * factor >= value:
            return magnitude * factor
    return magnitude * 10


def _format(value: float, unit: str) -> str:
    return f"{unit}{value:,.2f}"

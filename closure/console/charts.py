"""Bar charts drawn on the server as inline SVG geometry: no script, no CDN, no inline style.

A chart is plain numbers (the template turns them into `<rect>` and `<text>` elements with CSS
classes from console.css), so it renders without JavaScript and under a strict CSP. Each chart
also carries its data as a table for screen readers and for reading exact values.
"""

import math
from dataclasses import dataclass, field

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 12, 34


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str  # delivered | failed | other | count
    title: str


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass
class BarChart:
    title: str
    description: str
    width: int = WIDTH
    height: int = HEIGHT
    bars: list[Bar] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)  # (css, label)
    table_head: list[str] = field(default_factory=list)
    table_rows: list[list] = field(default_factory=list)
    empty: bool = True

    @property
    def plot_left(self) -> int:
        return LEFT

    @property
    def plot_right(self) -> int:
        return self.width - RIGHT

    @property
    def plot_bottom(self) -> int:
        return self.height - BOTTOM

    @property
    def plot_top(self) -> int:
        return TOP


def _nice_max(value: int) -> int:
    """A round upper bound for the y axis (1, 2, 5, 10, 20, 50 …)."""
    if value <= 0:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover (the loop always returns)


def _y_ticks(top_value: int) -> list[Tick]:
    plot_height = HEIGHT - TOP - BOTTOM
    # A step count that divides the top value, so every tick is a whole number.
    steps = next(n for n in (5, 4, 2, 1) if top_value % n == 0)
    return [
        Tick(HEIGHT - BOTTOM - plot_height * i / steps, str(round(top_value * i / steps)))
        for i in range(steps + 1)
    ]


def stacked_bars(
    *,
    title: str,
    description: str,
    labels: list[str],
    stacks: list[list[tuple[str, int]]],
    legend: list[tuple[str, str]],
    label_every: int = 1,
) -> BarChart:
    """One bar per label, each stacked from (css class, value) parts, bottom first."""
    chart = BarChart(title=title, description=description, legend=legend)
    totals = [sum(value for _, value in stack) for stack in stacks]
    top_value = _nice_max(max(totals, default=0))
    chart.empty = not any(totals)
    chart.y_ticks = _y_ticks(top_value)
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    slot = plot_width / max(1, len(labels))
    bar_width = max(2.0, slot * 0.7)
    for index, (label, stack) in enumerate(zip(labels, stacks, strict=True)):
        x = LEFT + slot * index + (slot - bar_width) / 2
        base = HEIGHT - BOTTOM
        for css, value in stack:
            if not value:
                continue
            height = plot_height * value / top_value
            base -= height
            chart.bars.append(
                Bar(
                    round(x, 1),
                    round(base, 1),
                    round(bar_width, 1),
                    round(height, 1),
                    css,
                    f"{label}: {value} {css}",
                )
            )
        if index % label_every == 0:
            chart.x_ticks.append(Tick(round(LEFT + slot * index + slot / 2, 1), label))
    chart.table_head = ["", *[name for _, name in legend]]
    chart.table_rows = [
        [label, *[value for _, value in stack]] for label, stack in zip(labels, stacks, strict=True)
    ]
    return chart


def attempts_timeline_chart(buckets, *, span: str) -> BarChart:
    hourly = span == "24h"
    labels = [b.start.strftime("%H:%M" if hourly else "%b %d") for b in buckets]
    return stacked_bars(
        title="Delivery attempts and failures over time",
        description=(
            "Attempts per hour, last 24 hours (UTC)"
            if hourly
            else "Attempts per day, last 14 days (UTC)"
        ),
        labels=labels,
        stacks=[
            [("delivered", b.delivered), ("failed", b.failed), ("other", b.other)] for b in buckets
        ],
        legend=[
            ("delivered", "Delivered"),
            ("failed", "Failed"),
            ("other", "Accepted, skipped or superseded"),
        ],
        label_every=4 if hourly else 2,
    )


def attempts_per_delivery_chart(histogram: list[tuple[str, int]]) -> BarChart:
    return stacked_bars(
        title="Attempts per delivery",
        description="How many deliveries needed 0, 1, 2 … attempts",
        labels=[f"{label} attempt{'' if label == '1' else 's'}" for label, _ in histogram],
        stacks=[[("count", n)] for _, n in histogram],
        legend=[("count", "Deliveries")],
    )

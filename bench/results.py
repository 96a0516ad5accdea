"""Measured values and the tables the report is made of."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["GIB", "MIB", "Row", "Series", "Table", "paired_ratios", "percentile"]

MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass
class Series:
    """Repeated measurements of one quantity, shown with `digits` decimals."""

    values: list[float] = field(default_factory=list)
    digits: int = 0

    def add(self, value: float) -> None:
        """Append one measurement."""
        self.values.append(value)

    @property
    def median(self) -> float:
        """Median of the values; raise ValueError when there are none."""
        if not self.values:
            raise ValueError("no values measured")
        return statistics.median(self.values)

    def text(self) -> str:
        """Format as `median (min-max)`, or the single value."""
        if not self.values:
            return "n/a"
        median = f"{self.median:.{self.digits}f}"
        if len(self.values) == 1:
            return median
        low = f"{min(self.values):.{self.digits}f}"
        high = f"{max(self.values):.{self.digits}f}"
        return f"{median} ({low}-{high})"


def paired_ratios(numerators: Series, denominators: Series, digits: int = 2) -> Series:
    """Divide the i-th value of one series by the i-th of the other.

    Pairs measured next to each other share the machine's state at that
    moment, so their ratio is steadier than a ratio of medians.
    """
    pairs = zip(numerators.values, denominators.values, strict=False)
    return Series([top / bottom for top, bottom in pairs if bottom], digits)


def percentile(values: Iterable[float], fraction: float) -> float:
    """Return the `fraction` quantile (0-1) with linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values to take a percentile of")
    position = fraction * (len(ordered) - 1)
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    weight = position - lower
    return ordered[lower] * (1 - weight) + ordered[upper] * weight


Cell = Series | str


@dataclass
class Row:
    """One line of a report table.

    `verdict` is "met", "missed" or "" when the row has no target.
    """

    label: str
    cells: dict[str, Cell]
    target: str = ""
    verdict: str = ""


@dataclass
class Table:
    """A titled group of rows with the same columns."""

    title: str
    columns: list[str]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        """Append a row."""
        self.rows.append(row)

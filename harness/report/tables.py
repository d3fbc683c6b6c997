"""Sortable, filterable HTML tables from a frame and a list of column specs; number formatting."""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd

MISSING = "<span class='muted'>-</span>"


def is_missing(value: Any) -> bool:
    """True for None, NaN and pandas' missing values."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def is_true(value: Any) -> bool:
    """True for a present, truthy flag (Python or numpy bool); False for False, None and NaN."""
    return not is_missing(value) and bool(value)


def significant(value: Any, digits: int = 3) -> str:
    """``value`` with ``digits`` significant figures, without exponent notation (integers keep every digit)."""
    if is_missing(value):
        return "-"
    value = float(value)
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:,.{decimals}f}"


BYTE_UNITS = (("GB", 1e9), ("MB", 1e6), ("kB", 1e3))
COUNT_UNITS = (("G", 1e9), ("M", 1e6), ("k", 1e3))


def scaled(value: Any, units: tuple[tuple[str, float], ...], plain: str = "", number: Callable[[float], str] = significant, space: str = " ") -> str:
    """``value`` in the largest unit it reaches, written by ``number`` (three significant figures: ``385 kB``)."""
    if is_missing(value):
        return "-"
    for unit, scale in units:
        if abs(value) >= scale:
            return f"{number(value / scale)}{space}{unit}"
    return f"{number(value)}{plain}"


def bytes_text(value: Any) -> str:
    """Bytes in kB, MB or GB (powers of ten)."""
    return scaled(value, BYTE_UNITS, " B")


def count_text(value: Any) -> str:
    """A count in k, M or G."""
    return scaled(value, COUNT_UNITS)


def interval_text(value: Any, low: Any, high: Any, scale: float = 1.0, signed: bool = False, unit: str = "") -> str:
    """``value (low to high)``; the interval is left out where it is missing."""
    if is_missing(value):
        return "-"
    fmt = (lambda v: f"{v * scale:+.2f}") if signed else (lambda v: significant(v * scale))
    text = f"{fmt(value)}{unit}"
    if not is_missing(low) and not is_missing(high):
        text += f" <span class='ci'>({fmt(low)} to {fmt(high)})</span>" if signed else f" <span class='ci'>({fmt(low)}–{fmt(high)})</span>"
    return text


def slug(text: str) -> str:
    """An HTML id made of ``text``: letters, digits and dashes."""
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-").lower() or "x"


def cell_anchor(cell_id: str, batch_size: Any = None) -> str:
    """The id of a cell's row (``cell-mlp-baseline-cpu-r0-b32``), linked to from the answers."""
    return f"cell-{slug(cell_id)}" + (f"-b{int(batch_size)}" if not is_missing(batch_size) else "")


@dataclass
class Column:
    """One column of a table.

    ``key`` is the frame column the cell shows (a column whose key is empty in every row of
    the run is hidden); ``html`` renders a row (default: the key's value, escaped); ``sort``
    gives the value the table sorts by (default: the key's value).
    """

    header: str
    key: str | None = None
    html: Callable[[Any], str] | None = None
    sort: Callable[[Any], Any] | None = None
    text: bool = False
    sticky: bool = False
    title: str = ""
    wrap: bool = False

    @property
    def css(self) -> str:
        """The class of the column's cells."""
        return ("text" if self.text else "num") + (" sticky" if self.sticky else "") + (" wrap" if self.wrap else "")

    def render(self, row: Any) -> str:
        """The cell's HTML."""
        if self.html is not None:
            return self.html(row)
        value = row.get(self.key) if self.key else None
        if is_missing(value):
            return MISSING
        return html.escape(significant(value) if isinstance(value, float) else str(value))

    def sort_value(self, row: Any) -> str:
        """The cell's ``data-sort`` attribute: a number where there is one, else text."""
        value = self.sort(row) if self.sort is not None else (row.get(self.key) if self.key else None)
        if is_missing(value):
            return ""
        if isinstance(value, bool):
            return str(int(value))
        return repr(float(value)) if isinstance(value, (int, float)) else html.escape(str(value), quote=True)


def visible_columns(columns: list[Column], frame: pd.DataFrame) -> list[Column]:
    """The columns that have a value somewhere in ``frame`` (columns without a key always show)."""
    return [column for column in columns if column.key is None or (column.key in frame.columns and frame[column.key].notna().any())]


def html_table(
    rows: pd.DataFrame, columns: list[Column], css: str = "", row_id: Callable[[Any], str] | None = None,
    row_class: Callable[[Any], str] | None = None, filter_box: bool = True, caption: str = "",
) -> str:
    """A table inside a horizontal scroll container, sortable by clicking a header and filterable by text."""
    head = "".join(
        f"<th class='{column.css}' scope='col' aria-sort='none'"
        + (f" title='{html.escape(column.title, quote=True)}'" if column.title else "")
        + f"><button type='button'>{html.escape(column.header)}</button></th>"
        for column in columns
    )
    body = []
    for _, row in rows.iterrows():
        cells = "".join(
            f"<td class='{column.css}' data-sort='{column.sort_value(row)}'>{column.render(row)}</td>"
            for column in columns
        )
        attributes = (f" id='{row_id(row)}'" if row_id else "") + (f" class='{row_class(row)}'" if row_class and row_class(row) else "")
        body.append(f"<tr{attributes}>{cells}</tr>")
    search = "<input type='search' class='table-filter' placeholder='filter rows' aria-label='filter rows'>" if filter_box and len(rows) > 3 else ""
    caption_html = f"<caption>{caption}</caption>" if caption else ""
    return (
        f"<div class='table-block'>{search}<div class='table-scroll'><table class='sortable {css}'>{caption_html}"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div></div>"
    )

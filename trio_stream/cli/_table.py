"""Tables that fit the terminal, breaking no word that need not break.

rich shrinks the widest columns to fit, with no floor: at 80 columns ``clients`` came out as
"subscript/ions", "publishin/g" and "demo/coun/ter" while other columns had room to spare,
and its last column was cropped away. Here each column first shrinks only down to its
longest word; words break only when even those do not fit, a header's last, and a word
that must break does so after a ``/``, ``-``, ``:`` or the like where it can. The cells are
wrapped here, at the widths chosen here, and rich only draws them.

A terminal too narrow for even that (every column at its floor) gets one block per row
instead, a field a line: at 40 columns ``channels`` broke its headers ("chan/nel",
"owne/r") and numbers ("0.0/" "s 0") into columns four characters wide.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

# A word wider than its column breaks after the last of these that fits, else at the width.
BREAK_AFTER: Final = "/-_:,.=)"
# A row shown as a block puts a value beside its label if it gets at least this many cells.
RECORD_VALUE_MIN_WIDTH: Final = 12


@dataclass(frozen=True)
class Column:
    """``floor``: the width the column keeps when words must break (a name's start must
    stay readable); None: its longest word (numbers break only as a last resort)."""

    header: str
    justify: Literal["left", "right"] = "left"
    floor: int | None = None


class FitTable:
    """A table of text cells, laid out for the width it is rendered at."""

    def __init__(self, title: str, columns: Sequence[Column]) -> None:
        self.title = title
        self.columns = list(columns)
        self.rows: list[list[str]] = []

    def add_row(self, *cells: str) -> None:
        self.rows.append(list(cells))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.render(console, options)

    def render(self, console: Console, options: ConsoleOptions) -> RenderableType:
        """The rich table for ``options.max_width``, every cell wrapped to its column; the
        rows as blocks if the columns cannot keep their floors at that width."""
        room = options.max_width - _overhead(console, options, len(self.columns))
        wanted, bounds = self._bounds()
        if sum(bounds[1]) > room:
            return self._records(options.max_width)
        widths = fit_widths(wanted, bounds, room)
        table = _rich_table(self.title)
        for column, width in zip(self.columns, widths, strict=True):
            header = wrap(column.header, width)
            table.add_column(header, justify=column.justify, width=width, overflow="fold")
        for row in self.rows:
            table.add_row(*(wrap(cell, width) for cell, width in zip(row, widths, strict=True)))
        return table

    def _records(self, width: int) -> Group:
        """Each row as a block: its first cell alone, then "header  value" a line each
        (values wrapped, under themselves); a blank line between blocks."""
        labels = [_one_line(column.header) for column in self.columns[1:]]
        first = self.columns[0]
        label_width = max(map(cell_len, labels), default=0)
        # (too narrow for a value beside its label: the value goes under it)
        beside = width - 2 - label_width - 2 >= RECORD_VALUE_MIN_WIDTH
        lines = [Text(self.title, style="bold")] if self.title else []
        for number, row in enumerate(self.rows):
            if number:
                lines.append(Text(""))
            # A number names nothing by itself ("8"): with its header ("id 8").
            title = row[0] if first.justify == "left" else f"{_one_line(first.header)} {row[0]}"
            lines.extend(Text(line, style="bold") for line in wrap(title, width).split("\n"))
            for label, cell in zip(labels, row[1:], strict=True):
                value = " ".join(cell.split())
                if not value:
                    continue
                if beside:
                    indent = " " * (2 + label_width + 2)
                    wrapped = wrap(value, width - len(indent)).split("\n")
                    lines.append(Text(f"  {label.ljust(label_width)}  {wrapped[0]}"))
                    lines.extend(Text(indent + more) for more in wrapped[1:])
                else:
                    lines.append(Text(f"  {label}"))
                    lines.extend(Text(f"    {v}") for v in wrap(value, width - 4).split("\n"))
        return Group(*lines)

    def _bounds(self) -> tuple[list[int], list[list[int]]]:
        """Each column's width wanted, then the widths it may shrink to, step by step: its
        longest word, its floor (words break; a header's words only below it), one cell."""
        texts = [[column.header for column in self.columns], *self.rows]
        wanted = [max(_widest_line(row[i]) for row in texts) for i in range(len(self.columns))]
        words = [max(_widest_word(row[i]) for row in texts) for i in range(len(self.columns))]
        floors = [
            min(word, max(_widest_word(column.header), column.floor or word))
            for column, word in zip(self.columns, words, strict=True)
        ]
        return wanted, [words, floors, [1] * len(self.columns)]


def fit_widths(wanted: list[int], lower_bounds: list[list[int]], room: int) -> list[int]:
    """Column widths that add up to at most ``room`` (if the last bounds allow): the widest
    column gives a cell at a time (rich's own rule), down to the first bounds; only if that
    is not enough, down to the next bounds, and so on."""
    widths = list(wanted)
    excess = sum(widths) - room
    for lower in lower_bounds:
        while excess > 0:
            shrinkable = [i for i, width in enumerate(widths) if width > lower[i]]
            if not shrinkable:
                break
            widest = max(shrinkable, key=lambda i: widths[i])
            widths[widest] -= 1
            excess -= 1
    return widths


def wrap(text: str, width: int) -> str:
    """``text`` in lines of at most ``width`` cells, broken at spaces; a longer word after
    its last BREAK_AFTER character that fits, else at the width."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            joined = f"{line} {word}" if line else word
            if cell_len(joined) <= width:
                line = joined
                continue
            if line:
                lines.append(line)
            while cell_len(word) > width:
                head, word = _break_word(word, width)
                lines.append(head)
            line = word
        lines.append(line)
    return "\n".join(lines)


def _break_word(word: str, width: int) -> tuple[str, str]:
    fits = 0
    while fits < len(word) and cell_len(word[: fits + 1]) <= width:
        fits += 1
    fits = max(fits, 1)  # a character wider than the column still moves on
    cut = max((i + 1 for i in range(1, fits) if word[i] in BREAK_AFTER), default=fits)
    return word[:cut], word[cut:]


def _one_line(header: str) -> str:
    """A header wrapped by hand ("readers\n/writers") on one line: "readers/writers"."""
    return " ".join(header.replace("\n/", "/").split())


def _widest_line(text: str) -> int:
    return max(cell_len(line) for line in text.split("\n"))


def _widest_word(text: str) -> int:
    return max((cell_len(word) for word in text.split()), default=0)


def _rich_table(title: str) -> Table:
    # No vertical rules and one space between columns: more room for the cells.
    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )


def _overhead(console: Console, options: ConsoleOptions, columns: int) -> int:
    """The cells a table of ``columns`` columns takes besides its cells (padding and rules),
    as rich measures it."""
    probe = _rich_table("")
    for _ in range(columns):
        probe.add_column(width=1)
    return Measurement.get(console, options, probe).maximum - columns

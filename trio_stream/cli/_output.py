"""Turning received values into JSON lines and numbers into short human text."""

from __future__ import annotations

import base64
import datetime
import json
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import numpy as np
from rich.console import Console
from rich.progress import Progress, ProgressColumn, SpinnerColumn, TimeElapsedColumn

from .._util import counted as counted  # for the commands, which count in their lines

_BINARY_PREFIXES: Final = ("", "Ki", "Mi", "Gi", "Ti", "Pi")


def jsonable(value: Any, *, full: bool = False, bytes_format: str = "base64") -> Any:
    """``value`` as plain JSON types.

    numpy arrays become ``{"dtype", "shape", "min", "max", "mean"}`` (or nested lists with
    ``full``); bytes become base64 or hex text; non-finite floats become ``"nan"``,
    ``"inf"``, ``"-inf"`` (JSON has no spelling for them and ``jq`` rejects ``NaN``).
    """

    def convert(item: Any) -> Any:
        if item is None or isinstance(item, bool | int | str):
            return item
        if isinstance(item, float):
            return item if math.isfinite(item) else str(item)
        if isinstance(item, np.ndarray):
            return convert(item.tolist()) if full else summarize(item)
        if isinstance(item, np.generic):
            return convert(item.item())
        if isinstance(item, complex):
            return [convert(item.real), convert(item.imag)]
        if isinstance(item, bytes | bytearray | memoryview):
            raw = bytes(item)
            return raw.hex() if bytes_format == "hex" else base64.b64encode(raw).decode()
        if isinstance(item, dict):
            return {
                k if isinstance(k, str) else json.dumps(convert(k)): convert(v)
                for k, v in item.items()
            }
        if isinstance(item, list | tuple | set | frozenset):
            return [convert(v) for v in item]
        if isinstance(item, datetime.datetime | datetime.date):
            return item.isoformat()
        return repr(item)  # a value cbor2 decoded to something exotic (a CBORTag, ...)

    return convert(value)


def summarize(array: np.ndarray[Any, Any]) -> dict[str, Any]:
    """A few numbers that tell what an array holds, without printing all of it."""
    summary: dict[str, Any] = {"dtype": str(array.dtype), "shape": list(array.shape)}
    if array.size and array.dtype.kind in "biuf":
        with np.errstate(all="ignore"):
            summary["min"] = jsonable(array.min().item())
            summary["max"] = jsonable(array.max().item())
            summary["mean"] = jsonable(float(array.mean()))
    elif array.size and array.dtype.kind == "c":  # no order, so no min or max; a mean there is
        with np.errstate(all="ignore"):
            summary.update(min=None, max=None, mean=jsonable(complex(array.mean())))
    else:  # empty (or of no numbers at all)
        summary.update(min=None, max=None, mean=None)
    return summary


def json_line(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def human_bytes(count: float, suffix: str = "B") -> str:
    """``1536`` -> ``"1.5 KiB"``; ``human_bytes(rate, "B/s")`` for rates."""
    if abs(count) < 1024:
        return f"{count:.0f} {suffix}"
    for prefix in _BINARY_PREFIXES[1:]:
        count /= 1024
        if abs(count) < 1024 or prefix == _BINARY_PREFIXES[-1]:
            break
    return f"{count:.1f} {prefix}{suffix}"


def human_rate(per_s: float) -> str:
    if per_s >= 1000:
        return f"{per_s / 1000:.1f} k/s"
    return f"{per_s:.1f}/s" if per_s < 100 else f"{per_s:.0f}/s"


def human_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}:{minutes:02d}:{sec:02d}" if hours else f"{minutes}:{sec:02d}"
    return f"{hours // 24} d {hours % 24} h"


NOT_A_TERMINAL_WIDTH: Final = 200  # columns for tables written to a pipe or a file


def stderr_console() -> Console:
    """Progress and status go to stderr, so that stdout stays clean for data."""
    return Console(stderr=True, highlight=False)


def stdout_console() -> Console:
    console = Console(file=sys.stdout, highlight=False)
    if not console.is_terminal:
        # Rich assumes 80 columns off a terminal and would cut names short: a table in a
        # file or a pipe is wanted whole, unless COLUMNS says how wide (``COLUMNS=100
        # trio-stream channels | less``).
        width = _columns_from_environment() or NOT_A_TERMINAL_WIDTH
        console = Console(file=sys.stdout, highlight=False, width=width)
    return console


def _columns_from_environment() -> int | None:
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        return None
    return columns if columns > 0 else None


def print_out(console: Console, *renderables: Any) -> None:
    """``console.print``, without the spaces rich pads each line with off a terminal: in a
    file or a pipe they are trailing spaces up to the table's width (``diff``, ``grep $``
    and review tools trip over them)."""
    if console.is_terminal:
        for renderable in renderables:
            console.print(renderable)
        return
    with console.capture() as captured:
        for renderable in renderables:
            console.print(renderable)
    lines = captured.get().splitlines()
    console.file.write("".join(line.rstrip() + "\n" for line in lines))
    console.file.flush()


@contextmanager
def progress_display(show: bool, *columns: str | ProgressColumn) -> Iterator[Progress | None]:
    """A rich progress display on stderr, only on a terminal (logs get the summary line)."""
    if not show:
        yield None
        return
    with Progress(
        SpinnerColumn(), *columns, TimeElapsedColumn(), console=stderr_console(), transient=False
    ) as progress:
        yield progress

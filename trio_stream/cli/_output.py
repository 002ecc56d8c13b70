"""Turning received values into JSON lines and numbers into short human text."""

from __future__ import annotations

import base64
import datetime
import decimal
import fractions
import ipaddress
import json
import math
import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import cbor2
import numpy as np
from rich.console import Console
from rich.progress import Progress, ProgressColumn, SpinnerColumn, TimeElapsedColumn

from .._util import counted as counted  # for the commands, which count in their lines
from .dumpfile import UndecodedPayload

_BINARY_PREFIXES: Final = ("", "Ki", "Mi", "Gi", "Ti", "Pi")


def jsonable(value: Any, *, full: bool = False, bytes_format: str = "base64") -> Any:
    """``value`` as plain JSON types.

    numpy arrays become ``{"dtype", "shape", "min", "max", "mean"}`` (see :func:`summarize`)
    or nested lists with ``full``; bytes become base64 or hex text; a datetime its ISO 8601
    text; a complex number ``[real, imaginary]``. What JSON has no spelling for becomes an
    object of one key that starts with ``$`` (:func:`tagged`), never a string a reader
    would take for a real one: ``{"$float": "nan"}`` (also ``"inf"``, ``"-inf"``: JSON has
    no NaN, and ``jq`` rejects ``NaN``), ``{"$undefined": true}``, ``{"$simple": 16}``,
    ``{"$tag": 9999, "value": ...}`` for a CBOR tag the decoder does not know,
    ``{"$decimal": "1.5"}``, ``{"$fraction": "1/3"}``, ``{"$uuid": "..."}``,
    ``{"$ip": "..."}``; ``{"$undecoded": "why"}`` for a recorded payload that does not
    decode (dumpfile.UndecodedPayload), and ``{"$repr": "..."}`` for anything else.
    """

    def convert(item: Any) -> Any:
        if item is None or isinstance(item, bool | int | str):
            return item
        if isinstance(item, float):
            return item if math.isfinite(item) else tagged("float", _non_finite(item))
        if isinstance(item, np.ndarray):
            return convert(item.tolist()) if full else summarize(item)
        if isinstance(item, np.generic):
            return convert(_python_scalar(item))
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
        if isinstance(item, cbor2.CBORTag):
            return {"$tag": item.tag, "value": convert(item.value)}
        return _exotic(item)

    return convert(value)


def tagged(kind: str, value: Any) -> dict[str, Any]:
    """A value JSON cannot spell, as ``{"$kind": value}``."""
    return {f"${kind}": value}


def _non_finite(number: float) -> str:
    """``"nan"``, ``"inf"`` or ``"-inf"`` (the spelling of Python's str and of numpy's)."""
    return "nan" if math.isnan(number) else ("inf" if number > 0 else "-inf")


def _python_scalar(item: np.generic[Any]) -> Any:
    """A numpy scalar as the Python value it stands for.

    A long double (and its complex) becomes a float (complex): its ``.item()`` is itself on
    x86 (the recursion that made sub and show a 980-frame traceback), and no Python number
    holds it. Precision beyond float64 is not printed; a value beyond float64's range
    prints as an infinity.
    """
    if isinstance(item, np.floating) and item.itemsize > 8:
        with np.errstate(over="ignore"):
            return float(item)
    if isinstance(item, np.complexfloating) and item.itemsize > 16:
        with np.errstate(over="ignore"):
            return complex(item)
    value = item.item()
    # Any other scalar whose .item() is a numpy scalar again (none known): not a recursion.
    return _exotic(value) if isinstance(value, np.generic) else value


def _exotic(item: Any) -> dict[str, Any]:
    """What the decoder makes of the CBOR a JSON line has no type for, tagged (see jsonable)."""
    if item is cbor2.undefined:
        return tagged("undefined", True)
    if isinstance(item, cbor2.CBORSimpleValue):
        return tagged("simple", item.value)
    if isinstance(item, decimal.Decimal):
        return tagged("decimal", str(item))
    if isinstance(item, fractions.Fraction):
        return tagged("fraction", str(item))
    if isinstance(item, uuid.UUID):
        return tagged("uuid", str(item))
    if isinstance(item, _IP_TYPES):
        return tagged("ip", str(item))
    if isinstance(item, UndecodedPayload):
        return tagged("undecoded", item.reason)
    return tagged("repr", repr(item))


_IP_TYPES: Final = (
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
    ipaddress.IPv4Interface,
    ipaddress.IPv6Interface,
)


def summarize(array: np.ndarray[Any, Any]) -> dict[str, Any]:
    """A few numbers that tell what an array holds, without printing all of it.

    ``{"dtype", "shape", "min", "max", "mean"}``, and ``"nan"`` (how many elements are NaN)
    when some are: min, max and mean are then of the others (null if all are NaN). The mean
    is accumulated in float64 (complex128), not in the array's dtype: a float32 array of
    3e38s has the mean 3e38, not inf. A complex array has no order: min and max are null.
    """
    summary: dict[str, Any] = {"dtype": str(array.dtype), "shape": list(array.shape)}
    kind = array.dtype.kind
    if not array.size or kind not in "biufc":  # empty (or of no numbers at all)
        summary.update(min=None, max=None, mean=None)
        return summary
    # float64 (complex128) at least; a long double keeps its own, so that values beyond
    # float64's range still average right before they are printed as floats.
    wide = kind in "fc" and array.dtype.itemsize > (16 if kind == "c" else 8)
    accumulator = array.dtype if wide else np.complex128 if kind == "c" else np.float64
    with np.errstate(all="ignore"):
        missing = np.isnan(array) if kind in "fc" else None
        nans = 0 if missing is None else int(np.count_nonzero(missing))
        if nans == array.size:
            summary.update(min=None, max=None, mean=None)
        else:
            numbers = array[~missing] if nans and missing is not None else array
            if kind == "c":
                summary.update(min=None, max=None)
            else:
                summary["min"] = jsonable(numbers.min())
                summary["max"] = jsonable(numbers.max())
            summary["mean"] = jsonable(numbers.mean(dtype=accumulator))
    if nans:
        summary["nan"] = nans
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

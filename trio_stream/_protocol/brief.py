"""``brief(value)``: a short, always-formattable repr of a value that came from the wire.

Error messages and log lines quote what a peer sent. Quoted whole, a 1 MiB string floods the
log and the goodbye, and an integer of 5,000 digits cannot even be formatted (Python refuses
int-to-str conversions beyond 4,300 digits), which turned a protocol error into a traceback.
"""

from __future__ import annotations

import reprlib
from typing import Any, Final

MAX_BRIEF_CHARS: Final = 80
_MAX_INT_BITS: Final = 128  # larger integers are described by their size, not their digits


class _BriefRepr(reprlib.Repr):
    def __init__(self) -> None:
        super().__init__()
        self.maxstring = MAX_BRIEF_CHARS
        self.maxother = MAX_BRIEF_CHARS
        self.maxlevel = 3

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > _MAX_INT_BITS:
            return f"<int of {x.bit_length()} bits>"
        return repr(x)

    def repr_bytes(self, x: bytes, level: int) -> str:
        return self.repr_str(x, level)  # type: ignore[arg-type]  # same slicing, then repr

    repr_bytearray = repr_bytes


_REPR: Final = _BriefRepr()


def brief(value: Any, limit: int = MAX_BRIEF_CHARS) -> str:
    """``repr(value)`` in at most ``limit`` characters, in time bounded by ``limit``."""
    try:
        text = _REPR.repr(value)
    except Exception:  # a value whose repr fails is still named
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def cut(text: str, limit: int = 200) -> str:
    """``text`` itself (no quotes) in at most ``limit`` characters: for messages to pass on."""
    return text if len(text) <= limit else text[: limit - 3] + "..."

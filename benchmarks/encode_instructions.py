"""Instructions per ``encode_payload`` of a small value, counted by valgrind (an A/B tool).

CPU time on a shared virtual machine moves by 15 % and more from one run to the next, so a
change of a few per cent in one function cannot be seen in it. An instruction count can:
valgrind's cachegrind (without its cache model) counts what a process executes; with a
fixed hash seed the count per call still moves by up to ~6 % between runs (the address-space
layout differs), far less than CPU time, and a 10 % change shows in every pair. Each tree's loop
runs twice, with ``--calls`` and with ``--calls`` plus ``--extra`` calls, and the figure is
the difference divided by ``--extra``: start-up (the interpreter, numpy, cbor2) cancels out.

The value is the benchmarks' small frame, ``[monotonic_ns, seq, False, 82 zero bytes]``, as
the writer in ``writer_cpu.py`` and the harness's cbor2 runs send it. Needs Linux and
``valgrind`` (Debian: ``apt-get install valgrind``):

    python benchmarks/encode_instructions.py --src /tmp/base --src .
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
_LOOP = """
import sys, time
from trio_stream._protocol.codec import encode_payload
value = [time.monotonic_ns(), 12345, False, bytes(82)]
for _ in range(int(sys.argv[1])):
    encode_payload(value)
"""
# cachegrind without its cache model: it counts instructions ("I refs") and nothing else.
_VALGRIND = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
_INSTRUCTIONS = re.compile(r"I\s+refs:\s+([\d,]+)")


def instructions(src: Path, calls: int) -> int:
    """Instructions that a process of the tree at ``src`` executes for ``calls`` encodes."""
    # A fixed hash seed: set and dict layouts, and so the count, repeat exactly. Run from
    # the tree itself, so that `python -c` finds its trio_stream first.
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONHASHSEED": "0"}
    done = subprocess.run(
        [*_VALGRIND, sys.executable, "-c", _LOOP, str(calls)],
        cwd=src,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    found = _INSTRUCTIONS.search(done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from valgrind: {done.stderr[-500:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", action="append", type=Path, help="tree to run (repeatable)")
    parser.add_argument("--calls", type=int, default=1000, help="calls in the shorter run")
    parser.add_argument("--extra", type=int, default=40_000, help="more in the longer one")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    trees: list[Path] = [path.resolve() for path in args.src or [REPO_ROOT]]
    for _ in range(args.repeat):
        for tree in trees:
            short = instructions(tree, args.calls)
            long = instructions(tree, args.calls + args.extra)
            per_call = (long - short) / args.extra
            print(f"{tree.name:12s} encode_payload {per_call:,.0f} instructions per call")


if __name__ == "__main__":
    main()

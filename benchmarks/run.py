"""python benchmarks/run.py [--systems ...] [--scenarios ...] [--repeat N] [--quick] [--json F]

See benchmarks/README.md.
"""

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a script, sys.path[0] is benchmarks/, whose modules (report, jobs...) could
    # shadow others. Put the repository there instead: `benchmarks` and the repository's
    # trio_stream become importable.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from benchmarks.cli import main

if __name__ == "__main__":
    sys.exit(main())

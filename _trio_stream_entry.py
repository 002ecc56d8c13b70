"""The ``trio-stream`` command's entry point, outside the package on purpose.

Importing ``trio_stream`` takes most of a second (trio, numpy, cbor2, the server). A module
inside the package runs only after that import, so Ctrl-C pressed meanwhile would print the
interpreter's traceback from somewhere in it; from here it exits quietly with 130, as it
does once the command runs (cli._run).
"""

from __future__ import annotations

import signal
import sys

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it


def main() -> int:
    try:
        from trio_stream.cli import main as cli_main

        code = cli_main()
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    # The command is done: a Ctrl-C pressed now, as the interpreter exits, would end it by
    # SIGINT (exit -2, or a traceback from its shutdown) instead of with its own code.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


if __name__ == "__main__":
    sys.exit(main())

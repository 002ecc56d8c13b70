"""``python -m trio_stream``: the same command line as ``trio-stream``."""

from trio_stream.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

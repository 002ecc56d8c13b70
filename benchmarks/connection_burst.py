"""Bursts of connections: the server's CPU per connection and how long a burst takes.

    python benchmarks/connection_burst.py                                 # 5 bursts of 3,000
    python benchmarks/connection_burst.py --src /tmp/base --src . --repeat 2   # A/B

For each source tree a server runs in a child process (its ``PYTHONPATH`` the tree, the
connection limits raised above the burst). This process opens ``--connections`` TCP
connections at once, each saying hello and reading its welcome (as clients do after a
server restart), closes them all, and does it ``--bursts`` times. Reported: the server's
CPU time (utime + stime from ``/proc``, Linux) per connection opened and closed, and the
fastest and slowest burst. Loopback only; every socket operation has a timeout.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a script: the repository, not benchmarks/, first on sys.path (as run.py does).
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from benchmarks.idle_connections import open_connections, raise_file_limit
from benchmarks.metrics_scrape import LOOPBACK, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
START_S = 1.5
SETTLE_S = 1.0  # lets the server see the closes before its CPU is read
BURST_DEADLINE_S = 60.0

_SERVER = (
    "import trio, trio_stream as ts; trio.run(ts.serve, ts.ServerConfig(host='127.0.0.1', "
    "tcp_port={port}, http_port=None, max_connections={limit}, "
    "max_connections_per_address={limit}))"
)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(tree: Path, connections: int, bursts: int) -> str:
    port = free_port()
    code = _SERVER.format(port=port, limit=connections * 2)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    server = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tree)
    try:
        time.sleep(START_S)
        before = cpu_seconds(server.pid)
        took = []
        for _ in range(bursts):
            started = time.monotonic()
            sockets = open_connections(
                (LOOPBACK, port), connections, hello=True, deadline=started + BURST_DEADLINE_S
            )
            took.append(time.monotonic() - started)
            for sock in sockets:
                sock.close()
            time.sleep(SETTLE_S)
        per_connection_us = (cpu_seconds(server.pid) - before) / (connections * bursts) * 1e6
    finally:
        server.kill()
        server.wait()
    return (
        f"{tree!s:<20} server CPU {per_connection_us:.0f} us per connection; "
        f"{connections:,} open in {min(took):.2f}-{max(took):.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", action="append", type=Path, help="trio_stream tree(s)")
    parser.add_argument("--connections", type=int, default=3000, help="per burst")
    parser.add_argument("--bursts", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    raise_file_limit(args.connections + 100)
    trees = [tree.resolve() for tree in (args.src or [REPO_ROOT])]
    for _ in range(args.repeat):
        for tree in trees:
            print(measure(tree, args.connections, args.bursts), flush=True)


if __name__ == "__main__":
    main()

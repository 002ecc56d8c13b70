"""The lab story: one acquisition writer, three very different readers, none slowing another.

- ``daq`` publishes ``AnalogInput1``: 1000-sample float64 arrays, as fast as it can;
- ``recorder`` must lose nothing: ``block`` (the writer waits for it if it ever falls behind);
- ``analysis`` keeps a ring of the 100 newest frames (``drop_oldest``) and is slow on purpose;
- ``display`` wants a glance: a ring of 1, every 10th frame, at most 20 per second (a
  dashboard would take 2 per second; this run lasts about a second).

The recorder's and the analysis's counts add up: what each received plus what its buffer
dropped (``lost``) is every frame the writer sent. The display's ``every`` and ``max_rate``
thin the stream by its own choice, which is not loss: it counts those frames in neither.

Run it alone (it starts its own server) or against a running one:
``python examples/stream_data.py [tcp://127.0.0.1:9870] [--frames 2000]``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

import numpy as np
import trio

import trio_stream as ts

CHANNEL = "AnalogInput1"
END_WAIT_S = 10.0  # for the readers' end markers, after the writer's last frame


@dataclass
class Tally:
    frames: int = 0
    lost: int = 0
    seqs: list[int] = field(default_factory=list)
    ended: bool = False  # the end marker arrived: nothing of the writer's is left to come


async def acquire(url: str, frames: int, readers: int) -> None:
    async with ts.open_client(url, name="daq") as daq, daq.publisher(CHANNEL) as pub:
        await pub.wait_for_readers(readers)
        t = np.linspace(0.0, 1.0, 1000)
        for i in range(frames):
            await pub.send(np.sin(2 * np.pi * (5 * t + i / 100)))
        await pub.wait_acknowledged()
        await pub.send(None)  # end marker: every lossless reader sees it


@dataclass
class Reader:
    name: str
    policy: str
    size: int
    every: int = 1
    max_rate: float | None = None
    delay_s: float = 0.0  # a slow analysis step per frame
    tally: Tally = field(default_factory=Tally)


READERS = [
    Reader("recorder", "block", 100),
    Reader("analysis", "drop_oldest", 100, delay_s=0.001),
    Reader("display", "drop_oldest", 1, every=10, max_rate=20.0),
]


async def read(url: str, reader: Reader, task_status: trio.TaskStatus[None]) -> None:
    async with (
        ts.open_client(url, name=reader.name) as client,
        client.subscribe(
            CHANNEL,
            policy=reader.policy,
            size=reader.size,
            every=reader.every,
            max_rate=reader.max_rate,
        ) as sub,
    ):
        task_status.started()
        async for msg in sub:
            reader.tally.lost += msg.lost
            if msg.data is None:
                reader.tally.ended = True
                return
            reader.tally.frames += 1
            reader.tally.seqs.append(msg.seq)
            if reader.delay_s:
                await trio.sleep(reader.delay_s)


async def run(url: str, frames: int) -> dict[str, Tally]:
    readers = [Reader(**{**r.__dict__, "tally": Tally()}) for r in READERS]
    async with ts.open_client(url, name="lab-setup") as setup:
        await setup.create_channel(CHANNEL)
        async with trio.open_nursery() as nursery:
            for reader in readers:
                await nursery.start(read, url, reader)
            await acquire(url, frames, readers=len(readers))
            # A drop_oldest buffer keeps the newest frame, so the end marker reaches the
            # recorder and the analysis; the display's `every` may skip it (it keeps seqs 1,
            # 11, 21, ...). Wait for the others' markers, then stop the display.
            with trio.move_on_after(END_WAIT_S):
                # Polling plain flags: the readers have no event to offer, and this loop
                # ends within END_WAIT_S whatever happens.
                while not all(r.tally.ended for r in readers if r.every == 1):  # noqa: ASYNC110
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    return {r.name: r.tally for r in readers}


def report(tallies: dict[str, Tally], frames: int) -> None:
    chosen = {r.name: r for r in READERS}
    for name, tally in tallies.items():
        reader = chosen[name]
        chose = [f"every {reader.every}th"] if reader.every > 1 else []
        if reader.max_rate is not None:
            chose.append(f"at most {reader.max_rate:g} per second")
        of = f"it asked for {', '.join(chose)}" if chose else f"of {frames}"
        print(f"{name:9s} received {tally.frames:6d} frames, lost {tally.lost:6d} ({of})")


async def main(url: str | None, frames: int) -> dict[str, Tally]:
    if url is not None:
        tallies = await run(url, frames)
    else:
        config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None)
        async with ts.open_server(config) as server:
            assert server.tcp_url is not None
            tallies = await run(server.tcp_url, frames)
    report(tallies, frames)
    return tallies


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", help="server URL (default: start a server here)")
    parser.add_argument("--frames", type=int, default=2000)
    args = parser.parse_args()
    try:
        trio.run(main, args.url, args.frames)
    except ts.TrioStreamError as exc:  # e.g. no server at that URL: one line, not a traceback
        sys.exit(f"stream_data: {type(exc).__name__}: {exc}")

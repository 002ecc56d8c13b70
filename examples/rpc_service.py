"""An instrument exposes read_temperature() and set_rate(hz); a control script calls them.

- the *instrument* (client ``thermo``) exposes its ``rpc_*`` methods and streams its
  temperature into the channel ``Temperature`` at the current rate;
- the *control* script reads the temperature, raises the rate and sees the stream speed up,
  then shows what a remote error (a rate out of range) and a timeout look like.

Everything in one process, with its own server:  ``python examples/rpc_service.py``
Both roles against a running server:             ``python examples/rpc_service.py URL``
Each role on its own (e.g. on two machines):     ``... URL --role instrument`` and
                                                 ``... URL --role control``
A second instrument beside the first:            ``... URL --name thermo2`` (both roles)
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from typing import Any

import trio

import trio_stream as ts

CHANNEL = "Temperature"
INSTRUMENT = "thermo"


class Thermometer:
    """The instrument. Only its ``rpc_*`` methods can be called from other clients."""

    def __init__(self) -> None:
        self.rate_hz = 2.0
        self.rate_changed = trio.Event()
        self._random = random.Random(1)

    def rpc_read_temperature(self) -> float:
        """The temperature now, in degrees Celsius."""
        return round(21.0 + 0.5 * math.sin(time.time() / 10) + self._random.gauss(0, 0.02), 3)

    def rpc_set_rate(self, hz: float) -> float:
        """Stream the temperature ``hz`` times per second (0.1 to 100); returns the new rate."""
        # Callers send anything (`trio-stream call ... set_rate fast` sends a string): say
        # what is wrong rather than let the comparison fail with Python's own words.
        if isinstance(hz, bool) or not isinstance(hz, int | float):
            raise TypeError(f"hz must be a number of Hz (0.1 to 100), not {hz!r:.40}")
        if not 0.1 <= hz <= 100:
            raise ValueError(f"rate {hz} Hz is out of range (0.1 to 100 Hz)")
        self.rate_hz = float(hz)
        self.rate_changed.set()  # the streaming loop picks the new rate up at once
        return self.rate_hz

    async def rpc_calibrate(self, seconds: float = 2.0) -> str:
        """A slow operation; a caller that gives up (timeout, cancel) cancels it here too."""
        await trio.sleep(seconds)
        return "calibrated"

    async def stream(self, client: ts.Client, channel: str) -> None:
        async with client.publisher(channel) as pub:
            while True:
                # The frame's own time stamps it (msg.time): a "t" field of epoch seconds
                # would be one more number, which a dashboard plots beside the temperature.
                await pub.send({"celsius": self.rpc_read_temperature()})
                self.rate_changed = trio.Event()
                with trio.move_on_after(1 / self.rate_hz):
                    await self.rate_changed.wait()


def channel_of(name: str) -> str:
    """The instrument's channel: "Temperature" for the first, "Temperature/thermo2" else."""
    return CHANNEL if name == INSTRUMENT else f"{CHANNEL}/{name}"


async def instrument(
    url: str,
    name: str = INSTRUMENT,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the instrument (the client ``name``) until cancelled."""
    thermometer = Thermometer()
    async with ts.open_client(url, name=name) as client:
        await client.create_channel(channel_of(name))
        print("instrument: exposing", ", ".join(client.expose(thermometer)))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(thermometer.stream, client, channel_of(name))
            task_status.started()
            await trio.sleep_forever()


async def connect_to_instrument(client: ts.Client, name: str, wait_s: float) -> Any:
    """The instrument's proxy; it may not be up yet when the control script starts."""
    with trio.fail_after(wait_s):
        while True:
            try:
                return await client.rpc(name, timeout=5.0)
            except ts.RpcError:
                await trio.sleep(0.2)


async def frames_per_second(client: ts.Client, channel: str, seconds: float) -> float:
    async with client.subscribe(channel, policy="drop_oldest", size=100) as sub:
        await sub.receive()  # start counting at a frame boundary
        count = 0
        with trio.move_on_after(seconds):
            async for _ in sub:
                count += 1
    return count / seconds


async def control(url: str, name: str = INSTRUMENT, wait_s: float = 30.0) -> dict[str, Any]:
    """The control script (of the instrument ``name``): what an operator would do. Returns
    what it saw."""
    seen: dict[str, Any] = {}
    controller = "control" if name == INSTRUMENT else f"control-{name}"
    async with ts.open_client(url, name=controller) as client:
        thermo = await connect_to_instrument(client, name, wait_s)
        seen["temperature"] = await thermo.read_temperature()
        print(f"control: temperature {seen['temperature']} °C")
        print(f"control: set_rate{thermo.set_rate.__signature__}: {thermo.set_rate.__doc__}")
        seen["rate"] = await thermo.set_rate(50)
        seen["fps"] = await frames_per_second(client, channel_of(name), 1.0)
        print(f"control: rate {seen['rate']} Hz, measured {seen['fps']:.0f} frames/s")
        try:
            await thermo.set_rate(1000)
        except ts.RemoteError as exc:  # the instrument's exception, type and message intact
            seen["remote_error"] = exc.type_name
            print(f"control: the instrument refused: {exc.type_name}: {exc.message}")
        try:
            await thermo.call("calibrate", 60, timeout=0.5)
        except ts.RpcTimeout:
            seen["timeout"] = True
            print("control: calibrate did not finish within 0.5 s (and was cancelled there)")
        seen["rate"] = await thermo.set_rate(2)
    return seen


async def demo(url: str, name: str = INSTRUMENT) -> dict[str, Any]:
    """Both roles against one server: the instrument in the background, control in front."""
    async with trio.open_nursery() as nursery:
        await nursery.start(instrument, url, name)
        seen = await control(url, name)
        nursery.cancel_scope.cancel()
    return seen


async def main(url: str | None, role: str, name: str = INSTRUMENT) -> None:
    if url is None:
        config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None)
        async with ts.open_server(config) as server:
            assert server.tcp_url is not None
            await demo(server.tcp_url, name)
    elif role == "instrument":
        await instrument(url, name)
    elif role == "control":
        await control(url, name)
    else:
        await demo(url, name)


def first_error(exc: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups: what a nursery wrapped."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", help="server URL (default: start a server here)")
    parser.add_argument("--role", choices=["both", "instrument", "control"], default="both")
    parser.add_argument(
        "--name",
        default=INSTRUMENT,
        help=f"the instrument's client name (default {INSTRUMENT}; its channel is "
        f"{CHANNEL}/NAME for another name): a second instrument beside the first",
    )
    args = parser.parse_args()
    try:
        trio.run(main, args.url, args.role, args.name)
    except BaseException as exc:
        error = first_error(exc)
        if isinstance(error, KeyboardInterrupt):
            # Ctrl-C is how the instrument role ends: bare, or in the group of the nursery
            # whose task it interrupted.
            sys.exit(0)
        if not isinstance(error, ts.TrioStreamError):
            raise
        # e.g. NameInUse: another "thermo" is connected already (--name picks another).
        # One line, not a traceback.
        sys.exit(f"rpc_service: {type(error).__name__}: {error}")

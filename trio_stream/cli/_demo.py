"""The demo writers: a sine wave, a moving image and a counter, each sent only to readers."""

from __future__ import annotations

import math
import ssl
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import trio

import trio_stream as ts

SINE_SAMPLES: Final = 1000
SINE_RATE_HZ: Final = 20.0
IMAGE_SIDE: Final = 64  # pixels
IMAGE_RATE_HZ: Final = 5.0
COUNTER_RATE_HZ: Final = 10.0


def sine_frame(n: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Four periods of a sine whose phase drifts frame by frame, plus a little noise."""
    x = np.linspace(0.0, 8 * math.pi, SINE_SAMPLES)
    noise = np.random.default_rng(n).normal(0.0, 0.05, SINE_SAMPLES)
    return np.sin(x + n * 0.2) + noise


def image_frame(n: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Rings spreading from a centre that circles the picture: uint8, like a camera."""
    y, x = np.mgrid[0:IMAGE_SIDE, 0:IMAGE_SIDE].astype(np.float64)
    angle = n * 0.15
    cx = IMAGE_SIDE / 2 + IMAGE_SIDE / 4 * math.cos(angle)
    cy = IMAGE_SIDE / 2 + IMAGE_SIDE / 4 * math.sin(angle)
    r = np.hypot(x - cx, y - cy)
    image: np.ndarray[Any, np.dtype[np.uint8]] = ((np.cos(r / 2.5 - n * 0.8) + 1) * 127.5).astype(
        np.uint8
    )
    return image


def counter_frame(n: int) -> int:
    return n


DEMO_CHANNELS: Final[tuple[tuple[str, float, Callable[[int], Any]], ...]] = (
    ("sine", SINE_RATE_HZ, sine_frame),
    ("image", IMAGE_RATE_HZ, image_frame),
    ("counter", COUNTER_RATE_HZ, counter_frame),
)
# What a reader needs to show each channel (create_channel(meta=...)): units, a description.
DEMO_META: Final[dict[str, dict[str, Any]]] = {
    "sine": {"units": "V", "description": "four periods of a drifting sine, 1000 samples"},
    "image": {"units": "counts", "description": "rings from a circling centre, 64 x 64 uint8"},
    "counter": {"units": "frames", "description": "counts up at 10 Hz while someone reads"},
}


async def _write(
    client: ts.Client, channel: str, rate_hz: float, make: Callable[[int], Any]
) -> None:
    await client.create_channel(channel, meta=DEMO_META[channel.rsplit("/", 1)[-1]])
    async with client.publisher(channel) as pub:
        n = 0
        while True:
            # Nothing is computed for an empty channel: a dashboard that closes costs nothing.
            await pub.wait_for_readers()
            next_at = trio.current_time()
            while pub.readers:
                await pub.send(make(n))
                n += 1
                # Deadlines from the clock, not sleeps in a row: no drift below the rate.
                next_at = max(next_at + 1 / rate_hz, trio.current_time() - 1 / rate_hz)
                await trio.sleep_until(next_at)


async def run_demo_writers(url: str, prefix: str, *, token: str | None, tls: bool) -> None:
    """Connect to ``url`` and feed ``PREFIX/sine``, ``PREFIX/image`` and ``PREFIX/counter``."""
    context = None
    if tls:
        # The writers talk to their own server in this process: nothing to verify, and the
        # certificate need not name the listening address.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    async with (
        ts.open_client(
            url, name=demo_writer_name(prefix), token=token, ssl_context=context
        ) as client,
        trio.open_nursery() as n,
    ):
        for name, rate_hz, make in DEMO_CHANNELS:
            n.start_soon(_write, client, f"{prefix}/{name}", rate_hz, make)


def demo_writer_name(prefix: str) -> str:
    """The client name of the demo's writers."""
    return f"{prefix}-writer"


def demo_channel_names(prefix: str) -> list[str]:
    return [f"{prefix}/{name}" for name, _, _ in DEMO_CHANNELS]

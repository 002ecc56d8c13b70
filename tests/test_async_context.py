"""Entering open_client, open_server, subscribe and publisher any way but ``async with``
raises an error that shows the line to write (real server, real connections). Each mistake
is a type error too: the ``type: ignore`` comments below are needed, and mypy --strict
(warn_unused_ignores) fails if one stops being (if mypy were to take a mistake as well-typed,
or skip the lines after it as unreachable)."""

from __future__ import annotations

import inspect
import pydoc
import re
import typing
from collections.abc import Callable

import pytest
import trio

import trio_stream as ts
from trio_stream._async_context import AsyncContext


async def test_a_client_used_without_async_with_says_how_to_enter_it(server: ts.Server) -> None:
    assert server.tcp_url is not None
    manager = ts.open_client(server.tcp_url)
    hint = re.escape("async with ts.open_client(url) as client:")
    with pytest.raises(AttributeError, match=hint):
        manager.channels  # type: ignore[attr-defined]  # noqa: B018 - the mistake under test
    assert not hasattr(manager, "channels")  # still an AttributeError: hasattr works
    with pytest.raises(TypeError, match=hint):
        await manager  # type: ignore[misc]
    with pytest.raises(TypeError, match=hint), manager:  # type: ignore[attr-defined]
        pass
    async with manager as client:  # and it still works as meant, once
        assert client.state == "open"


async def test_subscribe_and_publisher_without_async_with_say_how_to_enter_them(
    server: ts.Server,
) -> None:
    assert server.tcp_url is not None
    async with ts.open_client(server.tcp_url, name="daq") as client:
        await client.create_channel("AI1")
        with pytest.raises(TypeError, match=r"async with client\.subscribe\(channel\) as sub:"):
            async for _ in client.subscribe("AI1"):  # type: ignore[attr-defined]
                pass
        with pytest.raises(AttributeError, match=r"await client\.open_publisher\(channel\)"):
            await client.publisher("AI1").send(1)  # type: ignore[attr-defined]
        async with client.publisher("AI1") as pub, client.subscribe("AI1") as sub:
            await pub.wait_for_readers()
            await pub.send(1)
            with trio.fail_after(5):
                assert (await sub.receive()).data == 1


async def test_open_server_without_async_with_says_how_to_enter_it() -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None)
    with pytest.raises(TypeError, match=r"nursery\.start\(ts\.serve, config\)"):
        await ts.open_server(config)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("manager", "entered"),
    [
        (ts.open_client, "Client"),
        (ts.open_server, "Server"),
        (ts.Client.subscribe, "Subscription"),
        (ts.Client.publisher, "Publisher"),
    ],
)
def test_help_and_type_hints_show_an_async_context_manager(
    manager: Callable[..., object], entered: str
) -> None:
    # They showed the generator's AsyncIterator[...]: the `async for` that raises (a trio
    # developer reading help()).
    assert inspect.signature(manager).return_annotation == f"AsyncContext[{entered}]"
    returns = typing.get_type_hints(manager)["return"]
    assert typing.get_origin(returns) is AsyncContext
    assert typing.get_args(returns)[0].__name__ == entered
    assert "AsyncIterator" not in pydoc.render_doc(manager)


def test_the_async_client_under_asyncio_says_which_client_to_use_there() -> None:
    # A Jupyter cell runs under asyncio: trio's first call failed deep inside it ("'RunContext'
    # object has no attribute 'runner'"), where every other mistake gets a line to write.
    import asyncio

    async def main() -> None:
        async with ts.open_client("tcp://127.0.0.1:9"):  # never reached: refused before
            pass

    with pytest.raises(RuntimeError, match=r"runs under trio.*ts\.SyncClient\(url\)"):
        asyncio.run(main())

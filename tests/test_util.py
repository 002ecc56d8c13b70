"""open_own_nursery: a library context manager's nursery hands the block's exception on as
itself, taking off only the group of one that the nursery put it in."""

from __future__ import annotations

import socket

import pytest
import trio

import trio_stream as ts
from trio_stream._util import open_own_nursery


class Boom(Exception):
    pass


async def test_the_blocks_exception_leaves_as_itself_with_its_own_context() -> None:
    error = Boom("mine")
    with pytest.raises(Boom) as caught:
        async with open_own_nursery():
            try:
                raise KeyError("first")
            except KeyError:
                raise error from None
    assert caught.value is error
    assert isinstance(error.__context__, KeyError)  # not the nursery's group


async def test_a_group_the_block_raised_leaves_as_the_very_same_object() -> None:
    mine = ExceptionGroup("mine", [Boom("a"), Boom("b")])
    with pytest.raises(ExceptionGroup) as caught:
        async with open_own_nursery():
            raise mine
    assert caught.value is mine

    # A group of one from the application's own nursery keeps its group too: code written
    # `except* Boom` or `except ExceptionGroup` sees what it would see without trio_stream.
    with pytest.raises(ExceptionGroup) as caught:
        async with open_own_nursery(), trio.open_nursery() as apps:
            apps.start_soon(_fail)
    assert [type(e) for e in caught.value.exceptions] == [Boom]


async def _fail() -> None:
    raise Boom("child")


async def test_a_background_tasks_failure_keeps_the_nurserys_group() -> None:
    with pytest.raises(ExceptionGroup) as caught:
        async with open_own_nursery() as nursery:
            nursery.start_soon(_fail)
            await trio.sleep_forever()
    assert [type(e) for e in caught.value.exceptions] == [Boom]


async def test_a_cancel_the_nursery_absorbs_is_not_raised_again() -> None:
    async with open_own_nursery() as nursery:
        nursery.cancel_scope.cancel()
        await trio.sleep_forever()


async def test_inside_open_client_an_applications_group_is_untouched(url: str) -> None:
    mine = ExceptionGroup("mine", [Boom("a")])
    with pytest.raises(ExceptionGroup) as caught:
        async with ts.open_client(url):
            raise mine
    assert caught.value is mine
    with pytest.raises(Boom):  # and a plain exception is itself, as before
        async with ts.open_client(url):
            raise Boom("plain")


async def test_a_port_in_use_is_a_bare_oserror_that_names_the_port(
    nursery: trio.Nursery,
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        config = ts.ServerConfig(host="127.0.0.1", tcp_port=port, http_port=None)
        # As trio.serve_tcp's: not an ExceptionGroup of one
        with pytest.raises(OSError) as caught:
            await nursery.start(ts.serve, config)
        assert f"trio_stream: listening on 127.0.0.1 TCP port {port}" in caught.value.__notes__
        with pytest.raises(OSError):
            async with ts.open_server(config):
                pass
    finally:
        taken.close()

"""The blocking portal: what a caller's exception keeps of the trio thread's frames."""

from __future__ import annotations

import traceback

import trio

from trio_stream._exceptions import ChannelNotFound
from trio_stream._portal import BlockingPortal, caller_timeout, for_the_caller


def frames_of(error: BaseException) -> int:
    return len(traceback.extract_tb(error.__traceback__))


def raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as caught:
        return caught


def test_the_callers_own_timeout_and_trio_stream_errors_lose_their_frames() -> None:
    for error in (caller_timeout("no message on 'x' within 1 s"), ChannelNotFound("x")):
        assert frames_of(raised(error)) == 1
        assert frames_of(for_the_caller(raised(error))) == 0


def test_any_other_timeout_keeps_its_traceback() -> None:
    # An OS timeout, or one a caller's own function raised, is found through its frames.
    error = raised(TimeoutError("timed out"))
    assert for_the_caller(error) is error
    assert frames_of(error) == 1


def test_the_callers_timeout_still_reads_as_a_timeout_error() -> None:
    error = caller_timeout("not done within 2 s")
    assert type(error) is TimeoutError
    assert traceback.format_exception_only(error) == ["TimeoutError: not done within 2 s\n"]


async def test_a_timeout_raised_in_the_trio_thread_reaches_the_caller_whole() -> None:
    portal = BlockingPortal()

    async def os_timeout() -> None:
        raise TimeoutError("the instrument did not answer")

    async def own_timeout() -> None:
        raise caller_timeout("not done within 1 s")

    outcomes: dict[str, BaseException] = {}

    def caller() -> None:
        for name, fn in (("os", os_timeout), ("own", own_timeout)):
            try:
                portal.call(fn)
            except TimeoutError as exc:
                outcomes[name] = exc

    async with trio.open_nursery() as nursery:
        portal.open(nursery)
        await trio.to_thread.run_sync(caller)
        portal.close()
        portal.detach()
    assert "os_timeout" in "".join(traceback.format_tb(outcomes["os"].__traceback__))
    assert "own_timeout" not in "".join(traceback.format_tb(outcomes["own"].__traceback__))

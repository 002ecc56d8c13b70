"""The blocking portal: what a caller's exception keeps of the trio thread's frames."""

from __future__ import annotations

import traceback

import trio

from trio_stream._exceptions import ChannelNotFound, ConnectionClosed
from trio_stream._portal import BlockingPortal, _Call, caller_timeout, for_the_caller


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


async def test_an_ended_run_fails_the_calls_still_waiting_and_refuses_later_ones() -> None:
    # A SyncClient's trio run that dies where it stands (a bug) completes none of its calls:
    # end(), from its thread's last word, must fail them (they waited for good), and later
    # calls must say so (they met a bare OSError from the dead run's wake-up socket).
    portal = BlockingPortal("closed")
    started = trio.Event()
    token = trio.lowlevel.current_trio_token()

    async def never_done() -> None:
        token.run_sync_soon(started.set)
        await trio.sleep_forever()

    failed = ConnectionClosed("this SyncClient's trio thread failed: make a new SyncClient")
    outcomes: list[BaseException] = []

    def caller() -> None:
        for _ in range(2):
            try:
                portal.call(never_done)
            except ConnectionClosed as exc:
                outcomes.append(exc)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            portal.open(nursery)

            async def call_then_stop() -> None:
                await trio.to_thread.run_sync(caller)
                nursery.cancel_scope.cancel()  # never_done: the run ends only now here

            nursery.start_soon(call_then_stop)
            await started.wait()
            portal.end(failed)  # as the thread does once its run is over, however it ended
    assert outcomes[0] is failed
    assert str(outcomes[1]) == str(failed)


class InterruptedOnceDone(set[_Call]):
    """The portal's set of waiting calls, where Python runs a Ctrl-C handler at the call
    that takes a finished call out: the latest moment an interrupt can land in call()."""

    interrupted = False

    def discard(self, call: object, /) -> None:
        super().discard(call)
        if not self.interrupted and isinstance(call, _Call) and call.done.is_set():
            self.interrupted = True
            raise KeyboardInterrupt


async def test_a_ctrl_c_after_the_call_finished_keeps_what_it_took() -> None:
    # A get() whose batch had arrived lost it when the interrupt landed on the way out of
    # call() (CI saw 4 values of a window of 4 go missing).
    portal = BlockingPortal()
    portal._waiting = InterruptedOnceDone()

    async def take() -> list[int]:
        return [1, 2, 3, 4]

    kept: list[object] = []
    outcome: list[BaseException] = []

    def caller() -> None:
        try:
            portal.call(take, keep=kept.append)
        except KeyboardInterrupt as exc:
            outcome.append(exc)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            portal.open(nursery)
            await trio.to_thread.run_sync(caller)
            portal.close()
            portal.detach()
    assert len(outcome) == 1
    assert kept == [[1, 2, 3, 4]]

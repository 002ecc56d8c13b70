"""open_own_nursery: a library context manager's nursery hands the block's exception on as
itself, taking off only the group of one that the nursery put it in; fresh: a stored error
raised again is a new one each time."""

from __future__ import annotations

import pytest
import trio

import trio_stream as ts
from trio_stream._util import fresh, open_own_nursery


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


async def test_ctrl_c_in_a_background_task_leaves_bare() -> None:
    # Trio raises KeyboardInterrupt in whichever task runs: a client's reader task too. It
    # left in a group (with the errors it caused), which `except KeyboardInterrupt` missed.
    async def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        async with open_own_nursery() as nursery:
            nursery.start_soon(interrupted)
            await trio.sleep_forever()


async def test_an_applications_group_that_trio_trimmed_of_a_cancel_is_not_wrapped_again() -> None:
    # This nursery's cancel scope takes its Cancelled out of the application's group and
    # hands on a copy: that copy is the block's exception, not a group to wrap.
    async def fails_when_cancelled() -> None:
        try:
            await trio.sleep_forever()
        finally:
            raise Boom("cleanup")

    with pytest.raises(ExceptionGroup) as caught:
        async with open_own_nursery() as nursery, trio.open_nursery() as apps:
            apps.start_soon(fails_when_cancelled)
            await trio.lowlevel.checkpoint()
            nursery.cancel_scope.cancel()
            await trio.sleep_forever()
    assert [type(e) for e in caught.value.exceptions] == [Boom]


@pytest.mark.parametrize(
    "error",
    [
        ts.ConnectionClosed("gone", "server restart"),
        ts.InvalidSetting("size", "must be positive"),
        ts.RemoteError("KeyError", "'x'", "Traceback ..."),
        ts.SubscriptionEnded("channel 'a' was deleted"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_fresh_error_is_a_new_one_of_the_same_kind_with_the_same_cause(
    error: BaseException,
) -> None:
    error.__cause__ = OSError("reset")
    error.__suppress_context__ = True
    copies = [fresh(error) for _ in range(2)]
    assert copies[0] is not copies[1] and copies[0] is not error
    for new in copies:
        assert type(new) is type(error) and new.args == error.args
        assert vars(new) == vars(error)  # (ConnectionClosed's reason, RemoteError's text)
        assert new.__cause__ is error.__cause__ and new.__suppress_context__
        assert new.__traceback__ is None


def test_fresh_leaves_what_it_cannot_or_must_not_copy_as_it_is() -> None:
    from trio_stream._protocol.messages import UnknownOp

    cannot = UnknownOp("nope", 3)  # (an __init__ its args do not fit)
    assert fresh(cannot) is cannot
    interrupt = KeyboardInterrupt()
    assert fresh(interrupt) is interrupt


def test_a_fresh_errors_notes_are_its_own() -> None:
    error = ts.RemoteError("KeyError", "'x'", "Traceback ...")
    error.add_note("first")
    new = fresh(error)
    new.add_note("second")
    assert error.__notes__ == ["first"] and new.__notes__ == ["first", "second"]

"""Small helpers shared by the client and the server."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TypeVar

import trio

E = TypeVar("E", bound=BaseException)


def fresh(error: E) -> E:
    """A new exception like ``error`` (its type, arguments and attributes, and its cause),
    to raise where one stored error is raised again and again (an ended subscription's
    every receive, a closed publisher's every send), as trio's channels raise a new
    ClosedResourceError each time.

    Raising the stored object itself added each raise's frames to its one traceback: a
    retry loop's 20,000 receives held 60,000 frames and their locals, and two tasks
    raising it (a reader and a writer of one client) printed each other's frames (a trio
    developer's audit)."""
    if not isinstance(error, Exception):
        return error  # (a Cancelled, a KeyboardInterrupt: never a stored error's copy)
    try:
        new = copy.copy(error)  # (args and __dict__; no traceback, context or cause)
    except Exception:  # an __init__ that its args cannot call (UnknownOp's, say)
        return error
    new.__cause__ = error.__cause__
    new.__suppress_context__ = error.__suppress_context__
    notes = getattr(error, "__notes__", None)
    if isinstance(notes, list):
        new.__notes__ = list(notes)  # (shared, a note added to a raise grew the stored one)
    return new


@contextmanager
def unwrap_single_exception() -> Iterator[None]:
    """Re-raise the one exception inside (nested) single-member exception groups.

    For errors of the library's own making (a client's first connection, the engine's
    start), and the command line's one-line errors: whichever nurseries wrapped them on
    their way, the caller gets the one error. The application's block is not flattened:
    open_own_nursery below takes off only its own nursery's group.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        inner: BaseException = group
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        if inner is group:
            raise
        raise inner from inner.__cause__


@asynccontextmanager
async def open_own_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery for a library context manager whose background tasks never raise: an
    exception of the block leaves it as itself, not in the group of one that the nursery
    puts it in. Only that one level is taken off: a group the block raised itself (from
    the application's own nurseries, say) leaves as the very object it was, or as trio
    trimmed it (the Cancelled of this nursery's scope taken out), and anything else (a
    background task's failure, several errors) leaves as the nursery's group. Except
    Ctrl-C: trio raises KeyboardInterrupt in whichever task runs, a background one too, and
    the errors it causes there (the client closed) are its fallout: it leaves bare."""
    raised: BaseException | None = None
    unwrapped: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            try:
                yield nursery
            except BaseException as exc:
                raised = exc
                raise
    except BaseExceptionGroup as group:
        carried = group.exceptions[0] if len(group.exceptions) == 1 else None
        if raised is not None and carried is not None and _carries(carried, raised):
            # The block's own: the object it raised, unless trio handed on a trimmed copy.
            unwrapped = (
                raised
                if len(exception_leaves(carried)) == len(exception_leaves(raised))
                else carried
            )
        else:
            interrupts = [e for e in exception_leaves(group) if isinstance(e, KeyboardInterrupt)]
            if not interrupts:
                raise
            unwrapped = interrupts[0]
    if unwrapped is not None:
        # Outside the except clause: the exception keeps its own __context__ (in it,
        # Python would chain the nursery's group as its context).
        raise unwrapped


def exception_leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) groups, in order; a plain exception is its own."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in exception_leaves(inner)]
    return [error]


def _carries(carried: BaseException, raised: BaseException) -> bool:
    """Whether the nursery's group carries ``raised``: the object itself, or (a group:
    trio puts a derived copy of it in its own, without what a cancel it absorbed took)
    a group of some of the very exceptions ``raised`` holds."""
    if carried is raised:
        return True
    if not (isinstance(carried, BaseExceptionGroup) and isinstance(raised, BaseExceptionGroup)):
        return False
    held = {id(leaf) for leaf in exception_leaves(raised)}
    leaves = exception_leaves(carried)
    return bool(leaves) and all(id(leaf) in held for leaf in leaves)


def counted(count: int, noun: str) -> str:
    """``1 frame``, ``0 frames``, ``3 frames`` (``noun`` in the singular, plural with -s)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def were(count: int) -> str:
    """``"was"`` or ``"were"``, the verb that goes with :func:`counted`."""
    return "was" if count == 1 else "were"

"""Small helpers shared by the client and the server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import trio


@contextmanager
def unwrap_single_exception() -> Iterator[None]:
    """Re-raise the one exception inside (nested) single-member exception groups.

    Our context managers run the caller's block inside a nursery whose background tasks never
    raise; whatever comes out is the caller's own exception, and callers should be able to
    catch it by its type rather than dig it out of an ExceptionGroup.
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
    the application's own nurseries, say) leaves as the very object it was, and anything
    else (a background task's failure, several errors) leaves as the nursery's group."""
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
        if raised is None or len(group.exceptions) != 1 or not _same(group.exceptions[0], raised):
            raise
        unwrapped = raised
    if unwrapped is not None:
        # Outside the except clause: the block's exception keeps its own __context__ (in
        # it, Python would chain the nursery's group as its context).
        raise unwrapped


def _same(carried: BaseException, raised: BaseException) -> bool:
    """Whether the nursery's group carries ``raised``: the object itself, or (a group:
    trio puts a derived copy of it in its own) a group of the same exceptions."""
    if carried is raised:
        return True
    if not (isinstance(carried, BaseExceptionGroup) and isinstance(raised, BaseExceptionGroup)):
        return False
    return (
        carried.message == raised.message
        and len(carried.exceptions) == len(raised.exceptions)
        and all(_same(c, r) for c, r in zip(carried.exceptions, raised.exceptions, strict=True))
    )

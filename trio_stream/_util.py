"""Small helpers shared by the client and the server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


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

"""Async context managers that say how to use them when used any other way.

``open_client``, ``Client.subscribe`` and ``Client.publisher`` are entered with ``async
with``. A user new to trio (or to async Python) writes ``client = ts.open_client(url)``,
``await ts.open_client(url)``, ``with ...`` or ``async for msg in client.subscribe(...)``,
and a plain ``contextlib.asynccontextmanager`` answers with Python's internals
("'_AsyncGeneratorContextManager' object has no attribute 'channels'"). The object here
behaves exactly like one inside ``async with`` and turns each of those mistakes into an error
that shows the line to write instead. Nothing changes on any per-frame path.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, NoReturn, ParamSpec, TypeVar

import trio

T = TypeVar("T")
P = ParamSpec("P")

NOT_TRIO = (
    "trio_stream's async client runs under trio, and this code runs under another event loop "
    "(asyncio: asyncio.run, or a Jupyter cell): use the blocking client there, "
    "client = ts.SyncClient(url), or run your async code with trio.run(main)"
)


class AsyncContext(AbstractAsyncContextManager[T], Generic[T]):
    """An async context manager (``manager``) whose other uses raise with ``usage``."""

    __slots__ = ("_manager", "_usage")

    def __init__(self, manager: AbstractAsyncContextManager[T], usage: str) -> None:
        self._manager = manager
        self._usage = usage

    async def __aenter__(self) -> T:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            # Under asyncio (a Jupyter cell, asyncio.run) trio's first call failed deep inside
            # it: "'RunContext' object has no attribute 'runner'" (a new user's first try).
            raise RuntimeError(NOT_TRIO) from None
        return await self._manager.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        return await self._manager.__aexit__(exc_type, exc, traceback)

    # The mistakes' answers exist at run time only. Seen by a type checker they would make
    # each mistake well-typed (`sub = client.subscribe(...)` then `sub.receive()` through
    # __getattr__), and their NoReturn would make it skip the rest of the function as
    # unreachable; unseen, mypy reports the mistake itself ("AsyncContext[Subscription]"
    # has no attribute "receive", is not awaitable, not a context manager, not iterable).
    if not TYPE_CHECKING:

        def __await__(self) -> Generator[Any, None, NoReturn]:
            raise TypeError(self._usage)

        def __enter__(self) -> NoReturn:
            raise TypeError(self._usage)

        def __exit__(self, *exc_info: object) -> None:
            return None  # never reached: __enter__ raised

        def __aiter__(self) -> NoReturn:
            raise TypeError(self._usage)

        def __getattr__(self, name: str) -> NoReturn:
            # AttributeError (not TypeError): hasattr() and getattr(x, name, default) work.
            raise AttributeError(f"no attribute {name!r} here: {self._usage}")


def async_context(
    usage: str,
) -> Callable[[Callable[P, AsyncIterator[T]]], Callable[P, AsyncContext[T]]]:
    """``contextlib.asynccontextmanager``, whose managers say ``usage`` when misused."""

    def decorate(func: Callable[P, AsyncIterator[T]]) -> Callable[P, AsyncContext[T]]:
        factory = asynccontextmanager(func)

        @functools.wraps(func)
        def make(*args: P.args, **kwargs: P.kwargs) -> AsyncContext[T]:
            return AsyncContext(factory(*args, **kwargs), usage)

        # What help() and inspect.signature show: an async context manager, not the
        # generator's AsyncIterator[...] (which suggested the `async for` that raises: a trio
        # developer). The annotations are the wrapper's own, not func's dict (which
        # functools.wraps shares), and name AsyncContext as the module of func knows it.
        returns = func.__annotations__.get("return")
        if isinstance(returns, str) and returns.startswith("AsyncIterator["):
            returns = "AsyncContext[" + returns.removeprefix("AsyncIterator[")
            make.__annotations__ = {**func.__annotations__, "return": returns}
            make.__signature__ = inspect.signature(func).replace(  # type: ignore[attr-defined]
                return_annotation=returns
            )
        return make

    return decorate

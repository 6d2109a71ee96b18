"""Run a command's coroutine so that Ctrl-C always ends it as KeyboardInterrupt (the CLI turns that into exit 130).

asyncio.run does this itself, but Python 3.11's version has a race: a SIGINT that arrives just as it installs its
handler is counted and then the count is reset, so the cancelled coroutine escapes as CancelledError (a traceback,
exit 1). CI met it on `billingwatch replay`. Here the handler is installed before the loop exists, and the
interrupt is remembered outside it, so whatever the coroutine does with its cancellation (finishes it, swallows
it), the caller sees KeyboardInterrupt.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Coroutine
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")


def run_interruptible(main: Coroutine[Any, Any, T]) -> T:
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        # Signals reach the main thread only; SIGINT ignored (a background job of a script) or handled by an
        # embedding program: leave it to them.
        return asyncio.run(main)
    task: asyncio.Task[T] | None = None
    interrupted = False

    def on_sigint(_signum: int, _frame: FrameType | None) -> None:
        nonlocal interrupted
        if interrupted or task is None or task.done():
            raise KeyboardInterrupt  # a second Ctrl-C, or one before the coroutine runs: at once
        interrupted = True
        task.cancel()
        task.get_loop().call_soon_threadsafe(lambda: None)  # wake the loop if it waits in select()

    async def guarded() -> T:
        nonlocal task
        task = asyncio.current_task()  # type: ignore[assignment]
        return await main

    try:
        signal.signal(signal.SIGINT, on_sigint)
        result = asyncio.run(guarded())
    except asyncio.CancelledError:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if task is None:
            main.close()  # interrupted before it started: no "never awaited" warning
    if interrupted:
        raise KeyboardInterrupt  # the coroutine finished despite the cancellation: the user still asked to stop
    return result

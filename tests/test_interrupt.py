"""Ctrl-C during replay and simulate ends as KeyboardInterrupt (exit 130 in the CLI) wherever it lands."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from exporter.history.interrupt import run_interruptible


@pytest.fixture(autouse=True)
def default_sigint() -> Iterator[None]:
    # The suite may run as a background job with SIGINT ignored; these tests need Python's own Ctrl-C handling.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_while_the_coroutine_waits_is_keyboard_interrupt() -> None:
    async def waits() -> int:
        asyncio.get_running_loop().call_later(0.05, _ctrl_c)
        await asyncio.sleep(30)
        return 0

    with pytest.raises(KeyboardInterrupt):
        run_interruptible(waits())
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_is_keyboard_interrupt_even_when_the_coroutine_finishes_its_work() -> None:
    done: list[str] = []

    async def swallows_the_cancellation() -> int:
        asyncio.get_running_loop().call_later(0.05, _ctrl_c)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            done.append("cleaned up")
        return 0

    with pytest.raises(KeyboardInterrupt):
        run_interruptible(swallows_the_cancellation())
    assert done == ["cleaned up"]


def test_ctrl_c_at_the_moment_the_loop_starts_is_keyboard_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    # Python 3.11's asyncio.run loses a SIGINT that lands just after it installs its own handler: the coroutine is
    # cancelled but CancelledError escapes (exit 1, a traceback). Deliver one right after every handler install.
    # (Plain asyncio.run fails this test on Python 3.11.)
    real_signal: Callable[..., Any] = signal.signal
    delivered: list[Any] = []

    def signal_then_ctrl_c(signum: int, handler: Any) -> Any:
        previous = real_signal(signum, handler)
        if signum == signal.SIGINT and handler is not signal.default_int_handler:
            delivered.append(handler)
            _ctrl_c()
        return previous

    async def waits() -> int:
        await asyncio.sleep(30)
        return 0

    monkeypatch.setattr(signal, "signal", signal_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run_interruptible(waits())
    assert delivered, "the Ctrl-C was never sent: the test did not exercise the race"


def test_without_ctrl_c_the_result_comes_back_and_the_handler_is_restored() -> None:
    async def answers() -> int:
        await asyncio.sleep(0)
        return 42

    assert run_interruptible(answers()) == 42
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_outside_the_main_thread_it_runs_as_asyncio_run_does() -> None:
    # signal.signal() works in the main thread only; a command run from a worker thread must still run.
    async def answers() -> int:
        return 7

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert pool.submit(run_interruptible, answers()).result(timeout=30) == 7
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

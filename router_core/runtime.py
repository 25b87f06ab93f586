"""A private event loop on a daemon thread, shared by sync and async callers of one router.

httpx's ``AsyncClient`` belongs to the loop it was created on; running the fan-out on one loop of
the router's own lets ``send()`` (any thread) and ``asend()`` (any event loop) share one pooled
client. After ``fork()`` the child starts a fresh loop: threads do not survive a fork.

The loop's default executor (blocking plugins, DNS lookups, ``asyncio.to_thread``) is a
``DaemonExecutor``: nothing running there can hold the interpreter open at exit. Stopping is
bounded: a loop stuck in a blocking call is left behind on its daemon thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from router_core.executor import DaemonExecutor

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """Runs coroutines on a private loop; started on first use, restarted after a fork."""

    def __init__(self, name: str = "event-router") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._executor: DaemonExecutor | None = None
        # Set by the loop once it runs callbacks again after a run() timed out: until then it
        # is stuck (in a plugin's blocking call), and waiting on it again is pointless.
        self._responsive: threading.Event | None = None
        self._pid = os.getpid()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or self._pid != os.getpid():
            loop = self._start()
        return loop

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is not None and self._pid == os.getpid():
                return self._loop
            self._pid = os.getpid()
            self._responsive = None
            loop = asyncio.new_event_loop()
            executor = DaemonExecutor(thread_name_prefix=f"{self._name}-blocking")
            loop.set_default_executor(executor)
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                try:
                    loop.run_forever()
                finally:
                    _wind_down(loop)

            thread = threading.Thread(target=run, name=self._name, daemon=True)
            thread.start()
            ready.wait()
            self._loop, self._thread, self._executor = loop, thread, executor
            return loop

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and block until it finishes.

        With ``timeout``, raise ``TimeoutError`` (and cancel ``coro``) when it takes longer,
        also when the loop itself is stuck.
        """
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError("blocking call made from the router's own event loop")
        if timeout is not None and self._stuck():
            coro.close()
            raise TimeoutError("the router's event loop is stuck in a blocking call")
        loop = self.loop
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            responsive = threading.Event()
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to wait for
                loop.call_soon_threadsafe(responsive.set)
                self._responsive = responsive
            raise

    def _stuck(self) -> bool:
        return self._responsive is not None and not self._responsive.is_set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and join its thread for up to ``timeout`` seconds.

        Safe to call twice, in a forked child, or from the loop's own thread. It does not wait
        for a loop already found stuck (a ``run()`` timed out and the loop has not run since),
        nor for calls still running on the executor's threads.
        """
        with self._lock:
            loop, thread, executor = self._loop, self._thread, self._executor
            self._loop = self._thread = self._executor = None
            if loop is None or thread is None or self._pid != os.getpid():
                return
        with contextlib.suppress(RuntimeError):  # already closed
            loop.call_soon_threadsafe(loop.stop)
        if threading.current_thread() is not thread and not self._stuck():
            thread.join(timeout)
        self._responsive = None
        if executor is not None:
            executor.shutdown(wait=not thread.is_alive(), cancel_futures=True)


def _wind_down(loop: asyncio.AbstractEventLoop) -> None:
    """On the loop's thread once it stopped: cancel what is left, let it unwind, close.

    Usually nothing is left. After a ``stop()`` that found the loop stuck in a blocking call,
    this runs whenever the call returns, so no task is left half-run for the garbage
    collector to finalise.
    """
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()

"""Blocking calls (plain ``def`` plugins, DNS lookups) on daemon threads.

``concurrent.futures`` joins its own worker threads at interpreter exit, *before* ``atexit``
handlers run: one plugin blocked in a thread would hold the process open for as long as it
blocks, and the router's bounded flush at exit (``[queue] exit_timeout``) would not even have
started. The router's loop uses ``DaemonExecutor`` as its default executor instead: its threads
are daemon threads nobody joins at exit, and it keeps taking work while ``atexit`` handlers
run, so the flush at exit still reaches blocking plugins.

It subclasses ``ThreadPoolExecutor`` only because asyncio accepts nothing else as a loop's
default executor; none of the base class's machinery is used.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["DaemonExecutor"]

T = TypeVar("T")

_DEFAULT_MAX_THREADS = 64
_JOIN_S = 1.0  # how long shutdown(wait=True) waits for idle threads to leave, at most

_Work = tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonExecutor(concurrent.futures.ThreadPoolExecutor):
    """A thread pool of daemon threads, started on demand up to ``max_workers``.

    ``shutdown(wait=True)`` waits (briefly) for the threads that were idle; a thread still
    inside a call that never returns is left behind, and cannot keep the process alive.
    """

    def __init__(
        self, max_workers: int = _DEFAULT_MAX_THREADS, thread_name_prefix: str = "event-router"
    ) -> None:
        super().__init__(max_workers=1, thread_name_prefix=thread_name_prefix)
        self._pool_cap = max_workers
        self._pool_prefix = thread_name_prefix
        self._pool_lock = threading.Lock()
        self._pool_work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._pool_idle = threading.Semaphore(0)  # one count per thread waiting for work
        self._pool_threads: dict[threading.Thread, bool] = {}  # thread -> busy
        self._pool_closed = False
        self._pool_numbers = itertools.count(1)

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._pool_lock:
            if self._pool_closed:
                raise RuntimeError("cannot run new calls: the router's executor is shut down")
            # An idle thread takes it, or a new one, or (at the cap) the first to be free.
            # A thread that cannot be started raises here, before anything is queued.
            if not self._pool_idle.acquire(blocking=False) and (
                len(self._pool_threads) < self._pool_cap
            ):
                self._start_thread()
            self._pool_work.put((future, fn, args, kwargs))
        return future

    def _start_thread(self) -> None:
        name = f"{self._pool_prefix}-{next(self._pool_numbers)}"
        thread = threading.Thread(target=self._serve, name=name, daemon=True)
        thread.start()
        self._pool_threads[thread] = False

    def _serve(self) -> None:
        me = threading.current_thread()
        while True:
            work = self._pool_work.get()
            if work is None:
                break
            future, fn, args, kwargs = work
            del work
            if not future.set_running_or_notify_cancel():
                self._pool_idle.release()
                continue
            with self._pool_lock:
                self._pool_threads[me] = True
            try:
                result, error = fn(*args, **kwargs), None
            except BaseException as exc:  # whatever a plugin raises goes to whoever waits
                result, error = None, exc
            with self._pool_lock:
                self._pool_threads[me] = False
            # Idle again before the caller hears back: its next call finds this thread.
            self._pool_idle.release()
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
            del future, fn, args, kwargs, result, error  # nothing kept alive while idle
        with self._pool_lock:
            self._pool_threads.pop(me, None)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more work; let the threads go once their current call returns.

        ``wait`` waits up to a second for the idle threads to leave; busy ones are not waited
        for. ``cancel_futures`` cancels the calls not started yet (otherwise they still run).
        """
        with self._pool_lock:
            self._pool_closed = True
            idle = [thread for thread, busy in self._pool_threads.items() if not busy]
            count = len(self._pool_threads)
        if cancel_futures:
            while True:
                try:
                    work = self._pool_work.get_nowait()
                except queue.Empty:
                    break
                if work is not None:
                    work[0].cancel()
        for _ in range(count):
            self._pool_work.put(None)
        if wait:
            deadline = time.monotonic() + _JOIN_S
            for thread in idle:
                thread.join(max(0.0, deadline - time.monotonic()))

"""nncodec's host threads for work that releases the GIL: the range coder's lanes and the
residual layer's per-tile coding (numba kernels), side by side.

Without torch: nothing here imports it, so residual-only chunks still decode without it.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _forget_in_child() -> None:
    """A forked child has none of its parent's threads: a pool inherited from the parent
    would take work that no thread ever runs. The child starts its own on first use."""
    global _pool, _lock
    _pool, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


def count() -> int:
    """Threads to work side by side: torch's intra-op thread count where torch is loaded
    (the size of nncodec's tile pool: 1 in Dask workers; 1 on a tile-pool thread), else
    OMP_NUM_THREADS where set (Dask's nannies set 1), else the cores this process may use.
    Not torch's own count without torch: asking would import it."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return max(1, torch.get_num_threads())
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else usable_cores()


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the OS has one, as on Linux)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def side_by_side(func, n: int) -> list:
    """``[func(k) for k in range(n)]``, on up to :func:`count` threads side by side (the
    calling thread one of them). ``func`` should spend its time in code that releases
    the GIL, and must not depend on which thread runs it."""
    threads = min(n, count())
    out = [None] * n

    def share(j):
        for k in range(j, n, threads):
            out[k] = func(k)

    if threads <= 1:
        share(0)
        return out
    pool = _host_pool()
    others = [pool.submit(share, j) for j in range(1, threads)]
    try:
        share(0)
    finally:
        for f in others:
            f.result()  # re-raises a thread's error
    return out


def in_order(func, n: int, then) -> None:
    """``then(k, func(k))`` for k = 0 .. n - 1, in that order on the calling thread, while
    up to :func:`count` host threads compute the ``func(k)`` side by side: the caller
    hands each result on (to a GPU, say) as soon as it and those before it are ready.
    ``func`` as for :func:`side_by_side`. With one thread it is a plain loop."""
    threads = min(n, count())
    if threads <= 1:
        for k in range(n):
            then(k, func(k))
        return
    results = [Future() for _ in range(n)]

    def share(j):
        for k in range(j, n, threads):
            try:
                results[k].set_result(func(k))
            except BaseException as e:  # handed to the caller, which re-raises it
                results[k].set_exception(e)

    workers = [_host_pool().submit(share, j) for j in range(threads)]
    try:
        for k, f in enumerate(results):
            then(k, f.result())
    finally:
        for w in workers:
            w.result()


def soon(func, *args) -> Future:
    """``func(*args)`` on a host thread; its future."""
    return _host_pool().submit(func, *args)


def _host_pool() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(usable_cores(), thread_name_prefix="nncodec-host")
        return _pool

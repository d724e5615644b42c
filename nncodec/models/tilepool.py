"""Run a network on CPU one tile at a time, each tile on one thread, tiles in parallel.

oneDNN, PyTorch's fast CPU convolution library, splits a convolution's sums differently
for different thread counts and batch sizes, so the last bits of its results depend on
both. Run single-threaded on one tile at a time, it computes every tile the same way
whatever the machine's thread settings or the chunk's batching: its results depend only
on the instruction set (AVX2, AVX-512, ...). That is the reference CPU kernel of format
version 2, and several times faster than PyTorch's own (oneDNN-free) kernels, which
format version 1 used for the same guarantee.

The pool's threads run with one intra-op thread each (OpenMP's thread count is a
per-thread setting); the process-wide setting seen by every other thread is restored
right after the pool starts. Parallelism comes from running tiles side by side, as many
as ``torch.get_num_threads()`` had when the pool was made.

A thread that already runs torch single-threaded (every thread of a Dask worker, whose
nanny sets ``OMP_NUM_THREADS=1``) runs its tiles itself, the same kernels as a pool
thread: handing over would only queue the worker's threads behind one pool thread.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from ..threads import usable_cores

_pool: ThreadPoolExecutor | None = None
_threads = 0  # the pool's thread count
SHARES_PER_THREAD = 4  # map_tiles hands each thread about this many runs of tiles
_lock = threading.Lock()
_here = threading.local()  # ``inside``: a pool thread; ``holding``: a caller within run's cap
#: how many of run's single-threaded callers may run at once: the process's cores
_cores = threading.BoundedSemaphore(usable_cores())


def _forget_in_child() -> None:
    """A forked child has none of its parent's threads: a pool inherited from the parent
    would take work that no thread ever runs. The child starts its own on first use."""
    global _pool, _lock, _cores
    _pool, _lock, _cores = None, threading.Lock(), threading.BoundedSemaphore(usable_cores())


os.register_at_fork(after_in_child=_forget_in_child)


def _start(n: int) -> ThreadPoolExecutor:
    ready = threading.Barrier(n + 1)
    counts = []

    def single_threaded():
        torch.set_num_threads(1)
        _here.inside = True
        counts.append(torch.get_num_threads())

    pool = ThreadPoolExecutor(n, thread_name_prefix="nncodec-tile", initializer=single_threaded)
    for _ in range(n):  # one blocking task per thread makes the executor start all n now
        pool.submit(ready.wait)
    ready.wait()
    torch.set_num_threads(n)  # the process-wide setting (and this thread's) as it was
    if counts != [1] * n:
        pool.shutdown()
        raise RuntimeError(f"could not make the tile threads single-threaded (they report {counts} threads); "
                           "this PyTorch build's threading is not supported by nncodec's CPU decoder")
    return pool


def pool() -> ThreadPoolExecutor:
    """The process's tile pool, started on first use."""
    global _pool, _threads
    with _lock:
        if _pool is None:
            _threads = max(1, torch.get_num_threads())
            _pool = _start(_threads)
        return _pool


def started() -> ThreadPoolExecutor | None:
    """The process's tile pool if something has started it, else None."""
    return _pool


def _single_threaded() -> bool:
    """Whether this thread runs torch's CPU kernels on one thread: a pool thread, or any
    thread where torch has one intra-op thread."""
    return getattr(_here, "inside", False) or torch.get_num_threads() == 1


def run(func, *args):
    """``func(*args)`` on one of the pool's threads (where :func:`map_tiles` runs its
    tiles in order, on that thread), waiting for it.

    For work around a single tile (a small chunk's whole decode): the caller hands over
    once, and the single-threaded pool thread runs the rest, the network included. Many
    callers at once (zarr decoding chunks concurrently, Dask threads) then share the
    pool's threads instead of each starting a team of OpenMP threads of its own. A
    single-threaded caller runs ``func`` itself, at most as many at once as the process
    has cores: more wait their turn, rather than crowd the cores (a Dask worker reading
    format-2 chunks decodes them on all of zarr's threads: measured with 6 threads in a
    one-thread process on 2 cores, 73 x 144 chunks decoded at 17-19 MB/s uncapped, 22-26 so).

    A multi-threaded caller does not switch its own torch to one thread for the call
    instead (tried after 0.13.0: about a tenth faster on one 73 x 144 chunk at a time):
    ``torch.set_num_threads`` also stores the count that any thread starts with when it
    first uses torch, so threads starting meanwhile (zarr's, the user's) stayed
    single-threaded for good, and 6 threads decoding such chunks crowded 2 cores (28 ->
    20 MB/s).
    """
    if getattr(_here, "inside", False) or getattr(_here, "holding", False):
        return func(*args)
    if torch.get_num_threads() == 1:
        with _cores:
            _here.holding = True
            try:
                return func(*args)
            finally:
                _here.holding = False
    return pool().submit(func, *args).result()


def map_tiles(module: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """``module`` applied to each tile of ``batch`` (B, C, h, w) alone, on one thread each.

    Runs in inference mode (no autograd), which is a per-thread setting, so each pool
    thread enters it itself. Called from a pool thread (:func:`run`), the tiles run there,
    one after another: the same kernels on the same single thread, so the same values;
    likewise from any single-threaded caller.
    """

    def run_tiles(tiles: range) -> list[torch.Tensor]:
        with torch.inference_mode():
            return [module(batch[i : i + 1]) for i in tiles]

    n = batch.shape[0]
    if _single_threaded():
        return torch.cat(run_tiles(range(n)))
    # a few hand-overs per thread, not one per tile (a tenth of a small tile's time), in
    # contiguous shares that threads take as they come free
    tiles = pool()
    parts = min(n, SHARES_PER_THREAD * _threads)
    shares = [range(k * n // parts, (k + 1) * n // parts) for k in range(parts)]
    return torch.cat([y for ys in tiles.map(run_tiles, shares) for y in ys])

"""Run a network on CPU one tile at a time, each tile on one thread, tiles in parallel.

oneDNN, PyTorch's fast CPU convolution library, splits a convolution's sums differently
for different thread counts and batch sizes, so the last bits of its results depend on
both. Run single-threaded on one tile at a time, it computes every tile the same way
whatever the machine's thread settings or the chunk's batching: its results depend only
on the instruction set (AVX2, AVX-512, ...). That is the reference CPU kernel of format
version 2, and several times faster than PyTorch's own (oneDNN-free) kernels, which
format version 1 used for the same guarantee.

The pool's threads run with one intra-op thread each. OpenMP's and MKL's thread counts
are per-thread settings; nncodec sets them for its own threads only, in the runtimes
torch's kernels use (:func:`_thread_settings`), and never torch's process-wide count, which
every thread starting meanwhile would take up. Parallelism comes from running tiles side
by side, as many as ``torch.get_num_threads()`` had when the pool was made.

A chunk of one tile is coded whole on its caller's thread, switched to one intra-op
thread for the call (:func:`run`): the same kernels as a pool thread, without a hand-over.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..threads import usable_cores

_pool: ThreadPoolExecutor | None = None
_threads = 0  # the pool's thread count
SHARES_PER_THREAD = 4  # map_tiles hands each thread about this many runs of tiles
_lock = threading.Lock()
_here = threading.local()  # ``inside``: a pool thread; ``holding``: a caller within run's cap
#: how many of run's callers may run at once: the process's cores
_cores = threading.BoundedSemaphore(usable_cores())


def _forget_in_child() -> None:
    """A forked child has none of its parent's threads: a pool inherited from the parent
    would take work that no thread ever runs. The child starts its own on first use."""
    global _pool, _lock, _cores
    _pool, _lock, _cores = None, threading.Lock(), threading.BoundedSemaphore(usable_cores())


os.register_at_fork(after_in_child=_forget_in_child)


@functools.lru_cache(maxsize=1)
def _thread_settings() -> tuple | None:
    """The per-thread thread counts torch's CPU kernels read, as (OpenMP's
    ``omp_set_num_threads``, MKL's ``MKL_Set_Num_Threads_Local`` or None without MKL):
    ctypes functions of the runtimes this torch build runs (checked to move what torch
    reports, on a thread of their own). None where torch does not run OpenMP or they
    cannot be found; nncodec then uses ``torch.set_num_threads`` (see :func:`run`)."""
    if "ATen parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    found = {}
    # the symbols the process has loaded globally, then torch's own runtimes (MKL is in libtorch_cpu)
    lib_dir = Path(torch.__file__).parent / "lib"
    for path in [None, *sorted(lib_dir.glob("*omp*")), *sorted(lib_dir.glob("*torch_cpu*"))]:
        try:
            lib = ctypes.CDLL(path if path is None else str(path))
        except (OSError, TypeError):  # not a loadable library; no global namespace (Windows)
            continue
        for name in ("omp_set_num_threads", "MKL_Set_Num_Threads_Local", "MKL_Get_Max_Threads"):
            if name not in found and hasattr(lib, name):
                found[name] = getattr(lib, name)
    omp, mkl, mkl_get = (found.get(n) for n in ("omp_set_num_threads", "MKL_Set_Num_Threads_Local",
                                                 "MKL_Get_Max_Threads"))
    if omp is None or (torch.backends.mkl.is_available() and (mkl is None or mkl_get is None)):
        return None
    works = []

    def check():
        n = torch.get_num_threads() + 1  # torch sets a thread's count on first use: before this
        omp(n)
        ok = torch.get_num_threads() == n
        omp(1)
        ok = ok and torch.get_num_threads() == 1
        if mkl is not None:
            mkl(n)
            ok = ok and mkl_get() == n
            mkl(1)
            ok = ok and mkl_get() == 1
        works.append(ok)

    t = threading.Thread(target=check)
    t.start()
    t.join()
    return (omp, mkl) if works == [True] else None


def _set_here(omp_count: int, mkl_count: int) -> tuple[int, int]:
    """Set the calling thread's OpenMP and MKL thread counts by :func:`_thread_settings`
    (which must not be None); returns the counts they replace (MKL's 0: its process-wide
    count), for restoring them."""
    omp, mkl = _thread_settings()
    before = torch.get_num_threads()  # also torch's own first-use setting of the thread: before ours
    omp(omp_count)
    return before, 0 if mkl is None else mkl(mkl_count)


@contextlib.contextmanager
def _one_thread_here():
    """The calling thread's torch kernels on one thread for the block (:func:`_set_here`)."""
    before = _set_here(1, 1)
    try:
        yield
    finally:
        _set_here(*before)


def _start(n: int) -> ThreadPoolExecutor:
    ready = threading.Barrier(n + 1)
    counts = []
    settings = _thread_settings()

    def single_threaded():
        if settings is None:
            torch.set_num_threads(1)  # also what threads starting meanwhile take: restored below
        else:
            _set_here(1, 1)
        _here.inside = True
        counts.append(torch.get_num_threads())

    pool = ThreadPoolExecutor(n, thread_name_prefix="nncodec-tile", initializer=single_threaded)
    for _ in range(n):  # one blocking task per thread makes the executor start all n now
        pool.submit(ready.wait)
    ready.wait()
    if settings is None:
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


def _single_threaded() -> bool:
    """Whether this thread runs torch's CPU kernels on one thread: a pool thread, or any
    thread where torch has one intra-op thread."""
    return getattr(_here, "inside", False) or torch.get_num_threads() == 1


def run(func, *args):
    """``func(*args)`` with torch's kernels on one thread, where :func:`map_tiles` runs
    its tiles in order: for work around a single tile (a small chunk's whole coding).

    The calling thread runs it itself, switched to one intra-op thread for the call
    (:func:`_one_thread_here`; a thread that already runs one, as every thread of a Dask
    worker does, needs no switch), at most as many callers at once as the process has
    cores: more wait their turn rather than crowd the cores (zarr decodes format-2 chunks
    on its 6 executor threads; measured in a one-thread process on 2 cores, 73 x 144
    chunks from 6 threads decoded at 17-19 MB/s uncapped, 22-26 so). A call nested in
    another runs at once. Without per-thread settings (:func:`_thread_settings`), a
    multi-threaded caller hands ``func`` to a pool thread instead, at about a tenth of a
    73 x 144 decode: switching with ``torch.set_num_threads`` would also set the count
    that threads starting meanwhile take up for good (tried after 0.13.0: 6 threads
    decoding such chunks then crowded 2 cores, 28 -> 20 MB/s).
    """
    if getattr(_here, "inside", False) or getattr(_here, "holding", False):
        return func(*args)
    switch = torch.get_num_threads() != 1
    if switch and _thread_settings() is None:
        return pool().submit(func, *args).result()
    with _cores:
        _here.holding = True
        try:
            with _one_thread_here() if switch else contextlib.nullcontext():
                return func(*args)
        finally:
            _here.holding = False


def map_tiles(module: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """``module`` applied to each tile of ``batch`` (B, C, h, w) alone, on one thread each.

    Runs in inference mode (no autograd), which is a per-thread setting, so each pool
    thread enters it itself. Called within :func:`run`, from a pool thread or from any
    single-threaded caller, the tiles run there, one after another: the same kernels on
    one thread, so the same values.
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

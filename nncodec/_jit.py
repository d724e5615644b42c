"""numba compilation of nncodec's scalar kernels (the range coder, the residual layer's
table choice)."""

import numba


def kernel(func):
    """``func`` compiled without the GIL and cached on disk (beside its module, else under
    the user's cache directory or ``NUMBA_CACHE_DIR``); with nowhere writable to cache,
    compiled once in each process instead.

    numba's cache is keyed by the kernel's own source file only: a kernel calls kernels of
    its own module, never another's, so no cached kernel outlives an edit of its callees."""
    try:
        return numba.njit(nogil=True, cache=True)(func)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(func)

"""Tiling, per-tile normalisation and gap filling, shared by the codec and training.

The network sees every tile scaled to [0, 1] by its finite minimum and range, with
non-finite pixels (NaN, land, Inf) filled smoothly so that coastlines cost few bits.
Training uses these same functions, so the model learns on exactly what it codes.
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import kernel

DEFAULT_TILE = 256


def tile_edges(n: int, tile: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` into ``ceil(n / tile)`` nearly equal spans.

    Equal spans avoid a thin last tile (2161 with tile 256 gives nine tiles of 240 or 241
    rows rather than eight of 256 and one of 113).
    """
    if n <= 0:
        return []
    count = math.ceil(n / tile)
    cuts = [round(i * n / count) for i in range(count + 1)]
    return [(cuts[i], cuts[i + 1]) for i in range(count)]


def tiles_2d(shape: tuple[int, int], tile: int) -> list[tuple[slice, slice]]:
    """Row-major list of (row slice, column slice) covering a 2D slice."""
    rows = tile_edges(shape[0], tile)
    cols = tile_edges(shape[1], tile)
    return [(slice(r0, r1), slice(c0, c1)) for r0, r1 in rows for c0, c1 in cols]


def tile_offset_scale(values: np.ndarray, finite: np.ndarray) -> tuple[np.float32, np.float32]:
    """Offset (finite minimum) and scale (finite range) of a tile, as stored (float32).

    The encoder and decoder both use the float32-rounded values, so the normalisation is
    reproduced bit for bit. A tile with no finite value gets (0, 0).
    """
    if not finite.any():
        return np.float32(0.0), np.float32(0.0)
    v = values[finite]
    lo = np.float64(v.min())
    hi = np.float64(v.max())
    offset = np.float32(lo)
    # float32 rounding of the offset may move it above the minimum; the range then covers both
    with np.errstate(over="ignore"):  # an overflow to inf is reported just below
        scale = np.float32(hi - np.float64(offset))
    if np.float64(offset) + np.float64(scale) < hi:
        scale = np.nextafter(scale, np.float32(np.inf))
    if not np.isfinite(scale):
        raise OverflowError(
            "the finite values of this tile span more than float32 can hold "
            f"({lo!r} .. {hi!r}); compress it with a lossless codec instead"
        )
    return offset, scale


def fill_nonfinite(x: np.ndarray, finite: np.ndarray) -> np.ndarray:
    """Fill non-finite pixels of a 2D array from a pyramid of local means (float32 out).

    Coarse levels sum the finite pixels of 2x2 blocks (zero-padded to even sizes), until
    every block holds one; each gap then takes the mean of the finest level whose block
    covering it holds a finite pixel. Smooth fills cost the network few bits at
    coastlines; the filled pixels are restored exactly later.
    """
    finite = np.ascontiguousarray(finite, dtype=np.bool_)
    if finite.all():
        return x.astype(np.float32)
    if not finite.any():
        return np.zeros(x.shape, dtype=np.float32)
    return _fill_pyramid(np.ascontiguousarray(x), finite)


@kernel
def _fill_pyramid(x, finite):
    """:func:`fill_nonfinite` for a tile with finite and non-finite pixels. Each block
    sums its rows first, ``(a + b) + (c + d)``, as numpy's ``sum(axis=(1, 3))`` does."""
    h, w = x.shape
    out = np.empty((h, w), dtype=np.float32)
    for i in range(h):
        for j in range(w):
            out[i, j] = np.float32(x[i, j]) if finite[i, j] else np.float32(0.0)
    sums, weights = [out.astype(np.float64)], [finite.astype(np.float64)]
    while True:
        v, wt = sums[-1], weights[-1]
        hh, ww = v.shape
        if hh == 1 and ww == 1:
            break
        vs, ws = np.zeros(((hh + 1) // 2, (ww + 1) // 2)), np.zeros(((hh + 1) // 2, (ww + 1) // 2))
        covered = True
        for i in range(vs.shape[0]):
            for j in range(vs.shape[1]):
                for level, dst in ((v, vs), (wt, ws)):
                    a = level[2 * i, 2 * j]
                    b = level[2 * i, 2 * j + 1] if 2 * j + 1 < ww else 0.0
                    c = level[2 * i + 1, 2 * j] if 2 * i + 1 < hh else 0.0
                    d = level[2 * i + 1, 2 * j + 1] if 2 * i + 1 < hh and 2 * j + 1 < ww else 0.0
                    dst[i, j] = (a + b) + (c + d)
                covered = covered and ws[i, j] > 0
        sums.append(vs)
        weights.append(ws)
        if covered:
            break
    # back down: each level's block means, blocks without a finite pixel from the coarser level
    mean = np.zeros((1, 1))
    for n in range(len(sums) - 1, 0, -1):
        vs, ws = sums[n], weights[n]
        m = np.empty(vs.shape)
        for i in range(vs.shape[0]):
            for j in range(vs.shape[1]):
                if ws[i, j] > 0:
                    m[i, j] = vs[i, j] / max(ws[i, j], 1e-300)
                else:
                    m[i, j] = mean[i // 2, j // 2] if n < len(sums) - 1 else 0.0
        mean = m
    for i in range(h):
        for j in range(w):
            if not finite[i, j]:
                out[i, j] = np.float32(mean[i // 2, j // 2])
    return out


def normalise_tile(x: np.ndarray, finite: np.ndarray, offset, scale) -> np.ndarray:
    """Map a tile to [0, 1] (float32) with gaps filled; ``scale`` must be > 0."""
    xn = (x.astype(np.float64) - np.float64(offset)) / np.float64(scale)
    return fill_nonfinite(xn, finite)


def denormalise_into(xn: np.ndarray, offset, scale, out: np.ndarray) -> None:
    """``out[...] = xn * scale + offset``, computed in float64 and stored in ``out``'s
    dtype (integers rounded half to even and clipped to the dtype's range), in one pass
    that releases the GIL: the inverse of :func:`normalise_tile` for a decoded tile."""
    if out.dtype.kind in "iu":
        info = np.iinfo(out.dtype)
        _denormalise_int(xn, np.float64(scale), np.float64(offset), np.float64(info.min), np.float64(info.max), out)
    else:
        _denormalise(xn, np.float64(scale), np.float64(offset), out)


@kernel
def _denormalise(xn, scale, offset, out):
    h, w = out.shape
    for i in range(h):
        for j in range(w):
            out[i, j] = np.float64(xn[i, j]) * scale + offset


@kernel
def _denormalise_int(xn, scale, offset, lo, hi, out):
    h, w = out.shape
    for i in range(h):
        for j in range(w):
            v = np.rint(np.float64(xn[i, j]) * scale + offset)
            out[i, j] = min(max(v, lo), hi)

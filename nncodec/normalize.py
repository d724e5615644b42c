"""Tiling, per-tile normalisation and gap filling, shared by the codec and training.

The network sees every tile scaled to [0, 1] by its finite minimum and range, with
non-finite pixels (NaN, land, Inf) filled smoothly so that coastlines cost few bits.
Training uses these same functions, so the model learns on exactly what it codes.
"""

from __future__ import annotations

import math

import numpy as np

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
    """Fill non-finite pixels of a 2D array from a pyramid of local means.

    Coarse levels average the finite pixels of 2x2 blocks until every block holds one;
    each gap then takes the value of the finest level that covers it. Smooth fills cost
    the network few bits at coastlines; the filled pixels are restored exactly later.
    """
    out = np.where(finite, x, 0.0).astype(np.float32)
    if finite.all():
        return out
    if not finite.any():
        return np.zeros_like(out)
    levels = []
    val, wt = out.astype(np.float64), finite.astype(np.float64)
    while True:
        h, w = val.shape
        if h == 1 and w == 1:
            break
        ph, pw = h % 2, w % 2
        if ph or pw:
            val = np.pad(val, ((0, ph), (0, pw)))
            wt = np.pad(wt, ((0, ph), (0, pw)))
        vs = val.reshape(val.shape[0] // 2, 2, val.shape[1] // 2, 2).sum(axis=(1, 3))
        ws = wt.reshape(wt.shape[0] // 2, 2, wt.shape[1] // 2, 2).sum(axis=(1, 3))
        levels.append((vs, ws))
        val, wt = vs, ws
        if (ws > 0).all():
            break
    # walk back up: each level's mean, holes filled from the coarser level
    mean = None
    for vs, ws in reversed(levels):
        m = np.where(ws > 0, vs / np.maximum(ws, 1e-300), 0.0)
        if mean is not None:
            up = np.repeat(np.repeat(mean, 2, axis=0), 2, axis=1)[: m.shape[0], : m.shape[1]]
            m = np.where(ws > 0, m, up)
        mean = m
    up = np.repeat(np.repeat(mean, 2, axis=0), 2, axis=1)[: out.shape[0], : out.shape[1]]
    return np.where(finite, out, up).astype(np.float32)


def normalise_tile(x: np.ndarray, finite: np.ndarray, offset, scale) -> np.ndarray:
    """Map a tile to [0, 1] (float32) with gaps filled; ``scale`` must be > 0."""
    xn = (x.astype(np.float64) - np.float64(offset)) / np.float64(scale)
    return fill_nonfinite(xn, finite)

"""The residual layer that turns the learned codec into an error-bounded one.

With a prediction ``p`` (the network's reconstruction, or a constant where the network
does not pay), the encoder codes ``y = (x - p) / step`` with ``step = 2 e'`` to within
1/2, and the decoder returns ``p + k * step`` with ``|k - y| <= 1/2``, so ``|x' - x| <= e'``.

Each tile's ``k`` is coded by multilevel interpolation (after SZ3's interpolation
predictor): passes run coarse to fine, each predicting the odd rows (or columns) of a
stride-``s`` sub-grid from its even ones, and code ``r = round(y - P)``; then ``k = P +
r``. Decoded values are integers in units of ``1 / FRACTION`` (``K = FRACTION * k``) and
the prediction ``P`` is the integer cubic (quadratic, linear at the edges) of the even
``K``, rounded to that unit. The decoder's arithmetic is integer only, so it rebuilds
exactly the ``K`` the encoder did, on any machine, with one vectorised step per pass.
Keeping the prediction to a fifteenth of a step, rather than rounding it to whole steps as
dual quantisation does, saves the noise of a second rounding: at loose bounds, where most
residuals are 0, that is a quarter of the bits. A tile may instead send ``round(y)``
through the same passes (predictor "none", ``P = 0``), which pays where ``p`` is the
network and its errors are noise-like.

From format version 5 a chunk may quantise each interpolation level with its own step,
``q / FRACTION`` of ``step`` for an odd ``q`` up to ``FRACTION`` (``K = P + q r``): tighter
steps at the coarse levels, which predict all finer ones, lower the RMSE and the finer
levels' residuals for the same maximum error (after QoZ, Liu et al. 2022).

An encoder that is held to an RMSE rather than to a maximum error (``target_psnr``) may
also round toward zero (dead-zone quantisation, as video encoders' rounding offsets do):
``r = sign(u) floor(|u| + 1/2 - d)`` with a dead zone ``d`` per pass (:data:`DEADZONE`).
A value that rounding would make +-1 at the cost of a few bits becomes a free 0 at a
little more error, which buys more PSNR per bit; the errors then reach ``(1/2 + d)``
steps. The decoder is the same: it never learns the dead zone.

Each residual symbol gets its own two-sided discretised Laplacian table, chosen from a
context the decoder also knows: the octave of the local activity (the residuals of the
two even neighbours, their difference and the curvature of the four). Per pass and
context octave the encoder picks the cheapest table and sends that choice (a "virtual
index": a table, or for wide distributions a table for ``r >> m`` plus ``m`` raw low
bits) as a small difference from the previous one. Non-finite positions are not coded at
all: the mask is decoded first, and there ``K`` is its prediction.

Arithmetic is float64 throughout. ``e'`` is the requested bound minus a safety margin
covering (a) the rounding of the output to its dtype and (b) the difference between
devices in the float64 synthesis transform (``SYNTHESIS_TOLERANCE`` of the tile range,
some four orders of magnitude above what float64 convolutions differ by). The encoder
then decodes exactly as the decoder will and stores any value that still misses the
bound losslessly, so the bound holds for every finite value.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal, localcontext

import numpy as np

from ._jit import kernel
from .errors import CorruptStreamError
from .rans import PRECISION  # probability bits of the range coder

SYNTHESIS_TOLERANCE = 1e-9

# -- integer CDF tables ------------------------------------------------------------------
N_LAPLACE = 49  # Laplacian scales b_i = 2 ** ((i - 16) / 4): 1/16 .. 256
MAX_SHIFT = 16  # raw low bits per symbol at most
RAW_BITS = 8  # raw bits go in pieces of up to this many; table N_LAPLACE + w - 1 codes w bits
N_VIRTUAL = N_LAPLACE + 4 * MAX_SHIFT  # a shift of one bit halves b: 4 table steps
ROOT_TABLE = N_LAPLACE - 1  # the widest table: the first value of a tile
SIDE_TABLE = 20  # b = 2: differences between successive virtual indexes
SIDE_SLOPE = 3  # expected virtual index step per context octave (b ~ activity ** 0.75)
SIDE_START = 32  # virtual index the first difference of a tile refers to
N_BUCKETS = 24  # context octaves
# decoded values are integers in units of step / FRACTION; odd, so that y on that grid
# (exact zeros, integer data) is never half way between two levels: a tie there would
# sit exactly on the bound and, after rounding to float32, often just past it
FRACTION = 15
MAX_SYMBOL = 1 << 28  # the range coder holds symbols in int32 and doubles escaped ones
MIN_CONTEXT = 64  # passes with fewer coded values use one table: side information would cost more
PREDICTORS = {"none": 0, "cubic": 1}
_FIX = 64  # fixed-point fraction bits of the table construction
#: Level steps (finest first) that shrink the bound about 1.4x per interpolation level, to a
#: third from level 4 on (after QoZ, Liu et al. 2022): coarse values predict all finer ones,
#: so their accuracy pays at the finer levels. At the same PSNR they need 0.72-0.93 of the
#: uniform steps' bits on held-out TS at 40-50 dB (docs/error-bounds.md).
TIGHTER_COARSE_LEVELS = (15, 11, 9, 7, 5)
#: Dead zones per pass, finest first (the column pass of level 0, its row pass, then level
#: 1's column and row passes, ...; coarser passes none): widest where values predict
#: nothing (the last pass), narrower where errors carry into finer predictions. With
#: TIGHTER_COARSE_LEVELS, at equal PSNR on held-out TS at 42-50 dB, they need 0.67-0.87 of
#: uniform steps' bits, where tighter levels alone need 0.80-0.93 (docs/error-bounds.md).
DEADZONE = (0.3, 0.15, 0.1, 0.1, 0.05, 0.05)


def _laplace_decay(i: int) -> int:
    """``floor(u * 2**64)`` with ``u = exp(-1 / (2 b_i))``, the decay per half step.

    Decimal's ``ln`` and ``exp`` are correctly rounded, so every machine gets the same
    integer (binary floating-point ``exp`` may differ in its last bit between libms).
    """
    with localcontext() as ctx:
        ctx.prec = 50
        inv_2b = (Decimal(-(i - 16) - 4) / 4 * Decimal(2).ln()).exp()  # 1 / (2 b) = 2 ** (-(i-16)/4 - 1)
        u = (-inv_2b).exp() * (1 << _FIX)
        return int(u.to_integral_value(rounding=ROUND_FLOOR))


def _quantise_pmf(weights: list[int], total: int) -> list[int]:
    """Integer frequencies >= 1 summing to ``2**PRECISION``, in proportion to ``weights``.

    Every entry gets 1, the rest of the range is shared by largest remainders (ties to
    the lower position), all in exact integer arithmetic.
    """
    spare = (1 << PRECISION) - len(weights)
    shares = [w * spare for w in weights]
    freqs = [1 + s // total for s in shares]
    left = (1 << PRECISION) - sum(freqs)
    order = sorted(range(len(weights)), key=lambda j: (-(shares[j] % total), j))
    for j in order[:left]:
        freqs[j] += 1
    return freqs


def _laplace_table(i: int) -> tuple[list[int], int]:
    """(CDF, offset) of the discretised Laplacian of scale ``b_i`` with an escape symbol.

    ``P(0) = 1 - u`` and ``P(+-k) = u**(2k-1) (1 - u**2) / 2`` (the Laplacian density
    integrated over unit bins), cut at the first ``K`` whose two tails hold at most
    ``2**-PRECISION``; the tails go to the escape symbol.
    """
    one = 1 << _FIX
    u = _laplace_decay(i)
    u2 = u * u >> _FIX
    half_band = (one - u2) // 2
    side, power = [], u  # power = u ** (2k - 1)
    while True:
        side.append(power * half_band >> _FIX)
        power = power * u2 >> _FIX
        if power >> (_FIX - PRECISION) == 0:  # tail u ** (2K + 1) below 2 ** -PRECISION
            break
    weights = side[::-1] + [one - u] + side + [power]
    freqs = _quantise_pmf(weights, sum(weights))
    return np.concatenate(([0], np.cumsum(freqs))).tolist(), -len(side)


def _uniform_table(bits: int) -> list[int]:
    """CDF of ``2**bits`` equally likely symbols (one unit goes to the escape symbol)."""
    freqs = [1 << (PRECISION - bits)] * (1 << bits)
    freqs[-1] -= 1
    return np.concatenate(([0], np.cumsum(freqs + [1]))).tolist()


@functools.lru_cache(maxsize=1)
def residual_tables() -> tuple[list[list[int]], list[int], list[int]]:
    """(CDFs, CDF lengths, offsets) of the residual tables, as the range coder takes them.

    Tables ``0 .. N_LAPLACE - 1`` are Laplacians, ``N_LAPLACE + w - 1`` code ``w`` raw
    bits. They depend on nothing but this module, and are built in integer arithmetic.
    """
    cdfs, offsets = [], []
    for i in range(N_LAPLACE):
        cdf, offset = _laplace_table(i)
        cdfs.append(cdf)
        offsets.append(offset)
    for w in range(1, RAW_BITS + 1):
        cdfs.append(_uniform_table(w))
        offsets.append(0)
    return cdfs, [len(c) for c in cdfs], offsets


@kernel
def _virtual_shift(v):
    """The raw low bits of virtual index ``v``: above the widest table each bit is 4 steps
    (the table is then ``v - 4 * shift``)."""
    return max(0, -(-(v - (N_LAPLACE - 1)) // 4))


@kernel
def _piece_width(shift, first):
    """Bits of the raw piece that starts at bit ``first`` of ``shift`` raw low bits (0: none)."""
    return min(max(shift - first, 0), RAW_BITS)


# -- the interpolation passes ------------------------------------------------------------
def _passes(shape: tuple[int, int]) -> list[tuple[int, int]]:
    """(stride, axis) of every pass, coarse to fine: rows first, then columns, per stride."""
    levels = (max(shape) - 1).bit_length()  # 2 ** levels >= every edge
    return [(1 << lev, ax) for lev in range(levels - 1, -1, -1) for ax in (0, 1)]


def steps_per_level(level_steps: tuple[int, ...], shape: tuple[int, int]) -> np.ndarray:
    """The quantisation step of every level of a tile, finest (stride 1) first and the
    root value last, in units of ``K``: ``level_steps[l]`` for level ``l``, its last entry
    for every coarser level, ``FRACTION`` (half a step either side: the bound) where empty.

    A step ``q`` keeps a level's values within ``q / (2 FRACTION)`` steps, so steps below
    ``FRACTION`` tighten the bound there; they are odd for the reason ``FRACTION`` is."""
    levels = (max(shape) - 1).bit_length()
    if not level_steps:
        return np.full(levels + 1, FRACTION, dtype=np.int64)
    return np.array([level_steps[min(lev, len(level_steps) - 1)] for lev in range(levels + 1)], dtype=np.int64)


@kernel
def _predict(even, n_odd, predictor):
    """Integer prediction of the ``n_odd`` odd rows lying between the rows of ``even``."""
    if predictor == 0:  # PREDICTORS["none"]
        return np.zeros((n_odd, even.shape[1]), dtype=np.int64)
    return _interpolate(even, n_odd)


@kernel
def _interpolate(even, n_odd):
    """Cubic ``(-a + 9b + 9c - d) / 16`` inside, quadratic next to an edge, linear between
    two rows, and the last even row past the far edge; every division rounds by floor."""
    n_even = even.shape[0]
    out = np.empty((n_odd, even.shape[1]), dtype=np.int64)
    for m in range(n_odd):
        right, far_left, far_right = min(m + 1, n_even - 1), max(m - 1, 0), min(m + 2, n_even - 1)
        for c in range(even.shape[1]):
            a, b, d, e = even[far_left, c], even[m, c], even[right, c], even[far_right, c]
            if m + 1 >= n_even:
                out[m, c] = b
            elif m + 2 < n_even:
                out[m, c] = (-a + 9 * b + 9 * d - e + 8) // 16 if m >= 1 else (3 * b + 6 * d - e + 4) // 8
            else:
                out[m, c] = (-a + 6 * b + 3 * d + 4) // 8 if m >= 1 else (b + d + 1) // 2
    return out


@kernel
def _context(even_k, even_r, n_odd):
    """Context octave of each odd row: floor(log2(1 + activity)), activity in units of ``K``.

    The activity sums the two neighbours' residuals, twice their difference and the
    curvature across the four; the weights were tuned on real fields.
    """
    n_even = even_k.shape[0]
    out = np.empty((n_odd, even_k.shape[1]), dtype=np.int64)
    for m in range(n_odd):
        right, far_left, far_right = min(m + 1, n_even - 1), max(m - 1, 0), min(m + 2, n_even - 1)
        for c in range(even_k.shape[1]):
            left, right_k = even_k[m, c], even_k[right, c]
            activity = (FRACTION * (abs(even_r[m, c]) + abs(even_r[right, c])) + 2 * abs(left - right_k)
                        + abs(even_k[far_left, c] - left - right_k + even_k[far_right, c]))
            out[m, c] = _octave(activity + 1)
    return out


@kernel
def _octave(v):
    """floor(log2(v)) of an integer v >= 1 (its bit length less one), at most N_BUCKETS - 1."""
    if v >= 1 << (N_BUCKETS - 1):
        return N_BUCKETS - 1
    octave = 0
    for half in (16, 8, 4, 2, 1):
        if v >= 1 << half:
            v >>= half
            octave += half
    return octave


def _pass_views(k: np.ndarray, r: np.ndarray, finite: np.ndarray, s: int, axis: int):
    """The sub-grids of ``k``, ``r`` and ``finite`` a pass of stride ``s`` along ``axis``
    works on, as views whose rows are the pass's axis (transposed for column passes): its
    even rows are known, its odd rows are coded."""
    cut = (slice(None, None, s), slice(None, None, 2 * s if axis == 0 else s))
    return tuple(a[cut].T if axis else a[cut] for a in (k, r, finite))


@kernel
def _pass_context(even_k, even_r, finite_odd, n_odd):
    """Context octaves of a pass's odd rows (:func:`_context`), or all 0 where the pass
    codes fewer than ``MIN_CONTEXT`` values (one table: side information would cost more)."""
    if np.count_nonzero(finite_odd) >= MIN_CONTEXT:
        return _context(even_k, even_r, n_odd)
    return np.zeros((n_odd, even_k.shape[1]), dtype=np.int64)


# -- encoding ----------------------------------------------------------------------------
@dataclass
class ResidualCode:
    """A tile's residual: its predictor, its chunk's steps per level (:func:`steps_per_level`),
    the decoded ``k`` (multiples of ``1 / FRACTION``), and the (symbol, table) pairs in stream
    order with their estimated size in bits."""

    predictor: int
    level_steps: tuple[int, ...] = ()
    k: np.ndarray | None = None
    symbols: np.ndarray | None = None
    indexes: np.ndarray | None = None
    bits: float = 0.0


@kernel
def _table_costs(values, inverse, shift, bits, escape, offsets, first, out):
    """``out[o, j]`` += estimated bits of octave ``o``'s ``values >> shift`` under table
    ``first + j``. Where the values span a small range, each octave's distinct values are
    counted first and priced once per table."""
    if values.size == 0:
        return
    q = values >> shift
    lo = q.min()
    span = q.max() - lo + 1
    if span * out.shape[0] > 4 * values.size + 4096:
        for i in range(values.size):
            _add_cost(out, inverse[i], q[i], 1, bits, escape, offsets, first)
        return
    counts = np.zeros((out.shape[0], span), dtype=np.int64)
    for i in range(values.size):
        counts[inverse[i], q[i] - lo] += 1
    for o in range(out.shape[0]):
        for k in range(span):
            if counts[o, k]:
                _add_cost(out, o, lo + k, counts[o, k], bits, escape, offsets, first)


@kernel
def _add_cost(out, o, value, count, bits, escape, offsets, first):
    """``count`` times the estimated bits of ``value`` under each candidate table, added to
    row ``o``: as :func:`price_symbols` prices it."""
    for j in range(out.shape[1]):
        t = first + j
        s = value - offsets[t]
        c = bits[t, s] if 0 <= s < bits.shape[1] else np.inf
        if not np.isfinite(c):
            c = escape[t] + 4 + 4 * _escaped_digits(s)
        out[o, j] += count * c


@kernel
def price_symbols(symbols, indexes, bits, escape, offsets, out):
    """``out[i]``: estimated bits of ``symbols[i]`` under table ``indexes[i]`` (flat arrays;
    ``bits, escape, offsets`` as :meth:`nncodec.entropy.Tables.costs` gives them): the
    table's cost inside its range, else its escape symbol, a 4-bit digit count and
    :func:`_escaped_digits` 4-bit digits."""
    for i in range(symbols.size):
        t = indexes[i]
        s = symbols[i] - offsets[t]
        c = bits[t, s] if 0 <= s < bits.shape[1] else np.inf
        out[i] = c if np.isfinite(c) else escape[t] + 4 + 4 * _escaped_digits(s)


@kernel
def _escaped_digits(s):
    """The 4-bit digits that code an escaped value ``s`` places above the table's offset:
    ceil(log2(2|s| + 2) / 4), the least d with 16 ** d >= 2|s| + 2."""
    digits, reach, need = 0, 1, abs(s) * 2 + 2
    while reach < need:
        reach <<= 4
        digits += 1
    return digits


@kernel
def _side_decode(present, diffs, start):
    """The virtual indexes of one pass from the differences :func:`_emit_pass` sent: the
    first relative to ``start``, then each relative to the previous plus ``SIDE_SLOPE``
    per octave between them. None where one falls outside the tables (a damaged stream)."""
    virtual = np.empty(present.size, dtype=np.int64)
    v = start
    for o in range(present.size):
        v += diffs[o] + (SIDE_SLOPE * (present[o] - present[o - 1]) if o else 0)
        if v < 0 or v >= N_VIRTUAL:
            return None
        virtual[o] = v
    return virtual


def encode_residual(y: np.ndarray, finite: np.ndarray, predictor: int, tables,
                    level_steps: tuple[int, ...] = (), deadzone: tuple[float, ...] = ()) -> ResidualCode | None:
    """Code the residual of one tile to within 1/2 (within ``q / 30`` at a level of step
    ``q``; ``d`` steps more in a pass with dead zone ``d``).

    Parameters
    ----------
    y : numpy.ndarray
        2D float64, ``(x - p) / step``; values at non-finite positions are free.
    finite : numpy.ndarray
        2D bool, the positions that carry symbols (the decoder knows them from the mask).
    predictor : int
        A value of ``PREDICTORS``.
    tables : nncodec.entropy.Tables
        Prices the symbols (``costs("r")``, ``symbol_bits("r", ...)``) to choose the tables.
    level_steps : tuple of int
        The quantisation step of each interpolation level, finest first, in units of ``K``
        (:func:`steps_per_level`); empty: ``FRACTION`` at every level.
    deadzone : tuple of float
        The dead zone of each pass, finest first (as :data:`DEADZONE`), each in [0, 1/2);
        passes beyond the tuple round to nearest.

    Returns
    -------
    ResidualCode or None
        None when a symbol would not fit the range coder (``|y|`` near ``MAX_SYMBOL``).
    """
    k = np.zeros(y.shape, dtype=np.int64)
    steps = steps_per_level(level_steps, y.shape)
    dead = _pass_deadzones(deadzone, len(steps))
    first = y.flat[0] if finite.flat[0] else np.median(y[finite]) if finite.any() else 0.0
    root = np.rint(first * (FRACTION / steps[-1]))
    if abs(root) >= MAX_SYMBOL:
        return None
    k.flat[0] = steps[-1] * int(root)
    n_passes = 2 * (max(y.shape) - 1).bit_length()
    symbols = np.empty(1 + n_passes * N_BUCKETS + 3 * y.size, dtype=np.int64)
    indexes = np.empty(symbols.size, dtype=np.int32)
    symbols[0], indexes[0] = int(root), ROOT_TABLE
    bits, escape, offsets = tables.costs("r")
    n = _encode_passes(np.ascontiguousarray(y, dtype=np.float64), np.ascontiguousarray(finite, dtype=np.bool_),
                       predictor, steps, dead, k, bits, escape, offsets, symbols, indexes)
    if n < 0:
        return None
    # copies: a tile's code outlives the call, and the buffers hold room for 3 symbols a value
    code = ResidualCode(predictor, level_steps, k / FRACTION, symbols[:n].copy(), indexes[:n].copy())
    code.bits = float(tables.symbol_bits("r", code.symbols, code.indexes).sum())
    return code


def _pass_deadzones(deadzone: tuple[float, ...], n_levels: int) -> np.ndarray:
    """``deadzone`` (per pass, finest first) as ``(level, axis)`` entries."""
    if not all(0 <= d < 0.5 for d in deadzone):
        raise ValueError(f"dead zones must lie in [0, 1/2), got {deadzone}")
    out = np.zeros((n_levels, 2))
    for i, d in enumerate(deadzone[: 2 * n_levels]):
        out[i // 2, 1 - i % 2] = d  # a level's column pass (axis 1) runs after its row pass
    return out


@kernel
def _encode_passes(y, finite, predictor, steps, dead, k, bits, escape, offsets, symbols, indexes):
    """The passes of :func:`encode_residual` (coarse to fine, :func:`_passes`; level ``lev``
    quantised with step ``steps[lev]``, rounded toward zero by ``dead[lev, axis]``): fills
    ``k`` (``k[0, 0]`` given) and writes, from position 1 of ``symbols`` and ``indexes``,
    each pass's table choice and symbols. Returns the number of symbols in all, or -1 when
    a residual would not fit the range coder."""
    h, w = k.shape
    r = np.zeros_like(k)
    values = np.empty(h * w, dtype=np.int64)
    octaves = np.empty(h * w, dtype=np.int64)
    levels, edge = 0, max(h, w) - 1
    while edge:
        edge >>= 1
        levels += 1
    n, start = 1, SIDE_START
    for lev in range(levels - 1, -1, -1):
        s, q = 1 << lev, steps[lev]
        for axis in range(2):  # as _pass_views cuts them
            d = dead[lev, axis]
            if axis == 0:
                ks, rs, fs, ys = k[::s, :: 2 * s], r[::s, :: 2 * s], finite[::s, :: 2 * s], y[::s, :: 2 * s]
            else:
                ks, rs, fs, ys = k[::s, ::s].T, r[::s, ::s].T, finite[::s, ::s].T, y[::s, ::s].T
            n_odd = ks.shape[0] // 2
            if n_odd == 0:
                continue
            k_odd, r_odd, f_odd, y_odd = ks[1::2], rs[1::2], fs[1::2], ys[1::2]
            pred = _predict(ks[0::2], n_odd, predictor)
            ctx = _pass_context(ks[0::2], rs[0::2], f_odd, n_odd)
            m = 0
            for i in range(n_odd):
                for j in range(ks.shape[1]):
                    res = 0
                    if f_odd[i, j]:
                        # round((y - P) / q) in float64 (the factor is exactly 1 at q = FRACTION):
                        # exact enough, and the codec verifies every value anyway
                        u = (y_odd[i, j] - pred[i, j] / FRACTION) * (FRACTION / q)
                        v = np.rint(u) if d == 0 else np.copysign(max(np.floor(abs(u) + 0.5 - d), 0.0), u)
                        if abs(v) >= MAX_SYMBOL:
                            return -1
                        res = int(v)
                        values[m], octaves[m] = res, ctx[i, j]
                        m += 1
                    r_odd[i, j] = res
                    k_odd[i, j] = pred[i, j] + q * res
            if m:
                n, start = _emit_pass(values[:m], octaves[:m], start, bits, escape, offsets, symbols, indexes, n)
    return n


@kernel
def _emit_pass(values, ctx, start, bits, escape, offsets, symbols, indexes, n):
    """One pass's symbols from position ``n``: the virtual index of each context octave
    present (cheapest by ``_table_costs``, sent as differences), then every value under
    its octave's table, then the raw low bits of shifted tables in ``RAW_BITS`` pieces.
    Returns (the next position, the virtual index the next pass's differences start from)."""
    seen = np.zeros(N_BUCKETS, dtype=np.int64)
    for c in ctx:
        seen[c] += 1
    rank = np.zeros(N_BUCKETS, dtype=np.int64)
    present = np.empty(N_BUCKETS, dtype=np.int64)
    n_present = 0
    for o in range(N_BUCKETS):
        if seen[o]:
            rank[o], present[n_present] = n_present, o
            n_present += 1
    present = present[:n_present]
    inverse = np.empty(values.size, dtype=np.int64)
    spread = np.zeros(n_present)
    for i in range(values.size):
        inverse[i] = rank[ctx[i]]
        spread[inverse[i]] += abs(values[i])
    counts = np.empty(n_present, dtype=np.int64)
    widest_spread = 0.0
    for o in range(n_present):
        counts[o] = seen[present[o]]
        spread[o] /= counts[o]
        widest_spread = max(widest_spread, spread[o])
    widest = 2.0 ** ((N_LAPLACE - 17) / 4)
    costs = np.full((n_present, N_VIRTUAL), np.inf)
    for shift in range(MAX_SHIFT + 1):
        # a shift pays only for spreads near or beyond the widest table (mean |r| = b)
        if shift and widest_spread < widest * 2.0 ** (shift - 2):
            break
        first = 0 if shift == 0 else N_LAPLACE - 4
        sums = np.zeros((n_present, N_LAPLACE - first))
        _table_costs(values, inverse, shift, bits, escape, offsets, first, sums)
        for o in range(n_present):
            for j in range(sums.shape[1]):
                costs[o, first + 4 * shift + j] = sums[o, j] + shift * counts[o]
    virtual = np.empty(n_present, dtype=np.int64)
    for o in range(n_present):
        virtual[o] = 0  # the cheapest, the first of equals (as argmin)
        for j in range(1, N_VIRTUAL):
            if costs[o, j] < costs[o, virtual[o]]:
                virtual[o] = j
        expected = start if o == 0 else virtual[o - 1] + SIDE_SLOPE * (present[o] - present[o - 1])
        symbols[n], indexes[n] = virtual[o] - expected, SIDE_TABLE
        n += 1
    shifts = np.empty(values.size, dtype=np.int64)
    for i in range(values.size):
        v = virtual[inverse[i]]
        shifts[i] = _virtual_shift(v)
        symbols[n], indexes[n] = values[i] // (1 << shifts[i]), v - 4 * shifts[i]
        n += 1
    for first in range(0, MAX_SHIFT, RAW_BITS):
        for i in range(values.size):
            width = _piece_width(shifts[i], first)
            if width > 0:
                low = values[i] % (1 << shifts[i])
                symbols[n], indexes[n] = low // (1 << first) % (1 << width), N_LAPLACE + width - 1
                n += 1
    return n, virtual[0]


# -- decoding ----------------------------------------------------------------------------
def decode_residual(read, shape: tuple[int, int], finite: np.ndarray, predictor: int,
                    level_steps: tuple[int, ...] = ()) -> np.ndarray:
    """Rebuild a tile's ``k`` from the range-coded stream.

    Parameters
    ----------
    read : callable
        ``read(indexes)`` decodes one symbol per table index (int64 array), in order.
    shape : tuple of int
        The tile's shape.
    finite : numpy.ndarray
        2D bool, the positions that carry symbols.
    predictor : int
        The tile's predictor, a value of ``PREDICTORS``.
    level_steps : tuple of int
        The steps per interpolation level the chunk states, as :func:`encode_residual` takes them.

    Returns
    -------
    numpy.ndarray
        float64 multiples of ``1 / FRACTION``, exactly those of the encoder's ``ResidualCode.k``.

    Raises
    ------
    CorruptStreamError
        When a table choice falls outside the tables.
    """
    k = np.zeros(shape, dtype=np.int64)
    r = np.zeros_like(k)
    steps = steps_per_level(level_steps, shape)
    k.flat[0] = steps[-1] * read(np.array([ROOT_TABLE]))[0]
    start = SIDE_START
    for s, axis in _passes(shape):
        ks, rs, fs = _pass_views(k, r, finite, s, axis)
        if ks.shape[0] < 2:
            continue
        pred, ctx, present = _decode_context(ks, rs, fs, predictor)
        values = np.zeros(0, dtype=np.int64)
        if ctx.size:
            virtual = _side_decode(present, read(np.full(len(present), SIDE_TABLE)), start)
            if virtual is None:
                raise CorruptStreamError("nncodec residual table choice is out of range; the chunk is damaged")
            start = int(virtual[0])
            indexes, shifts = _symbol_tables(ctx, present, virtual)
            values = _join_pieces(read(indexes), shifts)
        _fill_pass(ks, rs, fs, pred, values, steps[s.bit_length() - 1])
    return k / FRACTION


@kernel
def _decode_context(ks, rs, fs, predictor):
    """A pass's prediction, the context octaves of its finite odd positions (flat, in
    order) and the octaves present, ascending."""
    n_odd = ks.shape[0] // 2
    f_odd = fs[1::2]
    pred = _predict(ks[0::2], n_odd, predictor)
    ctx = _pass_context(ks[0::2], rs[0::2], f_odd, n_odd)
    flat = np.empty(np.count_nonzero(f_odd), dtype=np.int64)
    seen = np.zeros(N_BUCKETS, dtype=np.bool_)
    m = 0
    for i in range(n_odd):
        for j in range(ks.shape[1]):
            if f_odd[i, j]:
                flat[m] = ctx[i, j]
                seen[ctx[i, j]] = True
                m += 1
    return pred, flat, np.flatnonzero(seen)


@kernel
def _symbol_tables(ctx, present, virtual):
    """The table of every symbol of a pass after its side information (in stream order:
    each value under its octave's table, then the raw low-bit pieces), and each value's shift."""
    of_octave = np.zeros(N_BUCKETS, dtype=np.int64)
    for o in range(present.size):
        of_octave[present[o]] = virtual[o]
    shifts = np.empty(ctx.size, dtype=np.int64)
    indexes = np.empty(3 * ctx.size, dtype=np.int32)
    for i in range(ctx.size):
        v = of_octave[ctx[i]]
        shifts[i] = _virtual_shift(v)
        indexes[i] = v - 4 * shifts[i]
    n = ctx.size
    for first in range(0, MAX_SHIFT, RAW_BITS):
        for i in range(ctx.size):
            width = _piece_width(shifts[i], first)
            if width > 0:
                indexes[n] = N_LAPLACE + width - 1
                n += 1
    return indexes[:n], shifts


@kernel
def _join_pieces(symbols, shifts):
    """A pass's residuals from its symbols: each value's table symbol, shifted, plus its raw pieces."""
    values = np.empty(shifts.size, dtype=np.int64)
    for i in range(shifts.size):
        values[i] = symbols[i] * (1 << shifts[i])
    n = shifts.size
    for first in range(0, MAX_SHIFT, RAW_BITS):
        for i in range(shifts.size):
            if _piece_width(shifts[i], first) > 0:
                values[i] += symbols[n] * (1 << first)
                n += 1
    return values


@kernel
def _fill_pass(ks, rs, fs, pred, values, q):
    """A pass's odd rows: the residuals ``values`` at the finite positions, in order, and
    ``K = P + q * r`` (``q``: the level's step)."""
    m = 0
    k_odd, r_odd, f_odd = ks[1::2], rs[1::2], fs[1::2]
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            if f_odd[i, j]:
                r_odd[i, j] = values[m]
                m += 1
            k_odd[i, j] = pred[i, j] + q * r_odd[i, j]


@dataclass(frozen=True)
class Quantiser:
    """How a chunk's residuals are quantised: the step ``2 e'`` (:func:`quantisation_step`),
    the steps of the interpolation levels in units of ``step / FRACTION``
    (:func:`steps_per_level`; empty: ``FRACTION`` at every level) and the passes' dead
    zones (:data:`DEADZONE`; empty: round to nearest)."""

    step: float
    level_steps: tuple[int, ...] = ()
    deadzone: tuple[float, ...] = ()

    @property
    def reach(self) -> float:
        """The largest error the residual code leaves, before rounding to the dtype."""
        return self.step * _reach_in_steps(self.deadzone)


def _reach_in_steps(deadzone: tuple[float, ...]) -> float:
    """The largest error of a residual rounded with ``deadzone``, in steps: 1/2 plus the widest."""
    return 0.5 + max(deadzone, default=0.0)


def quantisation_step(bound: float, dtype: np.dtype, max_abs: float, max_scale: float, uses_network: bool,
                      deadzone: tuple[float, ...] = ()) -> float:
    """The step ``2 e'`` for a requested absolute ``bound`` (see module docstring); with
    dead zones (float dtypes only) the step whose :attr:`Quantiser.reach` is ``e'``."""
    if dtype.kind in "iu":
        if deadzone:
            raise ValueError("dead zones are for float data: integer data decodes rounded to whole values")
        # decoded values are rounded to integers: |x' - x| < floor(e) + 1/2 suffices
        return 2.0 * (np.floor(bound) + 0.49)
    margin = float(np.spacing(dtype.type(max_abs))) if np.isfinite(max_abs) else 0.0
    if uses_network:
        margin += SYNTHESIS_TOLERANCE * max_scale
    step = (bound - margin) / _reach_in_steps(deadzone)
    return step if step > 0 else 0.0


def reconstruct(pred: np.ndarray, k: np.ndarray, step: float, dtype: np.dtype) -> np.ndarray:
    """Decoded values in the output dtype: ``p + k * step``, rounded for integer dtypes."""
    x = pred + k * step
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(x), info.min, info.max).astype(dtype)
    return x.astype(dtype)

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

from ._kernels import (  # the layer's constants live beside its kernels
    FRACTION,
    MAX_SYMBOL,
    N_BUCKETS,
    N_LAPLACE,
    PRECISION,
    RAW_BITS,
    ROOT_TABLE,
    _decode_passes,
    _encode_passes,
)
from .errors import CorruptStreamError

SYNTHESIS_TOLERANCE = 1e-9

PREDICTORS = {"none": 0, "cubic": 1}
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

# -- integer CDF tables ------------------------------------------------------------------
_FIX = 64  # fixed-point fraction bits of the table construction


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


# -- the interpolation passes ------------------------------------------------------------
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


# -- decoding ----------------------------------------------------------------------------
def decode_residual(stream, tables, shape: tuple[int, int], finite: np.ndarray, predictor: int,
                    level_steps: tuple[int, ...] = ()) -> np.ndarray:
    """Rebuild a tile's ``k`` from the range-coded stream, in one call that releases the
    GIL (:func:`nncodec._kernels._decode_passes`).

    Parameters
    ----------
    stream : nncodec.rans.Decoder
        At the tile's residual symbols; left after them.
    tables : nncodec.rans.CoderTables
        The residual tables (:func:`residual_tables`).
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
    ok = stream.run(_decode_passes, tables.cdf, tables.lut, tables.lengths, tables.offsets,
                    np.ascontiguousarray(finite, dtype=np.bool_), predictor, steps_per_level(level_steps, shape), k)
    if not ok:
        raise CorruptStreamError("nncodec residual table choice is out of range; the chunk is damaged")
    return k / FRACTION


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

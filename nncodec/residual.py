"""The residual layer that turns the learned codec into an error-bounded one.

With a prediction ``p`` (the network's reconstruction, or a constant where the network
does not pay), the encoder sends ``k = round((x - p) / step)`` with ``step = 2 e'``, and
the decoder returns ``p + k * step``, so ``|x' - x| <= e'``. The integers ``k`` are
range-coded as they are, or after a 2D Lorenzo difference (``k`` minus the prediction
from its left, upper and upper-left neighbours; decoded by two cumulative sums) when
that is cheaper: the network's errors are spatially correlated, and without a network
this is the dual-quantisation scheme of cuSZ.

Arithmetic is float64 throughout. ``e'`` is the requested bound minus a safety margin
covering (a) the rounding of the output to its dtype and (b) the difference between
devices in the float64 synthesis transform (``SYNTHESIS_TOLERANCE`` of the tile range,
some four orders of magnitude above what float64 convolutions differ by). The encoder
then decodes exactly as the decoder will and stores any value that still misses the
bound losslessly, so the bound holds for every finite value.
"""

from __future__ import annotations

import numpy as np

SYNTHESIS_TOLERANCE = 1e-9


def lorenzo_forward(k: np.ndarray) -> np.ndarray:
    """``k[i,j] - k[i-1,j] - k[i,j-1] + k[i-1,j-1]`` with zeros outside the tile."""
    p = np.pad(k, ((1, 0), (1, 0)))
    return p[1:, 1:] - p[:-1, 1:] - p[1:, :-1] + p[:-1, :-1]


def lorenzo_inverse(d: np.ndarray) -> np.ndarray:
    """Inverse of :func:`lorenzo_forward`: two cumulative sums."""
    return np.cumsum(np.cumsum(d, axis=0), axis=1)


def quantisation_step(bound: float, dtype: np.dtype, max_abs: float, max_scale: float, uses_network: bool) -> float:
    """The step ``2 e'`` for a requested absolute ``bound`` (see module docstring)."""
    if dtype.kind in "iu":
        # decoded values are rounded to integers: |x' - x| < floor(e) + 1/2 suffices
        return 2.0 * (np.floor(bound) + 0.49)
    margin = float(np.spacing(dtype.type(max_abs))) if np.isfinite(max_abs) else 0.0
    if uses_network:
        margin += SYNTHESIS_TOLERANCE * max_scale
    half = bound - margin
    return 2.0 * half if half > 0 else 0.0


def reconstruct(pred: np.ndarray, k: np.ndarray, step: float, dtype: np.dtype) -> np.ndarray:
    """Decoded values in the output dtype: ``p + k * step``, rounded for integer dtypes."""
    x = pred + k * step
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(x), info.min, info.max).astype(dtype)
    return x.astype(dtype)

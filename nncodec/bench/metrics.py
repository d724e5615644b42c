"""Rate, distortion and speed metrics, and the Bjontegaard delta rate.

Distortion numbers come from :func:`nncodec.fidelity.fidelity_report` (NaN-aware,
over points finite in both arrays); this module turns them into the figures a
rate-distortion benchmark reports. Formulas are in ``docs/metrics.md``.
"""

from __future__ import annotations

import math
import time

import numpy as np
from scipy.interpolate import PchipInterpolator

__all__ = [
    "bd_rate",
    "rate_at_psnr",
    "bits_per_value",
    "compression_ratio",
    "distortion_metrics",
    "psnr_db",
    "timed",
]


def bits_per_value(n_bytes: int, n_values: int) -> float:
    """``8 * n_bytes / n_values``: every stored byte (headers, masks) counts."""
    if n_values <= 0:
        raise ValueError(f"n_values must be positive, got {n_values}")
    return 8.0 * n_bytes / n_values


def compression_ratio(original_bytes: int, n_bytes: int) -> float:
    """Original size over compressed size (inf for an empty stream)."""
    return original_bytes / n_bytes if n_bytes else math.inf


def psnr_db(rmse: float, value_range: float) -> float:
    """``20 log10(value_range / rmse)`` in dB; inf when ``rmse`` is 0.

    ``value_range`` is the finite max minus min of the original.
    """
    if rmse < 0 or value_range < 0:
        raise ValueError(f"rmse and value_range must be >= 0, got {rmse}, {value_range}")
    if rmse == 0:
        return math.inf
    if value_range == 0:
        return -math.inf
    return 20.0 * math.log10(value_range / rmse)


def distortion_metrics(report: dict) -> dict:
    """PSNR, RMSE, max error and max error / range from a fidelity report."""
    value_range = report["data_range"]
    max_err = report["max_abs_error"]
    if value_range > 0:
        rel = max_err / value_range
    else:  # constant original: exact reproduction is 0, anything else unbounded
        rel = 0.0 if max_err == 0 else math.inf
    return {
        "psnr": psnr_db(report["rmse"], value_range),
        "rmse": report["rmse"],
        "max_abs_error": max_err,
        "max_error_rel_range": rel,
    }


def timed(func, *args, repeats: int = 1):
    """Call ``func(*args)`` ``repeats`` times; return (last result, best seconds).

    The best of several runs is the least disturbed by other load on the machine.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        result = func(*args)
        best = min(best, time.perf_counter() - start)
    return result, best


def _rd_envelope(rate, psnr) -> tuple[np.ndarray, np.ndarray]:
    """Pareto-optimal points of a rate-distortion curve, sorted by rate.

    Codecs such as SZ3 are not monotone in their setting, so a raw sweep can hold
    points that are both larger and worse than another; dropping them leaves PSNR
    strictly increasing with rate, which the interpolation needs.
    """
    rate = np.asarray(rate, dtype=np.float64)
    psnr = np.asarray(psnr, dtype=np.float64)
    if rate.shape != psnr.shape or rate.ndim != 1:
        raise ValueError("rate and psnr must be 1D sequences of equal length")
    ok = np.isfinite(rate) & np.isfinite(psnr) & (rate > 0)
    rate, psnr = rate[ok], psnr[ok]
    order = np.lexsort((-psnr, rate))
    keep_r, keep_p = [], []
    for r, p in zip(rate[order], psnr[order]):
        if not keep_p or p > keep_p[-1]:
            keep_r.append(r)
            keep_p.append(p)
    return np.array(keep_r), np.array(keep_p)


def bd_rate(rate_a, psnr_a, rate_b, psnr_b) -> tuple[float, str | None]:
    """Bjontegaard delta rate of curve A against curve B, in percent.

    The average change of bits needed by A relative to B at equal PSNR, over the
    PSNR interval both curves cover: ``100 * (exp(mean(ln R_A - ln R_B)) - 1)``
    with ``ln R`` interpolated as a monotone cubic (PCHIP) of PSNR. Negative
    means A needs fewer bits. Each curve is first reduced to its Pareto-optimal
    points; non-finite PSNR (lossless points) and zero rates are dropped.

    Parameters
    ----------
    rate_a, psnr_a, rate_b, psnr_b : sequence of float
        Rates (e.g. bits per value) and PSNR in dB of the two curves.

    Returns
    -------
    bd : float
        BD-rate in percent, or NaN when it cannot be computed.
    reason : str or None
        Why ``bd`` is NaN, else None.
    """
    curves = [_rd_envelope(rate_a, psnr_a), _rd_envelope(rate_b, psnr_b)]
    for label, (rate, _psnr) in zip("AB", curves):
        if len(rate) < 2:
            return math.nan, f"curve {label} has fewer than 2 usable rate-distortion points"
    low = max(c[1][0] for c in curves)
    high = min(c[1][-1] for c in curves)
    if low >= high:
        return math.nan, (
            f"PSNR ranges do not overlap (A {curves[0][1][0]:.2f}-{curves[0][1][-1]:.2f} dB, "
            f"B {curves[1][1][0]:.2f}-{curves[1][1][-1]:.2f} dB)"
        )
    integrals = [PchipInterpolator(psnr, np.log(rate)).integrate(low, high) for rate, psnr in curves]
    mean_log_ratio = (integrals[0] - integrals[1]) / (high - low)
    return float(100.0 * (math.exp(mean_log_ratio) - 1.0)), None


def rate_at_psnr(rate, psnr, at: float) -> float:
    """The rate a curve needs for PSNR ``at``: ``ln R`` interpolated as a monotone cubic of
    PSNR over the curve's Pareto-optimal points (as :func:`bd_rate`); NaN outside the
    PSNR range the curve covers or with fewer than 2 usable points."""
    rate, psnr = _rd_envelope(rate, psnr)
    if len(rate) < 2 or not psnr[0] <= at <= psnr[-1]:
        return math.nan
    return float(np.exp(PchipInterpolator(psnr, np.log(rate))(at)))

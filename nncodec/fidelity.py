"""Scientific fidelity metrics comparing an original field with its decoded version.

Every function takes ``(original, decoded)`` arrays of equal shape whose last two
dimensions are (lat/y, lon/x); leading dimensions (time, level, member, ...) are
treated as a stack of 2D slices. The metrics are NaN-aware: statistics use only the
points where *both* arrays are finite, and a change of the NaN mask is reported
separately by ``nan_mask_identical``.

Inputs may be numpy or dask arrays. With a dask array nothing is materialised as a
whole: global statistics are dask reductions, and the per-slice metrics (power
spectrum, gradient, SSIM) run block-wise, so a single 2D slice has to fit in memory
but the variable does not. The 99th / 99.9th quantiles are exact for numpy input and
histogram-based for dask input (see :func:`fidelity_report`).

:func:`choose_setting` turns acceptance thresholds into a codec setting: it searches the
learned quality levels and a ladder of error bounds for the cheapest setting whose decoded
sample chunks meet every threshold.

The definitions and formulas are documented in ``docs/metrics.md``.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from numbers import Real
from pathlib import Path

import dask
import dask.array as da
import numpy as np
from scipy import ndimage

from .codec import NNCodec

__all__ = [
    "THRESHOLD_KEYS",
    "FidelityChoice",
    "Trial",
    "as_thresholds",
    "check_thresholds",
    "choose_setting",
    "fidelity_report",
    "load_thresholds",
    "spectral_band_edges",
]

#: Quantiles compared by ``q99_diff`` and ``q999_diff``.
_QUANTILES = (0.99, 0.999)
#: Number of histogram bins for the approximate quantiles of dask input.
_QUANTILE_BINS = 2**16
#: Gaussian SSIM window: sigma 1.5 px truncated at radius 5 (an 11x11 window).
_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 5 / _SSIM_SIGMA
#: SSIM stabilising constants, as fractions of the data range.
_SSIM_K1, _SSIM_K2 = 0.01, 0.03
#: Per-slice sums returned by the block kernel, after the 2 * n_bands band powers.
_N_SLICE_SUMS = 5

#: Error bounds tried by :func:`choose_setting`, as fractions of the samples' value range:
#: ``10**(-k/2)`` for k = 2..14, loosest (cheapest) first.
_BOUND_FRACTIONS = tuple(10 ** (-k / 2) for k in range(2, 15))

#: Valid keys of a thresholds mapping, with what each one bounds.
THRESHOLD_KEYS = {
    "correlation_min": "correlation >= value",
    "ssim_min": "ssim >= value",
    "bias_sigma_max": "|bias_sigma| <= value",
    "std_ratio_tol": "|std_ratio - 1| <= value",
    "abs_error_max": "max_abs_error <= value",
    "rmse_max": "rmse <= value",
    "extremes_error_max": "max(|max_diff|, |min_diff|) <= value",
    "quantile_error_max": "max(|q99_diff|, |q999_diff|) <= value",
    "spectral_error_max": "max spectral_rel_error over bands with lower edge <= spectral_k_max",
    "spectral_k_max": "wavenumber limit for spectral_error_max (default: all bands)",
    "gradient_error_max": "gradient_rel_error <= value",
    "zonal_mean_error_max": "zonal_mean_max_abs_error <= value",
    "require_nan_mask": "if true, nan_mask_identical must be true",
}


def _prepare(original, decoded):
    """Validate the pair and return them as float64 arrays plus a dask flag."""
    lazy = isinstance(original, da.Array) or isinstance(decoded, da.Array)
    xp = da if lazy else np
    o = xp.asarray(original)
    d = xp.asarray(decoded)
    if o.shape != d.shape:
        raise ValueError(f"original shape {o.shape} differs from decoded shape {d.shape}")
    if o.ndim < 2 or o.shape[-1] < 2 or o.shape[-2] < 2:
        raise ValueError(f"need arrays with at least 2 dims of size >= 2 (y, x) last; got shape {o.shape}")
    for name, arr in (("original", o), ("decoded", d)):
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    # float64 throughout: the sums of squares below lose precision in float32.
    return o.astype(np.float64), d.astype(np.float64), lazy


def spectral_band_edges(ny: int, nx: int, n_bands: int = 10) -> np.ndarray:
    """Log-spaced integer wavenumber band edges for an ``ny x nx`` field.

    Wavenumbers count whole waves across the domain along each axis; the radial
    wavenumber is ``k = hypot(ky, kx)``. Band ``i`` holds the modes with
    ``edges[i] <= k < edges[i + 1]``; the last edge is ``min(ny, nx) // 2 + 1`` so the
    last band ends at the largest full circle inside the Nyquist square. Edges are
    rounded to integers and de-duplicated, so every band holds at least one mode
    and small fields get fewer than ``n_bands`` bands.

    Parameters
    ----------
    ny, nx : int
        Field size along y and x (each >= 2).
    n_bands : int
        Requested number of bands (>= 1).

    Returns
    -------
    numpy.ndarray
        Increasing float band edges, ``len(edges) - 1`` bands.
    """
    if n_bands < 1:
        raise ValueError(f"n_bands must be >= 1, got {n_bands}")
    if min(ny, nx) < 2:
        raise ValueError(f"field must be at least 2x2, got {ny}x{nx}")
    k_top = min(ny, nx) // 2 + 1
    return np.unique(np.round(np.geomspace(1, k_top, n_bands + 1)))


def _radial_band_index(ny: int, nx: int, edges: np.ndarray) -> np.ndarray:
    """Band number of every FFT mode (``-1`` outside all bands, e.g. k = 0)."""
    ky = np.fft.fftfreq(ny) * ny
    kx = np.fft.fftfreq(nx) * nx
    k = np.hypot(ky[:, None], kx[None, :])
    band = np.digitize(k, edges) - 1
    band[(k < edges[0]) | (k >= edges[-1])] = -1
    return band


def _band_power(field: np.ndarray, finite: np.ndarray, band: np.ndarray, n_bands: int) -> np.ndarray:
    """Summed normalised power per band of one 2D slice, NaNs filled by the slice mean."""
    if not finite.any():
        return np.zeros(n_bands)
    filled = np.where(finite, field, field[finite].mean())
    power = np.abs(np.fft.fft2(filled)) ** 2 / filled.size**2
    inside = band >= 0
    return np.bincount(band[inside], weights=power[inside], minlength=n_bands)


def _ssim_sums(o: np.ndarray, d: np.ndarray, valid: np.ndarray, offset: float, data_range: float):
    """Sum and count of the SSIM map over the valid pixels of one 2D slice.

    Local statistics are Gaussian-weighted with the invalid pixels given zero weight
    (normalised convolution), so NaN regions never leak into their neighbours.
    """
    w = valid.astype(np.float64)
    # Shift by the original's minimum so the luminance term sees values in
    # [0, data_range] like image data, independent of the unit's zero (K vs degC).
    x = np.where(valid, o - offset, 0.0)
    y = np.where(valid, d - offset, 0.0)

    def smooth(a):
        return ndimage.gaussian_filter(a, _SSIM_SIGMA, truncate=_SSIM_TRUNCATE, mode="reflect")

    weight = smooth(w)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = smooth(w * x) / weight
        my = smooth(w * y) / weight
        vx = smooth(w * x * x) / weight - mx * mx
        vy = smooth(w * y * y) / weight - my * my
        cxy = smooth(w * x * y) / weight - mx * my
    # A constant original has no range; fall back to unit range so SSIM stays defined.
    scale = data_range if data_range > 0 else 1.0
    c1 = (_SSIM_K1 * scale) ** 2
    c2 = (_SSIM_K2 * scale) ** 2
    ssim = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(ssim[valid].sum()), float(valid.sum())


def _gradient_sums(o: np.ndarray, d: np.ndarray, valid: np.ndarray):
    """Sums for the gradient-magnitude error of one 2D slice (NaN-aware)."""
    go = np.hypot(*np.gradient(np.where(valid, o, np.nan)))
    gd = np.hypot(*np.gradient(np.where(valid, d, np.nan)))
    ok = np.isfinite(go) & np.isfinite(gd)
    return float(((gd[ok] - go[ok]) ** 2).sum()), float((go[ok] ** 2).sum())


def _slice_stats(o: np.ndarray, d: np.ndarray, edges: np.ndarray, offset: float, data_range: float):
    """Per-slice sums for the spectral, gradient and SSIM metrics.

    Returns an array of shape ``o.shape[:-2] + (2 * n_bands + 5,)``: band powers of
    the original, of the decoded field, then SSIM sum, SSIM count, gradient
    squared-difference sum, original gradient squared sum and a slice count (1 when the slice holds valid points), so a plain sum over slices
    combines them.
    """
    n_bands = len(edges) - 1
    band = _radial_band_index(o.shape[-2], o.shape[-1], edges)
    out = np.zeros(o.shape[:-2] + (2 * n_bands + _N_SLICE_SUMS,))
    for idx in np.ndindex(o.shape[:-2]):
        os_, ds_ = o[idx], d[idx]
        fo, fd = np.isfinite(os_), np.isfinite(ds_)
        valid = fo & fd
        if not valid.any():
            continue
        out[idx][:n_bands] = _band_power(os_, fo, band, n_bands)
        out[idx][n_bands : 2 * n_bands] = _band_power(ds_, fd, band, n_bands)
        out[idx][2 * n_bands :] = (
            *_ssim_sums(os_, ds_, valid, offset, data_range),
            *_gradient_sums(os_, ds_, valid),
            1.0,
        )
    return out


def _compute(lazy: bool, values: dict) -> dict:
    """Evaluate a dict of (possibly lazy) reductions in one dask pass."""
    if lazy:
        (values,) = dask.compute(values)
    return {k: np.asarray(v) for k, v in values.items()}


def _hist_quantile(counts: np.ndarray, edges: np.ndarray, q: float) -> float:
    """Quantile from a histogram, with numpy's default (linear) quantile definition.

    The samples of each bin are taken as evenly spread over it, so each order
    statistic, and hence the interpolated quantile, is off by less than one bin width.
    """
    cdf = np.cumsum(counts)
    pos = q * (cdf[-1] - 1)
    rank = math.floor(pos)

    def order_statistic(r):
        i = int(np.searchsorted(cdf, r, side="right"))
        before = cdf[i - 1] if i > 0 else 0.0
        return edges[i] + (r - before + 0.5) / counts[i] * (edges[i + 1] - edges[i])

    low = order_statistic(rank)
    high = order_statistic(min(rank + 1, cdf[-1] - 1))
    return float(low + (pos - rank) * (high - low))


def _lazy_histograms(o, d, valid, lo: float, hi: float) -> dict:
    """Lazy histograms of the valid values of both fields on one shared bin grid.

    Sharing the grid makes the two fields' binning errors largely cancel in the
    quantile difference; each quantile is off by less than one bin width.
    """
    kw = {"bins": _QUANTILE_BINS, "range": (lo, hi if hi > lo else lo + 1.0), "weights": valid.astype(np.float64)}
    hist_o, edges = da.histogram(da.where(valid, o, lo), **kw)
    hist_d, _ = da.histogram(da.where(valid, d, lo), **kw)
    return {"hist_o": hist_o, "hist_d": hist_d, "hist_edges": edges}


def fidelity_report(original, decoded, n_bands: int = 10) -> dict:
    """Compute all fidelity metrics of ``decoded`` against ``original``.

    Parameters
    ----------
    original, decoded : numpy.ndarray or dask.array.Array
        Arrays of equal shape, ``ndim >= 2``, last two dims (y, x) each >= 2.
        Integer input is converted to float64. If either is a dask array the
        computation is lazy and chunked (a single 2D slice must fit in memory).
    n_bands : int
        Requested number of log-spaced wavenumber bands for the spectrum.

    Returns
    -------
    dict
        Stable keys (see ``docs/metrics.md`` for the formulas):

        ``n_valid`` (int), ``data_range``, ``mean_bias``, ``bias_sigma``,
        ``std_original``, ``std_ratio``, ``correlation``, ``rmse``,
        ``max_abs_error``, ``max_diff``, ``min_diff``, ``q99_diff``, ``q999_diff``,
        ``quantiles_exact`` (bool: False for dask input, where quantiles come from a
        65536-bin histogram over the joint range, each off by less than a bin
        width), ``spectrum_k_edges``, ``spectrum_power_original``,
        ``spectrum_power_decoded``, ``spectral_rel_error`` (lists, one value per
        band), ``gradient_rel_error``, ``zonal_mean_max_abs_error``,
        ``nan_mask_identical`` (bool) and ``ssim``. Degenerate inputs (no valid
        point, a constant original) give NaN or inf where a ratio is undefined.
    """
    o, d, lazy = _prepare(original, decoded)
    xp = da if lazy else np
    valid = xp.isfinite(o) & xp.isfinite(d)
    o0 = xp.where(valid, o, 0.0)
    d0 = xp.where(valid, d, 0.0)
    n_row = valid.sum(axis=-1)
    # Rows without a valid point get -inf so the max skips them.
    n_safe = xp.maximum(n_row, 1)
    zonal_diff = xp.where(n_row > 0, xp.abs(d0.sum(axis=-1) - o0.sum(axis=-1)) / n_safe, -np.inf)
    first = _compute(
        lazy,
        {
            "n": valid.sum(),
            "sum_o": o0.sum(),
            "sum_d": d0.sum(),
            "max_o": xp.where(valid, o, -np.inf).max(),
            "min_o": xp.where(valid, o, np.inf).min(),
            "max_d": xp.where(valid, d, -np.inf).max(),
            "min_d": xp.where(valid, d, np.inf).min(),
            "max_abs": xp.abs(d0 - o0).max(),
            "sq_err": ((d0 - o0) ** 2).sum(),
            "zonal": zonal_diff.max(),
            "mask_same": (xp.isnan(o) == xp.isnan(d)).all(),
        },
    )
    n = float(first["n"])
    if n == 0:
        mean_o = mean_d = math.nan
        data_range = math.nan
    else:
        mean_o = float(first["sum_o"]) / n
        mean_d = float(first["sum_d"]) / n
        data_range = float(first["max_o"] - first["min_o"])

    edges = spectral_band_edges(o.shape[-2], o.shape[-1], n_bands)
    nb = len(edges) - 1
    stat_args = {"edges": edges, "offset": float(first["min_o"]) if n else 0.0, "data_range": data_range}
    if lazy:
        # Whole 2D slices per block; leading dims keep their chunking.
        full = {o.ndim - 2: -1, o.ndim - 1: -1}
        oc = o.rechunk(full)
        dc = d.rechunk(oc.chunks)
        slice_stats = da.map_blocks(
            _slice_stats,
            oc,
            dc,
            **stat_args,
            drop_axis=o.ndim - 1,
            chunks=oc.chunks[:-2] + ((2 * nb + _N_SLICE_SUMS,),),
            dtype=np.float64,
        )
    else:
        slice_stats = _slice_stats(o, d, **stat_args)
    pending = {
        "var_o": (xp.where(valid, o - mean_o, 0.0) ** 2).sum(),
        "var_d": (xp.where(valid, d - mean_d, 0.0) ** 2).sum(),
        "cov": (xp.where(valid, (o - mean_o) * (d - mean_d), 0.0)).sum(),
        "slices": slice_stats.reshape((-1, 2 * nb + _N_SLICE_SUMS)).sum(axis=0),
    }
    if lazy and n:
        lo = float(min(first["min_o"], first["min_d"]))
        hi = float(max(first["max_o"], first["max_d"]))
        pending.update(_lazy_histograms(o, d, valid, lo, hi))
    second = _compute(lazy, pending)
    if not n:
        q_diffs = [math.nan] * len(_QUANTILES)
    elif lazy:
        q_diffs = [
            _hist_quantile(second["hist_d"], second["hist_edges"], q)
            - _hist_quantile(second["hist_o"], second["hist_edges"], q)
            for q in _QUANTILES
        ]
    else:
        q_diffs = list(np.quantile(d[valid], _QUANTILES) - np.quantile(o[valid], _QUANTILES))

    s = second["slices"]
    p_orig, p_dec = s[:nb], s[nb : 2 * nb]
    ssim_sum, ssim_n, gsq_diff, gsq_orig, n_slices = s[2 * nb :]
    modes = np.bincount(_radial_band_index(o.shape[-2], o.shape[-1], edges).ravel() + 1, minlength=nb + 1)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        # Mean power per mode and slice, so the spectrum does not depend on band width.
        norm = modes * max(n_slices, 1.0)
        spectral_err = np.abs(p_dec - p_orig) / p_orig
        std_o = math.sqrt(second["var_o"] / n) if n else math.nan
        std_d = math.sqrt(second["var_d"] / n) if n else math.nan
        bias = mean_d - mean_o
        report = {
            "n_valid": int(n),
            "data_range": data_range,
            "mean_bias": bias,
            "bias_sigma": float(np.float64(bias) / std_o),
            "std_original": std_o,
            "std_ratio": float(np.float64(std_d) / std_o),
            "correlation": float(np.clip(second["cov"] / np.sqrt(second["var_o"] * second["var_d"]), -1, 1)),
            "rmse": math.sqrt(first["sq_err"] / n) if n else math.nan,
            "max_abs_error": float(first["max_abs"]) if n else math.nan,
            "max_diff": float(first["max_d"] - first["max_o"]) if n else math.nan,
            "min_diff": float(first["min_d"] - first["min_o"]) if n else math.nan,
            "q99_diff": float(q_diffs[0]),
            "q999_diff": float(q_diffs[1]),
            "quantiles_exact": not lazy,
            "spectrum_k_edges": edges.tolist(),
            "spectrum_power_original": (p_orig / norm).tolist(),
            "spectrum_power_decoded": (p_dec / norm).tolist(),
            "spectral_rel_error": spectral_err.tolist(),
            "gradient_rel_error": float(np.sqrt(np.float64(gsq_diff) / gsq_orig)),
            "zonal_mean_max_abs_error": float(first["zonal"]) if n else math.nan,
            "nan_mask_identical": bool(first["mask_same"]),
            "ssim": float(np.float64(ssim_sum) / ssim_n),
        }
    return report


def _validate_thresholds(thresholds) -> dict:
    """Check keys and value types of a thresholds mapping; return a plain dict copy."""
    if not isinstance(thresholds, dict):
        raise TypeError(f"thresholds must be a mapping, got {type(thresholds).__name__}")
    unknown = sorted(set(thresholds) - set(THRESHOLD_KEYS))
    if unknown:
        raise ValueError(f"unknown threshold key(s) {unknown}; valid keys are {sorted(THRESHOLD_KEYS)}")
    for key, value in thresholds.items():
        if key == "require_nan_mask":
            if not isinstance(value, bool):
                raise TypeError(f"threshold {key!r} must be true or false, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, Real) or math.isnan(value):
            raise TypeError(f"threshold {key!r} must be a number, got {value!r}")
    if "spectral_k_max" in thresholds and "spectral_error_max" not in thresholds:
        raise ValueError("spectral_k_max only qualifies spectral_error_max, which is missing")
    return dict(thresholds)


def check_thresholds(report: dict, thresholds: dict) -> tuple[bool, list[str]]:
    """Compare a :func:`fidelity_report` result with acceptance thresholds.

    Parameters
    ----------
    report : dict
        Output of :func:`fidelity_report`.
    thresholds : dict
        Keys from :data:`THRESHOLD_KEYS`, e.g. ``{"correlation_min": 0.99999,
        "spectral_error_max": 0.05, "spectral_k_max": 32, "bias_sigma_max": 0.01,
        "abs_error_max": 0.1, "ssim_min": 0.99}``. A metric that is NaN fails.

    Returns
    -------
    ok : bool
        True when every threshold holds.
    failures : list of str
        One human-readable line per violated threshold.

    Raises
    ------
    ValueError
        On an unknown key (the message lists the valid ones).
    """
    limits = _validate_thresholds(thresholds)
    failures = []

    def check(key, value, passed):
        if isinstance(value, float) and math.isnan(value):
            failures.append(f"{key}: metric is NaN (limit {limits[key]})")
        elif not passed:
            failures.append(f"{key}: {THRESHOLD_KEYS[key]} violated (metric {value:.6g}, limit {limits[key]})")

    lower = {"correlation_min": report["correlation"], "ssim_min": report["ssim"]}
    upper = {
        "bias_sigma_max": abs(report["bias_sigma"]),
        "std_ratio_tol": abs(report["std_ratio"] - 1),
        "abs_error_max": report["max_abs_error"],
        "rmse_max": report["rmse"],
        "extremes_error_max": max(abs(report["max_diff"]), abs(report["min_diff"])),
        "quantile_error_max": max(abs(report["q99_diff"]), abs(report["q999_diff"])),
        "gradient_error_max": report["gradient_rel_error"],
        "zonal_mean_error_max": report["zonal_mean_max_abs_error"],
    }
    if "spectral_error_max" in limits:
        k_max = limits.get("spectral_k_max", math.inf)
        errs = [e for lo, e in zip(report["spectrum_k_edges"], report["spectral_rel_error"]) if lo <= k_max]
        upper["spectral_error_max"] = max(errs) if errs else math.nan
    for key, value in lower.items():
        if key in limits:
            check(key, value, value >= limits[key])
    for key, value in upper.items():
        if key in limits:
            check(key, value, value <= limits[key])
    if limits.get("require_nan_mask") and not report["nan_mask_identical"]:
        failures.append("require_nan_mask: the NaN mask of the decoded field differs from the original")
    return not failures, failures


def load_thresholds(path) -> dict:
    """Read acceptance thresholds from a YAML mapping file.

    Parameters
    ----------
    path : str or os.PathLike
        YAML file with a top-level mapping of keys from :data:`THRESHOLD_KEYS`.

    Returns
    -------
    dict
        The validated thresholds, ready for :func:`check_thresholds`.
    """
    import yaml  # only needed here; keeps the metrics importable without pyyaml

    text = Path(path).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping of threshold keys, got {type(data).__name__}")
    return _validate_thresholds(data)


def as_thresholds(spec) -> dict:
    """Acceptance thresholds from a YAML file or a mapping, validated.

    Parameters
    ----------
    spec : str, os.PathLike or dict
        A YAML file (see :func:`load_thresholds`) or a mapping of keys from
        :data:`THRESHOLD_KEYS`.

    Returns
    -------
    dict
        A validated copy, ready for :func:`check_thresholds`.
    """
    if isinstance(spec, (str, os.PathLike)):
        return load_thresholds(spec)
    return _validate_thresholds(spec)


# -- choosing a codec setting ------------------------------------------------------------
@dataclass
class Trial:
    """One codec setting tried by :func:`choose_setting` on the sample chunks.

    Attributes
    ----------
    setting : dict
        Keyword arguments of :class:`nncodec.NNCodec`: ``{"quality": q}`` or ``{"abs_error": e}``.
    bytes, values : int
        Compressed bytes and values of the sample chunks coded. A trial ends at the first
        chunk that fails, or once it has more bytes than a setting that passed, so its
        figures may cover only the chunks up to that one.
    passed : bool
        Every threshold held on every sample chunk.
    failures : list of str
        The :func:`check_thresholds` lines of the chunk that failed.
    dearer : bool
        Stopped because it already had more bytes than a setting that passed; its
        fidelity is unknown and does not matter (it cannot be chosen).
    """

    setting: dict
    bytes: int = 0
    values: int = 0
    passed: bool = True
    failures: list = field(default_factory=list)
    dearer: bool = False

    @property
    def bits_per_value(self) -> float:
        return 8 * self.bytes / self.values

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v:.4g}" for k, v in self.setting.items())


@dataclass
class FidelityChoice:
    """The codec setting :func:`choose_setting` picked, and every setting it tried.

    Attributes
    ----------
    setting : dict
        Keyword arguments of :class:`nncodec.NNCodec` to code the variable with.
    samples : int
        Number of sample chunks the settings were tried on.
    tried : list of Trial
        In the order tried.
    """

    setting: dict
    samples: int
    tried: list

    @property
    def chosen(self) -> Trial:
        """The trial of the chosen setting."""
        return next(t for t in self.tried if t.passed and t.setting == self.setting)

    def explain(self) -> list[str]:
        """What was chosen and why: a summary line, then one line per setting tried."""
        best = self.chosen
        lines = [
            f"{best.label}: {best.bits_per_value:.3g} bits/value on {self.samples} sample chunk(s), the fewest "
            f"bytes among the settings that meet every threshold ({sum(t.passed for t in self.tried)} of "
            f"{len(self.tried)} tried)"
        ]
        for t in self.tried:
            outcome = "pass" if t.passed else "stopped, more bytes than a setting that passed" if t.dearer else "FAIL"
            line = f"{t.label}: {outcome}, {t.bits_per_value:.3g} bits/value"
            lines.append(line + ("; " + "; ".join(t.failures) if t.failures else ""))
        return lines

    def to_dict(self) -> dict:
        """A JSON-ready record (what :func:`nncodec.parallel.compress` stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> FidelityChoice:
        """The inverse of :meth:`to_dict`."""
        return cls(record["setting"], record["samples"], [Trial(**t) for t in record["tried"]])


def choose_setting(samples, thresholds, model=None, refine: int = 0) -> FidelityChoice:
    """The cheapest codec setting whose decoded sample chunks meet every threshold.

    Two families of settings are searched: the learned quality levels (1 to the model's
    top level) and error bounds ``abs_error`` on a geometric ladder, ``R * 10**(-k/2)``
    for k = 2..14 with ``R`` the finite value range of the samples. With
    ``abs_error_max`` among the thresholds the ladder starts at exactly that bound and
    keeps only the tighter rungs, so the bounded family meets that threshold on every
    chunk, not just on the samples.

    Fidelity is assumed to rise, and the size to grow, along each family (from level 1
    up, from the loosest bound down). Each family is searched from its cheapest member:
    members 1, 2, 4, 8, ... until one passes, then bisection of the last gap, so a
    family takes 1 trial when its cheapest member passes and about ``2 log2(n)`` at
    most. A setting passes when :func:`check_thresholds` holds on the
    :func:`fidelity_report` of every sample chunk on its own; a trial stops at the first
    chunk that fails, or once its bytes exceed those of a setting that passed (it cannot
    win, and the search goes on to cheaper members). Of the settings that passed, the
    one with the fewest compressed bytes over the samples is chosen.

    Parameters
    ----------
    samples : list of numpy.ndarray
        Chunks of one variable, as the codec will see them (last two dims y, x).
    thresholds : dict, str or os.PathLike
        Acceptance thresholds, or a YAML file of them (see :func:`as_thresholds`).
    model : str, optional
        Model id or weights file of :class:`nncodec.NNCodec`.
    refine : int
        Encoder-side refinement steps of :class:`nncodec.NNCodec`, used in every trial.

    Returns
    -------
    FidelityChoice
        ``setting`` holds the codec keyword arguments; ``tried`` every trial with its
        bytes, bits per value, outcome and failure lines.

    Raises
    ------
    ValueError
        No sample, or no setting passes: the message names the thresholds that even the
        most faithful settings tried fail.
    """
    limits = as_thresholds(thresholds)
    chunks = [np.asarray(s) for s in samples]
    if not chunks:
        raise ValueError("choose_setting needs at least one sample chunk")
    from .weights import load

    families = [
        # the runtime the encoder uses (device "auto"), so the weights are loaded once
        [{"quality": q} for q in range(1, load(model, "auto").qualities + 1)],
        [{"abs_error": e} for e in _bound_ladder(chunks, limits.get("abs_error_max"))],
    ]
    tried = []

    def cheaper_wins(setting):
        budget = min((t.bytes for t in tried if t.passed), default=None)
        tried.append(_trial(setting, chunks, limits, model, refine, budget))
        return tried[-1].passed or tried[-1].dearer

    for family in families:
        _search(family, cheaper_wins)
    passing = [t for t in tried if t.passed]
    if not passing:
        dearest = [t for t in tried if any(family and t.setting == family[-1] for family in families)]
        detail = " | ".join(f"{t.label}: {'; '.join(t.failures)}" for t in dearest)
        raise ValueError(
            f"no codec setting meets the thresholds on the {len(chunks)} sample chunk(s); even the most "
            f"faithful settings tried fail ({detail}): loosen these thresholds, or compress with a fixed "
            "error bound (abs_error, --abs-error) instead of fidelity thresholds"
        )
    best = min(passing, key=lambda t: t.bytes)
    return FidelityChoice(best.setting, len(chunks), tried)


def _bound_ladder(chunks, abs_error_max) -> list[float]:
    """Error bounds to try, loosest first (see :func:`choose_setting`)."""
    finite = [c[np.isfinite(c)] for c in chunks]
    finite = [f for f in finite if f.size]
    span = float(max(f.max() for f in finite)) - float(min(f.min() for f in finite)) if finite else 0.0
    ladder = [span * f for f in _BOUND_FRACTIONS] if span > 0 else []
    if abs_error_max is not None:
        ladder = [float(abs_error_max)] + [e for e in ladder if e < abs_error_max]
    return [e for e in ladder if e > 0]


def _search(candidates: list, go_cheaper) -> None:
    """Find the first candidate (cheapest first) for which ``go_cheaper`` is true.

    Every candidate after such a one is taken to be true too. Candidates 0, 1, 3, 7, ...
    are tried until one is true, then the gap after the last false one is bisected.
    """
    lo, hi, probe = 0, len(candidates), 0  # false before lo, true from hi on
    while lo < hi:
        if go_cheaper(candidates[probe]):
            hi = probe
            break
        lo, probe = probe + 1, min(2 * probe + 1, hi - 1)
    while lo < hi:
        mid = (lo + hi) // 2
        if go_cheaper(candidates[mid]):
            hi = mid
        else:
            lo = mid + 1


def _trial(setting: dict, chunks, limits: dict, model, refine: int, budget) -> Trial:
    """Code the sample chunks with one setting and check each decoded chunk.

    ``budget``: the bytes of the best setting so far (None if none); more stops the trial.
    """
    codec = NNCodec(model=model, refine=refine, **setting)
    trial = Trial(dict(setting))
    for chunk in chunks:
        buf = codec.encode(chunk)
        trial.bytes += len(buf)
        trial.values += chunk.size
        if budget is not None and trial.bytes > budget:
            trial.passed, trial.dearer = False, True
            break
        ok, failures = check_thresholds(fidelity_report(chunk, codec.decode(buf)), limits)
        if not ok:
            trial.passed, trial.failures = False, failures
            break
    return trial

"""Benchmark orchestration: rate-distortion sweeps and speed runs over real fields.

:func:`run_bench` runs nncodec at every quality level and error bound, and each
baseline over its error-bound sweep, on a few 2D slices of every variable, then
writes ``results.json``, ``report.md`` and figures (see :mod:`nncodec.bench.report`).
:func:`run_speed` times encode/decode throughput of nncodec against SZ3 and SPERR.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from ..fidelity import fidelity_report
from . import report as _report
from .baselines import DEFAULT_ERROR_BOUNDS, Compressor, available_baselines
from .metrics import bd_rate, bits_per_value, compression_ratio, distortion_metrics, rate_at_psnr, timed

__all__ = ["run_bench", "run_speed"]

#: In rate-distortion runs, slices up to this many bytes are timed as the best of
#: ``repeats`` runs and larger ones once; speed runs time every slice ``repeats`` times.
_SMALL_BYTES = 4 * 2**20
#: Edge of the crop used to warm a codec up (model loading, JIT) before timing.
_WARMUP_EDGE = 32
#: Default nncodec quality levels when the model registry does not list them.
_DEFAULT_QUALITIES = tuple(range(1, 9))
#: PSNRs (dB) at which nncodec's best is set against the best error-bounded baseline
MATCHED_PSNRS = (35.0, 38.0, 41.0, 44.0, 47.0, 50.0)
_MATCHED_BASELINES = ("sz3", "zfp", "sperr")


@dataclass
class _Field:
    """Selected 2D slices of one variable, as a float stack ``(n, ny, nx)``."""

    source: str
    name: str
    shape: tuple
    units: str
    slice_index: list
    slices: np.ndarray
    notes: list = field(default_factory=list)

    @cached_property
    def value_range(self) -> float:
        finite = self.slices[np.isfinite(self.slices)]
        return float(finite.max() - finite.min()) if finite.size else 0.0


class _Progress:
    """tqdm when it is installed, else one plain line per step on stderr."""

    def __init__(self, total: int, enabled: bool):
        self.enabled = enabled
        self.total = total
        self.done = 0
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                pass
            else:
                self.bar = tqdm(total=total, desc="nncodec bench", file=sys.stderr)

    def step(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(label, refresh=False)
            self.bar.update()
        else:
            print(f"[{self.done}/{self.total}] {label}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _NNCodecCoder:
    """nncodec behind the baselines' ``encode`` / ``decode(buf, like)`` interface."""

    def __init__(self, codec_cls, kwargs: dict):
        self.codec = codec_cls(**kwargs)
        self.last_params = dict(kwargs)

    def encode(self, arr: np.ndarray) -> bytes:
        return self.codec.encode(arr)

    def decode(self, buf: bytes, like: np.ndarray) -> np.ndarray:
        return self.codec.decode(buf)


def _nncodec_class():
    """The NNCodec class, or None (with one message) when it cannot be imported."""
    try:
        from .. import NNCodec
    except ImportError as exc:
        print(f"nncodec bench: skipping nncodec: {exc}", file=sys.stderr)
        return None
    return NNCodec


def _default_qualities() -> list[int]:
    """Quality levels of the shipped model family (1..8 if the registry is absent)."""
    try:
        from ..models import list_models
    except ImportError:
        return list(_DEFAULT_QUALITIES)
    levels = set()
    for model in list_models():
        quality = model.get("quality")
        if isinstance(quality, (list, tuple)):
            levels.update(int(q) for q in quality)
        elif quality is not None:
            levels.update(range(1, int(quality) + 1))
    return sorted(levels) or list(_DEFAULT_QUALITIES)


def _open_arrays(path: Path) -> dict:
    """Name -> (array-like supporting integer indexing, units) for one input file."""
    if not path.exists():
        raise FileNotFoundError(f"benchmark input not found: {path}")
    if path.suffix == ".npz":
        with np.load(path) as data:
            return {name: (data[name], "") for name in data.files}
    import xarray as xr

    is_zarr = path.suffix == ".zarr" or (path.is_dir() and any((path / m).exists() for m in ("zarr.json", ".zgroup")))
    ds = xr.open_zarr(path) if is_zarr else xr.open_dataset(path)
    return {name: (ds[name], str(ds[name].attrs.get("units", ""))) for name in ds.data_vars}


def _is_field(arr) -> bool:
    dtype = np.dtype(arr.dtype)
    return arr.ndim >= 2 and dtype.kind in "fiu" and min(arr.shape[-2:]) >= 2


def _select_slices(source: str, name: str, arr, units: str, max_slices: int) -> _Field:
    """Pick up to ``max_slices`` evenly spaced 2D slices along the leading dims."""
    lead = tuple(arr.shape[:-2])
    n_lead = int(np.prod(lead)) if lead else 1
    picks = np.unique(np.linspace(0, n_lead - 1, min(max_slices, n_lead)).round().astype(int))
    index = [tuple(int(i) for i in np.unravel_index(p, lead)) for p in picks] if lead else [()]
    stack = np.stack([np.asarray(arr[idx]) for idx in index])
    notes = []
    if stack.dtype.kind != "f" or stack.dtype.itemsize < 4:
        # Every codec here takes float32/float64; integer data (e.g. relief) is widened.
        notes.append(f"{stack.dtype} converted to float32")
        stack = stack.astype(np.float32)
    return _Field(source, name, tuple(arr.shape), units, [list(i) for i in index], stack, notes)


def _input_paths(inputs) -> list[Path]:
    """One path or a sequence of them, as a non-empty list of paths."""
    paths = [Path(inputs)] if isinstance(inputs, (str, Path)) else [Path(p) for p in inputs]
    if not paths:
        raise ValueError("no benchmark inputs given")
    return paths


def _load_fields(paths: list[Path], variables, max_slices: int) -> list[_Field]:
    """Selected slices of the requested (default: every 2D+ numeric) variable of each input."""
    if isinstance(max_slices, bool) or not isinstance(max_slices, int) or max_slices < 1:
        raise ValueError(f"max_slices must be a positive integer, got {max_slices!r}")
    wanted = None if variables is None else [variables] if isinstance(variables, str) else list(variables)
    fields, seen = [], {}
    for path in paths:
        arrays = _open_arrays(path)
        seen.update({name: arr.shape for name, (arr, _) in arrays.items()})
        names = [n for n in arrays if _is_field(arrays[n][0])] if wanted is None else [n for n in wanted if n in arrays]
        for name in names:
            arr, units = arrays[name]
            if not _is_field(arr):
                raise ValueError(f"{path.name}:{name} is not a numeric field with >= 2 dims, shape {arr.shape}")
            fields.append(_select_slices(path.name, name, arr, units, max_slices))
    missing = sorted(set(wanted or ()) - set(seen))
    if missing:
        raise KeyError(f"variable(s) {missing} not found; available: {sorted(seen)}")
    if not fields:
        raise ValueError(f"no 2D+ numeric variables in the inputs; found {seen}")
    return fields


@dataclass
class _Plan:
    """What a run works on: inputs, loaded fields, usable codecs and quality levels."""

    paths: list
    fields: list
    baselines: list
    nn_cls: object
    qualities: list


def _plan(inputs, variables, max_slices, repeats, baselines, nncodec, qualities) -> _Plan:
    """Validate the common arguments of a run, load the fields and find the codecs."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    paths = _input_paths(inputs)
    fields = _load_fields(paths, variables, max_slices)
    names = available_baselines(list(baselines))
    nn_cls = _nncodec_class() if nncodec else None
    levels = list(qualities) if qualities is not None else (_default_qualities() if nn_cls else [])
    return _Plan(paths, fields, names, nn_cls, levels)


def _warm_up(coder, fld: _Field) -> None:
    """One untimed round trip on a small crop, so timings exclude one-off setup."""
    crop = np.ascontiguousarray(fld.slices[0, :_WARMUP_EDGE, :_WARMUP_EDGE])
    coder.decode(coder.encode(crop), crop)


def _measure(coder, fld: _Field, repeats: int, repeat_large: bool):
    """Encode and decode every slice; return (bytes, encode s, decode s, decoded stack)."""
    n_bytes, enc_s, dec_s, decoded = 0, 0.0, 0.0, []
    for sl in fld.slices:
        reps = repeats if repeat_large or sl.nbytes <= _SMALL_BYTES else 1
        buf, t_enc = timed(coder.encode, sl, repeats=reps)
        out, t_dec = timed(coder.decode, buf, sl, repeats=reps)
        n_bytes += len(buf)
        enc_s += t_enc
        dec_s += t_dec
        decoded.append(np.asarray(out))
    return n_bytes, enc_s, dec_s, np.stack(decoded)


def _settings(nn_cls, qualities, error_bounds, target_psnrs, baselines) -> list[tuple]:
    """(codec, mode, value) of every point to run."""
    out = []
    if nn_cls is not None:
        out += [("nncodec", "quality", int(q)) for q in qualities]
        out += [("nncodec", "abs_error", float(e)) for e in error_bounds]
        out += [("nncodec", "target_psnr", float(p)) for p in target_psnrs]
    out += [(name, "rel_bound", float(e)) for name in baselines for e in error_bounds]
    return out


def _coder(nn_cls, codec: str, mode: str, value, value_range: float, device: str | None = None):
    """A coder with ``encode``, ``decode(buf, like)`` and ``last_params``.

    Error bounds are relative to the finite range of the selected slices, the same
    absolute bound for nncodec and the baselines. ``device``: nncodec's, if given.
    """
    scale = value_range if value_range > 0 else 1.0
    if codec != "nncodec":
        return Compressor(codec, value, value_range=scale)
    kwargs = {"quality": {"quality": value}, "abs_error": {"abs_error": value * scale}, "target_psnr": {"target_psnr": value}}
    return _NNCodecCoder(nn_cls, {**kwargs[mode], **({"device": device} if device else {})})


def _speed_devices() -> list[str]:
    """The CPU, and CUDA when torch sees a GPU."""
    import torch

    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def _run_point(coder, fld: _Field, repeats: int, with_fidelity: bool):
    """Measure one setting; return its point dict (a speed run, without fidelity, times
    large slices ``repeats`` times too)."""
    _warm_up(coder, fld)
    n_bytes, enc_s, dec_s, decoded = _measure(coder, fld, repeats, repeat_large=not with_fidelity)
    orig_bytes = fld.slices.nbytes
    point = {
        "bytes": n_bytes,
        "n_values": int(fld.slices.size),
        "bpp": bits_per_value(n_bytes, fld.slices.size),
        "ratio": compression_ratio(orig_bytes, n_bytes),
        "encode_mbps": orig_bytes / 1e6 / enc_s if enc_s > 0 else math.inf,
        "decode_mbps": orig_bytes / 1e6 / dec_s if dec_s > 0 else math.inf,
        "params": dict(coder.last_params),
    }
    if with_fidelity:
        fid = fidelity_report(fld.slices, decoded)
        point.update(distortion_metrics(fid))
        point["fidelity"] = fid
    return point


def _series(points) -> dict:
    """Group successful points by (codec, mode) into label -> points."""
    groups = {}
    for p in points:
        if "error" not in p:
            groups.setdefault(_report.series_label(p), []).append(p)
    return groups


def _bd_rates(series: dict) -> list[dict]:
    """BD-rate (bits per value vs PSNR) of every nncodec series against every baseline."""
    rows = []
    for nn_label, nn_points in series.items():
        if not nn_label.startswith("nncodec"):
            continue
        for base_label, base_points in series.items():
            if base_label.startswith("nncodec"):
                continue
            value, reason = bd_rate(
                [p["bpp"] for p in nn_points],
                [p["psnr"] for p in nn_points],
                [p["bpp"] for p in base_points],
                [p["psnr"] for p in base_points],
            )
            rows.append({"codec": nn_label, "baseline": base_label, "bd_rate_percent": value, "reason": reason})
    return rows


def _matched_psnr(series: dict) -> list[dict]:
    """Per PSNR of ``MATCHED_PSNRS``: the bits per value nncodec needs there and those of
    the best of SZ3, ZFP and SPERR, and their ratio; NaN where no curve reaches.

    Each baseline is interpolated on its own curve. For nncodec the cheapest of each mode's
    own curve (a mode's settings are what a user picks between) and of one Pareto curve
    through all its points, which bridges modes where none reaches alone (e.g. 35 dB between
    ``abs_error`` and ``quality=1``). That one curve alone would zig-zag where modes
    interleave (a ``target_psnr`` point, then a costlier ``abs_error`` point barely better)
    and interpolate through bits no setting needs."""
    ours = [label for label in series if label.startswith("nncodec")]
    theirs = [label for label in series if label in _MATCHED_BASELINES]
    series = {**series, "nncodec all modes": [p for label in ours for p in series[label]]}
    ours.append("nncodec all modes")

    def needs(points, at):
        """The bits per value a curve needs for ``at`` dB: interpolated, or a point's own
        where a point past ``at`` needs fewer (a curve that starts above ``at``)."""
        rates = [p["bpp"] for p in points if p["psnr"] >= at]
        rates.append(rate_at_psnr([p["bpp"] for p in points], [p["psnr"] for p in points], at))
        return min((r for r in rates if not math.isnan(r)), default=math.nan)

    def cheapest(labels, at):
        """(bits per value, label) of the curve among ``labels`` that needs fewest at ``at``
        (the first of equals: a single mode before all modes together)."""
        rates = [(needs(series[k], at), k) for k in labels]
        return min(((r, k) for r, k in rates if not math.isnan(r)), key=lambda rk: rk[0], default=(math.nan, None))

    rows = []
    for at in MATCHED_PSNRS:
        (nn_rate, nn_label), (rate, best) = cheapest(ours, at), cheapest(theirs, at)
        rows.append({"psnr": at, "nncodec_bpp": nn_rate, "nncodec_mode": nn_label and nn_label[len("nncodec "):],
                     "baseline": best, "baseline_bpp": rate, "ratio": nn_rate / rate})
    return rows


def _similar_bpp(series: dict) -> dict:
    """One point per series close (in log bpp) to a common target bpp.

    The target is the median-quality nncodec point, else the middle SZ3 point,
    else the middle point of the first series.
    """
    plain = {k: v for k, v in series.items() if not k.startswith("nncodec") or k == "nncodec quality"}
    if not plain:
        return {}
    ref = plain.get("nncodec quality") or plain.get("sz3") or next(iter(plain.values()))
    target = sorted(p["bpp"] for p in ref)[len(ref) // 2]
    # every point has at least one byte, so bpp > 0
    return {label: min(pts, key=lambda p: abs(math.log(p["bpp"] / target))) for label, pts in plain.items()}


def _bench_field(fld: _Field, settings, nn_cls, repeats: int, bar: _Progress, out: Path, detailed: bool) -> dict:
    """Run every setting on one variable, draw its figures and return its record."""
    points = []
    for codec, mode, value in settings:
        bar.step(f"{fld.name} {codec} {mode}={value:g}")
        base = {"codec": codec, "mode": mode, "setting": value}
        try:
            coder = _coder(nn_cls, codec, mode, value, fld.value_range)
            points.append({**base, **_run_point(coder, fld, repeats, with_fidelity=True)})
        except Exception as exc:  # one failing setting must not end the whole benchmark
            print(f"nncodec bench: {fld.name} {codec} {mode}={value:g} failed: {exc!r}", file=sys.stderr)
            points.append({**base, "error": repr(exc)})
    series = _series(points)
    similar = _similar_bpp(series)
    first = fld.slices[0]
    # Figures show the first slice decoded at each series' similar-bpp point.
    decoded_first = {}
    for label, p in similar.items():
        coder = _coder(nn_cls, p["codec"], p["mode"], p["setting"], fld.value_range)
        decoded_first[label] = np.asarray(coder.decode(coder.encode(first), first))
    record = {
        "source": fld.source,
        "variable": fld.name,
        "units": fld.units,
        "shape": list(fld.shape),
        "slice_shape": list(fld.slices.shape[1:]),
        "slices": fld.slice_index,
        "value_range": fld.value_range,
        "notes": fld.notes,
        "points": points,
        "bd_rate": _bd_rates(series),
        "matched_psnr": _matched_psnr(series),
        "similar_bpp": {label: points.index(p) for label, p in similar.items()},
    }
    record["figures"] = _report.variable_figures(out, record, first, decoded_first, detailed=detailed)
    return record


def run_bench(
    inputs,
    variables=None,
    out_dir="nncodec-bench",
    *,
    qualities=None,
    error_bounds=DEFAULT_ERROR_BOUNDS,
    target_psnrs=(),
    baselines=("sz3", "zfp", "sperr", "bitround"),
    nncodec: bool = True,
    max_slices: int = 4,
    repeats: int = 3,
    progress: bool = True,
) -> dict:
    """Rate-distortion benchmark of nncodec against error-bounded baselines.

    For every variable a few evenly spaced 2D slices (all of them if there are no
    more than ``max_slices``) are compressed one slice at a time by nncodec at every
    quality level, in absolute-error mode at every error bound (and target-PSNR
    mode if asked), and by every baseline over the error-bound sweep.

    Parameters
    ----------
    inputs : str, path or sequence of them
        ``.npz`` files, netCDF files, or Zarr stores (the last two read with xarray).
    variables : str or sequence of str, optional
        Variables to benchmark; default every numeric variable with >= 2 dims.
    out_dir : str or path
        Output folder (created): ``results.json``, ``report.md`` and PNG figures.
    qualities : sequence of int, optional
        nncodec quality levels; default every level of the shipped model family.
    error_bounds : sequence of float
        Pointwise error bounds relative to the finite value range of the selected
        slices, used by the baselines' sweeps and nncodec's ``abs_error`` mode.
    target_psnrs : sequence of float
        PSNR targets (dB) for nncodec's ``target_psnr`` mode; empty to skip it.
    baselines : sequence of str
        Any of ``"sz3"``, ``"zfp"``, ``"sperr"``, ``"bitround"``. A baseline whose
        package is missing is skipped with one message.
    nncodec : bool
        Run nncodec (skipped with one message if it cannot be imported); False
        benchmarks the baselines alone.
    max_slices : int
        Most 2D slices per variable.
    repeats : int
        Timing repeats per slice (best is kept) for slices up to 4 MiB.
    progress : bool
        Show progress (tqdm if installed, else lines on stderr).

    Returns
    -------
    dict
        The content of ``results.json``: ``meta`` (hardware, versions, settings,
        definitions) and ``variables``, a list with per variable its ``points``
        (one dict per setting: rate, distortion, speed and ``fidelity``),
        ``bd_rate`` rows, ``matched_psnr`` rows (nncodec's best against the best of SZ3,
        ZFP and SPERR at the PSNRs of ``MATCHED_PSNRS``) and ``similar_bpp`` (the points
        compared in the figures).
    """
    bounds = [float(e) for e in error_bounds]
    if any(not 0 < e <= 1 for e in bounds):
        raise ValueError(f"error_bounds must lie in (0, 1], got {bounds}")
    plan = _plan(inputs, variables, max_slices, repeats, baselines, nncodec, qualities)
    nn_cls, fields = plan.nn_cls, plan.fields
    settings = _settings(nn_cls, plan.qualities, bounds, list(target_psnrs), plan.baselines)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    bar = _Progress(len(settings) * len(fields), progress)
    results = []
    try:
        for fld in fields:
            results.append(_bench_field(fld, settings, nn_cls, repeats, bar, out, detailed=not results))
    finally:
        bar.close()

    meta = {
        "environment": _report.environment_info(),
        "settings": {
            "inputs": [str(p) for p in plan.paths],
            "qualities": plan.qualities,
            "error_bounds": bounds,
            "target_psnrs": list(target_psnrs),
            "baselines": plan.baselines,
            "max_slices": max_slices,
            "repeats": repeats,
        },
        "definitions": _report.DEFINITIONS,
    }
    result = {"meta": meta, "variables": results}
    _report.write_results(out, result)
    return result


def run_speed(
    inputs,
    variables=None,
    out_dir=None,
    *,
    qualities=None,
    baselines=("sz3", "sperr"),
    nncodec: bool = True,
    error_bound: float = 1e-3,
    max_slices: int = 4,
    repeats: int = 3,
    progress: bool = True,
    devices=None,
) -> dict:
    """Encode/decode throughput of nncodec per quality (and device), and in its
    error-bounded mode, against SZ3 and SPERR.

    Every codec runs on the same slices (see :func:`run_bench`); the baselines and
    nncodec's ``abs_error`` at one error bound relative to the value range. Throughput
    is original bytes / best wall time, in MB/s (10**6 bytes). The ratio table (nncodec
    MB/s over baseline MB/s) is printed to stdout.

    Parameters
    ----------
    inputs, variables, qualities, nncodec, max_slices, repeats, progress
        As for :func:`run_bench`.
    out_dir : str or path, optional
        If given, ``speed.json`` is written there.
    baselines : sequence of str
        Baselines to compare with.
    error_bound : float
        The baselines' and nncodec's ``abs_error`` bound, relative to the value range.
    devices : sequence of str, optional
        Where nncodec's network runs: default ``["cpu"]``, plus ``"cuda"`` when torch
        sees a GPU.

    Returns
    -------
    dict
        ``meta`` and ``variables``: per variable its ``points`` (codec, mode,
        setting, ``device`` for nncodec, ``encode_mbps``, ``decode_mbps``, bytes) and
        ``ratios``.
    """
    if not 0 < error_bound <= 1:
        raise ValueError(f"error_bound must lie in (0, 1], got {error_bound!r}")
    plan = _plan(inputs, variables, max_slices, repeats, baselines, nncodec, qualities)
    nn_cls, fields = plan.nn_cls, plan.fields
    devices = list(devices) if devices is not None else _speed_devices()
    settings = [(*s, d) for s in _settings(nn_cls, plan.qualities, [], [], []) for d in devices]
    if nn_cls is not None:  # at the baselines' bound (coded on the host at tight bounds: one device)
        settings.append(("nncodec", "abs_error", error_bound, devices[0]))
    settings += [(n, "rel_bound", error_bound, None) for n in plan.baselines]
    bar = _Progress(len(settings) * len(fields), progress)
    results = []
    try:
        for fld in fields:
            points = []
            for codec, mode, value, device in settings:
                bar.step(f"{fld.name} {codec} {mode}={value:g}" + (f" {device}" if device else ""))
                coder = _coder(nn_cls, codec, mode, value, fld.value_range, device)
                point = _run_point(coder, fld, repeats, with_fidelity=False)
                points.append({"codec": codec, "mode": mode, "setting": value, **({"device": device} if device else {}),
                               **point})
            ratios = [
                {
                    "mode": nn["mode"],
                    "setting": nn["setting"],
                    "device": nn["device"],
                    "baseline": base["codec"],
                    "encode_ratio": nn["encode_mbps"] / base["encode_mbps"],
                    "decode_ratio": nn["decode_mbps"] / base["decode_mbps"],
                }
                for nn in points
                if nn["codec"] == "nncodec"
                for base in points
                if base["codec"] != "nncodec"
            ]
            results.append({"source": fld.source, "variable": fld.name, "points": points, "ratios": ratios})
    finally:
        bar.close()
    result = {"meta": {"environment": _report.environment_info(), "error_bound": error_bound}, "variables": results}
    print(_report.speed_table(result))
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        _report.write_json(Path(out_dir) / "speed.json", result)
    return result

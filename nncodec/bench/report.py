"""Benchmark outputs: ``results.json``, ``report.md`` and PNG figures.

Figures are drawn on :class:`matplotlib.figure.Figure` objects rendered by the Agg
canvas, so no pyplot state or GUI backend is touched.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np

__all__ = [
    "DEFINITIONS",
    "environment_info",
    "series_label",
    "speed_table",
    "variable_figures",
    "write_json",
    "write_results",
]

DEFINITIONS = {
    "psnr": "PSNR = 20 log10(R / RMSE) dB, R = max - min of the original's finite values over the "
    "benchmarked slices, RMSE over the points finite in both original and decoded",
    "bpp": "bits per value = 8 * compressed bytes / number of values (NaN included); every byte counts",
    "error_bounds": "baseline settings and nncodec abs_error are error bounds relative to R",
    "throughput": "MB/s = original bytes / 1e6 / best wall time of a few repeats (perf_counter), per slice, summed",
    "nan_handling": "SZ3, ZFP, SPERR and BitRound get NaN filled with the finite mean; the zlib-compressed "
    "bit-packed NaN mask is stored with them and counted in their bytes, and NaN is restored after "
    "decoding. nncodec stores its own mask.",
    "spectra": "isotropic power per log-spaced band of integer wavenumbers, NaN filled by the slice mean",
    "json": "non-finite numbers (inf PSNR of lossless points, undefined ratios) are written as null",
}

_VERSION_PACKAGES = (
    "numpy", "scipy", "numcodecs", "zarr", "xarray", "dask", "torch", "compressai",
    "pysz", "zfpy", "hdf5plugin", "h5py", "matplotlib",
)  # fmt: skip


def environment_info() -> dict:
    """CPU model, core count, Python and package versions of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        models = []
    if models:
        cpu = models[0]
    from .. import __version__

    versions = {"nncodec": __version__}
    for name in _VERSION_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def series_label(point: dict) -> str:
    """Curve a point belongs to: the baseline name, or ``nncodec <mode>``."""
    return point["codec"] if point["codec"] != "nncodec" else f"nncodec {point['mode']}"


def _jsonable(obj):
    """Replace non-finite floats by None (strict JSON) and numpy scalars by Python ones."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as strict, indented JSON."""
    Path(path).write_text(json.dumps(_jsonable(obj), indent=1, allow_nan=False) + "\n", encoding="utf-8")


def _fmt(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "NO"
    if isinstance(x, float) and math.isinf(x):
        return "∞" if x > 0 else "-∞"
    if isinstance(x, (int, np.integer)):
        return str(x)
    return f"{x:.{digits}g}"


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return lines


def _setting_text(p: dict) -> str:
    extra = p.get("params", {}).get("keepbits")
    text = f"{p['mode']}={_fmt(p['setting'], 3)}"
    if p["mode"] == "abs_error":  # nncodec's bound is given relative to R in the benchmark
        text += "·R"
    if p.get("device", "cpu") != "cpu":
        text += f" {p['device']}"
    return text + (f" (keepbits {extra})" if extra is not None else "")


def _spectral_max(fid: dict) -> float:
    errs = [e for e in fid["spectral_rel_error"] if e is not None and math.isfinite(e)]
    return max(errs) if errs else math.nan


def _variable_section(var: dict) -> list[str]:
    units = var["units"] or "units of the data"
    lines = [
        f"## {var['source']}: {var['variable']}",
        "",
        f"Shape {tuple(var['shape'])}, {len(var['slices'])} slice(s) of {tuple(var['slice_shape'])} "
        f"(leading indices {var['slices']}); units: {units}; value range R = {_fmt(var['value_range'])}.",
    ]
    lines += [f"Note: {n}." for n in var["notes"]]
    ok = [p for p in var["points"] if "error" not in p]
    lines += ["", "### Rate and distortion", ""]
    lines += _table(
        ["codec", "setting", "bytes", "bpp", "ratio", "PSNR [dB]", "RMSE", "max err", "max err / R", "enc MB/s", "dec MB/s"],
        [
            [p["codec"], _setting_text(p), p["bytes"], p["bpp"], p["ratio"], p["psnr"], p["rmse"],
             p["max_abs_error"], p["max_error_rel_range"], p["encode_mbps"], p["decode_mbps"]]
            for p in ok
        ],
    )  # fmt: skip
    failed = [p for p in var["points"] if "error" in p]
    lines += [f"- failed: {p['codec']} {_setting_text(p)}: `{p['error']}`" for p in failed]
    if var["bd_rate"]:
        lines += ["", "### BD-rate (bits per value at equal PSNR; negative: nncodec needs fewer bits)", ""]
        lines += _table(
            ["nncodec curve", "baseline", "BD-rate [%]", "note"],
            [[r["codec"], r["baseline"], r["bd_rate_percent"], r["reason"] or ""] for r in var["bd_rate"]],
        )
    if any(r["baseline"] for r in var.get("matched_psnr", [])):
        lines += ["", "### At equal PSNR: nncodec's best mode against the best of SZ3, ZFP and SPERR", ""]
        lines += _table(
            ["PSNR [dB]", "nncodec bpp", "its mode", "best baseline", "its bpp", "ratio"],
            [[r["psnr"], r["nncodec_bpp"], r.get("nncodec_mode") or "–", r["baseline"] or "–", r["baseline_bpp"],
              r["ratio"]] for r in var["matched_psnr"]],
        )  # fmt: skip
    if var["similar_bpp"]:
        chosen = {label: var["points"][i] for label, i in var["similar_bpp"].items()}
        lines += ["", "### Fidelity at similar bits per value", ""]
        lines += _table(
            ["codec", "setting", "bpp", "PSNR [dB]", "bias/σ", "std ratio", "corr", "SSIM", "grad err",
             "zonal err", "q99.9 diff", "max diff", "spectral err (max)", "NaN mask same"],
            [
                [label, _setting_text(p), p["bpp"], p["psnr"], f["bias_sigma"], f["std_ratio"], f["correlation"],
                 f["ssim"], f["gradient_rel_error"], f["zonal_mean_max_abs_error"], f["q999_diff"], f["max_diff"],
                 _spectral_max(f), f["nan_mask_identical"]]
                for label, p in chosen.items()
                for f in [p["fidelity"]]
            ],
        )  # fmt: skip
    lines.append("")
    lines += [f"![{name}]({name})" for name in var.get("figures", [])]
    return lines + [""]


def _markdown(result: dict) -> str:
    env = result["meta"]["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v is not None)
    lines = [
        "# nncodec benchmark",
        "",
        f"Hardware: {env['cpu']}, {env['cores']} cores; Python {env['python']} on {env['platform']}.",
        f"Versions: {versions}.",
        "",
    ]
    lines += [f"- **{k}**: {v}" for k, v in result["meta"]["definitions"].items()]
    lines.append("")
    for var in result["variables"]:
        lines += _variable_section(var)
    return "\n".join(lines)


def write_results(out_dir: Path, result: dict) -> None:
    """Write ``results.json`` and ``report.md`` into ``out_dir``."""
    out_dir = Path(out_dir)
    write_json(out_dir / "results.json", result)
    (out_dir / "report.md").write_text(_markdown(result), encoding="utf-8")


def speed_table(result: dict) -> str:
    """Plain-text throughput table and nncodec / baseline ratios of a speed run."""
    lines = []
    for var in result["variables"]:
        lines.append(f"{var['source']}:{var['variable']}")
        lines.append(f"  {'codec':<10} {'setting':<22} {'enc MB/s':>10} {'dec MB/s':>10}")
        for p in var["points"]:
            lines.append(
                f"  {p['codec']:<10} {_setting_text(p):<22} {p['encode_mbps']:>10.3g} {p['decode_mbps']:>10.3g}"
            )
        for r in var["ratios"]:
            lines.append(
                f"  nncodec {_setting_text(r)} / {r['baseline']}: "
                f"encode {r['encode_ratio']:.3g}x, decode {r['decode_ratio']:.3g}x"
            )
    return "\n".join(lines)


# -- figures ------------------------------------------------------------------------------


def _figure(nrows: int, ncols: int, width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig, out_dir: Path, name: str) -> str:
    fig.savefig(out_dir / name, dpi=110)
    return name


def _plain_log_x(ax) -> None:
    """Log x axis with plain numbers (0.5, 2, 10) instead of powers of ten."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _rd_figure(out_dir: Path, var: dict, stem: str) -> str:
    """Bits per value against PSNR and against max error / R, one curve per codec mode."""
    fig, axes = _figure(1, 2, 11, 4.2)
    series = {}
    for p in var["points"]:
        if "error" not in p:
            series.setdefault(series_label(p), []).append(p)
    for label, pts in series.items():
        pts = sorted(pts, key=lambda p: p["bpp"])
        bpp = [p["bpp"] for p in pts]
        axes[0, 0].plot(bpp, [p["psnr"] for p in pts], "o-", ms=3, label=label)
        axes[0, 1].plot(bpp, [p["max_error_rel_range"] for p in pts], "o-", ms=3, label=label)
    axes[0, 0].set(xlabel="bits per value", ylabel="PSNR [dB]", title="Rate vs PSNR")
    axes[0, 1].set(yscale="log", xlabel="bits per value", ylabel="max |error| / R", title="Rate vs max error")
    for ax in axes[0]:
        _plain_log_x(ax)
        ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{var['source']}: {var['variable']}")
    return _save(fig, out_dir, f"rd_{stem}.png")


def _fields_figure(out_dir: Path, var: dict, original: np.ndarray, decoded: dict, stem: str) -> str:
    """Original and decoded fields at similar bpp, with |error| maps underneath."""
    from matplotlib.colors import ListedColormap

    chosen = {label: var["points"][i] for label, i in var["similar_bpp"].items()}
    ncols = 1 + len(decoded)
    panel_w = 2.6
    panel_h = panel_w * original.shape[0] / original.shape[1]
    fig, axes = _figure(2, ncols, panel_w * ncols + 1.2, 2 * panel_h + 1.4)
    finite = original[np.isfinite(original)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    errors = {label: np.abs(dec - original) for label, dec in decoded.items()}
    pooled = np.concatenate([e[np.isfinite(e)] for e in errors.values()])
    # A shared scale keeps codecs comparable; the 99.5th percentile stops one codec's
    # outliers from turning every other panel black.
    emax = float(np.quantile(pooled, 0.995)) if pooled.size else 1.0
    emax = emax if emax > 0 else 1.0
    units = var["units"] or "data units"
    im = axes[0, 0].imshow(original, origin="lower", vmin=vmin, vmax=vmax, cmap="viridis")
    axes[0, 0].set_title("original")
    axes[1, 0].imshow(np.isnan(original).astype(float), origin="lower", cmap=ListedColormap(["white", "0.35"]),
                      vmin=0, vmax=1)  # fmt: skip
    axes[1, 0].set_title(f"NaN mask (grey), {np.isnan(original).mean():.0%}", fontsize=9)
    err_im = None
    for col, (label, dec) in enumerate(decoded.items(), start=1):
        p = chosen[label]
        axes[0, col].imshow(dec, origin="lower", vmin=vmin, vmax=vmax, cmap="viridis")
        axes[0, col].set_title(f"{label}\n{p['bpp']:.3g} bpp, {_fmt(p['psnr'], 3)} dB", fontsize=9)
        err_im = axes[1, col].imshow(errors[label], origin="lower", vmin=0, vmax=emax, cmap="magma")
        axes[1, col].set_title(f"|error|, max {np.nanmax(errors[label]):.3g}", fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[0, :].tolist(), label=units, shrink=0.9)
    if err_im is not None:
        fig.colorbar(err_im, ax=axes[1, :].tolist(), label=f"|error| [{units}]", shrink=0.9, extend="max")
    fig.suptitle(f"{var['variable']}, slice {var['slices'][0]}: codecs at similar bits per value")
    return _save(fig, out_dir, f"fields_{stem}.png")


def _spectra_figure(out_dir: Path, var: dict, stem: str) -> str:
    """Band power of original and decoded fields, and its relative error."""
    chosen = {label: var["points"][i] for label, i in var["similar_bpp"].items()}
    fig, axes = _figure(1, 2, 11, 4.2)
    first = next(iter(chosen.values()))["fidelity"]
    edges = np.asarray(first["spectrum_k_edges"])
    k = np.sqrt(edges[:-1] * edges[1:])  # geometric band centre
    axes[0, 0].plot(k, first["spectrum_power_original"], "k--", lw=2, label="original", zorder=3)
    for label, p in chosen.items():
        fid = p["fidelity"]
        axes[0, 0].plot(k, fid["spectrum_power_decoded"], "o-", ms=3, label=f"{label} ({p['bpp']:.3g} bpp)")
        axes[0, 1].plot(k, fid["spectral_rel_error"], "o-", ms=3, label=label)
    axes[0, 0].set(yscale="log", ylabel="mean power per mode", title="Isotropic power spectrum")
    axes[0, 1].set(yscale="log", ylabel="|P_dec - P_orig| / P_orig", title="Relative spectral error")
    for ax in axes[0]:
        _plain_log_x(ax)
        ax.set_xlabel("wavenumber k [waves per domain]")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{var['variable']}: spectra at similar bits per value (all benchmarked slices)")
    return _save(fig, out_dir, f"spectra_{stem}.png")


def _zonal_figure(out_dir: Path, var: dict, original: np.ndarray, decoded: dict, stem: str) -> str:
    """Zonal means (over x) of the original and decoded first slice, and their difference."""
    fig, axes = _figure(1, 2, 11, 4.2)
    units = var["units"] or "data units"
    rows = np.arange(original.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows (land-only latitudes)
        zonal_orig = np.nanmean(original, axis=-1)
        axes[0, 0].plot(rows, zonal_orig, "k--", lw=2, label="original")
        for label, dec in decoded.items():
            zonal = np.nanmean(dec, axis=-1)
            axes[0, 0].plot(rows, zonal, lw=1, label=label)
            axes[0, 1].plot(rows, zonal - zonal_orig, lw=1, label=label)
    axes[0, 0].set(xlabel="row (y / latitude index)", ylabel=f"zonal mean [{units}]", title="Zonal mean")
    axes[0, 1].set(xlabel="row (y / latitude index)", ylabel=f"decoded - original [{units}]",
                   title="Zonal-mean error")  # fmt: skip
    for ax in axes[0]:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{var['variable']}, slice {var['slices'][0]}: zonal means at similar bits per value")
    return _save(fig, out_dir, f"zonal_{stem}.png")


def _histogram_figure(out_dir: Path, var: dict, original: np.ndarray, decoded: dict, stem: str) -> str:
    """Histograms of decoded - original on the first slice."""
    fig, axes = _figure(1, 1, 7, 4.2)
    ax = axes[0, 0]
    units = var["units"] or "data units"
    errs = {label: (dec - original)[np.isfinite(dec - original)] for label, dec in decoded.items()}
    span = max((float(np.abs(e).max()) for e in errs.values() if e.size), default=1.0) or 1.0
    bins = np.linspace(-span, span, 81)
    for label, e in errs.items():
        ax.hist(e, bins=bins, histtype="step", lw=1.5, label=label)
    ax.set(yscale="log", xlabel=f"decoded - original [{units}]", ylabel="count",
           title=f"{var['variable']}, slice {var['slices'][0]}: error histograms")  # fmt: skip
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_dir, f"errhist_{stem}.png")


def variable_figures(out_dir: Path, var: dict, original: np.ndarray, decoded: dict, detailed: bool) -> list[str]:
    """Draw one variable's figures into ``out_dir``; return their file names.

    Parameters
    ----------
    out_dir : path
        Output folder.
    var : dict
        The variable's record in the results (points, ``similar_bpp``, ...).
    original : numpy.ndarray
        First benchmarked 2D slice.
    decoded : dict
        Series label -> that slice decoded at the series' similar-bpp point.
    detailed : bool
        Also draw spectra, zonal means and error histograms (done for one variable).
    """
    stem = _slug(f"{Path(var['source']).stem}_{var['variable']}")
    names = [_rd_figure(out_dir, var, stem)]
    if decoded:
        names.append(_fields_figure(out_dir, var, original, decoded, stem))
        if detailed:
            names.append(_spectra_figure(out_dir, var, stem))
            names.append(_zonal_figure(out_dir, var, original, decoded, stem))
            names.append(_histogram_figure(out_dir, var, original, decoded, stem))
    return names

"""Tests of the benchmark package: baselines, metrics and a small end-to-end run."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from nncodec.bench import Compressor, available_baselines, run_bench, run_speed
from nncodec.bench.run import _matched_psnr, _speed_devices
from nncodec.bench import baselines as baselines_mod
from nncodec.bench.metrics import (
    bd_rate,
    bits_per_value,
    compression_ratio,
    distortion_metrics,
    psnr_db,
    rate_at_psnr,
    timed,
)
from nncodec.fidelity import fidelity_report

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def data_dir():
    if not DATA.is_dir():
        pytest.skip(f"shared data not available: {DATA}")
    return DATA


@pytest.fixture(scope="module")
def tas(data_dir):
    """HadCM3 North America 1.5 m temperature, 2 years: (2, 37, 49) K."""
    with np.load(data_dir / "iris_hadcm3_north_america_tas_A1B.npz") as data:
        return data["tas_A1B"][:2]


@pytest.fixture(scope="module")
def sst(data_dir):
    """COADS SST for January: (90, 180) degC with NaN over land."""
    with np.load(data_dir / "ferret_coads_climatology.npz") as data:
        return data["sst"][0]


def _finite_range(a):
    return float(np.nanmax(a) - np.nanmin(a))


# -- baselines ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sz3", "zfp", "sperr", "bitround"])
@pytest.mark.parametrize("bound", [1e-2, 1e-4])
@pytest.mark.parametrize("field", ["tas", "sst"])
def test_baseline_round_trip_within_bound(name, bound, field, request):
    pytest.importorskip(baselines_mod.BASELINES[name])
    arr = request.getfixturevalue(field)
    arr = arr[0] if arr.ndim == 3 else arr
    comp = Compressor(name, bound)
    buf = comp.encode(arr)
    out = comp.decode(buf, like=arr)
    assert isinstance(buf, bytes) and 0 < len(buf) < arr.nbytes
    assert out.shape == arr.shape and out.dtype == arr.dtype
    np.testing.assert_array_equal(np.isnan(out), np.isnan(arr))
    abs_bound = bound * _finite_range(arr)
    assert comp.last_params["abs_bound"] == pytest.approx(abs_bound)
    # float32 output can add half an ulp of the largest value to the codec's bound
    slack = float(np.spacing(np.float32(np.nanmax(np.abs(arr)))))
    assert np.nanmax(np.abs(out.astype(np.float64) - arr)) <= abs_bound + slack


def test_bitround_keepbits_follow_the_bound(tas):
    comp = Compressor("bitround", 1e-3)
    comp.encode(tas[0])
    # |x| <= 302 K and R = 43.6 K: 2**-(k+1) * 302 <= 0.0436 needs k = 12
    assert comp.last_params["keepbits"] == 12


def test_compressor_validation(tas):
    with pytest.raises(ValueError, match="unknown baseline"):
        Compressor("lz4", 1e-3)
    with pytest.raises(ValueError, match="relative error bound"):
        Compressor("sz3", 0.0)
    with pytest.raises(TypeError):
        Compressor("zfp", 1e-3).encode(tas[0].astype(np.int32))
    with pytest.raises(ValueError, match="bad flag"):
        Compressor("zfp", 1e-3).decode(b"\x07abc", like=tas[0])


def test_missing_baseline_is_skipped_with_one_message(monkeypatch, capsys):
    monkeypatch.setitem(baselines_mod.BASELINES, "zfp", "no_such_module_for_nncodec_tests")
    assert available_baselines(["sz3", "zfp"]) == ["sz3"]
    err = capsys.readouterr().err
    assert err.count("skipping baseline 'zfp'") == 1
    with pytest.raises(ValueError, match="unknown baseline"):
        available_baselines(["sz4"])


# -- metrics ------------------------------------------------------------------------------


def test_psnr_of_known_error(tas):
    orig = tas.astype(np.float64)
    value_range = _finite_range(orig)
    # a uniform error of 1 % of the range: RMSE = 0.01 R, so PSNR = 20 log10(100) = 40 dB
    metrics = distortion_metrics(fidelity_report(orig, orig + 0.01 * value_range))
    assert metrics["psnr"] == pytest.approx(40.0, abs=1e-9)
    assert metrics["max_error_rel_range"] == pytest.approx(0.01, rel=1e-9)
    assert metrics["rmse"] == pytest.approx(0.01 * value_range, rel=1e-9)
    assert psnr_db(0.0, value_range) == math.inf
    assert psnr_db(0.5, 50.0) == pytest.approx(40.0)
    with pytest.raises(ValueError):
        psnr_db(-1.0, 1.0)


def test_rate_metrics():
    assert bits_per_value(1000, 8000) == 1.0
    assert bits_per_value(3, 2) == 12.0
    assert compression_ratio(4000, 1000) == 4.0
    with pytest.raises(ValueError):
        bits_per_value(10, 0)
    result, seconds = timed(sum, [1, 2, 3], repeats=3)
    assert result == 6 and 0 <= seconds < 1


RATE = np.array([0.5, 1.0, 2.0, 4.0, 8.0])
PSNR = np.array([30.0, 36.5, 42.0, 49.0, 55.0])


def test_bd_rate_against_itself_is_zero():
    value, reason = bd_rate(RATE, PSNR, RATE, PSNR)
    assert reason is None
    assert value == pytest.approx(0.0, abs=1e-9)


def test_bd_rate_of_half_the_bits_is_minus_50_percent():
    assert bd_rate(RATE / 2, PSNR, RATE, PSNR)[0] == pytest.approx(-50.0, abs=1e-9)
    assert bd_rate(RATE * 2, PSNR, RATE, PSNR)[0] == pytest.approx(100.0, abs=1e-9)


def test_bd_rate_ignores_dominated_points():
    # an extra point that costs more bits for less PSNR (as SZ3 gives at loose bounds)
    rate_a = np.append(RATE / 2, 1.5)
    psnr_a = np.append(PSNR, 33.0)
    assert bd_rate(rate_a, psnr_a, RATE, PSNR)[0] == pytest.approx(-50.0, abs=1e-9)


def test_bd_rate_without_overlap_is_nan_with_reason():
    value, reason = bd_rate(RATE, PSNR, RATE, PSNR + 40)
    assert math.isnan(value) and "overlap" in reason
    value, reason = bd_rate([1.0], [30.0], RATE, PSNR)
    assert math.isnan(value) and "fewer than 2" in reason


def test_rate_at_psnr_interpolates_inside_the_curve_only():
    assert rate_at_psnr(RATE, PSNR, 42.0) == pytest.approx(2.0)
    assert rate_at_psnr(RATE / 2, PSNR, 42.0) == pytest.approx(1.0)
    assert 1.0 < rate_at_psnr(RATE, PSNR, 40.0) < 2.0
    assert math.isnan(rate_at_psnr(RATE, PSNR, 29.0)) and math.isnan(rate_at_psnr(RATE, PSNR, 56.0))
    assert math.isnan(rate_at_psnr([1.0], [30.0], 30.0))


# -- end to end ---------------------------------------------------------------------------


def test_matched_psnr_takes_each_modes_own_curve_and_bridges_modes():
    """A costlier point of another mode between two target_psnr points does not raise the
    bits nncodec needs between them; where no one mode reaches, the points of all modes do."""

    def pts(mode, rates, psnrs):
        return [{"codec": "nncodec", "mode": mode, "bpp": r, "psnr": p} for r, p in zip(rates, psnrs)]

    series = {
        "nncodec target_psnr": pts("target_psnr", [0.5, 0.7, 1.0], [42.0, 45.0, 48.0]),
        "nncodec abs_error": pts("abs_error", [0.1, 0.9], [30.0, 45.5]),
        "nncodec quality": pts("quality", [0.15, 0.3], [36.0, 40.0]),
        "sz3": [{"codec": "sz3", "bpp": r, "psnr": p} for r, p in ((0.2, 30.0), (1.0, 46.0), (1.6, 52.0))],
    }
    rows = {r["psnr"]: r for r in _matched_psnr(series)}
    at47 = rate_at_psnr([0.5, 0.7, 1.0], [42.0, 45.0, 48.0], 47.0)
    assert rows[47]["nncodec_bpp"] == pytest.approx(at47) and rows[47]["nncodec_mode"] == "target_psnr"
    assert rows[47]["ratio"] == pytest.approx(at47 / rate_at_psnr([0.2, 1.0, 1.6], [30.0, 46.0, 52.0], 47.0))
    # 35 dB: abs_error's curve reaches it, but quality's first point (36 dB) needs fewer bits,
    # and the curve from abs_error=0.1 to that point fewer still
    assert rows[35]["nncodec_mode"] == "all modes" and rows[35]["nncodec_bpp"] < 0.15
    assert math.isnan(rows[50]["nncodec_bpp"]) and rows[50]["baseline"] == "sz3"
    del series["nncodec abs_error"]
    sz3 = rate_at_psnr([0.2, 1.0, 1.6], [30.0, 46.0, 52.0], 35.0)
    assert _matched_psnr(series)[0] == {"psnr": 35, "nncodec_bpp": 0.15, "nncodec_mode": "quality", "baseline": "sz3",
                                        "baseline_bpp": pytest.approx(sz3), "ratio": pytest.approx(0.15 / sz3)}

def test_run_bench_smoke(tas, tmp_path):
    src = tmp_path / "tiny.npz"
    np.savez(src, tas=tas[:1])  # one 37 x 49 slice
    out = tmp_path / "bench"
    result = run_bench(
        src,
        out_dir=out,
        qualities=[2],
        error_bounds=[1e-1, 1e-2],
        max_slices=1,
        repeats=1,
        progress=False,
    )
    for name in ("results.json", "report.md", "rd_tiny_tas.png", "fields_tiny_tas.png", "spectra_tiny_tas.png",
                 "zonal_tiny_tas.png", "errhist_tiny_tas.png"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "results.json").read_text())
    assert set(saved) == {"meta", "variables"}
    assert {"cpu", "cores", "versions"} <= set(saved["meta"]["environment"])
    (var,) = saved["variables"]
    assert var["variable"] == "tas" and var["slice_shape"] == [37, 49]
    codecs = {p["codec"] for p in var["points"]}
    assert {"sz3", "zfp", "sperr", "bitround"} <= codecs
    for p in var["points"]:
        assert "error" not in p, p
        assert {"bytes", "bpp", "ratio", "psnr", "rmse", "max_abs_error", "max_error_rel_range", "encode_mbps",
                "decode_mbps", "fidelity"} <= set(p)  # fmt: skip
        assert p["bpp"] == pytest.approx(8 * p["bytes"] / (37 * 49))
        if p["mode"] == "rel_bound":
            assert p["max_error_rel_range"] <= p["setting"] * (1 + 1e-5)
        assert p["fidelity"]["nan_mask_identical"] is True
    assert set(var["similar_bpp"]) >= {"sz3", "zfp", "sperr", "bitround"}
    if "nncodec" in codecs:
        assert {r["baseline"] for r in var["bd_rate"]} == {"sz3", "zfp", "sperr", "bitround"}
    for r in result["variables"][0]["matched_psnr"]:  # in memory: NaN where a curve does not reach
        if r["baseline"] is not None:
            assert r["baseline"] in {"sz3", "zfp", "sperr"} and r["baseline_bpp"] > 0
            assert r["ratio"] == pytest.approx(r["nncodec_bpp"] / r["baseline_bpp"], nan_ok=True)
    report = (out / "report.md").read_text()
    assert "PSNR = 20 log10(R / RMSE)" in report and "Fidelity at similar bits per value" in report
    assert result["variables"][0]["points"][0]["codec"] == var["points"][0]["codec"]


def test_run_bench_reads_netcdf_and_checks_variables(tas, tmp_path):
    xr = pytest.importorskip("xarray")
    src = tmp_path / "tas.nc"
    xr.Dataset({"tas": (("year", "lat", "lon"), tas, {"units": "K"})}).to_netcdf(src)
    with pytest.raises(KeyError, match="available"):
        run_bench(src, variables="pr", out_dir=tmp_path / "x", progress=False)
    result = run_bench(
        src, variables="tas", out_dir=tmp_path / "nc", qualities=[], error_bounds=[1e-2, 1e-3],
        baselines=("sz3",), nncodec=False, max_slices=2, repeats=1, progress=False,
    )  # fmt: skip
    (var,) = result["variables"]
    assert var["units"] == "K" and var["slices"] == [[0], [1]]
    sz3 = [p for p in var["points"] if p["codec"] == "sz3"]
    assert [p["n_values"] for p in sz3] == [2 * 37 * 49] * 2
    assert len(var["points"]) == 2 and var["bd_rate"] == []


def test_run_speed_prints_ratios(tas, tmp_path, capsys):
    src = tmp_path / "tiny.npz"
    np.savez(src, tas=tas[:1])
    result = run_speed(src, out_dir=tmp_path, qualities=[1], max_slices=1, repeats=1, progress=False)
    (var,) = result["variables"]
    assert {p["codec"] for p in var["points"]} >= {"sz3", "sperr"}
    assert all(p["encode_mbps"] > 0 and p["decode_mbps"] > 0 for p in var["points"])
    assert (tmp_path / "speed.json").exists()
    if any(p["codec"] == "nncodec" for p in var["points"]):
        # the CPU always, CUDA too where torch sees a GPU (never in CI); the error-bounded
        # mode once, at the baselines' bound
        nn = [p for p in var["points"] if p["codec"] == "nncodec"]
        assert [p["device"] for p in nn if p["mode"] == "quality"] == _speed_devices()
        assert [(p["mode"], p["setting"]) for p in nn if p["mode"] != "quality"] == [("abs_error", 1e-3)]
        assert {r["baseline"] for r in var["ratios"]} == {"sz3", "sperr"}
        out = capsys.readouterr().out
        assert "nncodec quality=1 / sz3" in out and "nncodec abs_error=0.001·R / sperr" in out

"""Tests of nncodec.fidelity on real fields from the shared data folder."""

from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from nncodec.fidelity import (
    THRESHOLD_KEYS,
    as_thresholds,
    check_thresholds,
    fidelity_report,
    load_thresholds,
    spectral_band_edges,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

EXAMPLE_THRESHOLDS = {
    "correlation_min": 0.99999,
    "spectral_error_max": 0.05,
    "spectral_k_max": 32,
    "bias_sigma_max": 0.01,
    "abs_error_max": 0.1,
    "ssim_min": 0.99,
}


def _load(name, key):
    path = DATA / name
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    with np.load(path) as data:
        return data[key]


@pytest.fixture(scope="module")
def ts():
    """GloSea4 surface temperature, 3 months of one member: (3, 145, 192) K, no NaN."""
    return _load("iris_glosea4_surface_temperature.npz", "ts")[0, :3]


@pytest.fixture(scope="module")
def sst():
    """COADS SST, 2 months: (2, 90, 180) degC with about 45 % NaN land."""
    return _load("ferret_coads_climatology.npz", "sst")[:2]


SCALAR_KEYS = [
    "data_range", "mean_bias", "bias_sigma", "std_original", "std_ratio", "correlation", "rmse",
    "max_abs_error", "max_diff", "min_diff", "gradient_rel_error", "zonal_mean_max_abs_error", "ssim",
]  # fmt: skip


@pytest.mark.parametrize("field", ["ts", "sst"])
def test_identical_arrays_give_perfect_scores(field, request):
    orig = request.getfixturevalue(field)
    r = fidelity_report(orig, orig.copy())
    assert r["n_valid"] == int(np.isfinite(orig).sum())
    for key in ("mean_bias", "bias_sigma", "rmse", "max_abs_error", "max_diff", "min_diff", "q99_diff",
                "q999_diff", "gradient_rel_error", "zonal_mean_max_abs_error"):  # fmt: skip
        assert r[key] == 0.0, key
    assert r["std_ratio"] == pytest.approx(1.0, abs=1e-12)
    assert r["correlation"] == pytest.approx(1.0, abs=1e-12)
    assert r["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert r["spectral_rel_error"] == [0.0] * (len(r["spectrum_k_edges"]) - 1)
    assert r["nan_mask_identical"] is True
    assert r["quantiles_exact"] is True
    assert check_thresholds(r, EXAMPLE_THRESHOLDS) == (True, [])


def test_band_edges_are_log_spaced_integers():
    assert spectral_band_edges(145, 192).tolist() == [1, 2, 4, 6, 9, 13, 20, 31, 48, 73]
    # small fields get fewer, still non-empty, bands
    # round(geomspace(1, 19, 11)) has repeated 1s and 2s: 8 bands remain
    assert spectral_band_edges(37, 49).tolist() == [1, 2, 3, 4, 6, 8, 11, 14, 19]
    with pytest.raises(ValueError):
        spectral_band_edges(1, 10)


def test_gaussian_noise_gives_expected_statistics(ts):
    rng = np.random.default_rng(42)
    sigma = float(ts.std())
    noise_sd = 0.1 * sigma
    noisy = ts.astype(np.float64) + rng.normal(0.0, noise_sd, ts.shape)
    r = fidelity_report(ts, noisy)
    n = ts.size
    # Independent noise of variance s^2: corr = 1/sqrt(1 + s^2/sigma^2), std ratio = sqrt(1 + s^2/sigma^2).
    assert r["correlation"] == pytest.approx(1 / np.sqrt(1.01), abs=2e-4)
    assert r["std_ratio"] == pytest.approx(np.sqrt(1.01), abs=2e-3)
    assert abs(r["mean_bias"]) < 4 * noise_sd / np.sqrt(n)
    assert abs(r["bias_sigma"]) < 4 * 0.1 / np.sqrt(n)
    assert r["rmse"] == pytest.approx(noise_sd, rel=0.01)
    assert r["std_original"] == pytest.approx(sigma, rel=1e-6)
    # white noise adds power at every band, most at high k where the field is weak
    assert r["spectral_rel_error"][-1] > r["spectral_rel_error"][0] > 0
    assert 0 < r["ssim"] < 1


def test_offset_and_scale_have_exact_effects(ts):
    orig = ts.astype(np.float64)
    offset = 0.25
    r = fidelity_report(orig, orig + offset)
    assert r["mean_bias"] == pytest.approx(offset, rel=1e-9)
    assert r["bias_sigma"] == pytest.approx(offset / orig.std(), rel=1e-9)
    assert r["max_diff"] == pytest.approx(offset, rel=1e-9)
    assert r["min_diff"] == pytest.approx(offset, rel=1e-9)
    assert r["zonal_mean_max_abs_error"] == pytest.approx(offset, rel=1e-9)
    assert r["q99_diff"] == pytest.approx(offset, rel=1e-9)
    assert r["correlation"] == pytest.approx(1.0, abs=1e-12)
    assert r["std_ratio"] == pytest.approx(1.0, abs=1e-12)
    assert r["gradient_rel_error"] == pytest.approx(0.0, abs=1e-9)
    assert max(r["spectral_rel_error"]) < 1e-9  # a constant only changes k = 0
    # An offset c lowers SSIM by at most c^2 / C1 with C1 = (0.01 R)^2.
    assert 1 - offset**2 / (0.01 * r["data_range"]) ** 2 <= r["ssim"] < 1

    doubled = fidelity_report(orig, 2 * orig)
    assert doubled["std_ratio"] == pytest.approx(2.0, rel=1e-12)
    assert doubled["correlation"] == pytest.approx(1.0, abs=1e-12)
    assert doubled["gradient_rel_error"] == pytest.approx(1.0, rel=1e-9)
    # power scales by 4, so every band is off by 3 in relative terms
    np.testing.assert_allclose(doubled["spectral_rel_error"], 3.0, rtol=1e-9)


def test_dask_input_equals_numpy(sst):
    rng = np.random.default_rng(1)
    decoded = (sst + rng.normal(0, 0.05, sst.shape)).astype(np.float32)
    ref = fidelity_report(sst, decoded)
    lazy = fidelity_report(da.from_array(sst, chunks=(1, 45, 90)), da.from_array(decoded, chunks=(2, 30, 180)))
    for key in SCALAR_KEYS:
        assert lazy[key] == pytest.approx(ref[key], rel=1e-9, abs=1e-12), key
    for key in ("spectrum_power_original", "spectrum_power_decoded", "spectral_rel_error"):
        np.testing.assert_allclose(lazy[key], ref[key], rtol=1e-9)
    assert lazy["spectrum_k_edges"] == ref["spectrum_k_edges"]
    assert lazy["n_valid"] == ref["n_valid"]
    assert lazy["nan_mask_identical"] is True
    # dask quantiles come from a 65536-bin histogram: each quantile is off by < 1 bin width
    lo = min(np.nanmin(sst), np.nanmin(decoded))
    hi = max(np.nanmax(sst), np.nanmax(decoded))
    bin_width = (hi - lo) / 2**16
    assert lazy["quantiles_exact"] is False
    assert abs(lazy["q99_diff"] - ref["q99_diff"]) < 2 * bin_width
    assert abs(lazy["q999_diff"] - ref["q999_diff"]) < 2 * bin_width


def test_nan_mask_change_is_detected(sst):
    ocean = np.argwhere(np.isfinite(sst))[100]
    land = np.argwhere(np.isnan(sst))[100]
    lost = sst.copy()
    lost[tuple(ocean)] = np.nan
    filled = sst.copy()
    filled[tuple(land)] = 20.0
    for decoded in (lost, filled):
        r = fidelity_report(sst, decoded)
        assert r["nan_mask_identical"] is False
        ok, failures = check_thresholds(r, {"require_nan_mask": True})
        assert not ok and failures[0].startswith("require_nan_mask")
    # statistics use the points finite in both arrays
    assert fidelity_report(sst, lost)["n_valid"] == int(np.isfinite(sst).sum()) - 1
    assert fidelity_report(sst, filled)["max_abs_error"] == 0.0


def test_thresholds_pass_good_and_fail_bad_decode(ts):
    rng = np.random.default_rng(3)
    good = ts + rng.uniform(-1e-3, 1e-3, ts.shape)
    ok, failures = check_thresholds(fidelity_report(ts, good), EXAMPLE_THRESHOLDS)
    assert ok, failures
    from scipy.ndimage import gaussian_filter

    blurred = gaussian_filter(ts, sigma=(0, 2, 2))  # a decode that loses small scales
    ok, failures = check_thresholds(fidelity_report(ts, blurred), EXAMPLE_THRESHOLDS)
    assert not ok
    failed_keys = {f.split(":")[0] for f in failures}
    assert {"correlation_min", "spectral_error_max", "abs_error_max"} <= failed_keys
    assert "bias_sigma_max" not in failed_keys  # blurring keeps the mean


def test_threshold_validation():
    report = {"correlation": 1.0}
    with pytest.raises(ValueError, match="valid keys are .*correlation_min"):
        check_thresholds(report, {"corr_min": 0.9})
    with pytest.raises(ValueError, match="spectral_k_max"):
        check_thresholds(report, {"spectral_k_max": 8})
    with pytest.raises(TypeError):
        check_thresholds(report, {"correlation_min": "high"})
    with pytest.raises(TypeError):
        check_thresholds(report, {"require_nan_mask": 1})


def test_load_thresholds(tmp_path):
    path = tmp_path / "thresholds.yaml"
    path.write_text("correlation_min: 0.99999\nspectral_error_max: 0.05\nspectral_k_max: 32\nrequire_nan_mask: true\n")
    assert load_thresholds(path) == {
        "correlation_min": 0.99999,
        "spectral_error_max": 0.05,
        "spectral_k_max": 32,
        "require_nan_mask": True,
    }
    path.write_text("- correlation_min\n")
    with pytest.raises(ValueError, match="mapping"):
        load_thresholds(path)
    path.write_text("ssim_minimum: 0.9\n")
    with pytest.raises(ValueError, match="ssim_min"):
        load_thresholds(path)
    assert set(THRESHOLD_KEYS) >= set(EXAMPLE_THRESHOLDS)


def test_as_thresholds_takes_a_file_or_a_mapping(tmp_path):
    path = tmp_path / "thresholds.yaml"
    path.write_text("correlation_min: 0.999\nrequire_nan_mask: true\n")
    expected = {"correlation_min": 0.999, "require_nan_mask": True}
    assert as_thresholds(path) == as_thresholds(str(path)) == as_thresholds(expected) == expected
    assert as_thresholds(expected) is not expected  # a copy
    with pytest.raises(ValueError, match="valid keys"):
        as_thresholds({"correlation": 0.9})
    with pytest.raises(TypeError, match="mapping"):
        as_thresholds([("correlation_min", 0.9)])


def test_input_validation():
    with pytest.raises(ValueError, match="shape"):
        fidelity_report(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="at least 2 dims"):
        fidelity_report(np.zeros(8), np.zeros(8))
    with pytest.raises(TypeError):
        fidelity_report(np.zeros((4, 4), dtype=complex), np.zeros((4, 4), dtype=complex))

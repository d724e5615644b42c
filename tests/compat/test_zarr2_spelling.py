"""The product's own spelling, ``encoding={"ts": {"compressor": NNCodec()}}``, with zarr-python 2.

zarr-python 2.18 and the xarray releases of its time (up to 2024.11) take a numcodecs
compressor under the key ``compressor``; NNCodec is one, so the spelling works there
unchanged. This module runs only in the environment that ``tests/compat/setup_env.sh``
builds; under zarr 3 (the main environment) it is skipped, and
tests/test_zarr_xarray.py checks the error current xarray gives for this spelling.
"""

import json
from pathlib import Path

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
if not zarr.__version__.startswith("2."):
    pytest.skip(
        f"needs zarr-python 2 (found {zarr.__version__}): run tests/compat/setup_env.sh to build that environment",
        allow_module_level=True,
    )

import xarray as xr  # noqa: E402  (after the skip: only the zarr 2 environment gets here)

from nncodec import NNCodec  # noqa: E402

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
# measured in this environment with the weights sha256 27c3b93a: default quality (4) gives
# PSNR 30.6 dB on GloSea4 ts member 12, months 0-1; the floor leaves room for retraining
PSNR_FLOOR = 25.0
ABS_ERROR = 0.05


def _dataset(file: str, var: str, index) -> xr.Dataset:
    path = DATA / file
    if not path.exists():
        pytest.fail(f"test data {path} is missing: the tests need ../shared/data beside the repo")
    values = np.load(path)[var][index]
    return xr.Dataset({var: (("time", "lat", "lon"), values)},
                      coords={"lat": np.linspace(-90, 90, values.shape[1])})


def test_environment_is_the_zarr2_era():
    assert zarr.__version__.startswith("2.18.")
    assert tuple(int(p) for p in xr.__version__.split(".")[:2]) < (2025, 1)


def test_compressor_spelling_round_trip(tmp_path):
    ds = _dataset("iris_glosea4_surface_temperature.npz", "ts", np.s_[12, :2])
    store = tmp_path / "ts.zarr"
    ds.to_zarr(store, encoding={"ts": {"compressor": NNCodec(), "chunks": (1, 145, 192)}})
    assert json.loads((store / "ts" / ".zarray").read_text())["compressor"] == {"id": "nncodec"}
    orig, back = ds.ts.values, xr.open_zarr(store).ts.values
    rmse = float(np.sqrt(np.mean((back.astype(np.float64) - orig) ** 2)))
    psnr = 20 * np.log10(float(orig.max() - orig.min()) / rmse)
    assert psnr >= PSNR_FLOOR, f"PSNR {psnr:.2f} dB"
    np.testing.assert_array_equal(zarr.open_array(str(store / "ts"), mode="r")[:], back)


def test_compressor_spelling_abs_error_with_nan(tmp_path):
    ds = _dataset("ferret_coads_climatology.npz", "sst", np.s_[:2])
    store = tmp_path / "sst.zarr"
    ds.to_zarr(store, encoding={"sst": {"compressor": NNCodec(abs_error=ABS_ERROR)}})
    orig, back = ds.sst.values, xr.open_zarr(store).sst.values
    np.testing.assert_array_equal(np.isnan(back), np.isnan(orig))
    finite = np.isfinite(orig)
    assert float(np.abs(back[finite] - orig[finite]).max()) <= ABS_ERROR

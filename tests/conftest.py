"""Shared test fixtures: real fields from ../shared/data (present in CI beside the repo)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_field(file: str, var: str) -> np.ndarray:
    """One array from a ../shared/data archive; the tests need these real fields."""
    path = SHARED_DATA / file
    if not path.exists():
        pytest.fail(f"test data {path} is missing: the tests need ../shared/data beside the repo")
    return np.load(path)[var]


def hyper_latents(rt, q, side=8, tile=(128, 128)):
    """Dequantised hyper-latents of side x side tiles of real relief at level ``q`` (runtime
    ``rt``) and the latents' shape: with 8 x 8 tiles of 128 x 128, every layer's input is
    above SCATTER_BELOW (oneDNN's float32 digits)."""
    import torch

    th, tw = tile
    relief = load_field("ferret_etopo5_relief.npz", "rose")[600 : 600 + th * side, 1600 : 1600 + tw * side]
    relief = relief.astype(np.float32)
    x = (relief - relief.min()) / np.ptp(relief)
    tiles = x.reshape(side, th, side, tw).transpose(0, 2, 1, 3).reshape(side * side, 1, th, tw)
    y = rt.analyse(np.ascontiguousarray(tiles))
    z = rt.quantise(y, q)["z"]
    return torch.from_numpy(z).float() + rt.tables.medians.view(1, -1, 1, 1), tuple(y.shape[-2:])


def pytest_collection_modifyitems(items):
    """Tests that use the ``compressai`` fixture get the ``train`` marker, so that ``-m train``
    selects them (tests/compat/numpy2.sh runs them again once CompressAI is installed)."""
    for item in items:
        if "compressai" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.train)


@pytest.fixture(scope="session")
def compressai():
    """nncodec's CompressAI pieces, which training and refinement need (the ``train``
    extra). Tests that use them skip where CompressAI is not installed (CI's numpy-2 job,
    which checks that everything else works without it); installed but broken is an error."""
    if importlib.util.find_spec("compressai") is None:
        pytest.skip("needs CompressAI: pip install 'nncodec[train]'")
    from nncodec import _compressai

    return _compressai


@pytest.fixture(scope="session")
def ts_field() -> np.ndarray:
    """GloSea4 surface temperature, one 145x192 global slice (K), held-out member."""
    return load_field("iris_glosea4_surface_temperature.npz", "ts")[12, 5]


@pytest.fixture(scope="session")
def sst_field() -> np.ndarray:
    """COADS SST, 90x180 with ~45 % NaN land, held-out month."""
    return load_field("ferret_coads_climatology.npz", "sst")[11]

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

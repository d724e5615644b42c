"""Back-compatibility: committed chunks of every released format version still decode to
what they decoded to when written: bit for bit, except that the float32 synthesis of learned
tiles rounds per instruction set (docs/format.md), so on a machine other than the writer's
(AVX2 vs AVX-512) chunks with learned tiles are compared to 1e-5 of their range. A missing
fixture is a failure, never a skip or a silent re-creation (regenerate only with
tests/fixtures/make_fixtures.py)."""

import json
from pathlib import Path

import numpy as np
import pytest

from nncodec import NNCodec, format as fmt
from nncodec.residual import TIGHTER_COARSE_LEVELS

FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXPECTED_CASES = {
    1: {"ts_f4_q4", "ts_f4_q8_fortran", "sst_f8_abs", "sst_f4_psnr", "relief_i2_exact", "constant_f8",
        "all_nan_f4", "small_5d_rel"},
    2: {"ts_f4_q4", "ts_f4_q8_fortran", "sst_f8_abs", "sst_f4_psnr", "relief_i2_exact", "constant_f8",
        "all_nan_f4", "small_5d_rel"},
    3: {"ts_f4_q4", "ts_f4_q8_fortran", "sst_f8_abs", "sst_f4_psnr", "relief_i2_exact", "constant_f8",
        "all_nan_f4", "small_5d_rel"},
    4: {"ts_f4_q4", "ts_f4_q8_fortran", "sst_f8_abs", "sst_f4_psnr", "relief_i2_exact", "constant_f8",
        "all_nan_f4", "small_5d_rel", "relief_f4_lanes"},
    5: {"ts_f4_q4", "ts_f4_q8_fortran", "sst_f8_abs", "sst_f4_psnr", "relief_i2_exact", "constant_f8",
        "all_nan_f4", "small_5d_rel", "relief_f4_lanes", "ts_f4_psnr_levels"},
}
#: Cases whose chunks hold learned (float32 synthesis) tiles without an error bound.
LEARNED = {"ts_f4_q4", "ts_f4_q8_fortran", "relief_f4_lanes"}


def test_every_supported_version_has_fixtures():
    assert set(EXPECTED_CASES) == set(fmt.SUPPORTED_VERSIONS)
    for version, names in EXPECTED_CASES.items():
        folder = FIXTURES / f"v{version}"
        manifest = json.loads((folder / "manifest.json").read_text())
        assert set(manifest) == names
        for name in names:
            assert (folder / f"{name}.bin").is_file(), f"fixture {folder / name}.bin is missing"
            assert (folder / f"{name}.npy").is_file(), f"fixture {folder / name}.npy is missing"


@pytest.mark.parametrize("version, name", [(v, n) for v, names in EXPECTED_CASES.items() for n in sorted(names)])
def test_fixture_decodes_as_written(version, name):
    folder = FIXTURES / f"v{version}"
    buf = (folder / f"{name}.bin").read_bytes()
    expected = np.load(folder / f"{name}.npy")
    assert fmt.read_header(buf).version == version
    out = NNCodec().decode(buf)
    assert out.dtype == expected.dtype and out.shape == expected.shape
    assert out.flags.f_contiguous == expected.flags.f_contiguous
    if np.array_equal(out.view(f"u{out.itemsize}"), expected.view(f"u{expected.itemsize}")):
        return
    # only a chunk with learned tiles may differ, and only in float32 rounding
    assert name in LEARNED, f"{name} decodes differently from when it was written"
    span = float(np.nanmax(expected) - np.nanmin(expected))
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5 * span)


def test_lanes_fixture_holds_several_lanes():
    """relief_f4_lanes (version 4) splits its 24 learned tiles into 6 range-coded lanes."""
    header, payload = fmt.unpack((FIXTURES / "v4" / "relief_f4_lanes.bin").read_bytes())
    assert header.version == 4 and payload[24 * (1 + 8 + 1)] == 6  # tile records (kind, offset, scale, level)


def test_level_steps_fixture_tightens_coarse_levels():
    """ts_f4_psnr_levels (version 5) states steps per interpolation level, uniform ones the
    abs_error fixture."""
    levels = fmt.read_header((FIXTURES / "v5" / "ts_f4_psnr_levels.bin").read_bytes()).level_steps
    assert levels == TIGHTER_COARSE_LEVELS
    assert fmt.read_header((FIXTURES / "v5" / "sst_f8_abs.bin").read_bytes()).level_steps == ()


def test_fixtures_decode_together_as_alone():
    """NNCodec.decode_batch on every fixture of every version at once (learned, residual,
    constant, all-NaN and raw tiles; float32, float64, int16; Fortran order; lanes):
    each chunk decodes to exactly what it decodes to alone."""
    bufs = [(FIXTURES / f"v{v}" / f"{n}.bin").read_bytes() for v, names in EXPECTED_CASES.items() for n in sorted(names)]
    codec = NNCodec()
    for buf, out in zip(bufs, codec.decode_batch(bufs), strict=True):
        alone = codec.decode(buf)
        assert out.dtype == alone.dtype and out.shape == alone.shape
        assert out.flags.f_contiguous == alone.flags.f_contiguous
        assert np.array_equal(out.view(f"u{out.itemsize}"), alone.view(f"u{alone.itemsize}"))

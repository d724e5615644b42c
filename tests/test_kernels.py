"""The codec's fast paths compute what their plain definitions do: the integer
hyper-synthesis with float32 convolutions gives the float64 integers, the scale-table
search gives searchsorted's indexes, the decoder form of the synthesis (format version 3's
kernel) and the encoder's form of the analysis are the trained networks, and the compiled
gap filling is the numpy pyramid."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nncodec import hypersynthesis
from nncodec.hypersynthesis import ACT_FRAC_BITS, SCATTER_BELOW, MAX_EXACT_F32, _abs_max, _layer_output
from nncodec.models.transforms import decoder_synthesis, encoder_analysis
from nncodec.normalize import fill_nonfinite
from nncodec.weights import load

from conftest import hyper_latents, load_field


@pytest.fixture(scope="module")
def rt():
    return load("hyperprior-climate-v2", "cpu")


def _reference_indexes(ih, z_hat, y_shape):
    """The integer hyper-synthesis as defined: float64 convolutions, then searchsorted;
    and per layer whether its input fits the float32 bound in one digit."""
    a = torch.round(z_hat.double() * 2.0**ACT_FRAC_BITS)
    one_digit = []
    for i, layer in enumerate(ih.layers):
        one_digit.append(_abs_max(a) * ih._wsum[i] < MAX_EXACT_F32)
        geometry = {"stride": layer["stride"], "padding": layer["padding"]}
        if layer["transposed"]:
            acc = F.conv_transpose2d(a, layer["weight"], output_padding=layer["output_padding"], **geometry)
        else:
            acc = F.conv2d(a, layer["weight"], **geometry)
        acc = acc + layer["bias"].view(1, -1, 1, 1)
        if layer["relu"]:
            acc = acc.clamp(min=0)
        exp = (layer["shift"] + ACT_FRAC_BITS).view(1, -1, 1, 1)
        if i == len(ih.layers) - 1:
            scales = (acc * torch.exp2(-exp))[..., : y_shape[0], : y_shape[1]]
            return np.searchsorted(ih.thresholds, scales.numpy(), side="left"), one_digit
        a = torch.floor(acc * torch.exp2(ACT_FRAC_BITS - exp) + 0.5)


@pytest.mark.parametrize("q, gain", [(1, 1.0), (8, 1.0), (4, 300.0)])
def test_integer_hyper_synthesis_float32_digits_are_exact(rt, q, gain):
    """Real hyper-latents (and ones 300x larger): the float32 convolutions, on one digit
    or several, give the float64 integers."""
    z_hat, y_shape = hyper_latents(rt, q)
    z_hat = z_hat * gain
    want, one_digit = _reference_indexes(rt.int_hs, z_hat, y_shape)
    if gain > 1:
        assert not any(one_digit)  # every layer needs several digits
    assert z_hat.numel() > SCATTER_BELOW  # so every layer runs oneDNN's float32 digits
    got = rt.int_hs.indexes(z_hat, y_shape)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(got)) > 5  # the comparison covers many scale indexes


@pytest.mark.parametrize("q, tile, side, gain", [(1, (128, 128), 1, 1.0), (8, (128, 128), 1, 1.0), (4, (73, 144), 1, 1.0),
                                                 (4, (145, 192), 1, 1.0), (4, (73, 144), 1, 300.0), (4, (73, 144), 3, 1.0)])
def test_integer_hyper_synthesis_of_small_tiles(rt, q, tile, side, gain):
    """A few small tiles' hyper-latents are below SCATTER_BELOW: the compiled scatter
    (float32 where the bound allows, else float64; 300x larger hyper-latents need float64),
    the same integers; for 73 x 144 (latents 5 x 9 of the last layer's 8 x 12) the last two
    layers compute only the rows and columns those outputs need."""
    z_hat, y_shape = hyper_latents(rt, q, side=side, tile=tile)
    z_hat = z_hat * gain
    assert z_hat.numel() <= SCATTER_BELOW
    want, _ = _reference_indexes(rt.int_hs, z_hat, y_shape)
    np.testing.assert_array_equal(rt.int_hs.indexes(z_hat, y_shape), want)


@pytest.mark.parametrize("q, tile, side, gain", [(1, (128, 128), 8, 1.0), (8, (128, 128), 8, 1.0), (4, (128, 128), 8, 300.0),
                                                 (4, (73, 144), 1, 1.0), (4, (145, 192), 3, 1.0)])
def test_integer_hyper_synthesis_by_matrix_products_is_exact(rt, q, tile, side, gain, monkeypatch):
    """The GPU's form (float64 matrix products of the integers, im2col and col2im around
    them), run here on the CPU: the same integers, cropped to the latents' shape."""
    z_hat, y_shape = hyper_latents(rt, q, side=side, tile=tile)
    z_hat = z_hat * gain
    want, _ = _reference_indexes(rt.int_hs, z_hat, y_shape)
    got = rt.int_hs.indexes_by_products(z_hat, y_shape)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)
    if side == 8:  # 64 tiles, in products of 24 tiles at most
        monkeypatch.setattr(hypersynthesis, "TILES_PER_PRODUCT", 24)
        np.testing.assert_array_equal(rt.int_hs.indexes_by_products(z_hat, y_shape), want)


def test_integer_hyper_synthesis_stays_exact_when_float32_is_relaxed(rt):
    """A user who lets float32 matrix products run in bfloat16 gets the float64 path."""
    z_hat, y_shape = hyper_latents(rt, 4)
    want, _ = _reference_indexes(rt.int_hs, z_hat, y_shape)
    torch.set_float32_matmul_precision("medium")
    try:
        np.testing.assert_array_equal(rt.int_hs.indexes(z_hat, y_shape), want)
    finally:
        torch.set_float32_matmul_precision("highest")


def test_bucketing_matches_searchsorted_at_and_around_every_threshold(rt):
    ih = rt.int_hs
    thr = ih.thresholds
    rng = np.random.default_rng(0)
    scales = np.concatenate([
        thr, np.nextafter(thr, 0), np.nextafter(thr, np.inf),  # ties and their neighbours
        [0.0, 1e-300, thr[0] / 2, thr[-1] * 2, 1e15],
        np.exp(rng.uniform(np.log(thr[0]) - 1, np.log(thr[-1]) + 1, 100_000)),
    ])
    got = np.empty((1, 1, 1, scales.size), np.int32)
    assert _layer_output(scales.reshape(got.shape), np.zeros(1), False, np.ones(1), ih._padded_thresholds, got)
    np.testing.assert_array_equal(got.ravel(), np.searchsorted(thr, scales, side="left"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_runtime_transforms_compute_the_training_networks_bits(rt, dtype, compressai):
    """The runtime's CompressAI-free transforms (own GDN) give CompressAI's GDN's results
    bit for bit, in float32 (format v1/v2 decoding) and float64 (the error-bound layer)."""
    net = rt.training_net
    assert type(net.g_s[1]).__module__.startswith("compressai")
    assert not type(rt.g_s[1]).__module__.startswith("compressai")
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.random((2, 1, 80, 144))).to(dtype)
    y = torch.from_numpy(rng.normal(0, 2, (2, rt.g_s[0].in_channels, 5, 9))).to(dtype)
    with torch.no_grad():
        pairs = [(copy.deepcopy(a).to(dtype), copy.deepcopy(b).to(dtype), v)
                 for a, b, v in ((rt.g_a, net.g_a, x), (rt.g_s, net.g_s, y), (rt.h_a, net.h_a, y))]
        for ours, theirs, v in pairs:
            assert torch.equal(ours(v), theirs(v))


@pytest.mark.parametrize("y_shape", [(16, 16), (5, 9)])
def test_decoder_synthesis_is_the_trained_network(rt, y_shape):
    g_s = copy.deepcopy(rt.g_s).double()
    fast = decoder_synthesis(g_s)
    y = torch.from_numpy(np.random.default_rng(1).normal(0, 2, (3, g_s[0].in_channels, *y_shape)))
    with torch.no_grad():
        want, got = g_s(y), fast(y)
    assert got.shape == want.shape
    assert float((got - want).abs().max()) < 1e-10 * float(want.abs().max())


@pytest.mark.parametrize("cout", [1, 3])
def test_subpixel_layer_shuffles_as_pixel_shuffle(rt, cout):
    """The sub-pixel layer's permuted reshape puts every phase where F.pixel_shuffle does."""
    sub = decoder_synthesis(torch.nn.Sequential(torch.nn.ConvTranspose2d(16, cout, 5, 2, 2, 1)))[-1]
    x = torch.randn(2, 16, 7, 11).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.equal(sub(x), F.pixel_shuffle(F.conv2d(x, sub.weight, sub.bias, padding=1), 2))


def test_encoder_analysis_is_the_trained_network(rt):
    g_a = copy.deepcopy(rt.g_a).double()
    fast = encoder_analysis(g_a)
    x = torch.from_numpy(np.random.default_rng(2).random((2, 1, 80, 144)))
    with torch.no_grad():
        want, got = g_a(x), fast(x)
    assert got.shape == want.shape
    assert float((got - want).abs().max()) < 1e-10 * float(want.abs().max())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e30])
@pytest.mark.parametrize("path", ["indexes", "indexes_by_products"])
def test_integer_hyper_synthesis_refuses_non_finite_or_huge_input(rt, bad, path):
    """Raises at once (it once looped forever on NaN, splitting it into digits)."""
    z_hat, y_shape = hyper_latents(rt, 4)
    z_hat[0, 0, 0, 0] = bad
    with pytest.raises(OverflowError, match="exact range"):
        getattr(rt.int_hs, path)(z_hat, y_shape)


def _reference_fill(x, finite):
    """fill_nonfinite as defined: 2x2 block sums (numpy's sum over the block axes) of the
    zero-padded finite values and weights until every block holds a finite pixel, then
    block means back down, each gap from the finest level that covers it."""
    out = np.where(finite, x, 0.0).astype(np.float32)
    if finite.all() or not finite.any():
        return out
    levels, val, wt = [], out.astype(np.float64), finite.astype(np.float64)
    while val.shape != (1, 1):
        val = np.pad(val, ((0, val.shape[0] % 2), (0, val.shape[1] % 2)))
        wt = np.pad(wt, ((0, wt.shape[0] % 2), (0, wt.shape[1] % 2)))
        val = val.reshape(val.shape[0] // 2, 2, val.shape[1] // 2, 2).sum(axis=(1, 3))
        wt = wt.reshape(wt.shape[0] // 2, 2, wt.shape[1] // 2, 2).sum(axis=(1, 3))
        levels.append((val, wt))
        if (wt > 0).all():
            break
    mean = None
    for vs, ws in reversed(levels):
        m = np.where(ws > 0, vs / np.maximum(ws, 1e-300), 0.0)
        if mean is not None:
            m = np.where(ws > 0, m, np.repeat(np.repeat(mean, 2, 0), 2, 1)[: m.shape[0], : m.shape[1]])
        mean = m
    return np.where(finite, out, np.repeat(np.repeat(mean, 2, 0), 2, 1)[: out.shape[0], : out.shape[1]]).astype(np.float32)


def test_gap_filling_kernel_matches_its_definition():
    """Bit for bit, on random masks over values of mixed magnitudes (where the order of a
    block's sum shows), float64 and float32 input, no gaps and no finite pixel."""
    rng = np.random.default_rng(4)
    for trial in range(600):
        h, w = (int(v) for v in rng.integers(1, 70, 2))
        x = rng.random((h, w)) * 10.0 ** rng.integers(-30, 30, (h, w)) if trial % 2 else rng.random((h, w))
        x = x.astype(np.float32) if trial % 5 == 0 else x
        finite = rng.random((h, w)) > rng.uniform(0, 1) if trial % 7 else np.full((h, w), trial % 14 == 0)
        got = fill_nonfinite(x, finite)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got.view(np.uint32), _reference_fill(x, finite).view(np.uint32))

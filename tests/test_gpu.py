"""The network on CUDA: chunks written there decode on the CPU, and the other way round.

These run only where torch sees a GPU (CI has none). docs/gpu.md holds the same checks
measured on an H200 (`python benchmarks/gpu.py`).
"""

import numpy as np
import pytest
import torch

from nncodec import NNCodec
from nncodec.hypersynthesis import SCATTER_BELOW
from nncodec.weights import load

from conftest import hyper_latents, load_field

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def fields():
    ts = load_field("iris_glosea4_surface_temperature.npz", "ts").reshape(-1, 145, 192)[-6:].astype(np.float32)
    sst = load_field("ferret_coads_climatology.npz", "sst")[-3:].astype(np.float32)  # land is NaN
    return {"ts": ts, "sst": sst}


@pytest.mark.parametrize("name", ["ts", "sst"])
def test_learned_chunks_agree_across_devices_to_float32_rounding(fields, name):
    x = fields[name]
    span = float(np.nanmax(x) - np.nanmin(x))
    gpu, cpu = NNCodec(quality=4, device="cuda"), NNCodec(quality=4, device="cpu")
    for buf in (gpu.encode(x), cpu.encode(x)):
        on_gpu, on_cpu = gpu.decode(buf), cpu.decode(buf)
        assert np.array_equal(np.isnan(on_gpu), np.isnan(x)) and np.array_equal(np.isnan(on_cpu), np.isnan(x))
        assert np.nanmax(np.abs(on_gpu.astype(np.float64) - on_cpu)) <= 2e-6 * span


def test_a_chunk_decodes_to_the_same_values_alone_and_among_others(fields, monkeypatch):
    """On the GPU each lane's tiles are one batch, synthesised while the host decodes the
    next lanes (``codec._overlapped``): a chunk's values do not depend on the chunks that
    ``decode_batch`` reads with it."""
    from nncodec import entropy

    monkeypatch.setattr(entropy, "LANE_VALUES", 1 << 15)  # 2 lanes of a 3-slice chunk
    codec = NNCodec(quality=4, device="cuda")
    a, b = codec.encode(fields["ts"][:3]), codec.encode(fields["ts"][3:])
    together = codec.decode_batch([b, a, b])
    assert np.array_equal(together[1], codec.decode(a)) and np.array_equal(together[0], codec.decode(b))


# at 5e-2 of the range with the level search every tile uses the network (float64
# predictions; checked on the CPU), at 1e-3 none does
@pytest.mark.parametrize("rel, kwargs", [(1e-3, {"quality": 4}), (5e-2, {})])
def test_error_bounded_chunks_decode_identically_and_keep_the_bound(fields, rel, kwargs):
    x = fields["ts"]
    bound = rel * float(x.max() - x.min())
    buf = NNCodec(abs_error=bound, device="cuda", **kwargs).encode(x)
    on_gpu, on_cpu = NNCodec(device="cuda").decode(buf), NNCodec(device="cpu").decode(buf)
    assert np.array_equal(on_gpu, on_cpu)
    assert np.abs(on_cpu.astype(np.float64) - x).max() <= bound


@pytest.mark.parametrize("q, gain", [(4, 1.0), (4, 300.0)])
def test_integer_hyper_synthesis_on_the_gpu_gives_the_cpus_integers(q, gain):
    """Hyper-latents on the GPU (64 tiles of relief) take the device path, exactly."""
    z_hat, y_shape = hyper_latents(load("hyperprior-climate-v2", "cpu"), q)
    z_hat = z_hat * gain
    assert z_hat.numel() > SCATTER_BELOW
    rt = load("hyperprior-climate-v2", "cuda")
    on_cpu = rt.int_hs.indexes(z_hat, y_shape)
    np.testing.assert_array_equal(rt.int_hs.indexes(z_hat.cuda(), y_shape), on_cpu)
    np.testing.assert_array_equal(rt.int_hs.indexes(z_hat, y_shape, "cuda"), on_cpu)

"""Training: a short real run, resume, export with a model card, use and hash check."""

import json

import numpy as np
import pytest
import torch

from nncodec import NNCodec, format as fmt
from nncodec.errors import ModelError
from nncodec.weights import load_model_state
from nncodec.train import Source, TrainConfig, export_weights, train
from nncodec.train.loop import slim_checkpoint

from conftest import load_field

# training and refinement build on CompressAI (the train extra)
pytestmark = pytest.mark.usefixtures("compressai")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "tas.npz"
    np.savez(path, tas=load_field("iris_hadcm3_north_america_tas_A1B.npz", "tas_A1B")[:40])
    return Source(str(path), ["tas"])


def tiny(**kw):
    return TrainConfig(**{"steps": 20, "batch": 2, "crop": 32, "crop_late": 32, "log_every": 10,
                          "checkpoint_every": 10, "lambdas": [100.0, 1000.0], **kw})


def test_train_resume_export_use(tmp_path, archive):
    run = tmp_path / "run"
    lines = []
    ckpt = train([archive], run, tiny(steps=10), log=lines.append)
    ckpt = train([archive], run, tiny(steps=20), resume=True, log=lines.append)
    assert any("resuming from" in line and "step 10" in line for line in lines)
    import torch

    assert torch.load(ckpt, weights_only=False)["step"] == 20
    card = export_weights(ckpt, tmp_path / "mine.pt", "mine", validate_on=[archive])
    saved = json.loads((tmp_path / "mine.json").read_text())
    assert saved["sha256"] == card["sha256"] and saved["qualities"] == 2
    assert set(saved["validation"]) == {"q1", "q2"} and saved["validation"]["q1"]["bpv"] > 0

    x = load_field("iris_hadcm3_north_america_tas_A1B.npz", "tas_A1B")[-1]
    codec = NNCodec(model=str(tmp_path / "mine.pt"), quality=2)
    buf = codec.encode(x)
    header = fmt.read_header(buf)
    assert header.model_code == 0 and header.weights_sha.hex() == card["sha256"][:8]
    assert codec.decode(buf).shape == x.shape
    with pytest.raises(ModelError, match="decode it with NNCodec\\(model="):
        NNCodec().decode(buf)
    other = tmp_path / "other.pt"
    export_weights(ckpt, other, "other")
    other.write_bytes(other.read_bytes() + b"\0")  # same weights, different file hash
    with pytest.raises(Exception):
        NNCodec(model=str(other)).decode(buf)


def test_fine_tune_from_shipped_and_slim_resume(tmp_path, archive):
    lines = []
    cfg = TrainConfig(steps=5, batch=2, crop=32, crop_late=32, log_every=5, checkpoint_every=5, lr=1e-9, lr_min=1e-9)
    ckpt = train([archive], tmp_path / "ft", cfg, init="hyperprior-climate-v1", log=lines.append)
    assert any("initialised from hyperprior-climate-v1" in line for line in lines)
    # a near-zero learning rate leaves the run where the shipped model is
    shipped = load_model_state("hyperprior-climate-v1")
    tuned = torch.load(ckpt, weights_only=False)
    assert tuned["config"]["lambdas"] == shipped["config"]["lambdas"]
    for key in ("g_a.0.weight", "g_s.6.weight", "h_s.4.bias", "log_gain"):
        torch.testing.assert_close(tuned["model"][key], shipped["state_dict"][key], atol=1e-6, rtol=0)
    slim_checkpoint(ckpt, tmp_path / "ft" / "checkpoint.pt")
    cfg.steps = 8
    train([archive], tmp_path / "ft", cfg, resume=True, log=lines.append)
    assert any("slim checkpoint" in line for line in lines)


def test_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train([Source(str(tmp_path / "nope.npz"), [])], tmp_path / "r", tiny())


def test_tiles_are_read_lazily_from_zarr(tmp_path):
    """A Zarr source stays a dask array; only the pool's tiles are ever in memory."""
    import dask.array as da
    import xarray as xr

    from nncodec.train.data import CropSampler, TileSource

    sst = load_field("ferret_levitus_ocean_temp.npz", "temp")[:8, 40:120, :160]  # NaN over land
    store = tmp_path / "sst.zarr"
    xr.Dataset({"sst": (("depth", "lat", "lon"), sst)}).chunk({"depth": 1}).to_zarr(store, consolidated=False)
    source = TileSource([Source(str(store), ["sst"])], tile=64, val_fraction=0.25)
    (var,) = source.variables
    assert isinstance(var.array, da.Array)
    assert var.n_train == sst.shape[0] - round(sst.shape[0] * 0.25)
    sampler = CropSampler(source, pool=16)
    assert len(sampler.tiles) == 16 and sum(t.nbytes for t, _ in sampler.tiles) <= 16 * 64 * 64 * 4
    x, m = sampler.batch(32, 4)
    assert x.shape == (4, 1, 32, 32) and np.isfinite(x).all() and m.dtype == bool
    assert not m.all()  # land is masked out of the loss, not filled into it
    val = source.validation_tiles(8)
    assert val and all(np.isfinite(t).all() for t, _ in val)
    # a 2D variable trains whole and has no validation slices
    flat = tmp_path / "relief.npz"
    np.savez(flat, relief=load_field("ferret_etopo5_relief.npz", "rose")[:300, :500])
    both = TileSource([Source(str(flat), []), Source(str(store), ["sst"])], tile=64, val_fraction=0.25)
    assert both.variables[0].slice_count(True) == 1 and both.variables[0].slice_count(False) == 0
    assert len(both.validation_tiles(8)) == len(source.validation_tiles(4))
    ckpt = train([Source(str(store), ["sst"])], tmp_path / "run", tiny(steps=4))
    assert ckpt.exists()


@pytest.mark.parametrize("target, direction", [(0.02, -1), (6.0, 1)])
def test_target_bpp_steers_lambda(tmp_path, archive, target, direction):
    """Below the target rate lambda rises (more bits for quality); above it, it falls."""
    cfg = tiny(steps=60, target_bpp=target)
    ckpt = train([archive], tmp_path / "run", cfg)
    saved = torch.load(ckpt, weights_only=False)
    (lam,) = saved["config"]["lambdas"]
    assert float(saved["model"]["lambdas"][0]) == pytest.approx(lam)
    assert np.sign(lam - 5000.0) == direction and abs(np.log(lam / 5000.0)) > 0.2


def test_target_bpp_refuses_init(tmp_path, archive):
    with pytest.raises(ValueError, match="does not combine with init"):
        train([archive], tmp_path / "r", tiny(target_bpp=1.0), init="hyperprior-climate-v1")


def test_schedule_fitted_into_minutes_and_resumed(tmp_path, archive):
    """``schedule_minutes`` runs the whole schedule (decay to lr_min, the late crops) in the
    time given, and a resumed run counts the time already trained."""
    from nncodec.train.loop import _lr_at, finished

    cfg = tiny(steps=10**9, schedule_minutes=0.03, log_every=10**9, checkpoint_every=10**9)
    lines = []
    ckpt = train([archive], tmp_path / "run", cfg, log=lines.append)
    first = torch.load(ckpt, weights_only=False)
    assert finished(first) and first["step"] < 10**9  # ended by time, not by steps
    assert 1.8 <= first["trained_s"] < 10
    assert _lr_at(TrainConfig(**first["config"]), max(first["step"], 500), first["trained_s"]) == pytest.approx(cfg.lr_min)
    longer = tiny(steps=10**9, schedule_minutes=0.06, log_every=10**9, checkpoint_every=10**9)
    ckpt = train([archive], tmp_path / "run", longer, resume=True, log=lines.append)
    second = torch.load(ckpt, weights_only=False)
    assert any("0.0 of 0.06 minutes" in line for line in lines)
    assert finished(second) and second["step"] > first["step"] and 3.6 <= second["trained_s"] < 15
    # resuming without minutes (what `nncodec train --resume` does) keeps the time-fitted schedule
    again = torch.load(train([archive], tmp_path / "run", tiny(steps=10**9), resume=True), weights_only=False)
    assert again["config"]["schedule_minutes"] == 0.06 and again["step"] <= second["step"] + 1
    # a schedule cut short by max_minutes is not finished
    short = tiny(steps=10**9, schedule_minutes=1.0, max_minutes=0.01, log_every=10**9)
    assert not finished(torch.load(train([archive], tmp_path / "short", short), weights_only=False))


def _net(state: dict, lambdas, **arch):
    from nncodec.models.hyperprior import FieldHyperprior

    net = FieldHyperprior(lambdas=lambdas, **arch)
    net.load_state_dict(state, strict=False)
    return net.eval()


def test_widen_starts_at_the_parents_function(compressai):
    """A grown model (more latents, a wider analysis and synthesis) reconstructs what its
    parent does, at the parent's rate; levels between the parent's get interpolated gains."""
    from nncodec.models.hyperprior import CDF_BUFFERS
    from nncodec.train.widen import widen

    parent = load_model_state("hyperprior-climate-v2")
    cfg = dict(parent["config"])
    lambdas = cfg.pop("lambdas")
    arch = {"N": 80, "M": 96, "Nh": cfg["Nh"], "synthesis": [64, 48, 24]}
    grown = widen(parent["state_dict"], parent["config"], arch, lambdas)
    trainable = {k: v for k, v in parent["state_dict"].items() if k.rsplit(".", 1)[-1] not in CDF_BUFFERS}
    old, new = _net(trainable, lambdas, **cfg), _net(grown, lambdas, **arch)
    x = torch.from_numpy(load_field("iris_glosea4_surface_temperature.npz", "ts")[-1, 0, :96, :128].astype(np.float32))
    x = ((x - x.min()) / (x.max() - x.min()))[None, None]
    with torch.no_grad():
        for q in (0, 4, 7):
            a, b = old(x, torch.tensor([q])), new(x, torch.tensor([q]))
            torch.testing.assert_close(b["x_hat"], a["x_hat"], atol=2e-5, rtol=0)
            bits = [sum(-torch.log2(lik).sum() for lik in out["likelihoods"].values()) for out in (a, b)]
            assert abs(float(bits[1] - bits[0])) < 1e-3 * float(bits[0]) + 1.0
    mid = widen(parent["state_dict"], parent["config"], arch, [float(np.sqrt(lambdas[2] * lambdas[3])), lambdas[-1] * 10])
    half = (parent["state_dict"]["log_gain"][2] + parent["state_dict"]["log_gain"][3]) / 2
    torch.testing.assert_close(mid["log_gain"][0, :64], half, atol=1e-5, rtol=0)
    assert (mid["log_gain"][1, :64] > parent["state_dict"]["log_gain"][-1]).float().mean() > 0.5  # extrapolated up
    with pytest.raises(ValueError, match="Nh must stay"):
        widen(parent["state_dict"], parent["config"], {**arch, "Nh": 64}, lambdas)
    with pytest.raises(ValueError, match="only grows"):
        widen(parent["state_dict"], parent["config"], {**arch, "M": 32}, lambdas)


def test_grow_trains_from_the_grown_parent(tmp_path, archive):
    arch = {"N": 64, "M": 80, "Nh": 48, "synthesis": [56, 40, 20]}
    lines = []
    ckpt = train([archive], tmp_path / "g", tiny(steps=4, arch=arch, lambdas=[1e5, 1e6]), init="hyperprior-climate-v2",
                 grow=True, log=lines.append)
    saved = torch.load(ckpt, weights_only=False)
    assert saved["config"]["arch"] == arch and saved["config"]["lambdas"] == [1e5, 1e6]
    assert saved["model"]["g_s.0.weight"].shape == (80, 56, 5, 5) and any("grown to" in line for line in lines)
    with pytest.raises(ValueError, match="grows the model given as init"):
        train([archive], tmp_path / "h", tiny(steps=1), grow=True)

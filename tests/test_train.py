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


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "tas.npz"
    np.savez(path, tas=load_field("iris_hadcm3_north_america_tas_A1B.npz", "tas_A1B")[:40])
    return Source(str(path), ["tas"])


def tiny(**kw):
    return TrainConfig(steps=kw.pop("steps", 20), batch=2, crop=32, crop_late=32, log_every=10,
                       checkpoint_every=10, lambdas=[100.0, 1000.0], **kw)


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

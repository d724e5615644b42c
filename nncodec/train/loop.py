"""Rate-distortion training of :class:`~nncodec.models.hyperprior.FieldHyperprior`.

Every step draws one crop size and a batch of crops; each crop gets a random quality
level and is trained with that level's lambda, so one run trains the whole family.
Loss = bits per value + lambda * MSE over finite pixels only (land does not count).
Checkpoints hold model, optimisers, step and RNG state, so ``resume=True`` continues
an interrupted run exactly where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .data import CropSampler, TileSource


@dataclass
class TrainConfig:
    """Knobs of one training run (saved in checkpoints and the model card)."""

    steps: int = 100_000
    batch: int = 8
    crop: int = 64
    crop_late: int = 128
    late_fraction: float = 0.2
    lr: float = 2e-4
    lr_min: float = 1e-5
    lambdas: list = field(default_factory=lambda: [150.0, 500.0, 1500.0, 5000.0, 15000.0, 50000.0, 150000.0, 500000.0])
    arch: dict = field(default_factory=lambda: {"N": 64, "M": 64, "Nh": 48, "synthesis": [48, 32, 16]})
    tile: int = 256
    val_fraction: float = 0.15
    threads: int = 1
    device: str = "cpu"
    seed: int = 0
    checkpoint_every: int = 1000
    log_every: int = 200
    max_minutes: float | None = None
    #: Fit the whole schedule (learning-rate decay, the late larger crops) into this many
    #: minutes of training instead of ``steps``: the run ends when they are spent, however
    #: fast the machine is. A resumed run counts the minutes it has already trained.
    schedule_minutes: float | None = None
    #: Train one quality level and steer its lambda until the training bits per value
    #: settle at this rate (``lambdas`` then holds one starting guess).
    target_bpp: float | None = None


WARMUP_STEPS = 500


def _progress(cfg: TrainConfig, step: int, trained_s: float) -> float:
    """How far the schedule is, 0 .. 1: by training time with ``schedule_minutes``, else by step."""
    if cfg.schedule_minutes:
        return min(1.0, trained_s / (cfg.schedule_minutes * 60))
    return min(1.0, step / cfg.steps)


def _lr_at(cfg: TrainConfig, step: int, trained_s: float) -> float:
    """Linear warm-up over the first steps, then cosine decay from ``lr`` to ``lr_min``."""
    if step < WARMUP_STEPS:
        return cfg.lr * (step + 1) / WARMUP_STEPS
    if cfg.schedule_minutes:
        t = _progress(cfg, step, trained_s)
    else:
        t = min(1.0, (step - WARMUP_STEPS) / max(1, cfg.steps - WARMUP_STEPS))
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * t))


def finished(state: dict) -> bool:
    """Whether a checkpoint's run has completed its schedule."""
    cfg = TrainConfig(**state["config"])
    return _progress(cfg, state["step"], state.get("trained_s", 0.0)) >= 1.0


def steer_lambda(lam: float, bpv: float, target: float) -> float:
    """One step of the target-rate controller: raise lambda when the rate is below target.

    A larger lambda buys quality with bits. The multiplicative step is proportional to the
    relative rate error and capped at 10 %, so noisy batch rates do not make it oscillate.
    """
    return lam * math.exp(max(-0.1, min(0.1, (target - bpv) / target)))


def rd_loss(model, x, mask, q):
    """(loss, bits per value, masked MSE) for a batch; ``q`` holds 0-based levels."""
    import torch

    out = model(x, q)
    n_values = x.shape[-2] * x.shape[-1]
    bits = sum(-torch.log2(lik).sum(dim=(1, 2, 3)) for lik in out["likelihoods"].values())
    bpv = bits / n_values
    err = (out["x_hat"] - x) ** 2 * mask
    mse = err.sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3)).clamp(min=1)
    lam = model.lambdas[q]
    # each level's loss is divided by sqrt(lambda / geometric mean) so that the
    # high-lambda levels do not take over the shared trunk's gradient
    balance = torch.sqrt(lam / torch.exp(torch.log(model.lambdas).mean()))
    loss = ((bpv + lam * mse) / balance).mean()
    return loss, bpv, mse


def _to_device(a: np.ndarray, device):
    """A host batch on ``device``; to a GPU through pinned memory, without waiting for its queue."""
    import torch

    t = torch.from_numpy(a)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


def train(sources, out: str | os.PathLike, cfg: TrainConfig | None = None, init: str | None = None, resume: bool = False, log=None,
          grow: bool = False):
    """Train (or fine-tune from ``init``) and write checkpoints to ``out``.

    Fine-tuning keeps ``init``'s architecture and quality levels; with ``grow`` the run
    instead starts from ``init`` grown into ``cfg.arch`` with ``cfg.lambdas``
    (:func:`nncodec.train.widen.widen`: a wider network computing ``init``'s function).
    Returns the path of the last checkpoint. ``log`` receives one line per report
    (default: stderr).
    """
    import torch

    from ..models.hyperprior import CDF_BUFFERS, FieldHyperprior

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    state = None
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        saved = TrainConfig(**state["config"])
        # a resumed run keeps its recipe; only how long it runs may change (a time-fitted
        # schedule stays one unless new minutes are given: `--resume` alone continues it)
        if cfg is not None:
            saved.steps, saved.max_minutes = cfg.steps, cfg.max_minutes
            saved.schedule_minutes = cfg.schedule_minutes or saved.schedule_minutes
        cfg = saved
        done = (f"{state.get('trained_s', 0.0) / 60:.1f} of {cfg.schedule_minutes:g} minutes" if cfg.schedule_minutes
                else f"step {state['step']} of {cfg.steps}")
        log(f"resuming from {ckpt_path} at step {state['step']} ({done})")
    cfg = cfg or TrainConfig()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)

    t0 = time.time()
    tiles = TileSource(sources, tile=cfg.tile, val_fraction=cfg.val_fraction)
    sampler = CropSampler(tiles, seed=cfg.seed)
    val_tiles = tiles.validation_tiles()
    log(f"{len(tiles.variables)} variables, {len(val_tiles)} validation tiles, "
        f"{len(sampler.tiles)} tiles in the training pool ({time.time() - t0:.1f} s)")
    # crops never exceed the largest tile (small grids such as 37 x 49 stay trainable)
    largest = tiles.largest_edge()

    if cfg.target_bpp is not None:
        if cfg.target_bpp <= 0:
            raise ValueError(f"target_bpp must be positive, got {cfg.target_bpp}")
        if init is not None:
            raise ValueError("target_bpp trains a new one-level model; it does not combine with init")
        if len(cfg.lambdas) != 1:
            cfg.lambdas = [5000.0]  # a starting guess: the controller moves it
    if grow and init is None:
        raise ValueError("grow=True grows the model given as init; name one")
    init_weights = None
    if init is not None and state is None:
        from ..weights import load_model_state

        init_weights = load_model_state(init)
        if grow:
            from .widen import widen

            init_weights = {"state_dict": widen(init_weights["state_dict"], init_weights["config"], cfg.arch, cfg.lambdas)}
        else:
            # a fine-tuned model keeps its parent's architecture and quality levels
            init_cfg = dict(init_weights["config"])
            cfg.lambdas = init_cfg.pop("lambdas")
            cfg.arch = init_cfg
    model = FieldHyperprior(lambdas=cfg.lambdas, **cfg.arch)
    device = torch.device(cfg.device)
    if init_weights is not None:
        # the CDF tables are rebuilt at export; everything trainable must match exactly
        trainable = {k: v for k, v in init_weights["state_dict"].items() if k.rsplit(".", 1)[-1] not in CDF_BUFFERS}
        missing, unexpected = model.load_state_dict(trainable, strict=False)
        if unexpected or [k for k in missing if k.rsplit(".", 1)[-1] not in CDF_BUFFERS]:
            raise ValueError(f"{init} does not fit the FieldHyperprior architecture (missing {missing}, unexpected {unexpected})")
        log(f"initialised from {init} ({len(trainable)} tensors; lambdas {cfg.lambdas}"
            + (f"; grown to {cfg.arch})" if grow else ")"))
    params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    aux_opt = torch.optim.Adam(aux_params, lr=1e-3)
    step, trained_s = 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        if "opt" in state:
            opt.load_state_dict(state["opt"])
            aux_opt.load_state_dict(state["aux_opt"])
        else:
            log("checkpoint has no optimiser state (a slim checkpoint): Adam restarts its moments")
        step, trained_s = state["step"], state.get("trained_s", 0.0)
        sampler.rng.bit_generator.state = state["rng"]
    model.to(device)

    def save():
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(
            {"model": {k: v.cpu() for k, v in model.state_dict().items()}, "opt": opt.state_dict(), "aux_opt": aux_opt.state_dict(),
             "step": step, "trained_s": trained_s, "config": asdict(cfg), "rng": sampler.rng.bit_generator.state},
            tmp,
        )
        os.replace(tmp, ckpt_path)  # never a half-written checkpoint

    n_q = len(cfg.lambdas)
    # full float32 on GPUs: TF32's 10-bit mantissa would add noise at the level of the
    # high-rate levels' distortion (a PSNR of 50 dB is an RMS error of 3e-3 of the range)
    with torch.backends.cudnn.flags(enabled=True, benchmark=True, deterministic=False, allow_tf32=False):
        start, since = time.time(), time.time()
        trained_before = trained_s
        run_bpv, run_mse, run_n = 0.0, 0.0, 0
        model.train()
        while _progress(cfg, step, trained_s) < 1.0:
            late = _progress(cfg, step, trained_s) >= 1 - cfg.late_fraction
            base = cfg.crop_late if late else cfg.crop
            # odd sizes now and then: real chunks are rarely multiples of 16
            size = base if sampler.rng.random() < 0.75 else int(sampler.rng.integers(base // 2, base + 1))
            size = min(size, largest)
            batch = cfg.batch if not late else max(2, cfg.batch * cfg.crop**2 // cfg.crop_late**2)
            x, m = sampler.batch(size, batch)
            x, m = _to_device(x, device), _to_device(m.astype(np.float32), device)
            q = torch.from_numpy(sampler.rng.integers(0, n_q, size=batch)).to(device)
            for g in opt.param_groups:
                g["lr"] = _lr_at(cfg, step, trained_s)
            loss, bpv, mse = rd_loss(model, x, m, q)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            aux = model.aux_loss()
            aux_opt.zero_grad()
            aux.backward()
            aux_opt.step()
            step += 1
            trained_s = trained_before + time.time() - start
            # running sums stay on the device: a float() per step would make a GPU wait for the host
            run_bpv = run_bpv + bpv.detach().mean()
            run_mse = run_mse + mse.detach().mean()
            run_n += 1
            if cfg.target_bpp is not None and step % 20 == 0:
                with torch.no_grad():
                    model.lambdas[0] = steer_lambda(float(model.lambdas[0]), float(run_bpv) / run_n, cfg.target_bpp)
                cfg.lambdas = [float(model.lambdas[0])]  # the checkpoint and the card record the lambda reached
            if step % cfg.log_every == 0:
                rate = cfg.log_every / (time.time() - since)
                since = time.time()
                where = (f"step {step} ({trained_s / 60:.1f} of {cfg.schedule_minutes:g} min)" if cfg.schedule_minutes
                         else f"step {step}/{cfg.steps}")
                log(f"{where} loss {float(loss.detach()):.4f} bpv {float(run_bpv) / run_n:.3f} "
                    f"psnr {10 * math.log10(1 / max(float(run_mse) / run_n, 1e-12)):.2f} dB lr {_lr_at(cfg, step, trained_s):.2e} {rate:.1f} steps/s"
                    + (f" lambda {cfg.lambdas[0]:.4g}" if cfg.target_bpp is not None else ""))
                run_bpv, run_mse, run_n = 0.0, 0.0, 0
            if step % cfg.checkpoint_every == 0 or _progress(cfg, step, trained_s) >= 1.0:
                save()
                if val_tiles and step % (cfg.checkpoint_every * 5) == 0:
                    log("validation " + json.dumps(validate(model, val_tiles)))
            if cfg.max_minutes and time.time() - start > cfg.max_minutes * 60:
                save()
                log(f"stopped after {cfg.max_minutes} minutes at step {step}; run again with resume to continue")
                break
    return ckpt_path


def validate(model, val_tiles, max_tiles: int = 24) -> dict:
    """Estimated bits per value and PSNR per quality level on whole validation tiles."""
    import torch

    model.eval()
    picks = np.linspace(0, len(val_tiles) - 1, min(max_tiles, len(val_tiles))).astype(int)
    result = {}
    with torch.no_grad():
        for qi in range(len(model.config["lambdas"])):
            bits, n, se = 0.0, 0, 0.0
            for k in picks:
                t, m = val_tiles[k]
                dev = model.lambdas.device
                x = torch.from_numpy(t)[None, None].to(dev)
                mm = torch.from_numpy(m.astype(np.float32))[None, None].to(dev)
                _, bpv, mse = rd_loss(model, x, mm, torch.tensor([qi], device=dev))
                bits += float(bpv) * t.size
                n += t.size
                se += float(mse)
            result[f"q{qi + 1}"] = {"bpv": round(bits / n, 4), "psnr": round(10 * math.log10(len(picks) / max(se, 1e-20)), 2)}
    model.train()
    return result


def slim_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike) -> None:
    """Copy a checkpoint without optimiser state (a third of the size) for committing.

    ``train(..., resume=True)`` continues from it with fresh Adam moments.
    """
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    slim = {k: state[k] for k in ("model", "step", "trained_s", "config", "rng") if k in state}
    tmp = Path(out).with_suffix(".tmp")
    torch.save(slim, tmp)
    os.replace(tmp, out)

"""Grow a trained model into a wider one that starts out computing the same function.

A wider network (more latent channels ``M``, a wider analysis ``N`` or synthesis) has
more capacity for high rates but, trained from scratch, needs far more steps than one
GPU session gives (docs/training.md). Growing a trained model instead (Chen, Goodfellow,
Shlens 2016, "Net2Net") starts the wider one at the parent's quality:

* every layer's weights hold the parent's in their leading block;
* the weights and biases that produce a new channel are zero, so new channels carry
  zeros and the next layer's weights on them (random, as initialised) add nothing, yet
  pass gradients, so training can bring the new channels in;
* new latent channels start with zero values and the smallest scale (they cost almost no
  bits); the hyper-synthesis bias of their scale sits at the scale bound, above zero,
  so its ReLU passes gradients;
* quality levels with other lambdas take their gains from the parent's, interpolated
  (and extrapolated) in log lambda per channel; new channels take each level's mean gain.

The hyper transforms (``Nh``) keep their width: their ReLUs would hold zero channels dead.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..models.hyperprior import CDF_BUFFERS, SCALES_MIN, FieldHyperprior


def widen(parent_state: dict, parent_config: dict, arch: dict, lambdas, seed: int = 0) -> dict:
    """State dict of ``FieldHyperprior(lambdas=lambdas, **arch)`` grown from a parent.

    ``parent_state`` and ``parent_config`` are a weights file's ``state_dict`` and
    ``config`` (:func:`nncodec.weights.load_model_state`). Every width of ``arch`` must be
    at least the parent's, and ``Nh`` the same. The integer CDF tables are left out: they
    are rebuilt at export.
    """
    parent_arch = {k: v for k, v in parent_config.items() if k != "lambdas"}
    old = [parent_arch["N"], parent_arch["M"], *parent_arch["synthesis"]]
    new = [arch["N"], arch["M"], *arch["synthesis"]]
    if arch["Nh"] != parent_arch["Nh"]:
        raise ValueError(f"widen keeps the hyper transforms' width: Nh must stay {parent_arch['Nh']}, got {arch['Nh']}")
    if any(n < o for n, o in zip(new, old)):
        raise ValueError(f"widen only grows: {arch} is narrower than the parent's {parent_arch} somewhere")
    with torch.random.fork_rng(devices=[]):  # the new weights' draw leaves the caller's RNG alone
        torch.manual_seed(seed)
        child = FieldHyperprior(lambdas=list(lambdas), **arch)
    state = {k: v.clone() for k, v in child.state_dict().items() if k.rsplit(".", 1)[-1] not in CDF_BUFFERS}
    done = {"log_gain", "lambdas"}
    # the hyper-synthesis layer whose outputs are the latents' scales
    scales = "h_s." + str(max(i for i, m in enumerate(child.h_s) if isinstance(m, nn.Conv2d)))
    with torch.no_grad():
        for name, module in child.named_modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                _grow_layer(state, parent_state, name, out_dim=1 if isinstance(module, nn.ConvTranspose2d) else 0,
                            new_bias=SCALES_MIN if name == scales else 0.0)
                done |= {f"{name}.weight", f"{name}.bias"}
            elif hasattr(module, "beta_reparam"):  # GDN: the parent's block; new channels as initialised
                n = parent_state[f"{name}.beta"].shape[0]
                state[f"{name}.beta"][:n] = parent_state[f"{name}.beta"]
                state[f"{name}.gamma"][:n, :n] = parent_state[f"{name}.gamma"]
                done |= {f"{name}.beta", f"{name}.gamma"}
        for key in state.keys() - done:  # the factorised prior, the reparametrisations' constants
            if state[key].shape != parent_state[key].shape:
                raise ValueError(f"widen cannot grow {key}: {tuple(parent_state[key].shape)} -> {tuple(state[key].shape)}")
            state[key] = parent_state[key].clone()
        state["log_gain"] = _grown_gains(parent_state["log_gain"], parent_config["lambdas"], lambdas, arch["M"])
    return state


def _grow_layer(state: dict, parent: dict, name: str, out_dim: int, new_bias: float) -> None:
    w, b = state[f"{name}.weight"], state[f"{name}.bias"]
    pw, pb = parent[f"{name}.weight"], parent[f"{name}.bias"]
    n_out = pw.shape[out_dim]
    w.narrow(out_dim, n_out, w.shape[out_dim] - n_out).zero_()  # new channels start silent
    w[tuple(slice(0, s) for s in pw.shape)] = pw
    b[:n_out] = pb
    b[n_out:] = new_bias


def _grown_gains(log_gain: torch.Tensor, parent_lambdas, lambdas, m: int) -> torch.Tensor:
    """(levels, m) log-gains: the parent's, linear in log lambda between and beyond its levels."""
    x = np.log(np.asarray(parent_lambdas, dtype=np.float64))
    g = log_gain.double().numpy()
    out = np.empty((len(lambdas), m))
    for i, lam in enumerate(np.log(np.asarray(lambdas, dtype=np.float64))):
        if len(x) == 1:
            row = g[0]
        else:
            j = int(np.clip(np.searchsorted(x, lam) - 1, 0, len(x) - 2))  # the segment, or the nearest end's
            row = g[j] + (g[j + 1] - g[j]) * (lam - x[j]) / (x[j + 1] - x[j])
        out[i, : g.shape[1]] = row
        out[i, g.shape[1]:] = row.mean()
    return torch.from_numpy(out).to(log_gain.dtype)

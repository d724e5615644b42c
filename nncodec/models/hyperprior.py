"""Scale-hyperprior network for one-channel geophysical fields.

Ballé, Minnen, Singh, Hwang, Johnston (2018), "Variational image compression with
a scale hyperprior", ICLR, adapted to scientific fields:

* one input channel, normalised per tile to [0, 1] by the codec;
* an asymmetric design: a 64-channel analysis transform (encoding happens once, often
  on GPUs) and a light synthesis transform (decoding happens on every read, on CPUs);
* gain units (Cui et al. 2021, "Asymmetric gained deep image compression with
  continuous rate adaptation"): one trunk serves every quality level; a per-channel
  gain scales the latents before rounding and its inverse scales them back;
* any tile size: strided convolutions map H to ceil(H / 2), so no padding is coded
  and latents lying wholly outside the field are never transmitted.

::

    x ──g_a──▶ y ──×gain[q]──▶ y_g ──Q──▶ ŷ_g ──÷gain[q]──g_s──▶ x̂
                                 │          ▲
                                h_a         │ N(0, σ)
                                 ▼          │
                                 z ──Q──▶ ẑ ──h_s──▶ σ
                                     ▲
                               factorised prior

Inside ``models/`` the tensor names follow CompressAI (``g_a``, ``h_s``, ``y_hat``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._compressai import GDN, EntropyBottleneck, GaussianConditional
from . import transforms

SCALES_MIN = 0.11
SCALES_MAX = 256.0
SCALES_LEVELS = 64
#: Entropy-model buffers that ``update()`` computes (the integer CDF tables); their shapes
#: depend on the trained model, so loading and fine-tuning treat them apart.
CDF_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


def scale_table() -> torch.Tensor:
    """The 64 log-spaced scales of the Gaussian conditional (CompressAI's default)."""
    return torch.exp(torch.linspace(math.log(SCALES_MIN), math.log(SCALES_MAX), SCALES_LEVELS))


class FieldHyperprior(nn.Module):
    """Gain-unit scale hyperprior for 1-channel fields (see module docstring).

    Parameters
    ----------
    N : int
        Channels of the analysis transform.
    M : int
        Latent channels.
    Nh : int
        Channels of the hyper transforms.
    synthesis : tuple of int
        Channels of the three inner synthesis layers (light decoder).
    lambdas : sequence of float
        Rate-distortion trade-off of each quality level, in loss = bits/value + lambda * MSE
        on the [0, 1]-normalised field. Quality ``q`` (1-based) uses ``lambdas[q - 1]``.
    """

    stride = 16
    hyper_stride = 4

    def __init__(self, N=64, M=64, Nh=48, synthesis=(48, 32, 16), lambdas=(300.0,)):
        super().__init__()
        self.config = {"N": N, "M": M, "Nh": Nh, "synthesis": list(synthesis), "lambdas": list(lambdas)}
        # CompressAI's GDN: its bound on beta and gamma passes gradients (the codec's
        # runtime builds the same stacks with its own forward-only GDN)
        self.g_a = transforms.analysis(N, M, gdn=GDN)
        self.g_s = transforms.synthesis(M, synthesis, gdn=GDN)
        self.h_a = transforms.hyper_analysis(M, Nh)
        self.h_s = transforms.hyper_synthesis(M, Nh)
        self.entropy_bottleneck = EntropyBottleneck(Nh)
        self.gaussian_conditional = GaussianConditional(None)
        n_q = len(lambdas)
        # log-gains so that the gains stay positive; initialised to spread the levels
        init = torch.linspace(-1.5, 1.5, n_q) if n_q > 1 else torch.zeros(1)
        self.log_gain = nn.Parameter(init[:, None].repeat(1, M).clone())
        self.register_buffer("lambdas", torch.tensor(list(lambdas), dtype=torch.float32))

    @property
    def qualities(self) -> int:
        return len(self.config["lambdas"])

    def gain(self, q: torch.Tensor) -> torch.Tensor:
        """Per-sample gain, shape (B, M, 1, 1); ``q`` holds 0-based level indexes."""
        return torch.exp(self.log_gain[q])[:, :, None, None]

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> dict:
        """Training pass with additive-noise quantisation proxies."""
        g = self.gain(q)
        y = self.g_a(x) * g
        z = self.h_a(y)
        z_hat, z_lik = self.entropy_bottleneck(z)
        scales = self.h_s(z_hat)[..., : y.shape[-2], : y.shape[-1]]
        y_hat, y_lik = self.gaussian_conditional(y, scales)
        x_hat = self.g_s(y_hat / g)[..., : x.shape[-2], : x.shape[-1]]
        return {"x_hat": x_hat, "likelihoods": {"y": y_lik, "z": z_lik}}

    def update(self) -> None:
        """Build the integer CDF tables used by the range coder."""
        self.gaussian_conditional.update_scale_table(scale_table(), force=True)
        self.entropy_bottleneck.update(force=True)

    def aux_loss(self) -> torch.Tensor:
        return self.entropy_bottleneck.loss()

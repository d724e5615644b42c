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

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .._compressai import GDN, EntropyBottleneck, GaussianConditional

SCALES_MIN = 0.11
SCALES_MAX = 256.0
SCALES_LEVELS = 64
#: Entropy-model buffers that ``update()`` computes (the integer CDF tables); their shapes
#: depend on the trained model, so loading and fine-tuning treat them apart.
CDF_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


def scale_table() -> torch.Tensor:
    """The 64 log-spaced scales of the Gaussian conditional (CompressAI's default)."""
    return torch.exp(torch.linspace(math.log(SCALES_MIN), math.log(SCALES_MAX), SCALES_LEVELS))


def _conv(cin: int, cout: int, k: int = 5, s: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=s, padding=k // 2)


def _deconv(cin: int, cout: int, k: int = 5, s: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, k, stride=s, padding=k // 2, output_padding=s - 1)


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
        s1, s2, s3 = synthesis
        self.g_a = nn.Sequential(
            _conv(1, N), GDN(N), _conv(N, N), GDN(N), _conv(N, N), GDN(N), _conv(N, M)
        )
        self.g_s = nn.Sequential(
            _deconv(M, s1), GDN(s1, inverse=True), _deconv(s1, s2), GDN(s2, inverse=True),
            _deconv(s2, s3), GDN(s3, inverse=True), _deconv(s3, 1),
        )
        self.h_a = nn.Sequential(
            _conv(M, Nh, 3, 1), nn.ReLU(inplace=True), _conv(Nh, Nh), nn.ReLU(inplace=True), _conv(Nh, Nh)
        )
        self.h_s = nn.Sequential(
            _deconv(Nh, Nh), nn.ReLU(inplace=True), _deconv(Nh, Nh), nn.ReLU(inplace=True),
            _conv(Nh, M, 3, 1), nn.ReLU(inplace=True),
        )
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


def decoder_synthesis(g_s: nn.Sequential) -> nn.Sequential:
    """The decoder form of a trained synthesis (format version 3's reference network):
    the same function, computed in fewer, faster operations. Activations are kept
    channels-last, the layout oneDNN's convolutions run fastest in; GDNs become one
    matrix product each; the last transposed convolution (one output channel, which
    oneDNN runs slowly) becomes a sub-pixel convolution."""
    mods = [_FastGDN(m) if isinstance(m, GDN) else copy.deepcopy(m) for m in g_s]
    mods[-1] = _SubpixelDeconv(g_s[-1])
    return nn.Sequential(_ChannelsLast(), *mods).to(memory_format=torch.channels_last).eval()


def encoder_analysis(g_a: nn.Sequential) -> nn.Sequential:
    """The encoder's form of a trained analysis: the same function, channels-last, with
    each GDN as one matrix product (as in :func:`decoder_synthesis`)."""
    mods = [_FastGDN(m) if isinstance(m, GDN) else copy.deepcopy(m) for m in g_a]
    return nn.Sequential(_ChannelsLast(), *mods).to(memory_format=torch.channels_last).eval()


class _ChannelsLast(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)


class _FastGDN(nn.Module):
    """``x / sqrt(beta + gamma @ x**2)`` over channels (``x * sqrt(...)`` when inverse),
    with the trained GDN's reparametrised beta and gamma computed once; one matrix
    product over the channels-last pixels."""

    def __init__(self, gdn: GDN):
        super().__init__()
        self.inverse = gdn.inverse
        with torch.no_grad():
            self.register_buffer("beta", gdn.beta_reparam(gdn.beta).detach().clone())
            self.register_buffer("gamma_t", gdn.gamma_reparam(gdn.gamma).detach().t().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        v = x.permute(0, 2, 3, 1).reshape(-1, c)  # a view of channels-last activations
        norm = torch.addmm(self.beta, v * v, self.gamma_t)
        out = v * (norm.sqrt_() if self.inverse else norm.rsqrt_())
        return out.view(b, h, w, c).permute(0, 3, 1, 2)


class _SubpixelDeconv(nn.Module):
    """A 5x5, stride-2 transposed convolution (padding 2, output padding 1) as a 3x3
    convolution to the four output phases followed by a pixel shuffle.

    Output pixel (2i + r) sums input pixels i + d, d in {-1, 0, 1}, through kernel tap
    r + 2 - 2d (none when that is 5).
    """

    TAPS = torch.tensor([[4, 2, 0], [5, 3, 1]])  # [phase r][offset d + 1] -> kernel tap

    def __init__(self, deconv: nn.ConvTranspose2d):
        super().__init__()
        geometry = (deconv.kernel_size, deconv.stride, deconv.padding, deconv.output_padding)
        if geometry != ((5, 5), (2, 2), (2, 2), (1, 1)):
            raise ValueError(f"sub-pixel form is for 5x5 stride-2 transposed convolutions, not {geometry}")
        with torch.no_grad():
            w = F.pad(deconv.weight, (0, 1, 0, 1))  # tap 5 reads zeros
            t = self.TAPS
            k = w[:, :, t[:, None, :, None], t[None, :, None, :]]  # (cin, cout, ry, rx, dy, dx)
            cin, cout = w.shape[:2]
            self.register_buffer("weight", k.permute(1, 2, 3, 0, 4, 5).reshape(4 * cout, cin, 3, 3).contiguous())
            self.register_buffer("bias", deconv.bias.detach().repeat_interleave(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(F.conv2d(x, self.weight, self.bias, padding=1), 2)

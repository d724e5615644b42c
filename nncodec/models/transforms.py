"""The transforms of the scale hyperprior, built without CompressAI.

The codec's runtime (encoding, decoding, every format version) needs the trained
transforms' forward passes only. Building them here from plain torch layers keeps
CompressAI out of the processes that read and write chunks: importing it costs about
4 s and 300 MB of resident memory per process (it pulls in torchvision and
torch_geometric), which every Dask worker and every notebook that opens a store would
pay. Training (:mod:`nncodec.models.hyperprior`) builds the same layer stacks with
CompressAI's GDN, so a weights file's state dict loads into either.

:class:`GDN` computes what CompressAI's ``compressai.layers.GDN`` computes for the same
parameters, operation for operation (tests/test_kernels.py checks the bits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv(cin: int, cout: int, k: int = 5, s: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=s, padding=k // 2)


def _deconv(cin: int, cout: int, k: int = 5, s: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, k, stride=s, padding=k // 2, output_padding=s - 1)


def analysis(N: int, M: int, gdn=None) -> nn.Sequential:
    """``g_a``: four stride-2 5x5 convolutions, 1 -> N -> N -> N -> M channels, GDN between."""
    gdn = gdn or GDN
    return nn.Sequential(_conv(1, N), gdn(N), _conv(N, N), gdn(N), _conv(N, N), gdn(N), _conv(N, M))


def synthesis(M: int, channels, gdn=None) -> nn.Sequential:
    """``g_s``: four stride-2 5x5 transposed convolutions, M -> s1 -> s2 -> s3 -> 1
    channels, inverse GDN between."""
    gdn = gdn or GDN
    s1, s2, s3 = channels
    return nn.Sequential(
        _deconv(M, s1), gdn(s1, inverse=True), _deconv(s1, s2), gdn(s2, inverse=True),
        _deconv(s2, s3), gdn(s3, inverse=True), _deconv(s3, 1),
    )


def hyper_analysis(M: int, Nh: int) -> nn.Sequential:
    """``h_a``: a 3x3 convolution and two stride-2 5x5 ones, M -> Nh channels, ReLU between."""
    return nn.Sequential(
        _conv(M, Nh, 3, 1), nn.ReLU(inplace=True), _conv(Nh, Nh), nn.ReLU(inplace=True), _conv(Nh, Nh)
    )


def hyper_synthesis(M: int, Nh: int) -> nn.Sequential:
    """``h_s`` (float; the codec runs its integer form): Nh -> Nh -> Nh -> M channels, ReLU after each."""
    return nn.Sequential(
        _deconv(Nh, Nh), nn.ReLU(inplace=True), _deconv(Nh, Nh), nn.ReLU(inplace=True),
        _conv(Nh, M, 3, 1), nn.ReLU(inplace=True),
    )


class _LowerBound(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("bound", torch.zeros(1))


class _NonNegative(nn.Module):
    """Ballé's reparametrisation of a non-negative parameter: ``max(p, bound)**2 - pedestal``
    (the bound and pedestal come with the weights)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("pedestal", torch.zeros(1))
        self.lower_bound = _LowerBound()

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return torch.max(p, self.lower_bound.bound) ** 2 - self.pedestal


class GDN(nn.Module):
    """Generalised divisive normalisation (Ballé, Laparra, Simoncelli 2016), inference only:
    ``x / sqrt(beta + gamma @ x**2)`` over channels, or ``x * sqrt(...)`` when ``inverse``.
    Parameters and buffers carry the names of CompressAI's GDN, whose weights it loads."""

    def __init__(self, channels: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(torch.zeros(channels, channels))
        self.beta_reparam = _NonNegative()
        self.gamma_reparam = _NonNegative()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        beta = self.beta_reparam(self.beta)
        gamma = self.gamma_reparam(self.gamma).reshape(c, c, 1, 1)
        norm = F.conv2d(x**2, gamma, beta)
        norm = torch.sqrt(norm) if self.inverse else torch.rsqrt(norm)
        return x * norm


def decoder_synthesis(g_s: nn.Sequential) -> nn.Sequential:
    """The decoder form of a trained synthesis (format version 3's reference network):
    the same function, computed in fewer, faster operations. Activations are kept
    channels-last, the layout oneDNN's convolutions run fastest in; GDNs become one
    matrix product each; the last transposed convolution (one output channel, which
    oneDNN runs slowly) becomes a sub-pixel convolution."""
    mods = [_fast(m) for m in g_s]
    mods[-1] = _SubpixelDeconv(g_s[-1])
    return _Chain(*mods).to(memory_format=torch.channels_last).eval()


def encoder_analysis(g_a: nn.Sequential) -> nn.Sequential:
    """The encoder's form of a trained analysis: the same function, channels-last, with
    each GDN as one matrix product (as in :func:`decoder_synthesis`)."""
    return _Chain(*(_fast(m) for m in g_a)).to(memory_format=torch.channels_last).eval()


def _fast(m: nn.Module) -> nn.Module:
    """The inference form of one trained layer (:class:`_FastGDN`, :class:`_FastConv`)."""
    return _FastGDN(m) if _is_gdn(m) else _FastConv(m)


def _is_gdn(m: nn.Module) -> bool:
    """This module's GDN or CompressAI's (a training network's)."""
    return hasattr(m, "beta_reparam") and hasattr(m, "gamma_reparam")


class _Chain(nn.Sequential):
    """A layer stack run on channels-last activations, calling each layer's ``forward``
    directly: these private layers have no hooks, and on a small tile (73 x 144) the
    per-call machinery of ``nn.Module`` and of torch's convolution modules took an eighth
    of the synthesis time, all of it holding the GIL. The same operations on the same
    tensors: the same values."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        for layer in self:
            x = layer.forward(x)
        return x


class _FastConv(nn.Module):
    """A trained (transposed) convolution as one functional call with its geometry fixed:
    the operation ``nn.Conv2d`` / ``nn.ConvTranspose2d`` run, with the same arguments."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.transposed = isinstance(conv, nn.ConvTranspose2d)
        if conv.groups != 1 or conv.dilation != (1, 1) or conv.padding_mode != "zeros":
            raise ValueError(f"{conv} is not a plain convolution")
        self.register_buffer("weight", conv.weight.detach().clone())
        self.register_buffer("bias", conv.bias.detach().clone())
        self.stride, self.padding = conv.stride, conv.padding
        self.output_padding = conv.output_padding if self.transposed else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transposed:
            return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)


class _FastGDN(nn.Module):
    """``x / sqrt(beta + gamma @ x**2)`` over channels (``x * sqrt(...)`` when inverse),
    with the trained GDN's reparametrised beta and gamma computed once; one matrix
    product over the channels-last pixels."""

    def __init__(self, gdn: nn.Module):
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
        phases = F.conv2d(x, self.weight, self.bias, padding=1)
        b, c, h, w = phases.shape
        # F.pixel_shuffle's copy, from the channels-last phases in one permuted reshape
        # (its own channels-last path took twice as long on a small tile)
        return (phases.permute(0, 2, 3, 1).reshape(b, h, w, c // 4, 2, 2)
                .permute(0, 3, 1, 4, 2, 5).reshape(b, c // 4, 2 * h, 2 * w))

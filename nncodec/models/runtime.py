"""A loaded model: the network on its device, the integer hyper-synthesis, the tables.

The codec talks to the network only through :class:`Runtime`, in batches of tiles of
one shape, so a GPU sees few large transfers rather than one per tile.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch

from ..entropy import IntegerHyperSynthesis, Tables
from .hyperprior import FieldHyperprior


def resolve_device(device: str) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but torch sees no CUDA device; use device='auto' or 'cpu'")
    return dev


def _resize_buffers(module: torch.nn.Module, state: dict, prefix: str) -> None:
    """Give the entropy models' table buffers the stored shapes before loading them."""
    for name in ("_quantized_cdf", "_offset", "_cdf_length", "scale_table"):
        key = f"{prefix}.{name}"
        if key in state:
            getattr(module, name).resize_(state[key].shape)


class Runtime:
    """Network + entropy tables of one weights file on one device."""

    def __init__(self, ref, data: dict, device: str = "auto"):
        self.ref = ref
        self.device = resolve_device(device)
        net = FieldHyperprior(**data["config"])
        state = data["state_dict"]
        _resize_buffers(net.entropy_bottleneck, state, "entropy_bottleneck")
        _resize_buffers(net.gaussian_conditional, state, "gaussian_conditional")
        net.load_state_dict(state)
        net.eval()
        self.net = net.to(self.device)
        self.int_hs = IntegerHyperSynthesis.from_state(data["integer_h_s"])
        self.tables = Tables(net.entropy_bottleneck, net.gaussian_conditional)
        self.qualities = net.qualities
        with torch.no_grad():
            self.gains = torch.exp(net.log_gain).to(self.device)

    @staticmethod
    def latent_shape(h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """(y shape, z shape) of an h x w tile: every stride-2 layer maps n to ceil(n / 2)."""
        def down(n, times):
            for _ in range(times):
                n = -(-n // 2)
            return n
        y = (down(h, 4), down(w, 4))
        return y, (down(y[0], 2), down(y[1], 2))

    @torch.inference_mode()
    def analyse(self, x: np.ndarray) -> torch.Tensor:
        """Latents y of a batch of normalised tiles (B, 1, h, w) float32."""
        return self.net.g_a(torch.from_numpy(x).to(self.device))

    @torch.inference_mode()
    def quantise(self, y: torch.Tensor, q: int) -> dict:
        """Symbols and scale indexes of latents at quality ``q`` (1-based)."""
        gain = self.gains[q - 1].view(1, -1, 1, 1)
        y_g = y * gain
        z = self.net.h_a(y_g)
        med = self.tables.medians.to(z.device).view(1, -1, 1, 1)
        z_sym = torch.round(z - med)
        z_hat = (z_sym + med).cpu()
        idx = self.int_hs.indexes(z_hat, tuple(y.shape[-2:]))
        y_sym = torch.round(y_g)
        return {"z": z_sym.to(torch.int32).cpu().numpy(), "y": y_sym.to(torch.int32).cpu().numpy(), "idx": idx}

    def indexes(self, z_sym: np.ndarray, y_shape: tuple[int, int]) -> np.ndarray:
        """Decoder side: scale indexes from decoded hyper-latent symbols."""
        z_hat = torch.from_numpy(z_sym).float() + self.tables.medians.view(1, -1, 1, 1)
        return self.int_hs.indexes(z_hat, y_shape)

    @torch.inference_mode()
    def synthesise(self, y_sym: np.ndarray, q: int, shape: tuple[int, int], dtype=torch.float32,
                   reproducible: bool = True) -> np.ndarray:
        """Normalised reconstruction (B, h, w) from latent symbols at quality ``q``.

        ``dtype=torch.float64`` runs the synthesis in double precision (used by the
        error-bound layer so that devices agree far inside its safety margin).
        ``reproducible=False`` allows the fastest kernels, whose last bits depend on the
        thread count: for the encoder's search, never for values a decoder returns.
        """
        gain = self.gains[q - 1].view(1, -1, 1, 1)
        y_hat = torch.from_numpy(y_sym).to(self.device, torch.float32) / gain
        g_s = self.net.g_s
        if dtype == torch.float64:
            g_s = _double_synthesis(self.net)
            y_hat = y_hat.double()
        # oneDNN splits a convolution's sums differently for 1 and 2 threads; PyTorch's own
        # kernels compute each tile alone, so a chunk decodes to the same values whatever
        # the thread count or batch size. On CUDA: deterministic cuDNN kernels, no TF32.
        if not reproducible:
            return g_s(y_hat)[:, 0, : shape[0], : shape[1]].cpu().numpy()
        with _reproducible_kernels():
            x = g_s(y_hat)[:, 0, : shape[0], : shape[1]]
        return x.cpu().numpy()


@contextlib.contextmanager
def _reproducible_kernels():
    with warnings.catch_warnings():
        # switching oneDNN off makes torch mention Intel-GPU TF32, which does not concern us
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
        with torch.backends.mkldnn.flags(enabled=False), torch.backends.cudnn.flags(
            enabled=True, benchmark=False, deterministic=True, allow_tf32=False
        ):
            yield


def _double_synthesis(net: FieldHyperprior) -> torch.nn.Module:
    cached = getattr(net, "_g_s64", None)
    if cached is None:
        import copy

        cached = copy.deepcopy(net.g_s).double()
        object.__setattr__(net, "_g_s64", cached)
    return cached

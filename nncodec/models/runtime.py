"""A loaded model: the network on its device, the integer hyper-synthesis, the tables.

The codec talks to the network only through :class:`Runtime`, in batches of tiles of
one shape, so a GPU sees few large transfers rather than one per tile.

:meth:`Runtime.refine` is the optional encoder-side latent refinement (docs/refinement.md).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import warnings

import numpy as np
import torch

from ..entropy import Tables
from ..hypersynthesis import IntegerHyperSynthesis
from ..format import FORMAT_VERSION
from . import tilepool, transforms


#: Adam step size of the latent refinement, in units of the (ungained) latents y
REFINE_LR = 0.03
#: temperature of stochastic Gumbel annealing: geometric from TAU_START to TAU_END
TAU_START, TAU_END = 0.5, 0.05
#: the tangent lambda stays within these multiples of the level's training lambda
TANGENT_CLIP = (0.25, 100.0)
#: defaults of :meth:`Runtime.refine` (module-level so that benchmarks can ablate them)
REFINE_LAMBDA, REFINE_SURROGATE = "tangent", "sga"


def resolve_device(device: str) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but torch sees no CUDA device; use device='auto' or 'cpu'")
    return dev


def _loaded(module: torch.nn.Module, state: dict, prefix: str, device) -> torch.nn.Module:
    """``module`` with the weights under ``prefix.`` of a state dict, for inference on ``device``."""
    cut = len(prefix) + 1
    module.load_state_dict({k[cut:]: v for k, v in state.items() if k.startswith(prefix + ".")})
    return module.eval().to(device)


class Runtime:
    """Transforms + entropy tables of one weights file on one device.

    Built from the weights file's state dict with :mod:`~nncodec.models.transforms`, not
    CompressAI: a process that only encodes and decodes never imports CompressAI. The
    latent refinement, which needs the float entropy models, builds the training network
    (:attr:`training_net`) on first use.
    """

    def __init__(self, ref, data: dict, device: str = "auto"):
        self.ref = ref
        self.device = resolve_device(device)
        self._data = data
        cfg, state = data["config"], data["state_dict"]
        self.g_a = _loaded(transforms.analysis(cfg["N"], cfg["M"]), state, "g_a", self.device)
        self.g_s = _loaded(transforms.synthesis(cfg["M"], cfg["synthesis"]), state, "g_s", self.device)
        self.h_a = _loaded(transforms.hyper_analysis(cfg["M"], cfg["Nh"]), state, "h_a", self.device)
        self.int_hs = IntegerHyperSynthesis.from_state(data["integer_h_s"])
        self.tables = Tables(state)
        self.lambdas = state["lambdas"]
        self.qualities = len(cfg["lambdas"])
        self.gains = torch.exp(state["log_gain"]).to(self.device)

    @functools.cached_property
    def training_net(self) -> torch.nn.Module:
        """The whole network as trained (CompressAI's entropy models included), in eval mode."""
        from .hyperprior import CDF_BUFFERS, FieldHyperprior

        net = FieldHyperprior(**self._data["config"])
        state = self._data["state_dict"]
        for prefix in ("entropy_bottleneck", "gaussian_conditional"):
            # the table buffers' shapes depend on the trained model
            for name in CDF_BUFFERS:
                if f"{prefix}.{name}" in state:
                    getattr(getattr(net, prefix), name).resize_(state[f"{prefix}.{name}"].shape)
        net.load_state_dict(state)
        return net.eval().to(self.device)

    @functools.cached_property
    def _g_a_encoder(self) -> torch.nn.Module:
        return transforms.encoder_analysis(self.g_a)

    @functools.cached_property
    def _g_s_decoder(self) -> torch.nn.Module:
        return transforms.decoder_synthesis(self.g_s)

    @functools.cached_property
    def _g_s64(self) -> torch.nn.Module:
        return copy.deepcopy(self.g_s).double()

    def one_tile(self, func, *args):
        """``func(*args)``, the coding of a chunk that is one tile: on the CPU with the
        single-thread kernels of the tile pool, on the calling thread (:func:`.tilepool.run`:
        at most one such call per core at once, none starting OpenMP threads of its own);
        elsewhere here."""
        return tilepool.run(func, *args) if self.device.type == "cpu" else func(*args)

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
        """Latents y of a batch of normalised tiles (B, 1, h, w) float32.

        On CPU each tile runs alone on one thread of the tile pool, so the encoder writes
        the same bytes whatever the thread count or batching (and runs oneDNN's fast
        kernels without oversubscribing the cores).
        """
        x = torch.from_numpy(x).to(self.device)
        g_a = self._g_a_encoder
        y = tilepool.map_tiles(g_a, x) if self.device.type == "cpu" else g_a(x)
        return y.contiguous()  # g_a's form works channels-last; the rest of the encoder in NCHW

    @torch.inference_mode()
    def quantise(self, y: torch.Tensor, q: int) -> dict:
        """Symbols and scale indexes of latents at quality ``q`` (1-based)."""
        gain = self.gains[q - 1].view(1, -1, 1, 1)
        return self._symbols(y * gain)

    @torch.inference_mode()
    def _symbols(self, y_g: torch.Tensor) -> dict:
        """Symbols and scale indexes of gained latents ``y * gain``: the one quantiser of
        the encoder, refined or not (the indexes come from the integer hyper-synthesis)."""
        # on CPU one tile per pool thread, as in analyse: oneDNN's results for a batch
        # depend on its size, and z would then depend on how many tiles share the chunk
        z = tilepool.map_tiles(self.h_a, y_g) if self.device.type == "cpu" else self.h_a(y_g)
        med = self.tables.medians.to(z.device).view(1, -1, 1, 1)
        z_sym = torch.round(z - med)
        idx = self.int_hs.indexes(z_sym + med, tuple(y_g.shape[-2:]))  # on the GPU where z is
        y_sym = torch.round(y_g)
        return {"z": z_sym.to(torch.int32).cpu().numpy(), "y": y_sym.to(torch.int32).cpu().numpy(), "idx": idx}

    # -- encoder-side latent refinement ------------------------------------------------
    def rd_estimate(self, x: np.ndarray, mask: np.ndarray | None, y: torch.Tensor, q: int
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(bits per value, MSE over the finite pixels) per tile of latents ``y`` coded at
        level ``q``, estimated with the float entropy models and hard rounding.

        ``x``: (B, 1, h, w) float32 normalised tiles; ``mask``: (B, 1, h, w) bool of
        finite pixels, or None when all are finite; ``y``: latents of ``x``.
        """
        with torch.inference_mode(False), torch.no_grad():
            bpv, mse = _RDProxy(self, x, mask)(y.clone() * self.gains[q - 1].view(1, -1, 1, 1), q)
        return bpv.cpu().numpy(), mse.cpu().numpy()

    def tangent_lambda(self, x: np.ndarray, mask: np.ndarray | None, y: torch.Tensor, q: int) -> np.ndarray:
        """Per tile, the slope -d(bits per value)/d(MSE) of the model's own rate-distortion
        curve at level ``q``: a central difference over levels q - 1 and q + 1 of the
        unrefined latents (one-sided at the ends), kept within ``TANGENT_CLIP`` times the
        level's training lambda."""
        lam_q = float(self.lambdas[q - 1])
        lo, hi = max(1, q - 1), min(self.qualities, q + 1)
        if lo == hi:
            return np.full(x.shape[0], lam_q, np.float32)
        (b_lo, d_lo), (b_hi, d_hi) = self.rd_estimate(x, mask, y, lo), self.rd_estimate(x, mask, y, hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = (b_hi - b_lo) / (d_lo - d_hi)
        slope = np.where(np.isfinite(slope) & (slope > 0), slope, lam_q)
        return np.clip(slope, TANGENT_CLIP[0] * lam_q, TANGENT_CLIP[1] * lam_q).astype(np.float32)

    def refine(self, x: np.ndarray, mask: np.ndarray | None, y: torch.Tensor, q: int, steps: int,
               lr: float | None = None, lam=None, surrogate: str | None = None, seed: int = 0) -> dict:
        """Symbols of the latents of ``x`` refined for level ``q`` (same keys as :meth:`quantise`).

        Encoder-side inference (Campos et al. 2019, "Content adaptive optimization for
        neural image compression"; Yang, Bamler, Mandt 2020, "Improving inference for
        neural image compression"): starting from ``y = g_a(x)``, ``steps`` Adam steps
        (step size ``lr``, default REFINE_LR, decaying to 0 on a cosine) move ``y`` to
        lower, per tile, the training loss

            bits per value + lam * MSE over the finite pixels of ``mask``

        with the rate from the float entropy models. ``z = h_a(y * gain)``
        follows ``y`` (its bits count in the loss). Rounding of ``y * gain`` is relaxed by
        stochastic Gumbel annealing (``surrogate="sga"``, temperature TAU_START -> TAU_END)
        or a straight-through estimator (``"ste"``); rounding of ``z`` by straight-through.

        ``lam``: ``"tangent"`` (default) uses :meth:`tangent_lambda`, the slope of the
        model's own curve at this tile and level, so that the refined point lies below the
        unrefined curve rather than sliding along it; ``"train"`` uses the level's training
        lambda; or a number, or one per tile.

        The loss with hard rounding is evaluated before and after; a tile whose estimate
        did not improve keeps its unrefined latents. The result is quantised like
        :meth:`quantise` (same integer hyper-synthesis, same entropy coding), so the
        decoder cannot tell a refined stream from any other. The randomness of SGA comes
        from a private generator seeded with ``seed``: no global RNG state is touched.
        Gradients are taken for the latents only; the shared network is never modified.
        """
        lr = REFINE_LR if lr is None else lr
        lam = REFINE_LAMBDA if lam is None else lam
        surrogate = REFINE_SURROGATE if surrogate is None else surrogate
        if surrogate not in ("sga", "ste"):
            raise ValueError(f"surrogate must be 'sga' or 'ste', got {surrogate!r}")
        if isinstance(lam, str):
            if lam == "tangent":
                lam = self.tangent_lambda(x, mask, y, q)
            elif lam == "train":
                lam = float(self.lambdas[q - 1])
            else:
                raise ValueError(f"lam must be 'tangent', 'train' or numbers, got {lam!r}")
        dev = self.device
        with torch.inference_mode(False):
            lam = torch.as_tensor(np.asarray(lam, dtype=np.float32), device=dev)
            gain = self.gains[q - 1].view(1, -1, 1, 1).clone()
            proxy = _RDProxy(self, x, mask)
            gen = torch.Generator(device=dev).manual_seed(seed)
            y0 = y.clone()
            with torch.no_grad():
                bpv, mse = proxy(y0 * gain, q)
                start = bpv + lam * mse
            yv = y0.detach().clone().requires_grad_(True)
            opt = torch.optim.Adam([yv], lr=lr)
            with torch.enable_grad():
                for i in range(steps):
                    tau = TAU_START * (TAU_END / TAU_START) ** (i / max(1, steps - 1))
                    bpv, mse = proxy(yv * gain, q, tau if surrogate == "sga" else None, gen)
                    # per-tile losses summed: Adam is elementwise, so tiles do not interact
                    (yv.grad,) = torch.autograd.grad((bpv + lam * mse).sum(), [yv])
                    opt.param_groups[0]["lr"] = lr * 0.5 * (1 + math.cos(math.pi * i / steps))
                    opt.step()
            with torch.no_grad():
                bpv, mse = proxy(yv * gain, q)
                end = bpv + lam * mse
                better = (end < start).view(-1, 1, 1, 1)
                y_g = torch.where(better, yv, y0) * gain
        sym = self._symbols(y_g)
        # the estimated loss per tile before and after (for benchmarks and tests)
        sym["loss_start"], sym["loss"] = start.cpu().numpy(), torch.minimum(start, end).cpu().numpy()
        return sym

    def indexes(self, z_sym: np.ndarray, y_shape: tuple[int, int]) -> np.ndarray:
        """Decoder side: scale indexes from decoded hyper-latent symbols (on the GPU
        when the network runs there: the same integers)."""
        z_hat = torch.from_numpy(z_sym).float() + self.tables.medians.view(1, -1, 1, 1)
        return self.int_hs.indexes(z_hat, y_shape, self.device)

    def synthesise(self, y_sym: np.ndarray, q: int, shape: tuple[int, int], dtype=torch.float32,
                   reproducible: bool = True, version: int = FORMAT_VERSION) -> np.ndarray:
        """Normalised reconstruction (B, h, w) from latent symbols at quality ``q``.

        ``dtype=torch.float64`` runs the synthesis in double precision (used by the
        error-bound layer so that devices agree far inside its safety margin).
        ``reproducible=False`` allows the fastest kernels, whose last bits depend on the
        thread count: for the encoder's search, never for values a decoder returns.
        ``version`` picks the reference float32 kernel of that format version: 3 runs
        the decoder form of the network (:func:`.transforms.decoder_synthesis`), 2 the
        trained modules, both each tile alone on one thread of :mod:`~nncodec.models.tilepool`
        (oneDNN); 1 the trained modules with PyTorch's own kernels, oneDNN off (the same
        values whatever the threads, several times slower).
        """
        return self.launch_synthesis(y_sym, q, shape, dtype, reproducible, version).cpu().numpy()

    @torch.inference_mode()
    def launch_synthesis(self, y_sym: np.ndarray, q: int, shape: tuple[int, int], dtype=torch.float32,
                         reproducible: bool = True, version: int = FORMAT_VERSION) -> torch.Tensor:
        """:meth:`synthesise` as a tensor on the device: on a GPU its kernels are queued and
        this returns at once, so that the host works on while the GPU computes (the
        tensor's ``.cpu()`` waits for them)."""
        gain = self.gains[q - 1].view(1, -1, 1, 1)
        y_hat = torch.from_numpy(y_sym).to(self.device, torch.float32) / gain
        if dtype == torch.float64:
            g_s, y_hat = self._g_s64, y_hat.double()
        elif version >= 3 or not reproducible:
            g_s = self._g_s_decoder
        else:
            g_s = self.g_s
        if self.device.type == "cpu" and dtype == torch.float32 and (version >= 2 or not reproducible):
            # also the encoder's search: the fast kernels, in the memory of one tile per thread
            return tilepool.map_tiles(g_s, y_hat)[:, 0, : shape[0], : shape[1]]
        if not reproducible:
            return g_s(y_hat)[:, 0, : shape[0], : shape[1]]
        # oneDNN splits a convolution's sums differently for 1 and 2 threads; PyTorch's own
        # kernels compute each tile alone, so a chunk decodes to the same values whatever
        # the thread count or batch size. On CUDA: deterministic cuDNN kernels, no TF32.
        with _reproducible_kernels():
            return g_s(y_hat)[:, 0, : shape[0], : shape[1]]


class _RoundSTE(torch.autograd.Function):
    """Rounding forward, identity backward (straight-through estimator)."""

    @staticmethod
    def forward(ctx, v):
        return torch.round(v)

    @staticmethod
    def backward(ctx, g):
        return g


def _ste_round(v: torch.Tensor) -> torch.Tensor:
    return _RoundSTE.apply(v)


def _sga_round(v: torch.Tensor, tau: float, gen: torch.Generator) -> torch.Tensor:
    """Stochastic Gumbel annealing (Yang et al. 2020): a relaxed draw of floor(v) or ceil(v),
    the nearer one likelier, ever closer to hard rounding as ``tau`` falls."""
    lo = torch.floor(v)
    frac = (v - lo).clamp(1e-5, 1 - 1e-5)
    logits = torch.stack([-torch.atanh(frac), -torch.atanh(1 - frac)], dim=-1) / tau
    u = torch.rand(logits.shape, generator=gen, device=v.device, dtype=v.dtype).clamp(1e-10, 1 - 1e-10)
    w = torch.softmax(logits - torch.log(-torch.log(u)), dim=-1)
    return lo + w[..., 1]


def _bits(lik: torch.Tensor) -> torch.Tensor:
    """Bits per batch item of likelihoods (B, C, h, w)."""
    return -torch.log2(lik).sum(dim=(1, 2, 3))


def _z_likelihood(eb, z_hat: torch.Tensor) -> torch.Tensor:
    """Factorised-prior likelihoods of dequantised hyper-latents (B, C, h, w), bounded as in training."""
    b, c = z_hat.shape[:2]
    lik, _, _ = eb._likelihood(z_hat.permute(1, 0, 2, 3).reshape(c, 1, -1))
    if eb.use_likelihood_bound:
        lik = eb.likelihood_lower_bound(lik)
    return lik.reshape(c, b, *z_hat.shape[2:]).permute(1, 0, 2, 3)


class _RDProxy:
    """(bits per value, masked MSE) per tile of gained latents, differentiable: the training
    loss's terms with hard rounding (straight-through) or an SGA draw in place of noise."""

    def __init__(self, rt: Runtime, x: np.ndarray, mask: np.ndarray | None):
        dev = rt.device
        self.net, self.gains = rt.training_net, rt.gains
        self.x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(dev)
        self.m = (torch.ones_like(self.x) if mask is None
                  else torch.from_numpy(np.ascontiguousarray(mask)).to(dev, torch.float32))
        self.n_fin = self.m.sum(dim=(1, 2, 3)).clamp(min=1)
        self.med = rt.tables.medians.to(dev).view(1, -1, 1, 1)

    def __call__(self, y_g: torch.Tensor, q: int, tau: float | None = None, gen=None):
        net, (h, w) = self.net, self.x.shape[-2:]
        gc = net.gaussian_conditional
        z_hat = _ste_round(net.h_a(y_g) - self.med) + self.med
        scales = net.h_s(z_hat)[..., : y_g.shape[-2], : y_g.shape[-1]]
        y_hat = _ste_round(y_g) if tau is None else _sga_round(y_g, tau, gen)
        lik = gc._likelihood(y_hat, scales)
        bits = _bits(gc.likelihood_lower_bound(lik) if gc.use_likelihood_bound else lik)
        bits = bits + _bits(_z_likelihood(net.entropy_bottleneck, z_hat))
        x_hat = net.g_s(y_hat / self.gains[q - 1].view(1, -1, 1, 1))[..., :h, :w]
        mse = (((x_hat - self.x) ** 2) * self.m).sum(dim=(1, 2, 3)) / self.n_fin
        return bits / (h * w), mse


@contextlib.contextmanager
def _reproducible_kernels():
    with warnings.catch_warnings():
        # switching oneDNN off makes torch mention Intel-GPU TF32, which does not concern us
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
        with torch.backends.mkldnn.flags(enabled=False), torch.backends.cudnn.flags(
            enabled=True, benchmark=False, deterministic=True, allow_tf32=False
        ):
            yield

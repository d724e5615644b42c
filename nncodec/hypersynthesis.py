"""The integer hyper-synthesis: hyper-latents to scale indexes, exactly, on every machine.

Decoding a hyperprior needs the *same* scale index for every latent on the encoder and
the decoder; a float hyper-synthesis run on another device, thread count or batch size
can flip an index near a table boundary and turn the rest of the stream into garbage
(CompressAI issues #279 and #309). Here the hyper-synthesis runs as an integer network
(after Ballé, Johnston, Minnen 2019, "Integer networks for data compression with
latent-variable models"): weights are integers with a power-of-two scale per output
channel, activations are fixed-point integers, and every product and sum is an exact
integer below 2**53 held in float64, so the summation order cannot change any result.
Scale indexes are then found by exact comparisons with the scale table. The integers
are identical everywhere: on the CPU, and on a GPU where the hyper-latents are there.

Speed without giving that up: a convolution runs in float32 (oneDNN's fast kernels)
whenever a bound computed from its weights and inputs proves every partial sum an
integer below 2**24, which float32 holds exactly in any summation order; larger
activations are split into digits that keep that bound. A small input (a few small
tiles') is instead scattered through the kernel taps by a compiled loop that skips its
zeros (after a ReLU, half or more of them), in float32 where that bound allows, else in
float64. On a GPU, larger inputs run there in float64, as matrix products of the
integers (im2col and col2im around them: copies and integer sums, never a transform
such as a convolution library's FFT or Winograd algorithms, which would not be exact).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ._jit import kernel

WEIGHT_MAX = 127  # integer weights fit in 8 bits
ACT_FRAC_BITS = 6  # fixed-point fraction bits of the integer activations
MAX_EXACT = 2.0**53
#: float32 holds every integer of magnitude up to 2**24 exactly
MAX_EXACT_F32 = 2.0**24
#: convolution inputs of at most this many values run in :func:`_scatter_conv`, faster than
#: oneDNN's float32 below it on the test machine
SCATTER_BELOW = 8192
#: tiles per matrix product of :meth:`IntegerHyperSynthesis.indexes_by_products`: its
#: im2col columns then take at most about 230 MB (256 x 256 tiles, float64)
TILES_PER_PRODUCT = 256
_NO_THRESHOLDS = np.empty(0)  # _layer_output of a hidden layer
THRESHOLD_SLOTS = 64  # scale-table thresholds _layer_output searches (SCALES_LEVELS - 1 used)


def _layer_geometry(module) -> dict:
    transposed = isinstance(module, torch.nn.ConvTranspose2d)
    return {
        "transposed": transposed,
        "stride": module.stride[0],
        "padding": module.padding[0],
        "output_padding": module.output_padding[0] if transposed else 0,
    }


class IntegerHyperSynthesis:
    """Integer version of ``h_s`` mapping hyper-latents to scale indexes, exactly.

    Parameters
    ----------
    layers : list of dict
        Per convolution: integer ``weight`` and ``bias`` (float64 tensors holding
        integers), ``shift`` (per-output-channel power-of-two exponent of the weights),
        geometry, and whether a ReLU follows.
    scale_table : torch.Tensor
        Scales of the Gaussian conditional; index i means scale_table[i].
    """

    def __init__(self, layers: list[dict], scale_table: torch.Tensor):
        self.layers = layers
        self.thresholds = scale_table.double()[:-1].numpy()
        self._prepare()

    def _prepare(self) -> None:
        """Derived data: per layer the float32 weights and the largest sum of |weights|
        that meets one output value (bounds every partial sum of a convolution); per
        channel the biases and the powers of two that rescale the accumulators."""
        self._w32 = [layer["weight"].float() for layer in self.layers]
        # (in, k, k, out): the taps one input value meets, output channels innermost
        self._taps = [np.ascontiguousarray(layer["weight"].permute(*((0, 2, 3, 1) if layer["transposed"] else (1, 2, 3, 0)))
                                           .numpy(), np.float64) for layer in self.layers]
        self._taps32 = [t.astype(np.float32) for t in self._taps]
        self._wsum = [_weight_sum_bound(layer) for layer in self.layers]
        # per output channel: the bias, and the power of two that takes the accumulator
        # (fraction bits shift + ACT_FRAC_BITS) to the next layer's ACT_FRAC_BITS (the last
        # layer: to the scale itself)
        self._bias = [np.ascontiguousarray(layer["bias"].numpy(), np.float64) for layer in self.layers]
        drop = [ACT_FRAC_BITS] * (len(self.layers) - 1) + [0]
        self._mult = [np.ldexp(1.0, (d - ACT_FRAC_BITS - layer["shift"].numpy()).astype(np.int64))
                      for d, layer in zip(drop, self.layers)]
        # digits of at most this many bits keep a float32 convolution exact (None: never)
        self._digit_bits = [int(np.log2(MAX_EXACT_F32 / ws)) if ws else 24 for ws in self._wsum]
        self._digit_bits = [b if b >= 1 else None for b in self._digit_bits]
        thr = self.thresholds
        if len(thr) < 2 or not (np.diff(thr) > 0).all() or thr[0] <= 0:
            raise ValueError("the weights file's scale thresholds are not positive and increasing; the file is damaged")
        if len(thr) > THRESHOLD_SLOTS:
            raise ValueError(f"the weights file has {len(thr) + 1} scales; nncodec supports at most {THRESHOLD_SLOTS + 1}")
        self._padded_thresholds = np.concatenate((thr, np.full(THRESHOLD_SLOTS - len(thr), np.inf)))
        self._on_device = {}  # device -> the layers' tensors and thresholds there (_on)

    @classmethod
    def from_float(cls, h_s: torch.nn.Sequential, scale_table: torch.Tensor) -> IntegerHyperSynthesis:
        """Quantise a trained float ``h_s`` (conv/deconv layers, each optionally + ReLU)."""
        mods = list(h_s)
        layers, frac_in = [], ACT_FRAC_BITS
        for i, m in enumerate(mods):
            if not isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                continue
            w = m.weight.detach().double()
            out_axis = 1 if isinstance(m, torch.nn.ConvTranspose2d) else 0
            per_out = w.transpose(0, out_axis).reshape(w.shape[out_axis], -1).abs().amax(dim=1)
            shift = torch.floor(torch.log2(WEIGHT_MAX / per_out.clamp(min=1e-12))).clamp(-20, 40)
            view = [1] * w.dim()
            view[out_axis] = -1
            w_int = torch.round(w * torch.exp2(shift).view(view))
            b_int = torch.round(m.bias.detach().double() * torch.exp2(shift + frac_in))
            relu = i + 1 < len(mods) and isinstance(mods[i + 1], torch.nn.ReLU)
            layers.append({"weight": w_int, "bias": b_int, "shift": shift, "relu": relu, **_layer_geometry(m)})
        return cls(layers, scale_table)

    def state(self) -> dict:
        """Compact form for the weights file: int8 weights, int64 biases, int16 shifts."""
        packed = [
            {**layer, "weight": layer["weight"].to(torch.int8), "bias": layer["bias"].to(torch.int64),
             "shift": layer["shift"].to(torch.int16)}
            for layer in self.layers
        ]
        return {"layers": packed, "thresholds": torch.from_numpy(self.thresholds)}

    @classmethod
    def from_state(cls, state: dict) -> IntegerHyperSynthesis:
        obj = cls.__new__(cls)
        obj.layers = [
            {**layer, "weight": layer["weight"].double(), "bias": layer["bias"].double(), "shift": layer["shift"].double()}
            for layer in state["layers"]
        ]
        obj.thresholds = state["thresholds"].double().numpy()
        obj._prepare()
        return obj

    def indexes(self, z_hat: torch.Tensor, y_shape: tuple[int, int], device=None) -> np.ndarray:
        """Scale indexes (int32, shape (B, M, *y_shape)) for dequantised hyper-latents,
        on ``device`` (default ``z_hat``'s) where that is a GPU and ``z_hat`` is not
        small, else on the CPU."""
        device = z_hat.device if device is None else torch.device(device)
        if device.type == "cuda" and z_hat.numel() > SCATTER_BELOW:
            return self.indexes_by_products(z_hat.to(device), y_shape)
        a = np.rint(z_hat.detach().to("cpu", torch.float64).numpy() * 2.0**ACT_FRAC_BITS)
        if a.size and not _abs_max(a) < MAX_EXACT:  # NaN, inf or huge: no exact result
            raise OverflowError("integer hyper-synthesis met hyper-latents outside its exact range")
        if not self.layers:
            raise ValueError("integer hyper-synthesis has no layers")
        last = len(self.layers) - 1
        # the rows and columns each layer's output must have: the last layer's, y_shape;
        # the one before, what the last reads of it
        read = _input_read(self.layers[last], y_shape)
        needed = [None] * last + [tuple(y_shape)]
        if last and read is not None:
            needed[last - 1] = read
        for i, layer in enumerate(self.layers):
            if i == last and read is not None:
                a = a[..., : read[0], : read[1]]  # the scatter made no more; oneDNN's path did
            acc = self._conv(i, a, needed[i])
            out = np.empty(acc.shape[:2] + tuple(y_shape), np.int32) if i == last else acc
            if not _layer_output(acc, self._bias[i], layer["relu"], self._mult[i],
                                 self._padded_thresholds if i == last else _NO_THRESHOLDS, out):
                raise OverflowError("integer hyper-synthesis left the exact range; the weights are unfit")
            a = out
        return out

    def _conv(self, i: int, a: np.ndarray, needed: tuple[int, int] | None = None) -> np.ndarray:
        """Layer ``i``'s convolution of integer activations ``a`` (float64), exactly, as a
        C-contiguous float64 array (at least its first ``needed`` rows and columns).

        Every partial sum of an output value is bounded by max|a| times the sum of the
        |weights| meeting it; below 2**24 float32 computes it exactly in any order and
        batching (oneDNN's direct convolutions: products and sums, no transforms). Larger
        activations are split into base-2**bits digits small enough for that bound, one
        float32 convolution per digit, recombined exactly in float64. Small inputs (a few
        small tiles') run in :func:`_scatter_conv`, in one digit of float32 or float64:
        there oneDNN's set-up costs more than the sums.
        """
        layer, bits = self.layers[i], self._digit_bits[i]
        if a.size <= SCATTER_BELOW:
            if _abs_max(a) * self._wsum[i] < MAX_EXACT_F32:
                return _scattered(layer, self._taps32[i], a.astype(np.float32), needed).astype(np.float64)
            return _scattered(layer, self._taps[i], a, needed)
        a = torch.from_numpy(np.ascontiguousarray(a))
        if bits is None or not _float32_is_ieee():
            return self._conv_as(layer, a, layer["weight"]).numpy()
        radix, weight, acc, place, rest = 2.0**bits, self._w32[i], None, 1.0, a
        while True:
            last = _abs_max(rest) * self._wsum[i] < MAX_EXACT_F32
            top = None if last else torch.floor(rest / radix)
            digit = rest if last else rest - top * radix
            term = self._conv_as(layer, digit.float(), weight).double().mul_(place)
            acc = term if acc is None else acc.add_(term)
            if last:
                return np.ascontiguousarray(acc.numpy())
            rest, place = top, place * radix

    @torch.inference_mode()
    def indexes_by_products(self, z_hat: torch.Tensor, y_shape: tuple[int, int]) -> np.ndarray:
        """:meth:`indexes` computed on ``z_hat``'s device in float64, each convolution as
        one matrix product of integers (:func:`_conv_by_products`): exact while every
        partial sum stays below 2**53, which max|input| times the layer's sum of |weights|
        bounds and is checked per layer. The GPU path; on the CPU the same integers."""
        if z_hat.shape[0] > TILES_PER_PRODUCT:
            return np.concatenate([self.indexes_by_products(z_hat[i : i + TILES_PER_PRODUCT], y_shape)
                                   for i in range(0, z_hat.shape[0], TILES_PER_PRODUCT)])
        a = torch.round(z_hat.detach().double() * 2.0**ACT_FRAC_BITS)
        last = len(self.layers) - 1
        layers, thresholds = self._on(a.device)
        for i, (layer, dev) in enumerate(zip(self.layers, layers)):
            if not _abs_max(a) * self._wsum[i] < MAX_EXACT:  # NaN and inf too
                raise OverflowError("integer hyper-synthesis met hyper-latents outside its exact range")
            v = _conv_by_products(layer, a, dev["weight"]).add_(dev["bias"])
            if layer["relu"]:
                v.clamp_(min=0)
            if not _abs_max(v) < MAX_EXACT:
                raise OverflowError("integer hyper-synthesis left the exact range; the weights are unfit")
            v.mul_(dev["mult"])
            if i < last:
                a = torch.floor(v.add_(0.5))
        scales = v[..., : y_shape[0], : y_shape[1]].contiguous()
        return torch.searchsorted(thresholds, scales, side="left").to("cpu", torch.int32).numpy()

    def _on(self, device: torch.device) -> tuple[list[dict], torch.Tensor]:
        """Per layer its float64 weights, bias and rescaling (broadcast over (B, C, H, W)),
        and the scale thresholds, on ``device`` (kept after the first use there)."""
        key = str(device)
        if key not in self._on_device:
            layers = [{"weight": layer["weight"].to(device, torch.float64),
                       "bias": torch.from_numpy(bias).to(device).view(1, -1, 1, 1),
                       "mult": torch.from_numpy(mult).to(device).view(1, -1, 1, 1)}
                      for layer, bias, mult in zip(self.layers, self._bias, self._mult)]
            self._on_device[key] = layers, torch.from_numpy(self.thresholds).to(device)
        return self._on_device[key]

    @staticmethod
    def _conv_as(layer: dict, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        geometry = {"stride": layer["stride"], "padding": layer["padding"]}
        if layer["transposed"]:
            return F.conv_transpose2d(a, w, output_padding=layer["output_padding"], **geometry)
        return F.conv2d(a, w, **geometry)


def _conv_by_products(layer: dict, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Layer ``layer``'s convolution (no bias) of ``a`` (B, C, H, W) with its weights ``w``
    as one matrix product: im2col (``F.unfold``) then the product for a convolution; the
    product then col2im (``F.fold``, which sums the overlaps) for a transposed one."""
    k, s, p = w.shape[-1], layer["stride"], layer["padding"]
    b, c, h, width = a.shape
    size = _output_size(layer, k, h, width)
    if layer["transposed"]:
        cols = w.reshape(c, -1).t() @ a.reshape(b, c, h * width)  # (B, C' k k, H W)
        return F.fold(cols, size, k, padding=p, stride=s)
    return (w.reshape(w.shape[0], -1) @ F.unfold(a, k, padding=p, stride=s)).reshape(b, w.shape[0], *size)


def _output_size(layer: dict, k: int, h: int, w: int) -> list[int]:
    """Rows and columns of layer ``layer``'s output (kernel ``k`` x ``k``) for an ``h`` x ``w`` input."""
    s, p = layer["stride"], layer["padding"]
    if layer["transposed"]:
        return [(n - 1) * s - 2 * p + k + layer["output_padding"] for n in (h, w)]
    return [(n + 2 * p - k) // s + 1 for n in (h, w)]


def _input_read(layer: dict, y_shape: tuple[int, int]) -> tuple[int, int] | None:
    """The rows and columns of a stride-1 convolution's input that its outputs within
    ``y_shape`` read (a tile's latents can cover little more than half the last layer's
    output, e.g. 5 x 9 of 8 x 12); None for other layers (all of it)."""
    if layer["transposed"] or layer["stride"] != 1:
        return None
    return y_shape[0] + layer["padding"], y_shape[1] + layer["padding"]


def _scattered(layer: dict, taps: np.ndarray, a: np.ndarray, needed: tuple[int, int] | None = None) -> np.ndarray:
    """Layer ``layer``'s convolution (no bias) of integer activations ``a`` (B, C, H, W),
    in the dtype of ``taps``, by :func:`_scatter_conv`: (B, C', H', W'), or only the
    first ``needed`` rows and columns of that."""
    b, _, h, w = a.shape
    out_h, out_w = _output_size(layer, taps.shape[1], h, w)
    if needed is not None:
        out_h, out_w = min(out_h, needed[0]), min(out_w, needed[1])
    out = np.zeros((b, out_h, out_w, taps.shape[3]), taps.dtype)
    _scatter_conv(np.ascontiguousarray(a), taps, layer["transposed"], layer["stride"], layer["padding"], out)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


@kernel
def _scatter_conv(a, taps, transposed, stride, pad, out):
    """``out`` (B, H', W', C', zeros) += the convolution of ``a`` (B, C, H, W) with
    ``taps`` (C, k, k, C'): each nonzero input value times the taps it meets. Input
    ``(r, c)`` meets output ``(r s - p + i, ...)`` through tap ``i`` of a transposed
    convolution, output ``((r + p - i) / s, ...)`` where that divides of a plain one.
    Every product and partial sum is an integer the dtype holds exactly (the caller sees
    to it: below 2**53 in float64, 2**24 in float32), so the result is the convolution's
    whatever the order of the loops."""
    k = taps.shape[1]
    for n in range(a.shape[0]):
        for ch in range(a.shape[1]):
            for r in range(a.shape[2]):
                for c in range(a.shape[3]):
                    v = a[n, ch, r, c]
                    if v == 0.0:
                        continue
                    for i in range(k):
                        orow = _meets(r, i, transposed, stride, pad, out.shape[1])
                        if orow < 0:
                            continue
                        for j in range(k):
                            ocol = _meets(c, j, transposed, stride, pad, out.shape[2])
                            if ocol < 0:
                                continue
                            for o in range(out.shape[3]):
                                out[n, orow, ocol, o] += v * taps[ch, i, j, o]


@kernel
def _meets(pos, tap, transposed, stride, pad, size):
    """The output position (of ``size``) that input position ``pos`` meets through kernel
    tap ``tap`` along one axis, or -1 where none does."""
    if transposed:
        out = pos * stride - pad + tap
    elif (pos + pad - tap) % stride:
        return -1
    else:
        out = (pos + pad - tap) // stride
    return out if 0 <= out < size else -1


@kernel
def _layer_output(acc, bias, relu, mult, thresholds, out):
    """A layer's output from its accumulators ``acc`` (B, C, H, W), at the positions of
    ``out`` (B, C, h, w): per channel ``k``, ``v = relu(acc + bias[k]) * mult[k]``, then

    * no ``thresholds`` (a hidden layer): the next layer's activations ``floor(v + 1/2)``
      (``out`` may be ``acc`` itself);
    * else (the last layer): the scale index ``searchsorted(thresholds, v, side="left")``,
      by binary search with exact comparisons (``thresholds`` padded with +inf to
      ``THRESHOLD_SLOTS`` entries).

    False if a sum reached MAX_EXACT (the convolution may not have been exact).
    """
    b, c, h, w = out.shape
    n = thresholds.shape[0]
    for i in range(b):
        for k in range(c):
            for r in range(h):
                for s in range(w):
                    v = acc[i, k, r, s] + bias[k]
                    if relu and v < 0.0:
                        v = 0.0
                    if not abs(v) < MAX_EXACT:
                        return False
                    v *= mult[k]
                    if n == 0:
                        out[i, k, r, s] = np.floor(v + 0.5)
                        continue
                    # binary search unrolled over the THRESHOLD_SLOTS = 64 slots: no loop, so
                    # successive values overlap (a loop here ran 4x slower on large chunks)
                    j = (thresholds[31] < v) * 32
                    j += (thresholds[j + 15] < v) * 16
                    j += (thresholds[j + 7] < v) * 8
                    j += (thresholds[j + 3] < v) * 4
                    j += (thresholds[j + 1] < v) * 2
                    j += thresholds[j] < v
                    out[i, k, r, s] = j
    return True


def _weight_sum_bound(layer: dict) -> float:
    """The largest sum of |weights| that meets one output value of a layer.

    A convolution's output meets every tap of its kernel. A transposed convolution of
    stride s spreads each input over s x s output phases, so an output meets only the
    taps of its phase (those ``t`` with ``t = r mod s`` per axis): for 5x5 kernels at
    stride 2, 9 of 25 taps at most, a bound about 2.5x tighter than all taps.
    """
    w = layer["weight"].abs()
    if not layer["transposed"]:
        return float(w.sum(dim=(1, 2, 3)).max())
    s = layer["stride"]
    return max(float(w[:, :, rh::s, rw::s].sum(dim=(0, 2, 3)).max()) for rh in range(s) for rw in range(s))


def _abs_max(t) -> float:
    """max |t| of a tensor or array."""
    if isinstance(t, np.ndarray):
        return float(np.abs(t).max()) if t.size else 0.0
    lo, hi = torch.aminmax(t)
    return max(-float(lo), float(hi))


def _float32_is_ieee() -> bool:
    """Whether float32 convolutions and matrix products on the CPU compute in float32
    (not TF32 or bfloat16, which a user can ask for process-wide and which would not be
    exact); if not, the integer hyper-synthesis runs in float64."""
    mk = torch.backends.mkldnn
    settings = [getattr(torch.backends, "fp32_precision", "none"), getattr(mk, "fp32_precision", "none"),
                getattr(getattr(mk, "conv", None), "fp32_precision", "none"),
                getattr(getattr(mk, "matmul", None), "fp32_precision", "none")]
    return all(v in ("none", "ieee") for v in settings) and torch.get_float32_matmul_precision() == "highest"

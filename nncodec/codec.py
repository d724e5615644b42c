"""NNCodec: the learned codec as a numcodecs codec (and the engine behind NNCodecV3).

A chunk of any shape (2 to 5 dimensions) is a stack of 2D slices over its last two
axes; each slice is cut into tiles of at most ``tile`` x ``tile`` values (equal spans,
no thin edge tiles), and each tile is one of:

* EMPTY: no finite value (the mask restores it);
* CONSTANT: one finite value, stored exactly;
* NETWORK: normalised to [0, 1] by its finite minimum and range and coded by the
  network at a quality level, optionally followed by the residual layer;
* RESIDUAL: the residual layer alone around a constant prediction (tight bounds,
  where the network would not pay for itself);
* RAW: the tile's values stored losslessly (bounds tighter than the dtype resolves).

All network tiles of a chunk go through the network in batches of one shape, and one
range-coded stream carries all their symbols. See docs/format.md for the bytes.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_ndarray_like, ndarray_copy

from . import format as fmt
from .entropy import StreamReader, StreamWriter, channel_indexes, lane_count, lane_cuts, residual_only_tables
from .errors import CorruptStreamError, ModelError
from .masks import decode_mask, encode_mask
from .normalize import DEFAULT_TILE, denormalise_into, normalise_tile, tile_offset_scale, tiles_2d
from .residual import (
    DEADZONE,
    PREDICTORS,
    TIGHTER_COARSE_LEVELS,
    Quantiser,
    ResidualCode,
    encode_residual,
    quantisation_step,
    reconstruct,
)
from .threads import count as host_threads, in_order, side_by_side, soon

EMPTY, CONSTANT, NETWORK, RESIDUAL, RAW = 0, 1, 2, 3, 4
_HAS_RESIDUAL = 0x80  # NETWORK | this flag: a residual follows the network
DEFAULT_QUALITY = 4
#: In error-bounded modes a tile whose bound is below this fraction of its range is coded
#: by the residual layer alone, without trying the network: there the network's
#: reconstruction (35-45 dB on a tile, 0.6-1.8 % RMS of its range) leaves the residual
#: nearly all the work. Measured with hyperprior-climate-v2 on held-out slices of all 22
#: fields of the development data (docs/error-bounds.md): at bounds of 3e-4 .. 1e-2 of the
#: range, below 5e-3 of a tile's range the network won 16 of 249 tiles, by 0.1-1.3 % of
#: their bits, and 2 of 60 between 5e-3 and 1e-2 (0.15.0's threshold was 5e-3); with the
#: threshold at 2e-2 instead, every field's chunks at 5e-3 .. 2e-2 of its range came out
#: between 0.08 % smaller and 0.01 % larger, encoded 1.2-30x faster (trying the network took 75-95 % of
#: the time). At 3e-2 some fields lost up to 0.4 %, and QG turbulence at 3e-2 of its range
#: is 7-8 % smaller with the network.
RESIDUAL_ALONE_BELOW = 2e-2
# values per network batch (env NNCODEC_BATCH_VALUES): bounds the peak memory of a chunk
DEFAULT_BATCH_VALUES = 1 << 20
_SUPPORTED = ", ".join(str(d) for d in fmt.DTYPES.values())


@dataclass
class _Tile:
    slice: int
    rows: slice
    cols: slice
    kind: int = EMPTY
    offset: np.float32 = np.float32(0)
    scale: np.float32 = np.float32(0)
    quality: int = 0
    value: object = None
    residual: ResidualCode | None = None
    exceptions: tuple = ((), ())
    z: np.ndarray | None = None
    y: np.ndarray | None = None
    idx: np.ndarray | None = None
    raw: np.ndarray | None = None  # the values of a RAW tile, stored losslessly
    #: error-bounded encoding: the sum of the squared errors of its decoded finite values
    squared_error: float = 0.0
    #: the stack of slices of the tile's chunk: its values when encoding, where they go
    #: when decoding; ``finite``: that stack's mask of finite values (None: all finite)
    dest: np.ndarray | None = None
    finite: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows.stop - self.rows.start, self.cols.stop - self.cols.start)


def _check_refine(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"refine must be a non-negative integer (optimisation steps), got {value!r}")
    if value < 0:
        raise ValueError(f"refine must be a non-negative integer (optimisation steps), got {value!r}")
    return int(value)


def _check_positive(name, value, integer=False):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if integer and int(value) != value:
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return int(value) if integer else float(value)


class NNCodec(Codec):
    """Learned lossy codec for floating-point fields (Ballé et al. 2018 scale hyperprior).

    Parameters
    ----------
    quality : int, optional
        Rate level of the model family, 1 (fewest bits) to the model's top level (8 for
        the shipped model). Default 4. In error-bounded modes it fixes the network level;
        left out, the encoder picks the cheapest level per tile.
    model : str, optional
        A shipped model id (see ``nncodec models``) or the path of a weights file written
        by ``nncodec train``. Default: the shipped default model.
    device : {"auto", "cpu", "cuda"}
        Where the network runs; ``"auto"`` uses CUDA when available. The bytes decode on
        any device to the same symbols; learned values agree to float32 rounding and error
        bounds hold everywhere (docs/format.md).
    abs_error : float, optional
        Every finite decoded value is within ``abs_error`` of the original.
    rel_error : float, optional
        As ``abs_error`` with ``rel_error * (finite range of the chunk)``, per chunk.
    target_psnr : float, optional
        The chunk's PSNR, 20 log10(range / RMSE), is at least this, for as few bits as
        the encoder finds: the lowest quality level that passes (found by bisection, 3-4
        trial encodes) or an error bound from the residual layer (its coarse levels
        tightened and its residuals rounded toward zero where that saves bits;
        docs/error-bounds.md), whichever is smaller. A chunk that uses the residual layer
        also keeps every value within the bound its header states.
    tile : int
        Largest tile edge; larger slices are cut into nearly equal tiles.
    refine : int
        Encoder-side latent refinement: steps of gradient descent on each network tile's
        latents for that level's rate-distortion loss before they are quantised (see
        docs/refinement.md). Fewer bits at equal quality for more encoding time; the
        decoder and the format are unchanged. Default 0 (off).

    Examples
    --------
    >>> import numpy as np
    >>> from nncodec import NNCodec
    >>> field = np.add.outer(np.sin(np.linspace(0, 3, 90)), np.cos(np.linspace(0, 5, 180))).astype("f4")
    >>> codec = NNCodec(abs_error=1e-3)
    >>> out = codec.decode(codec.encode(field))
    >>> bool(np.abs(out - field).max() <= 1e-3)
    True
    """

    codec_id = "nncodec"

    def __init__(self, quality=None, model=None, device="auto", abs_error=None, rel_error=None,
                 target_psnr=None, tile=DEFAULT_TILE, refine=0):
        self.quality = _check_positive("quality", quality, integer=True)
        self.model = None if model is None else str(model)
        if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        self.device = device
        self.abs_error = _check_positive("abs_error", abs_error)
        self.rel_error = _check_positive("rel_error", rel_error)
        self.target_psnr = _check_positive("target_psnr", target_psnr)
        modes = [n for n in ("abs_error", "rel_error", "target_psnr") if getattr(self, n) is not None]
        if len(modes) > 1:
            raise ValueError(f"give at most one of abs_error, rel_error, target_psnr (got {', '.join(modes)})")
        self.tile = _check_positive("tile", tile, integer=True)
        if self.tile < 16:
            raise ValueError(f"tile must be at least 16, got {tile}")
        self.refine = _check_refine(refine)

    # -- numcodecs protocol --------------------------------------------------------------
    def get_config(self):
        config = {"id": self.codec_id}
        for name in ("quality", "model", "abs_error", "rel_error", "target_psnr"):
            if getattr(self, name) is not None:
                config[name] = getattr(self, name)
        if self.tile != DEFAULT_TILE:
            config["tile"] = self.tile
        if self.refine:
            config["refine"] = self.refine
        # device is where this process runs the network, not a property of the data: it
        # stays out of the config so that a store written on a GPU node opens on a laptop
        return config

    def __repr__(self):
        args = [f"{k}={v!r}" for k, v in self.get_config().items() if k != "id"]
        if self.device != "auto":
            args.append(f"device={self.device!r}")
        return f"{type(self).__name__}({', '.join(args)})"

    def encode(self, buf):
        """Encode an array (2 to 5 dimensions, float or small integer dtype) to bytes."""
        arr = _input_array(buf)
        if self.target_psnr is not None:
            return self._encode_target_psnr(arr)
        bound = self.abs_error
        if self.rel_error is not None:
            finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
            span = float(np.float64(finite.max()) - np.float64(finite.min())) if finite.size else 0.0
            bound = self.rel_error * span if span > 0 else self.rel_error
        return self._encode(arr, self.quality, bound)

    def decode(self, buf, out=None):
        """Decode bytes written by :meth:`encode` (or by ``NNCodecV3``)."""
        (result,) = _decode_chunks([fmt.unpack(_as_bytes(buf))], self.device, self.model)
        if out is not None:
            out = ensure_ndarray_like(out)
            if out.size != result.size:
                raise ValueError(f"out has {out.size} elements, the chunk has {result.size} {result.shape}")
            return ndarray_copy(result, out)
        return result

    def decode_batch(self, bufs) -> list[np.ndarray]:
        """Decode several chunks at once: the arrays :meth:`decode` returns for each, the
        same values, faster for many small chunks (their range-coded lanes side by side;
        on the CPU their network tiles in batches across chunks, on a GPU lane by lane as
        the lanes are decoded). ``NNCodecV3`` reads zarr batches this way (zarr's
        ``codec_pipeline.batch_size``)."""
        return _decode_chunks([fmt.unpack(_as_bytes(b)) for b in bufs], self.device, self.model)

    def encode_batch(self, bufs) -> list[bytes]:
        """Encode several chunks at once: for each the bytes :meth:`encode` writes (on the
        CPU exactly those; on a GPU, whose kernels may round differently in larger batches,
        bytes of the same quality), faster for many small chunks, whose network tiles run
        in shared batches. Error-bounded and ``target_psnr`` modes, and ``refine`` (whose
        random draws are shared by a batch), code chunk by chunk. ``NNCodecV3`` writes
        zarr batches this way."""
        arrs = [_input_array(b) for b in bufs]
        if not self._encodes_in_batches():
            return [self.encode(a) for a in arrs]
        return self._encode_planned([_plan_chunk(a, self.tile) for a in arrs], self.quality, None)

    def _encodes_in_batches(self) -> bool:
        """Whether :meth:`encode_batch` shares network batches across chunks (learned mode)."""
        return self.target_psnr is None and self.abs_error is None and self.rel_error is None and not self.refine

    # -- encoding ------------------------------------------------------------------------
    def _runtime(self):
        from .weights import load

        return load(self.model, self.device)

    def _encode(self, arr: np.ndarray, quality, bound, level_steps=(), memo=None, deadzone=()) -> bytes:
        (buf,) = self._encode_planned([_plan_chunk(arr, self.tile)], quality, bound, level_steps, memo, deadzone)
        return buf

    def _encode_bounded(self, arr: np.ndarray, bound, memo, residual: dict) -> tuple[bytes, float]:
        """An error-bounded encoding of ``arr`` (``residual``: ``level_steps`` and ``deadzone``
        of :meth:`_encode`) and the sum of the squared errors of its decoded finite values,
        from the encoder's own decoding of each tile (:func:`_finish_residual`: the values
        the decoder returns)."""
        chunk = _plan_chunk(arr, self.tile)
        (buf,) = self._encode_planned([chunk], self.quality, bound, memo=memo, **residual)
        return buf, math.fsum(t.squared_error for t in chunk.tiles)

    def _encode_planned(self, chunks: list[_Planned], quality, bound, level_steps=(), memo=None,
                        deadzone=()) -> list[bytes]:
        """The bytes of planned chunks, their network tiles analysed in shared batches.
        With an error ``bound`` (one chunk's), a single chunk, its residual quantised with
        ``level_steps`` (:func:`nncodec.residual.steps_per_level`) and dead zones ``deadzone``
        (:data:`nncodec.residual.DEADZONE`; the bound holds either way). ``memo``, a dict kept
        between encodings of the same chunks, keeps their latents (:func:`_encode_network`)."""
        tiles = [t for c in chunks for t in c.tiles]
        if bound is not None:
            for t in tiles:
                if t.kind == NETWORK and bound < RESIDUAL_ALONE_BELOW * float(t.scale):
                    t.kind = RESIDUAL
        net_tiles = [t for t in tiles if t.kind == NETWORK]
        rt = self._runtime() if net_tiles else None
        if rt is not None:
            ref, levels = rt.ref, rt.qualities
        else:
            from .weights import model_card, resolve

            # without loading the model: its card says how many levels it has
            ref, levels = resolve(self.model), None if quality is None else model_card(self.model).get("qualities")
        if quality is not None and levels is not None and quality > levels:
            raise ValueError(f"quality must be 1..{levels} for model {ref.id!r}, got {quality}")
        tables = residual_only_tables() if rt is None else rt.tables
        quant = None
        if bound is not None:
            (chunk,) = chunks
            data = chunk.data
            finite_vals = data[chunk.finite] if chunk.finite is not None else data
            max_abs = float(np.abs(finite_vals).max()) if finite_vals.size else 0.0
            max_scale = max([float(t.scale) for t in net_tiles], default=0.0)
            quant = Quantiser(quantisation_step(bound, data.dtype, max_abs, max_scale, uses_network=bool(net_tiles),
                                                deadzone=deadzone), level_steps, deadzone)

        # on a GPU, in learned mode, lanes are range-coded as soon as their tiles have symbols
        early = _EarlyLanes(chunks, tables) if quant is None and _overlapped(rt) else None

        def code():
            if rt is not None:
                _encode_network(rt, net_tiles, quality, quant, self.refine, memo, early and early.ready)
            if bound is not None:
                # predictions (the network's float64 synthesis, batched), then the residual
                # coding side by side; as many tiles at a time as threads, so that few
                # float64 predictions are held at once
                coded, n = [t for t in tiles if t.kind in (NETWORK, RESIDUAL)], host_threads()
                for part in (coded[i : i + n] for i in range(0, len(coded), n)):
                    preds = {id(t): _offset_prediction(t) for t in part if t.kind == RESIDUAL}
                    for group, xn in _predictions(part, rt):
                        xn = xn.cpu().numpy()
                        preds.update((id(t), _predicted(t, x)) for t, x in zip(group, xn))
                    side_by_side(lambda i: _finish_residual(part[i], quant, preds[id(part[i])], tables), len(part))

        if rt is not None and len(tiles) == 1:
            rt.one_tile(code)
        else:
            code()
        out = []
        for i, c in enumerate(chunks):
            header = fmt.Header(
                version=fmt.FORMAT_VERSION, dtype=c.data.dtype, shape=c.data.shape, fortran_order=c.fortran,
                has_nonfinite=c.finite is not None, model_code=ref.code, weights_sha=ref.sha_prefix, tile=self.tile,
                bound=None if bound is None else float(bound), step=None if quant is None else float(quant.step),
                level_steps=() if quant is None else quant.level_steps,
            )
            streams = None if early is None else early.streams(i)
            out.append(fmt.pack(header, _write_payload(c.tiles, c.mask_bytes, tables, c.data.dtype, streams)))
        return out

    def _encode_target_psnr(self, arr: np.ndarray) -> bytes:
        data = np.asarray(arr, dtype=np.float64)
        finite = np.isfinite(data)
        if not finite.any():
            return self._encode(arr, self.quality, None)
        span = float(data[finite].max() - data[finite].min())
        if span == 0:
            return self._encode(arr, self.quality, None)
        rmse_target = span / 10 ** (self.target_psnr / 20)

        def rmse(buf):
            out = self.decode(buf).astype(np.float64)
            return math.sqrt(float(np.mean((out[finite] - data[finite]) ** 2)))

        levels = [self.quality] if self.quality else list(range(1, self._runtime().qualities + 1))
        memo = {}  # the chunk's latents, for every encoding below
        # quality and bits rise with the level: bisect for the lowest level that passes
        candidates, lo, hi, failed = [], 0, len(levels) - 1, []
        while lo <= hi:
            mid = (lo + hi) // 2
            buf = self._encode(arr, levels[mid], None, memo=memo)
            got = rmse(buf)
            if got <= rmse_target:
                candidates, hi = [buf], mid - 1
            else:
                lo = mid + 1
                failed.append((mid, got))
                if _out_of_reach(failed, hi, rmse_target):
                    break
        # uniform steps, rounded to nearest; tighter coarse levels with dead zones (float
        # data). Neither always wins: the second below about 55 dB on most fields, the
        # first on masked fields (SST, vorticity) from about 48 dB, on every field from
        # about 60 dB, and on some small or rough slices lower (docs/error-bounds.md)
        tighter = {"level_steps": TIGHTER_COARSE_LEVELS, "deadzone": DEADZONE if arr.dtype.kind == "f" else ()}
        for residual in ({}, tighter):
            candidates += self._bounded_for_rmse(arr, rmse_target, int(finite.sum()), memo, residual)
        return min(candidates, key=len)

    def _bounded_for_rmse(self, arr: np.ndarray, rmse_target: float, n_finite: int, memo, residual: dict
                          ) -> list[bytes]:
        """Error-bounded encodings of ``arr`` with the residual quantisation ``residual``
        (``level_steps`` and ``deadzone`` of :meth:`_encode`) that meet ``rmse_target`` over
        its ``n_finite`` finite values, each at a larger bound than the one before. The
        RMSE of each comes from the encoder's own decoding (:meth:`_encode_bounded`),
        held a hair (1e-12) inside the target, as the sums are taken in another order than
        a decoded chunk's."""
        target = rmse_target * (1 - 1e-12)

        def encode(bound):
            buf, squared = self._encode_bounded(arr, bound, memo, residual)
            return buf, math.sqrt(squared / n_finite)

        # a uniform residual quantiser has RMSE = step / sqrt(12) = bound / sqrt(3); a bound
        # equal to the target RMSE passes whatever the data
        bound = math.sqrt(3.0) * rmse_target
        buf, got = encode(bound)
        if got > target:
            return [self._encode(arr, self.quality, rmse_target, memo=memo, **residual)]
        # errors mostly fall well inside the bound, so the RMSE lands below the target (by
        # 0.5-1.5 dB on the fields of docs/results.md, more with tighter coarse levels). The
        # RMSE grows like a power of the bound (the first power at first, then the power
        # through the last two encodings): scale the bound to land a little short of the
        # target, twice; where that overshoots, take half the step (in log) and stop there
        found, power, last = [buf], 1.0, None
        for _ in range(2):
            if got <= 0:
                break
            if last is not None and got > last[1] and bound > last[0]:
                power = max(0.25, math.log(got / last[1]) / math.log(bound / last[0]))
            step = (0.995 * rmse_target / got) ** (1 / power)
            for factor in (step, math.sqrt(step)):
                buf, trial = encode(bound * factor)
                if trial <= target:
                    break
            else:
                break
            found.append(buf)
            last, bound, got = (bound, got), bound * factor, trial
            if factor != step:
                break
        return found


def _out_of_reach(failed: list, top: int, rmse_target: float) -> bool:
    """Whether no level up to ``top`` can reach ``rmse_target``, judged from the two
    highest levels that failed, ``(level index, RMSE)`` in rising order: the learned levels'
    quality gains shrink level by level (they flatten at the model's ceiling), so the
    straight line through those two (in log RMSE) bounds what higher levels reach. It
    saves the encodes of levels above the ceiling; a bounded candidate follows anyway."""
    if len(failed) < 2:
        return False
    (i, r_i), (j, r_j) = failed[-2:]
    per_level = (math.log(r_j) - math.log(r_i)) / (j - i)
    return math.log(r_j) + per_level * (top - j) > math.log(rmse_target)


def _as_bytes(buf):
    if isinstance(buf, (bytes, bytearray, memoryview)):
        return buf
    return np.ascontiguousarray(ensure_ndarray_like(buf)).view(np.uint8).reshape(-1)


def _input_array(buf) -> np.ndarray:
    arr = ensure_ndarray_like(buf)
    if not isinstance(arr, np.ndarray):
        arr = np.asarray(arr)
    little = arr.dtype.newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
    if arr.dtype.kind not in "fiu" or little not in fmt.DTYPE_CODES:
        raise TypeError(
            f"NNCodec compresses {_SUPPORTED} arrays, got dtype {arr.dtype}; "
            "cast the data (e.g. .astype('float32')) or store it with a lossless codec"
        )
    if arr.ndim < 2:
        raise ValueError(
            f"NNCodec needs chunks with 2 to {fmt.MAX_NDIM} dimensions (..., y, x), got shape {arr.shape}; "
            "a 1-D chunk means the codec was given flattened bytes: with zarr format 3 use it as "
            "serializer=NNCodecV3(), with format 2 as compressors=[NNCodec()] (see nncodec.xarray.encoding)"
        )
    if arr.ndim > fmt.MAX_NDIM:
        raise ValueError(f"NNCodec handles up to {fmt.MAX_NDIM} dimensions, got shape {arr.shape}; chunk the leading axes")
    if arr.size == 0:
        raise ValueError(f"NNCodec cannot encode an empty array (shape {arr.shape})")
    native = arr.dtype.newbyteorder("=")
    if arr.dtype != native:
        arr = arr.astype(native)
    return arr


@dataclass
class _Planned:
    """One chunk to encode: its values (C order), its tiles (kinds and side information
    chosen), its mask of finite values (None: all finite) and that mask's bytes."""

    data: np.ndarray
    fortran: bool
    tiles: list
    finite: np.ndarray | None
    mask_bytes: bytes


def _plan_chunk(arr: np.ndarray, tile: int) -> _Planned:
    fortran = arr.ndim > 1 and arr.flags.f_contiguous and not arr.flags.c_contiguous
    data = np.ascontiguousarray(arr)
    has_nonfinite = data.dtype.kind == "f" and not np.isfinite(data).all()
    mask_bytes, finite = encode_mask(data) if has_nonfinite else (b"", None)
    slices = data.reshape((-1,) + data.shape[-2:])
    fin = finite.reshape(slices.shape) if finite is not None else None
    tiles = [_plan_tile(_Tile(s, rs, cs, dest=slices, finite=fin))
             for s in range(slices.shape[0]) for rs, cs in tiles_2d(slices.shape[1:], tile)]
    return _Planned(data, fortran, tiles, finite, mask_bytes)


def _tile_mask(t: _Tile) -> np.ndarray:
    """The finite-value mask of tile ``t``."""
    return t.finite[t.slice, t.rows, t.cols] if t.finite is not None else np.ones(t.shape, bool)


def _tile_values(t: _Tile) -> np.ndarray:
    """Tile ``t``'s view of its chunk's values (``dest``)."""
    return t.dest[t.slice, t.rows, t.cols]


def _plan_tile(t: _Tile) -> _Tile:
    v = _tile_values(t)
    finite = _tile_mask(t)
    if not finite.any():
        t.kind = EMPTY
        return t
    vals = v[finite]
    bits = vals.view(f"u{vals.dtype.itemsize}")
    if (bits == bits[0]).all():  # bitwise, so that -0.0 next to 0.0 is not "constant"
        t.kind, t.value = CONSTANT, vals.flat[0]
        return t
    try:
        t.offset, t.scale = tile_offset_scale(v, finite)
    except OverflowError:
        t.kind, t.raw = RAW, v
        return t
    if t.scale == 0:
        # equal values with different bits (0.0 next to -0.0): only an exact copy keeps them
        t.kind, t.raw = RAW, v
        return t
    t.kind = NETWORK
    return t


def _groups(tiles, most: int | None = None):
    """Batches of same-shape tiles holding at most NNCODEC_BATCH_VALUES values (and at
    most ``most`` tiles)."""
    limit = int(os.environ.get("NNCODEC_BATCH_VALUES", DEFAULT_BATCH_VALUES))
    by_shape = {}
    for t in tiles:
        by_shape.setdefault(t.shape, []).append(t)
    for shape, group in by_shape.items():
        per = min(max(1, limit // (shape[0] * shape[1])), most or len(group))
        for i in range(0, len(group), per):
            yield shape, group[i : i + per]


def _normalised(t: _Tile) -> np.ndarray:
    return normalise_tile(_tile_values(t), _tile_mask(t), t.offset, t.scale)


def _encode_network(rt, tiles, quality, quant, refine=0, memo=None, ready=None) -> None:
    """Analyse network tiles in batches; pick levels (and residual use) per tile.

    In error-bounded modes (for tiles whose bound is not below ``RESIDUAL_ALONE_BELOW`` of
    their range: the others never get here) a tile keeps the network only where network
    bits plus residual bits beat the residual layer alone. The network's own bits are a
    lower bound of that total, so levels whose latents alone cost more than the best so
    far are never synthesised: on most fields the residual layer alone wins and the
    search is cheap.

    With ``refine`` > 0 the latents are refined for the level's rate-distortion loss
    before they are quantised (:meth:`~nncodec.models.runtime.Runtime.refine`). In
    error-bounded modes the search runs on unrefined latents; then only tiles that kept
    the network are refined, at their level, and keep the refined latents where these
    lower the estimated total bits. The residual layer and the final bound check are the
    same either way.

    ``memo`` (a dict, or None) keeps each batch's latents and quantised symbols per level
    (keyed by the batch's tiles),
    and each tile's synthesis at each level that the search tries, for the next encoding of
    the same tiles: they depend on neither the bound nor the level steps, so ``target_psnr``'s
    search computes them once. Not with ``refine``.

    ``ready`` (learned mode), if given, is called with each batch's tiles once they have
    their symbols.
    """
    memo = {} if memo is None or refine else memo

    def once(key, make):
        if key not in memo:
            memo[key] = make()
        return memo[key]

    for n, (shape, group) in enumerate(_groups(tiles)):
        # the memo's key: the batch and its tiles (which tiles run the network depends on the
        # bound, so the n-th batch of one encoding may hold other tiles than that of another)
        n = (n, *((t.slice, t.rows.start, t.cols.start) for t in group))
        x = np.stack([_normalised(t) for t in group])[:, None]
        y = once((n, "latents"), lambda: rt.analyse(x))
        masked = any(t.finite is not None for t in group)
        mask = None if not masked or not refine else np.stack([_tile_mask(t) for t in group])[:, None]
        if quant is None:
            q = quality or DEFAULT_QUALITY
            sym = rt.refine(x, mask, y, q, refine) if refine else once((n, q), lambda: rt.quantise(y, q))
            for i, t in enumerate(group):
                t.quality, t.z, t.y, t.idx = q, sym["z"][i], sym["y"][i], sym["idx"][i]
            if ready is not None:
                ready(group)
            continue
        # the residual layer alone, around the tile's minimum, is the bar to beat (tiles side
        # by side: the residual coder is a numba kernel that releases the GIL)
        best = side_by_side(lambda i: {"bits": _residual_bits(group[i], _offset_prediction(group[i]), quant,
                                                              rt.tables)[1]}, len(group))
        # highest level first: its residual bits then bound those of every lower level
        for q in [quality] if quality else _search_levels(rt.qualities)[::-1]:
            _try_level(rt, group, once((n, q), lambda: rt.quantise(y, q)), q, best, quant,
                       once((n, q, "syntheses"), dict))
        if refine:
            by_q = {}
            for i, c in enumerate(best):
                c.pop("floor", None)  # it bounds lower levels; the refined latents are at the same level
                if "q" in c:
                    by_q.setdefault(c["q"], []).append(i)
            for q, sub in by_q.items():
                sym = rt.refine(x[sub], None if mask is None else mask[sub], y[sub], q, refine)
                _try_level(rt, [group[i] for i in sub], sym, q, [best[i] for i in sub], quant)
        for t, c in zip(group, best):
            if "q" not in c:
                t.kind = RESIDUAL
            else:
                t.quality, t.z, t.y, t.idx = c["q"], c["z"], c["y"], c["idx"]


def _try_level(rt, group, sym, q, best, quant, syntheses=None) -> None:
    """Where the network at level ``q`` (symbols ``sym``) plus the residual layer costs
    fewer bits than ``best[i]["bits"]``, make it tile i's choice (``best`` is updated in place).
    ``syntheses`` (a dict, tile index -> synthesis at this level), if given, keeps the
    tiles' syntheses from earlier calls, and this adds those it makes.

    A tile is synthesised only where its latents' bits plus a lower bound of its residual
    bits beat its best: the residual bits at the last level tried for it (``best[i]["floor"]``,
    which this sets), as levels are tried from the highest down and a lower level's
    coarser reconstruction leaves more residual. (Measured in 0.14.0 with every level
    tried, on the last 12 slices of TS, vorticity, precipitation and SST and a relief
    crop, at bounds of 3e-2 .. 1e-3 of the range: a lower level's residual took fewer bits
    than a higher one's in 3 vorticity tiles at 1e-3, by at most 0.3 %, and no tile's
    choice changed. Those fields and turbulence then encoded to the same bytes as in
    0.13.0, 1.1-1.8x faster at 1e-3, where every level used to be synthesised, and
    1.0-1.4x at 1e-2.)"""
    tables = rt.tables
    net_bits = [
        tables.symbol_bits("z", sym["z"][i], channel_indexes(sym["z"][i].shape)).sum()
        + tables.symbol_bits("y", sym["y"][i], sym["idx"][i]).sum()
        for i in range(len(group))
    ]
    open_ = [i for i in range(len(group)) if net_bits[i] + best[i].get("floor", 0.0) < best[i]["bits"]]
    if not open_:
        return

    syntheses = {} if syntheses is None else syntheses
    todo = [i for i in open_ if i not in syntheses]
    if todo:  # on the CPU each tile alone: the same values whichever tiles share the call
        syntheses.update(zip(todo, rt.synthesise(sym["y"][todo], q, group[0].shape, reproducible=False)))

    def residual_bits(j):
        t = group[open_[j]]
        pred = syntheses[open_[j]].astype(np.float64) * float(t.scale) + float(t.offset)
        return _residual_bits(t, pred, quant, tables)[1]

    for i, res_bits in zip(open_, side_by_side(residual_bits, len(open_))):
        bits = net_bits[i] + res_bits
        best[i]["floor"] = res_bits
        if bits < best[i]["bits"]:
            best[i].update(bits=bits, q=q, z=sym["z"][i], y=sym["y"][i], idx=sym["idx"][i])


def _search_levels(top: int) -> list[int]:
    """Levels tried per tile in error-bounded modes: every other one, and the top."""
    return sorted(set(range(1, top + 1, 2)) | {top})


def _residual_bits(t, pred, quant, tables):
    """(code, estimated bits) of the cheaper residual predictor for a tile; (None, inf) if none fits."""
    v = _tile_values(t).astype(np.float64)
    finite = _tile_mask(t)
    if quant.step == 0:
        return None, np.inf
    y = np.where(finite, (np.where(finite, v, 0.0) - pred) / quant.step, 0.0)
    # around a constant only interpolation can pay; around the network either may
    names = ("cubic",) if np.ptp(pred) == 0 else ("none", "cubic")
    codes = [c for c in (encode_residual(y, finite, PREDICTORS[n], tables, quant.level_steps, quant.deadzone)
                         for n in names) if c is not None]
    best = min(codes, key=lambda c: c.bits, default=None)
    return best, np.inf if best is None else best.bits + 8


def _finish_residual(t: _Tile, quant, pred, tables) -> None:
    """Residual symbols around the final prediction ``pred`` (:func:`_predictions`), exact
    exceptions, and the squared error of the values they decode to."""
    v = _tile_values(t)
    finite = _tile_mask(t)
    code, _ = _residual_bits(t, pred, quant, tables)
    if code is None:
        t.kind, t.residual, t.raw = RAW, None, v
        return
    out = reconstruct(pred, code.k, quant.step, v.dtype)
    err = np.abs(out.astype(np.float64) - v.astype(np.float64))
    reach = quant.reach if v.dtype.kind == "f" else np.floor(quant.reach)
    bad = np.flatnonzero((err > reach) & finite)
    t.residual = code
    t.exceptions = (bad, v.reshape(-1)[bad])
    err.flat[bad] = 0.0  # stored exactly
    t.squared_error = float(np.sum(np.square(err[finite])))


def _predictions(tiles, rt):
    """The float64 syntheses of the network tiles among residual-coded ``tiles``, to which
    their ``k`` is added (:func:`_predicted`): (tiles, tensor on the device) per batch of
    one level and shape, launched as it is asked for; at most :func:`host_threads` tiles
    a batch, whose float64 activations are large. torch is imported only where there are
    network tiles: residual-only chunks code without it."""
    by_level = {}
    for t in tiles:
        if t.kind == NETWORK:
            by_level.setdefault(t.quality, []).append(t)
    if not by_level:
        return
    import torch

    for q, level in by_level.items():
        for shape, group in _groups(level, host_threads()):
            yield group, rt.launch_synthesis(np.stack([t.y for t in group]), q, shape, dtype=torch.float64)


def _offset_prediction(t: _Tile) -> np.ndarray:
    """What a RESIDUAL tile's ``k`` is added to (and the residual layer alone's bar in the
    level search): its offset, the tile's finite minimum."""
    return np.full(t.shape, float(t.offset))


def _predicted(t: _Tile, xn: np.ndarray) -> np.ndarray:
    """A network tile's prediction from its normalised float64 synthesis."""
    return xn * float(t.scale) + float(t.offset)


def _write_payload(tiles, mask_bytes, tables, dtype, streams=None) -> bytes:
    """A chunk's payload; ``streams``, if given, its lanes' streams, already coded."""
    out = bytearray()
    for t in tiles:
        kind = t.kind | (_HAS_RESIDUAL if t.residual is not None and t.kind == NETWORK else 0)
        out.append(kind)
        if t.kind == CONSTANT:
            out += np.asarray(t.value, dtype=dtype).tobytes()
        elif t.kind == RAW:
            raw = zlib.compress(np.ascontiguousarray(t.raw).tobytes(), 6)
            fmt.put_varint(out, len(raw))
            out += raw
        elif t.kind in (NETWORK, RESIDUAL):
            out += struct.pack("<ff", t.offset, t.scale)
            if t.kind == NETWORK:
                out.append(t.quality)
            if t.residual is not None:
                out.append(t.residual.predictor)
                pos, vals = t.exceptions
                fmt.put_varint(out, len(pos))
                prev = 0
                for p in np.asarray(pos).tolist():
                    fmt.put_varint(out, p - prev)
                    prev = p
                out += np.asarray(vals, dtype=dtype).tobytes()
    out += mask_bytes
    lanes = _lanes(tiles)
    if lanes:
        if streams is None:
            streams = side_by_side(lambda k: _lane_stream(lanes[k], tables), len(lanes))
        fmt.put_varint(out, len(lanes))
        for s in streams[:-1]:
            fmt.put_varint(out, len(s))
        out += b"".join(streams)
    return bytes(out)


def _lanes(tiles: list) -> list[list]:
    """A chunk's coded tiles (network and residual ones), lane by lane (none without)."""
    coded = [t for t in tiles if t.kind in (NETWORK, RESIDUAL)]
    if not coded:
        return []
    residual_bits = math.fsum(t.residual.bits for t in coded if t.residual is not None)
    cuts = lane_cuts(len(coded), lane_count([math.prod(t.shape) for t in coded], residual_bits))
    return [coded[a:b] for a, b in zip(cuts, cuts[1:])]


class _EarlyLanes:
    """Learned-mode encoding where the network runs on a GPU: each lane's stream is
    range-coded on a host thread as soon as all its tiles have symbols (:meth:`ready`),
    while the GPU works on the next batch."""

    def __init__(self, chunks: list[_Planned], tables):
        self.tables = tables
        self.lanes = [_lanes(c.tiles) for c in chunks]  # as _write_payload cuts them
        self.coding = [[None] * len(lanes) for lanes in self.lanes]
        self.lane_of = {id(t): (i, k) for i, lanes in enumerate(self.lanes) for k, lane in enumerate(lanes) for t in lane}
        self.waiting = {(i, k): len(lane) for i, lanes in enumerate(self.lanes) for k, lane in enumerate(lanes)}

    def ready(self, tiles) -> None:
        for t in tiles:
            i, k = where = self.lane_of[id(t)]
            self.waiting[where] -= 1
            if not self.waiting[where]:
                self.coding[i][k] = soon(_lane_stream, self.lanes[i][k], self.tables)

    def streams(self, i: int) -> list[bytes]:
        """Chunk ``i``'s lanes' streams (waiting for their threads)."""
        return [f.result() for f in self.coding[i]]


def _lane_stream(coded, tables) -> bytes:
    """The range-coded stream of one lane's coded tiles: every network tile's z, then every
    network tile's y (one call each: the coder converts its tables per call), then the
    residual symbols tile by tile."""
    w = StreamWriter(tables)
    nets = [t for t in coded if t.kind == NETWORK]
    if nets:
        w.z(np.concatenate([t.z.ravel() for t in nets]),
            np.concatenate([channel_indexes(t.z.shape).ravel() for t in nets]))
        w.y(np.concatenate([t.y.ravel() for t in nets]), np.concatenate([t.idx.ravel() for t in nets]))
    for t in coded:
        if t.residual is not None:
            w.r(t.residual.symbols, t.residual.indexes)
    return w.finish()


# -- decoding ----------------------------------------------------------------------------
@dataclass
class _Parsed:
    """One chunk's header, tiles and lanes, read from its bytes; ``slices`` receives its
    values (a stack of 2D slices), ``finite`` / ``fill`` its non-finite positions and values."""

    header: fmt.Header
    tiles: list
    coded: list  # the tiles whose symbols are range coded, in stream order
    slices: np.ndarray
    finite: np.ndarray | None
    fill: np.ndarray | None
    lanes: list

    def result(self) -> np.ndarray:
        out = self.slices.reshape(self.header.shape)
        if self.finite is not None:
            out[~self.finite] = self.fill
        return np.asfortranarray(out) if self.header.fortran_order else out


def _decode_chunks(chunks: list[tuple[fmt.Header, bytes]], device: str, model) -> list[np.ndarray]:
    """The arrays of several chunks, decoded together: their lanes side by side, their
    network tiles in shared batches (:func:`_decode_stream`). Every chunk decodes to
    exactly the values it decodes to alone."""
    parsed = [_parse(header, payload) for header, payload in chunks]
    by_runtime = {}
    for c in parsed:
        # the weights only where a tile uses the network: residual-only chunks decode without them
        rt = _decoder_runtime(c.header, device, model) if any(t.kind == NETWORK for t in c.tiles) else None
        by_runtime.setdefault(id(rt), (rt, []))[1].append(c)
    for rt, group in by_runtime.values():
        if rt is not None and sum(len(c.coded) for c in group) == 1:
            rt.one_tile(_reconstruct, group, rt)
        else:
            _reconstruct(group, rt)
    return [c.result() for c in parsed]


def _parse(header: fmt.Header, payload) -> _Parsed:
    """A chunk's tiles (with their side information), mask and lanes."""
    dtype = header.dtype
    shape = header.shape
    if len(shape) < 2:
        raise CorruptStreamError("nncodec chunk has fewer than 2 dimensions; the chunk is damaged")
    n_slices = math.prod(shape[:-2])
    slices = np.empty((n_slices,) + shape[-2:], dtype=dtype)
    r = fmt.Reader(payload)
    tiles = []
    for s in range(n_slices):
        for rs, cs in tiles_2d(shape[-2:], header.tile):
            t = _Tile(s, rs, cs, dest=slices)
            kind = r.u8()
            t.kind = kind & 0x7F
            if t.kind == CONSTANT:
                t.value = np.frombuffer(r.take(dtype.itemsize), dtype=dtype)[0]
            elif t.kind == RAW:
                raw = zlib.decompress(bytes(r.take(r.varint())))
                t.raw = np.frombuffer(raw, dtype=dtype).reshape(t.shape)
            elif t.kind in (NETWORK, RESIDUAL):
                t.offset, t.scale = r.f32(), r.f32()
                if t.kind == NETWORK:
                    t.quality = r.u8()
                if t.kind == RESIDUAL or kind & _HAS_RESIDUAL:
                    if header.step is None:
                        raise CorruptStreamError("nncodec tile has a residual but the chunk has no step")
                    predictor = r.u8()
                    if predictor not in PREDICTORS.values():
                        raise CorruptStreamError(
                            f"nncodec residual predictor {predictor} is unknown; the chunk is damaged"
                        )
                    t.residual = ResidualCode(predictor, header.level_steps)
                    n_exc = r.varint()
                    pos, prev = [], 0
                    for _ in range(n_exc):
                        prev += r.varint()
                        pos.append(prev)
                    vals = np.frombuffer(r.take(n_exc * dtype.itemsize), dtype=dtype)
                    t.exceptions = (np.array(pos, dtype=np.int64), vals)
            elif t.kind != EMPTY:
                raise CorruptStreamError(f"nncodec tile kind {t.kind} is unknown; the chunk is damaged")
            tiles.append(t)
    finite = fill = None
    if header.has_nonfinite:
        finite, fill = decode_mask(r, shape, dtype)
        fin = finite.reshape(slices.shape)
        for t in tiles:  # non-finite positions carry no residual symbols
            t.finite = fin
    coded = [t for t in tiles if t.kind in (NETWORK, RESIDUAL)]
    return _Parsed(header, tiles, coded, slices, finite, fill, _read_lanes(r, header.version, len(coded)))


def _read_lanes(r: fmt.Reader, version: int, n_coded: int) -> list[bytes]:
    """The range-coded streams of a chunk's ``n_coded`` coded tiles: from format version 4
    a lane count, the byte lengths of all lanes but the last, then the lanes' streams
    (docs/format.md); before, the rest of the payload is one stream."""
    if version < 4:
        return [bytes(r.rest())]
    if not n_coded:
        return []
    n_lanes = r.varint()
    if not 1 <= n_lanes <= n_coded:
        raise CorruptStreamError(f"nncodec chunk claims {n_lanes} lanes for {n_coded} coded tiles; the chunk is damaged")
    lengths = [r.varint() for _ in range(n_lanes - 1)]
    return [bytes(r.take(n)) for n in lengths] + [bytes(r.rest())]


def _reconstruct(chunks: list[_Parsed], rt) -> None:
    """Write every tile's values into its chunk's ``slices``: the coded ones from their
    lanes' streams (:func:`_decode_stream`)."""
    for c in chunks:
        for t in c.tiles:
            target = _tile_values(t)
            if t.kind == EMPTY:
                target[...] = 0
            elif t.kind == CONSTANT:
                target[...] = t.value
            elif t.kind == RAW:
                target[...] = t.raw
    if any(c.coded for c in chunks):
        _decode_stream(rt, chunks)


def _write_residual(t: _Tile, header: fmt.Header, pred: np.ndarray) -> None:
    """A residual tile's values: its decoded ``k`` on ``pred``, then its exceptions."""
    flat = reconstruct(pred, t.residual.k, header.step, header.dtype).reshape(-1)
    pos, vals = t.exceptions
    if len(pos) and pos.max() >= flat.size:
        raise CorruptStreamError("nncodec exception list points outside its tile; the chunk is damaged")
    flat[pos] = vals
    _tile_values(t)[...] = flat.reshape(t.shape)


def _decoder_runtime(header, device, model):
    from .weights import CODES, USER_WEIGHTS_CODE, load

    if header.model_code == USER_WEIGHTS_CODE:
        if model is None:
            raise ModelError(
                "this chunk was written with a user's own weights file (sha256 prefix "
                f"{header.weights_sha.hex()}); decode it with NNCodec(model='path/to/weights.pt')"
            )
        rt = load(model, device)
    else:
        if header.model_code not in CODES:
            raise ModelError(
                f"this chunk names model code {header.model_code}, which this nncodec does not ship: "
                "upgrade nncodec (pip install -U nncodec)"
            )
        rt = load(CODES[header.model_code], device)
    if rt.ref.sha_prefix != header.weights_sha:
        raise ModelError(
            f"this chunk was written with weights whose sha256 starts {header.weights_sha.hex()}, but "
            f"model {rt.ref.id!r} has {rt.ref.sha256[:8]}: decode with the weights it was written with"
        )
    return rt


def _overlapped(rt) -> bool:
    """Whether the network runs on another device (a GPU) than the range decoder, so that
    a lane's tiles are synthesised there while the host decodes the next lanes."""
    return rt is not None and rt.device.type != "cpu"


def _decode_stream(rt, chunks: list[_Parsed]) -> None:
    """The chunks' coded tiles from their lanes' streams, all lanes side by side: every
    lane's hyper-latents, then the scale indexes of all network tiles (batched per tile
    shape), then every lane's latents and residual symbols, and the tiles' values.

    Where the network runs on a GPU (:func:`_overlapped`), each lane's network tiles are
    synthesised as soon as its symbols are decoded, while the host threads decode the
    following lanes, and written while the GPU works on the next lane: the GPU's batches
    are then a lane's tiles (of one shape and level), so that a chunk decodes to the same
    values whichever chunks share the call. On the CPU, whose cores the range decoder
    already keeps busy, the syntheses follow the decoding, in batches across chunks."""
    lanes = []  # (reader, the lane's coded tiles, its chunk's header)
    for c in chunks:
        coded = c.coded
        if not coded:  # no lanes, or (before version 4) a stream of no symbols
            continue
        cuts = lane_cuts(len(coded), len(c.lanes))
        for k, data in enumerate(c.lanes):
            reader = StreamReader(None if rt is None else rt.tables, data)
            lanes.append((reader, coded[cuts[k] : cuts[k + 1]], c.header))
    lane_nets = [[t for t in ts if t.kind == NETWORK] for _, ts, _ in lanes]
    nets = [t for ts in lane_nets for t in ts]
    for t in nets:
        if not 1 <= t.quality <= rt.qualities:
            raise CorruptStreamError(f"nncodec tile quality {t.quality} is outside 1..{rt.qualities}; the chunk is damaged")

    def hyper_latents(k):
        n_z = rt.tables.medians.shape[0]
        channels = [channel_indexes((n_z,) + rt.latent_shape(*t.shape)[1]) for t in lane_nets[k]]
        for t, z in zip(lane_nets[k], lanes[k][0].parts("z", channels)):
            t.z = z

    def latents_and_residuals(k):
        reader, tiles, header = lanes[k]
        for t, y in zip(lane_nets[k], reader.parts("y", [t.idx for t in lane_nets[k]])):
            t.y = y
        for t in tiles:
            if t.residual is not None:
                # non-finite positions carry no residual symbols: the mask is known before the stream
                t.residual.k = reader.residual(t.shape, _tile_mask(t), t.residual.predictor, t.residual.level_steps)
                if t.kind == RESIDUAL:
                    _write_residual(t, header, _offset_prediction(t))

    if not nets:
        side_by_side(latents_and_residuals, len(lanes))
        return
    side_by_side(hyper_latents, len(lanes))
    for shape, group in _groups(nets):
        y_shape, _ = rt.latent_shape(*shape)
        idx = rt.indexes(np.stack([t.z for t in group]), y_shape)
        for t, i in zip(group, idx):
            t.idx = i
    if not _overlapped(rt):
        side_by_side(latents_and_residuals, len(lanes))
        for batch in _syntheses(rt, [(header, ts) for _, ts, header in lanes]):
            _write_synthesis(*batch, side_by_side)
        return
    queued = []  # the batches of the lane before, on the GPU

    def hand_over(k, _):
        reader, tiles, header = lanes[k]
        launched = list(_syntheses(rt, [(header, tiles)]))
        for batch in queued:  # the host threads decode, so this thread writes alone
            _write_synthesis(*batch, lambda func, n: [func(i) for i in range(n)])
        queued[:] = launched

    in_order(latents_and_residuals, len(lanes), hand_over)
    for batch in queued:
        _write_synthesis(*batch, side_by_side)


def _syntheses(rt, parts):
    """The syntheses of the network tiles among ``parts``, (chunk header, decoded tiles)
    pairs: (tiles, header per tile, tensor on the device, whether predictions) per batch,
    launched as it is asked for. Learned-mode tiles in float32 batches of one shape and
    level, with the reference kernel of their chunk's format version (so older chunks
    decode to the same values as when they were written); residual ones in float64
    (:func:`_predictions`)."""
    plain, residual, headers = {}, [], {}
    for header, tiles in parts:
        for t in tiles:
            if t.kind == NETWORK:
                headers[id(t)] = header
                if t.residual is None:
                    plain.setdefault((header.version, t.quality), []).append(t)
                else:
                    residual.append(t)
    for (version, q), tiles in plain.items():
        for shape, group in _groups(tiles):
            xn = rt.launch_synthesis(np.stack([t.y for t in group]), q, shape, version=version)
            yield group, None, xn, False
    for group, xn in _predictions(residual, rt):
        yield group, [headers[id(t)] for t in group], xn, True


def _write_synthesis(group, headers, xn, predictions: bool, spread) -> None:
    """Write the values of a batch of :func:`_syntheses` (waiting for its device), its
    tiles handed out by ``spread`` (:func:`side_by_side`, or a loop)."""
    xn = xn.cpu().numpy()
    if predictions:
        spread(lambda k: _write_residual(group[k], headers[k], _predicted(group[k], xn[k])), len(group))
    else:
        spread(lambda k: denormalise_into(xn[k], group[k].offset, group[k].scale, _tile_values(group[k])), len(group))

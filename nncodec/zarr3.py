"""NNCodecV3: nncodec as a zarr-python 3 array-to-bytes codec (the array's serializer).

In zarr format 3 a compressor only ever sees flat bytes, so a codec that needs the 2D
layout of a chunk has to be the *serializer*: ``serializer=NNCodecV3(...)`` together with
``compressors=None`` (nncodec already entropy-codes its output). zarr finds the class by
the ``zarr.codecs`` entry point ``nncodec``, so a process that never imports nncodec can
still read the arrays. All the coding is done by an :class:`~nncodec.codec.NNCodec`; this
module only adapts it to zarr's buffers, metadata and event loop.

This module needs zarr 3; ``import nncodec`` does not import it.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import parse_named_configuration

from . import format as fmt
from .codec import NNCodec, _input_array
from .errors import FormatError
from .normalize import DEFAULT_TILE

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer

_PARAMS = ("quality", "model", "device", "abs_error", "rel_error", "target_psnr", "tile", "refine")


@dataclass(frozen=True)
class NNCodecV3(ArrayBytesCodec):
    """Learned lossy codec for zarr format 3 arrays, used as the array's serializer.

    The parameters are those of :class:`nncodec.NNCodec`, and are checked the same way.
    Chunks must have 2 to 5 dimensions (the last two are the 2D field) and a float32,
    float64 or small integer dtype. Edge chunks arrive padded with the array's fill
    value: keep it NaN for floats (xarray's default) so the padding costs next to nothing.

    Parameters
    ----------
    quality : int, optional
        Rate level, 1 (fewest bits) to the model's top level. Default 4.
    model : str, optional
        A shipped model id or the path of a weights file. Default: the shipped model.
    device : {"auto", "cpu", "cuda"}
        Where the network runs. Not part of the stored data's meaning: any device reads it.
    abs_error : float, optional
        Every finite decoded value is within ``abs_error`` of the original.
    rel_error : float, optional
        As ``abs_error``, relative to each chunk's finite range.
    target_psnr : float, optional
        Each chunk's PSNR is at least this (dB).
    tile : int
        Largest tile edge inside a chunk. Default 256.

    Examples
    --------
    >>> import numpy as np, zarr
    >>> from nncodec.zarr3 import NNCodecV3
    >>> field = np.add.outer(np.sin(np.linspace(0, 3, 90)), np.cos(np.linspace(0, 5, 180))).astype("f4")
    >>> arr = zarr.create_array(store={}, shape=field.shape, chunks=(64, 64), dtype="f4",
    ...                         fill_value=np.nan, serializer=NNCodecV3(abs_error=1e-3), compressors=None)
    >>> arr[:] = field
    >>> bool(np.abs(arr[:] - field).max() <= 1e-3)
    True
    >>> NNCodecV3(abs_error=1e-3).to_dict()
    {'name': 'nncodec', 'configuration': {'abs_error': 0.001}}
    """

    is_fixed_size = False

    quality: int | None
    model: str | None
    device: str
    abs_error: float | None
    rel_error: float | None
    target_psnr: float | None
    tile: int
    refine: int

    def __init__(self, quality=None, model=None, device="auto", abs_error=None, rel_error=None,
                 target_psnr=None, tile=DEFAULT_TILE, refine=0):
        codec = NNCodec(quality=quality, model=model, device=device, abs_error=abs_error,
                        rel_error=rel_error, target_psnr=target_psnr, tile=tile, refine=refine)
        # the fields hold NNCodec's checked, normalised values, so equal settings compare equal
        for name in _PARAMS:
            object.__setattr__(self, name, getattr(codec, name))
        # not a dataclass field: kept out of equality, hashing and the metadata
        object.__setattr__(self, "_codec", codec)

    # -- metadata ------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict) -> Self:
        """Build the codec from its zarr metadata ``{"name": "nncodec", "configuration": {...}}``."""
        _, config = parse_named_configuration(data, NNCodec.codec_id, require_configuration=False)
        config = dict(config or {})
        unknown = sorted(set(config) - set(_PARAMS))
        if unknown:
            raise ValueError(
                f"nncodec codec metadata has unknown keys {unknown} (known: {', '.join(_PARAMS)}); "
                "the array was probably written by a newer nncodec: upgrade it (pip install -U nncodec)"
            )
        return cls(**config)

    def to_dict(self) -> dict:
        """The zarr metadata of the codec; only settings that differ from the defaults."""
        config = self._codec.get_config()
        del config["id"]
        return {"name": NNCodec.codec_id, "configuration": config}

    def validate(self, *, shape, dtype, chunk_grid) -> None:
        """Refuse, when the array is created, arrays whose chunks nncodec cannot code."""
        if not 2 <= len(shape) <= fmt.MAX_NDIM:
            raise ValueError(
                f"NNCodecV3 codes arrays with 2 to {fmt.MAX_NDIM} dimensions (..., y, x), got shape "
                f"{tuple(shape)}; store this array with the default serializer (leave nncodec out of its codecs)"
            )
        # the codec's own dtype check, on a stand-in chunk, so the message is the same as at encode time
        _input_array(np.zeros((1, 1), dtype=dtype.to_native_dtype()))

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        """Not known in advance: the size of a coded chunk depends on its values."""
        raise NotImplementedError("nncodec output size depends on the data")

    # -- coding --------------------------------------------------------------------------
    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer:
        """One chunk; in learned mode a chunk of one tile is encoded together with the
        other such chunks waiting on this event loop (see :meth:`_decode_single`), to the
        bytes it gets alone."""
        data = chunk_array.as_numpy_array()
        encoded = await self._coded("encode", data, chunk_spec.shape, self._codec._encodes_in_batches())
        return chunk_spec.prototype.buffer.from_bytes(encoded)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        """One chunk; a chunk of one tile is decoded together with the other such chunks
        waiting on this event loop (:meth:`_drain`): zarr reads several chunks at once
        (``async.concurrency``, and ``codec_pipeline.batch_size`` per call), and the
        network tiles of small chunks run much faster in shared batches. The values are
        those of the chunk decoded alone."""
        decoded = await self._coded("decode", chunk_bytes.as_numpy_array(), chunk_spec.shape, True)
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(_as_chunk(decoded, chunk_spec))

    async def _coded(self, op: str, data, shape, batches: bool):
        """``NNCodec.<op>(data)`` (``op``: "encode" or "decode"), through the chunks waiting
        on this event loop for the same codec and operation when ``batches`` and the chunk
        is one tile."""
        if not (batches and self._one_tile(shape)):
            # off the event loop, as zarr's numcodecs wrappers do. A larger chunk's tiles already
            # fill nncodec's tile pool; such chunks are coded side by side (measured: batching
            # eight 1024 x 1024 chunks was a fifth slower)
            return await asyncio.to_thread(getattr(self._codec, op), data)
        loop = asyncio.get_running_loop()
        waiting = _WAITING.setdefault(loop, {}).setdefault((self, op), [])
        done = loop.create_future()
        waiting.append((data, done))
        if len(waiting) == 1:
            _DRAINS.add(loop.create_task(self._drain(op, waiting)))
        return await done

    async def encode(self, chunks_and_specs) -> list[Buffer | None]:
        """A zarr batch of chunks (``codec_pipeline.batch_size``): all join the waiting
        chunks at once (zarr's default would let ``async.concurrency`` in at a time)."""
        return await _all_at_once(self._encode_single, chunks_and_specs)

    async def decode(self, chunk_bytes_and_specs) -> list[NDBuffer | None]:
        """A zarr batch of chunks, as :meth:`encode`."""
        return await _all_at_once(self._decode_single, chunk_bytes_and_specs)

    async def _drain(self, op: str, waiting: list) -> None:
        """Code the chunks in ``waiting`` (data, future), as many at a time as have
        arrived, until none is left. A chunk that fails is retried alone, so that its
        error reaches its own reader or writer only."""
        try:
            await asyncio.sleep(0)  # chunks that arrive in this turn of the loop join the batch
            while waiting:
                batch = waiting[:]
                if len(batch) == 1:
                    data, done = batch[0]
                    try:
                        _settle(done, True, await asyncio.to_thread(getattr(self._codec, op), data))
                    except Exception as exc:
                        _settle(done, False, exc)
                else:
                    results = await asyncio.to_thread(_each, self._codec, op, [data for data, _ in batch])
                    for (_, done), (ok, value) in zip(batch, results):
                        _settle(done, ok, value)
                del waiting[: len(batch)]
        finally:
            for _, done in waiting:  # only if this task was cancelled (the loop is closing)
                done.cancel()
            waiting.clear()
            _DRAINS.discard(asyncio.current_task())

    def _one_tile(self, shape) -> bool:
        """Whether a chunk of this shape is one tile."""
        return len(shape) >= 2 and math.prod(shape[:-2]) == 1 and max(shape[-2:]) <= self.tile

#: per event loop, codec and operation, the chunks waiting to be coded (NNCodecV3._coded)
_WAITING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_DRAINS: set = set()  # the running drain tasks (the loop keeps only weak references to tasks)


async def _all_at_once(single, items_and_specs) -> list:
    """``await single(item, spec)`` for every pair of a zarr batch, all started together;
    a missing item (None) stays None."""

    async def one(item, spec):
        return None if item is None else await single(item, spec)

    return list(await asyncio.gather(*(one(item, spec) for item, spec in items_and_specs)))


def _each(codec: NNCodec, op: str, items: list) -> list[tuple[bool, object]]:
    """(True, result) or (False, error) per chunk of ``codec.<op>``: all coded together
    (``<op>_batch``), or, if that fails, each alone."""
    try:
        return [(True, r) for r in getattr(codec, f"{op}_batch")(items)]
    except Exception:
        out = []
        for item in items:
            try:
                out.append((True, getattr(codec, op)(item)))
            except Exception as exc:
                out.append((False, exc))
        return out


def _settle(done: asyncio.Future, ok: bool, value) -> None:
    if done.done():  # its reader was cancelled
        return
    if ok:
        done.set_result(value)
    else:
        done.set_exception(value)


def _as_chunk(decoded: np.ndarray, chunk_spec: ArraySpec) -> np.ndarray:
    """The decoded chunk in the shape and dtype the array expects; a mismatch is an error."""
    dtype = chunk_spec.dtype.to_native_dtype()
    if decoded.size != math.prod(chunk_spec.shape) or not np.can_cast(decoded.dtype, dtype, "equiv"):
        raise FormatError(
            f"nncodec chunk holds {decoded.dtype} {decoded.shape}, but the array expects {dtype} "
            f"{tuple(chunk_spec.shape)}: the chunk was written for another array (rewrite it)"
        )
    return decoded.astype(dtype, copy=False).reshape(chunk_spec.shape)

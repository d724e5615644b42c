"""Exact coding of non-finite values (NaN, land masks, +-Inf).

Positions are coded as run lengths of the flattened (C-order) chunk, so the cost grows
with the number of mask edges, not with the number of masked values. Values keep their
exact bits: one pattern when all non-finite values are alike (the usual NaN), otherwise
every value.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from .format import Reader, put_varint

_UNIFORM = 0
_EACH = 1


def encode_mask(values: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Code the non-finite entries of ``values`` (any shape, float dtype).

    Returns the coded bytes and the boolean finite mask (same shape).
    """
    finite = np.isfinite(values)
    flat = (~finite).reshape(-1)
    # run lengths, alternating finite / non-finite, starting with a finite run
    edges = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate(([0], edges, [flat.size]))
    runs = np.diff(bounds)
    if flat[0]:
        runs = np.concatenate(([0], runs))
    body = bytearray()
    put_varint(body, len(runs))
    for n in runs.tolist():
        put_varint(body, n)
    bad = values.reshape(-1)[flat]
    raw = np.ascontiguousarray(bad).view(np.uint8).reshape(bad.size, -1)
    out = bytearray()
    if bad.size and (raw == raw[0]).all():  # one bit pattern for all (the usual NaN)
        out.append(_UNIFORM)
        out += raw[0].tobytes()
    else:
        out.append(_EACH)
        body += raw.tobytes()
    # raw deflate: no zlib header or checksum (the chunk has its own CRC)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = deflate.compress(bytes(body)) + deflate.flush()
    put_varint(out, len(packed))
    return bytes(out + packed), finite


def decode_mask(r: Reader, shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Read a mask written by :func:`encode_mask`: (finite mask, non-finite values)."""
    kind = r.u8()
    uniform = bytes(r.take(dtype.itemsize)) if kind == _UNIFORM else None
    body = Reader(zlib.decompress(bytes(r.take(r.varint())), -15))
    n_runs = body.varint()
    runs = np.array([body.varint() for _ in range(n_runs)], dtype=np.int64)
    size = math.prod(shape)
    if runs.sum() != size:
        from .errors import CorruptStreamError

        raise CorruptStreamError("nncodec mask does not cover the chunk; the chunk is damaged")
    state = np.zeros(len(runs), dtype=bool)
    state[1::2] = True
    nonfinite = np.repeat(state, runs)
    count = int(nonfinite.sum())
    if uniform is not None:
        values = np.frombuffer(uniform * count, dtype=dtype)
    else:
        values = np.frombuffer(bytes(body.take(count * dtype.itemsize)), dtype=dtype)
    return ~nonfinite.reshape(shape), values

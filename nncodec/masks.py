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

from ._jit import kernel
from .errors import CorruptStreamError
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
    packed_runs = np.empty(10 * len(runs), dtype=np.uint8)  # a varint of an int64 takes at most 10 bytes
    body += packed_runs[: _put_varints(runs.astype(np.int64), packed_runs)].tobytes()
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
    if n_runs > body.end - body.pos:  # every run takes a byte at least
        raise CorruptStreamError("nncodec mask is truncated; the chunk is damaged")
    runs = np.empty(n_runs, dtype=np.int64)
    body.pos = _get_varints(np.frombuffer(body.buf, dtype=np.uint8), body.pos, runs)
    if body.pos < 0 or (n_runs and runs.min() < 0) or runs.sum() != math.prod(shape):
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


@kernel
def _put_varints(values, out):
    """``values`` (non-negative int64) as LEB128 varints into ``out``; returns the length."""
    n = 0
    for i in range(values.size):
        v = np.uint64(values[i])
        while v >= 0x80:
            out[n] = np.uint8((v & np.uint64(0x7F)) | np.uint64(0x80))
            v >>= np.uint64(7)
            n += 1
        out[n] = np.uint8(v)
        n += 1
    return n


@kernel
def _get_varints(buf, pos, out):
    """Fill ``out`` with LEB128 varints read from ``buf`` at ``pos``; returns the position
    after them, or -1 when ``buf`` ends first or a varint runs past 64 bits (as
    ``format.Reader.varint`` refuses). One call for a mask's runs: thousands on a coastline."""
    for i in range(out.size):
        value, shift = np.uint64(0), 0
        while True:
            if pos >= buf.size:
                return -1
            byte = buf[pos]
            pos += 1
            value |= np.uint64(byte & 0x7F) << np.uint64(shift)
            if not byte & 0x80:
                break
            shift += 7
            if shift > 63:
                return -1
        out[i] = np.int64(value)
    return pos

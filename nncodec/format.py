"""The nncodec bitstream: magic, format version, header, checksum (numpy + struct only).

Layout of one encoded chunk (all integers little-endian; "varint" is LEB128)::

    magic      3 bytes   b"NNC"
    version    1 byte    format version (this module writes FORMAT_VERSION)
    hlen       varint    length of the header that follows
    header     hlen bytes
        flags    1 byte   bits 0-2 dtype code, bit 3 Fortran order, bit 4 has non-finite
                          values, bit 5 error-bounded
        ndim     1 byte   then ndim varints: the shape
        model    varint   stable model code (0: the user's own weights)
        sha      4 bytes  prefix of the sha256 of the weights file
        tile     varint   tile edge length
        [bound   float64  requested absolute error bound      (error-bounded only)]
        [step    float64  residual quantisation step          (error-bounded only)]
        [levels  1 byte   n, then n bytes: the residual step of each interpolation level,
                          finest first, in fifteenths of ``step`` (error-bounded only;
                          version 5 on)]
        crc32    4 bytes  of the header bytes before it, then the payload
    payload    the rest (tile records, mask, range-coded lanes; see docs/format.md)

Parsing a header never imports torch.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .errors import CorruptStreamError, FormatError, NewerFormatError

MAGIC = b"NNC"
FORMAT_VERSION = 5
SUPPORTED_VERSIONS = (1, 2, 3, 4, 5)
#: Level steps are odd numbers of fifteenths of the step (nncodec.residual.FRACTION), at most 15.
MAX_LEVEL_STEP = 15

# stable dtype codes: never renumber
DTYPES = {
    0: np.dtype("<f4"),
    1: np.dtype("<f8"),
    2: np.dtype("i1"),
    3: np.dtype("<i2"),
    4: np.dtype("<i4"),
    5: np.dtype("u1"),
    6: np.dtype("<u2"),
    7: np.dtype("<u4"),
}
DTYPE_CODES = {v: k for k, v in DTYPES.items()}

F_ORDER = 0x08
HAS_NONFINITE = 0x10
BOUNDED = 0x20
MAX_NDIM = 5


def put_varint(out: bytearray, value: int) -> None:
    """Append ``value`` (>= 0) as LEB128."""
    if value < 0:
        raise ValueError(f"varint must be >= 0, got {value}")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


class Reader:
    """Bounds-checked cursor over a bytes-like object; running off the end is corruption."""

    def __init__(self, buf, pos: int = 0, end: int | None = None):
        self.buf = memoryview(buf).cast("B")
        self.pos = pos
        self.end = len(self.buf) if end is None else end

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > self.end:
            raise CorruptStreamError(
                f"nncodec chunk is truncated: needed {n} bytes at offset {self.pos}, "
                f"only {self.end - self.pos} left; the stored chunk is damaged or incomplete"
            )
        view = self.buf[self.pos : self.pos + n]
        self.pos += n
        return view

    def u8(self) -> int:
        return self.take(1)[0]

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise CorruptStreamError("nncodec chunk holds a malformed varint; the chunk is damaged")

    def f32(self) -> np.float32:
        return np.frombuffer(self.take(4), "<f4")[0]

    def f64(self) -> np.float64:
        return np.frombuffer(self.take(8), "<f8")[0]

    def rest(self) -> memoryview:
        return self.take(self.end - self.pos)


@dataclass(frozen=True)
class Header:
    """Everything the decoder needs to know before reading the payload."""

    version: int
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool
    has_nonfinite: bool
    model_code: int
    weights_sha: bytes
    tile: int
    bound: float | None = None
    step: float | None = None
    level_steps: tuple[int, ...] = ()

    @property
    def bounded(self) -> bool:
        return self.bound is not None


def valid_level_steps(level_steps: tuple[int, ...]) -> bool:
    """Whether ``level_steps`` fit the header: at most 255 odd numbers up to ``MAX_LEVEL_STEP``."""
    return len(level_steps) < 256 and all(0 < q <= MAX_LEVEL_STEP and q % 2 for q in level_steps)


def pack(header: Header, payload: bytes) -> bytes:
    """Serialise a header and its payload into one chunk."""
    dtype = np.dtype(header.dtype).newbyteorder("<") if np.dtype(header.dtype).itemsize > 1 else np.dtype(header.dtype)
    flags = DTYPE_CODES[dtype]
    flags |= F_ORDER if header.fortran_order else 0
    flags |= HAS_NONFINITE if header.has_nonfinite else 0
    flags |= BOUNDED if header.bounded else 0
    h = bytearray([flags, len(header.shape)])
    for n in header.shape:
        put_varint(h, n)
    put_varint(h, header.model_code)
    if len(header.weights_sha) != 4:
        raise ValueError("weights_sha must be the first 4 bytes of the sha256")
    h += header.weights_sha
    put_varint(h, header.tile)
    if header.bounded:
        if not valid_level_steps(header.level_steps):
            raise ValueError(f"level steps must be odd numbers up to {MAX_LEVEL_STEP}, got {header.level_steps}")
        h += struct.pack("<dd", header.bound, header.step)
        h.append(len(header.level_steps))
        h += bytes(header.level_steps)
    h += struct.pack("<I", zlib.crc32(payload, zlib.crc32(bytes(h))))
    out = bytearray(MAGIC)
    out.append(FORMAT_VERSION)
    put_varint(out, len(h))
    return bytes(out + h + payload)


def unpack(buf) -> tuple[Header, memoryview]:
    """Parse and check a chunk: returns its header and verified payload.

    Raises
    ------
    FormatError
        Not an nncodec chunk.
    NewerFormatError
        Written by a newer nncodec: upgrade to read it.
    CorruptStreamError
        Truncated, or the payload does not match its checksum.
    """
    r = Reader(buf)
    if r.end < len(MAGIC) + 2:
        raise CorruptStreamError(f"nncodec chunk is truncated: {r.end} bytes is shorter than any chunk")
    if bytes(r.take(3)) != MAGIC:
        raise FormatError(
            "these bytes are not an nncodec chunk (bad magic); the store was written with "
            "another codec or the chunk is damaged"
        )
    version = r.u8()
    if version not in SUPPORTED_VERSIONS:
        if version > FORMAT_VERSION:
            raise NewerFormatError(
                f"this chunk uses nncodec format version {version}, but this nncodec only reads "
                f"versions {list(SUPPORTED_VERSIONS)}: upgrade nncodec (pip install -U nncodec)"
            )
        raise FormatError(f"unknown nncodec format version {version}")
    hlen = r.varint()
    header_bytes = r.take(hlen)
    h = Reader(header_bytes)
    flags = h.u8()
    code = flags & 0x07
    ndim = h.u8()
    if not 1 <= ndim <= MAX_NDIM:
        raise CorruptStreamError(f"nncodec header claims {ndim} dimensions; the chunk is damaged")
    shape = tuple(h.varint() for _ in range(ndim))
    model_code = h.varint()
    sha = bytes(h.take(4))
    tile = h.varint()
    bound = step = None
    level_steps = ()
    if flags & BOUNDED:
        bound, step = (float(v) for v in struct.unpack("<dd", h.take(16)))
        if version >= 5:
            level_steps = tuple(h.take(h.u8()))
    covered = bytes(header_bytes[: h.pos])
    (crc,) = struct.unpack("<I", h.take(4))
    payload = r.rest()
    if zlib.crc32(payload, zlib.crc32(covered)) != crc:
        raise CorruptStreamError(
            "nncodec chunk failed its checksum (damaged or truncated); "
            "re-create it from the source data"
        )
    if not valid_level_steps(level_steps):
        raise CorruptStreamError(f"nncodec level steps {list(level_steps)} are not odd numbers up to "
                                 f"{MAX_LEVEL_STEP}; the chunk is damaged")
    header = Header(
        version=version, dtype=DTYPES[code], shape=shape, fortran_order=bool(flags & F_ORDER),
        has_nonfinite=bool(flags & HAS_NONFINITE), model_code=model_code, weights_sha=sha,
        tile=tile, bound=bound, step=step, level_steps=level_steps,
    )
    return header, payload


def read_header(buf) -> Header:
    """The header of a chunk (checksum verified), without decoding anything."""
    return unpack(buf)[0]

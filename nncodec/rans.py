"""The range coder of nncodec's streams: rANS over numpy arrays, compiled with numba.

Byte for byte the coder that CompressAI's ``BufferedRansEncoder`` / ``RansDecoder``
implement, which wrote format versions 1-3: a 64-bit rANS state renormalised in 32-bit
words (Giesen's rans64), 16-bit probabilities, one table (CDF, length, offset) per
symbol, and values outside a table's range sent as its last ("escape") symbol followed
by the value's bits in 4-bit bypass digits. The same chunks decode here and there.

Why not CompressAI's: its Python interface takes Python lists, so every symbol crossed
the boundary twice as a Python int (about 50 ns a symbol), and every call converted the
tables it was handed. Here symbols, indexes and tables stay numpy arrays, the kernels
(in :mod:`nncodec._kernels`) release the GIL, and the decoder finds a symbol from a lookup
table and a step or two (``LUT_SHIFT``) instead of a linear scan (the same symbol: CDFs
increase strictly).

Stream layout: the encoder writes 32-bit words backwards from the end of a buffer and
the decoder reads them forwards, little-endian, starting with the final 64-bit state.
"""

from __future__ import annotations

import numpy as np

from ._kernels import LUT_SHIFT, PRECISION, _L, _all_below, _count_words, _decode, _encode


class CoderTables:
    """A set of CDF tables packed for the kernels: ``cdf`` (tables x longest, int32,
    padded with the total), ``lengths`` and ``offsets`` (int32), and for the decoder
    ``lut`` (tables x 2**(PRECISION - LUT_SHIFT), uint16: a table has at most 2**PRECISION
    symbols): per run of 2**LUT_SHIFT cumulative frequencies, the symbol its first one
    falls in."""

    def __init__(self, cdfs: list, lengths: list, offsets: list):
        width = max(lengths)
        self.cdf = np.full((len(cdfs), width), 1 << PRECISION, dtype=np.int32)
        for i, (c, n) in enumerate(zip(cdfs, lengths)):
            c = np.asarray(c[:n], dtype=np.int64)
            # every symbol needs a frequency >= 1: the coder divides by it
            if n < 3 or len(c) != n or c[0] != 0 or c[-1] != 1 << PRECISION or (np.diff(c) <= 0).any():
                raise ValueError(f"range coder table {i} must have at least 3 entries and increase strictly "
                                 f"from 0 to 2**{PRECISION}")
            self.cdf[i, :n] = c
        self.lengths = np.asarray(lengths, dtype=np.int32)
        self.offsets = np.asarray(offsets, dtype=np.int32)
        starts = np.arange(0, 1 << PRECISION, 1 << LUT_SHIFT)
        self.lut = np.stack([np.searchsorted(self.cdf[i, :n], starts, side="right") - 1
                             for i, n in enumerate(self.lengths)]).astype(np.uint16)

    def __len__(self) -> int:
        return len(self.lengths)

    def check(self, indexes: np.ndarray) -> np.ndarray:
        """``indexes`` as a flat int32 array; out-of-range indexes raise (the kernels trust them)."""
        idx = np.ascontiguousarray(indexes, dtype=np.int32).reshape(-1)
        if not _all_below(idx, len(self)):
            raise ValueError("entropy table index out of range")
        return idx


class Encoder:
    """Collects (symbols, indexes, tables) groups; :meth:`finish` codes them all.

    rANS codes last-in first-out, so nothing is coded before ``finish``, which walks the
    groups backwards so that a decoder reads them in the order they were added.
    """

    def __init__(self):
        self._groups = []

    def add(self, symbols: np.ndarray, indexes: np.ndarray, tables: CoderTables) -> None:
        idx = tables.check(np.broadcast_to(indexes, np.shape(symbols)))
        self._groups.append((np.ascontiguousarray(symbols, dtype=np.int32).reshape(-1), idx, tables))

    def finish(self) -> bytes:
        words = 2 + sum(_count_words(s, i, t.lengths, t.offsets) for s, i, t in self._groups)
        buf = np.zeros(words, dtype=np.uint32)
        state, pos = _L, words
        for s, i, t in reversed(self._groups):
            state, pos = _encode(s, i, t.cdf, t.lengths, t.offsets, buf, pos, state)
        buf[pos - 2] = np.uint32(int(state) & 0xFFFFFFFF)
        buf[pos - 1] = np.uint32(int(state) >> 32)
        return buf[pos - 2 :].astype("<u4").tobytes()


class Decoder:
    """Reads groups back in the order an :class:`Encoder` added them."""

    def __init__(self, data: bytes):
        n = len(data) // 4
        self._words = np.frombuffer(data[: 4 * n], dtype="<u4").astype(np.uint32)
        self._pos = 0
        self._state = np.uint64(0)
        if n >= 2:
            self._state = np.uint64(int(self._words[0]) | int(self._words[1]) << 32)
            self._pos = 2

    def decode(self, indexes: np.ndarray, tables: CoderTables) -> np.ndarray:
        """One symbol (int32) per table index, shaped like ``indexes``."""
        idx = tables.check(indexes)
        out = np.empty(idx.size, dtype=np.int32)
        self._state, self._pos = _decode(self._words, self._pos, self._state, idx, tables.cdf,
                                         tables.lut, tables.lengths, tables.offsets, out)
        return out.reshape(np.shape(indexes))

    def run(self, kernel, *args):
        """The result of ``kernel(words, pos, state, *args)``, a kernel that decodes from this
        stream and returns (result, state, pos); the stream is left where it stopped."""
        result, self._state, self._pos = kernel(self._words, self._pos, self._state, *args)
        return result

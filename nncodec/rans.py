"""The range coder of nncodec's streams: rANS over numpy arrays, compiled with numba.

Byte for byte the coder that CompressAI's ``BufferedRansEncoder`` / ``RansDecoder``
implement, which wrote format versions 1-3: a 64-bit rANS state renormalised in 32-bit
words (Giesen's rans64), 16-bit probabilities, one table (CDF, length, offset) per
symbol, and values outside a table's range sent as its last ("escape") symbol followed
by the value's bits in 4-bit bypass digits. The same chunks decode here and there.

Why not CompressAI's: its Python interface takes Python lists, so every symbol crossed
the boundary twice as a Python int (about 50 ns a symbol), and every call converted the
tables it was handed. Here symbols, indexes and tables stay numpy arrays, the kernels
release the GIL, and the CDF search is a binary search instead of a linear scan (the
same symbol: CDFs increase strictly).

Stream layout: the encoder writes 32-bit words backwards from the end of a buffer and
the decoder reads them forwards, little-endian, starting with the final 64-bit state.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel

PRECISION = 16
#: the decoder finds a symbol from a table of where each run of 2**LUT_SHIFT cumulative
#: frequencies starts, then steps to it (a binary search over the CDF took 27 ns a
#: symbol, about half of decoding an error-bounded chunk)
LUT_SHIFT = 4
BYPASS_BITS = 4
MAX_BYPASS = (1 << BYPASS_BITS) - 1
_L = np.uint64(1 << 31)  # lower bound of the normalised state
_MASK = np.uint64((1 << PRECISION) - 1)
_WORD = np.uint64(32)
_WORD_MASK = np.uint64(0xFFFFFFFF)


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


# -- kernels --------------------------------------------------------------------------------
@kernel
def _all_below(indexes, n):
    """Whether every index lies in [0, n): one pass (min and max were two, and a small
    chunk's decode checks its indexes twice)."""
    for i in range(indexes.size):
        if indexes[i] < 0 or indexes[i] >= n:
            return False
    return True


@kernel
def _split(symbol, index, lengths, offsets):
    """(table position, raw value for the bypass digits, number of digits) of one symbol."""
    top = lengths[index] - 2  # the escape symbol
    value = np.int64(symbol) - offsets[index]
    raw = np.int64(0)
    if value < 0:
        raw, value = -2 * value - 1, top
    elif value >= top:
        raw, value = 2 * (value - top), top
    n_digits = 0
    if value == top:
        while (raw >> (n_digits * BYPASS_BITS)) != 0:
            n_digits += 1
    return value, raw, n_digits


@kernel
def _count_words(symbols, indexes, lengths, offsets):
    """An upper bound of the words coding these symbols emit: one per coding step."""
    n = 0
    for i in range(symbols.size):
        value, raw, n_digits = _split(symbols[i], indexes[i], lengths, offsets)
        n += 1
        if value == lengths[indexes[i]] - 2:
            n += 1 + n_digits // MAX_BYPASS + n_digits
    return n


@kernel
def _put(state, buf, pos, start, freq):
    x_max = ((_L >> np.uint64(PRECISION)) << _WORD) * np.uint64(freq)
    if state >= x_max:
        pos -= 1
        buf[pos] = np.uint32(state & _WORD_MASK)
        state >>= _WORD
    f = np.uint64(freq)
    state = ((state // f) << np.uint64(PRECISION)) + (state % f) + np.uint64(start)
    return state, pos


@kernel
def _put_bits(state, buf, pos, value):
    x_max = ((_L >> np.uint64(PRECISION)) << _WORD) * np.uint64(1 << (PRECISION - BYPASS_BITS))
    if state >= x_max:
        pos -= 1
        buf[pos] = np.uint32(state & _WORD_MASK)
        state >>= _WORD
    state = (state << np.uint64(BYPASS_BITS)) | np.uint64(value)
    return state, pos


@kernel
def _encode(symbols, indexes, cdf, lengths, offsets, buf, pos, state):
    """Codes the symbols last to first into ``buf`` below ``pos``; (state, pos) after."""
    for i in range(symbols.size - 1, -1, -1):
        t = indexes[i]
        value, raw, n_digits = _split(symbols[i], t, lengths, offsets)
        if value == lengths[t] - 2:
            # forwards: digit count in 4-bit pieces (15 means "more follow"), then the digits
            for j in range(n_digits - 1, -1, -1):
                state, pos = _put_bits(state, buf, pos, (raw >> (j * BYPASS_BITS)) & MAX_BYPASS)
            state, pos = _put_bits(state, buf, pos, n_digits % MAX_BYPASS)
            for _ in range(n_digits // MAX_BYPASS):
                state, pos = _put_bits(state, buf, pos, MAX_BYPASS)
        state, pos = _put(state, buf, pos, cdf[t, value], cdf[t, value + 1] - cdf[t, value])
    return state, pos


@kernel
def _renorm(state, words, pos):
    if state < _L:
        word = np.uint64(words[pos]) if pos < words.size else np.uint64(0)  # past the end: zeros
        state = (state << _WORD) | word
        pos += 1
    return state, pos


@kernel
def _get_bits(state, words, pos):
    value = np.int64(state & np.uint64(MAX_BYPASS))
    state, pos = _renorm(state >> np.uint64(BYPASS_BITS), words, pos)
    return value, state, pos


@kernel
def _decode(words, pos, state, indexes, cdf, lut, lengths, offsets, out):
    for i in range(indexes.size):
        t = indexes[i]
        n = lengths[t]
        cum = np.int64(state & _MASK)
        # the symbol lo with cdf[lo] <= cum < cdf[lo + 1]: from the one its run starts in
        # (cdf[n - 1] is the total, above any cum)
        lo = np.int64(lut[t, cum >> LUT_SHIFT])
        while cdf[t, lo + 1] <= cum:
            lo += 1
        start = np.uint64(cdf[t, lo])
        freq = np.uint64(cdf[t, lo + 1]) - start
        state = freq * (state >> np.uint64(PRECISION)) + (state & _MASK) - start
        state, pos = _renorm(state, words, pos)
        value = np.int64(lo)
        if value == n - 2:
            digit, state, pos = _get_bits(state, words, pos)
            n_digits = digit
            while digit == MAX_BYPASS:
                digit, state, pos = _get_bits(state, words, pos)
                n_digits += digit
            raw = np.int64(0)
            for j in range(n_digits):
                digit, state, pos = _get_bits(state, words, pos)
                if j < 16:  # more digits than an int64 holds only come from a damaged stream
                    raw |= digit << (j * BYPASS_BITS)
            value = raw >> 1
            value = -value - 1 if raw & 1 else value + n - 2
        out[i] = value + offsets[t]
    return state, pos

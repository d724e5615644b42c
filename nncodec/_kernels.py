"""nncodec's numba kernels: the range coder's (:mod:`nncodec.rans`) and the residual
layer's (:mod:`nncodec.residual`), with the constants they read.

One module because a kernel that decodes a tile's residual calls both the range decoder
and the residual layer's kernels (:func:`_decode_passes`: a tile in one call that releases
the GIL), and numba caches a kernel together with the kernels it calls, keyed by its own
source file only: a kernel calls kernels of its own module, never another's
(:func:`nncodec._jit.kernel`). The two modules keep their Python interfaces and name the
constants they share from here.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel

# -- the range coder ---------------------------------------------------------------------
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


# -- the residual layer ------------------------------------------------------------------
N_LAPLACE = 49  # Laplacian scales b_i = 2 ** ((i - 16) / 4): 1/16 .. 256
MAX_SHIFT = 16  # raw low bits per symbol at most
RAW_BITS = 8  # raw bits go in pieces of up to this many; table N_LAPLACE + w - 1 codes w bits
N_VIRTUAL = N_LAPLACE + 4 * MAX_SHIFT  # a shift of one bit halves b: 4 table steps
ROOT_TABLE = N_LAPLACE - 1  # the widest table: the first value of a tile
SIDE_TABLE = 20  # b = 2: differences between successive virtual indexes
SIDE_SLOPE = 3  # expected virtual index step per context octave (b ~ activity ** 0.75)
SIDE_START = 32  # virtual index the first difference of a tile refers to
N_BUCKETS = 24  # context octaves
# decoded values are integers in units of step / FRACTION; odd, so that y on that grid
# (exact zeros, integer data) is never half way between two levels: a tie there would
# sit exactly on the bound and, after rounding to float32, often just past it
FRACTION = 15
MAX_SYMBOL = 1 << 28  # the range coder holds symbols in int32 and doubles escaped ones
MIN_CONTEXT = 64  # passes with fewer coded values use one table: side information would cost more


@kernel
def _virtual_shift(v):
    """The raw low bits of virtual index ``v``: above the widest table each bit is 4 steps
    (the table is then ``v - 4 * shift``)."""
    return max(0, -(-(v - (N_LAPLACE - 1)) // 4))


@kernel
def _piece_width(shift, first):
    """Bits of the raw piece that starts at bit ``first`` of ``shift`` raw low bits (0: none)."""
    return min(max(shift - first, 0), RAW_BITS)


@kernel
def _predict(even, n_odd, predictor):
    """Integer prediction of the ``n_odd`` odd rows lying between the rows of ``even``."""
    if predictor == 0:  # PREDICTORS["none"]
        return np.zeros((n_odd, even.shape[1]), dtype=np.int64)
    return _interpolate(even, n_odd)


@kernel
def _interpolate(even, n_odd):
    """Cubic ``(-a + 9b + 9c - d) / 16`` inside, quadratic next to an edge, linear between
    two rows, and the last even row past the far edge; every division rounds by floor."""
    n_even = even.shape[0]
    out = np.empty((n_odd, even.shape[1]), dtype=np.int64)
    for m in range(n_odd):
        right, far_left, far_right = min(m + 1, n_even - 1), max(m - 1, 0), min(m + 2, n_even - 1)
        for c in range(even.shape[1]):
            a, b, d, e = even[far_left, c], even[m, c], even[right, c], even[far_right, c]
            if m + 1 >= n_even:
                out[m, c] = b
            elif m + 2 < n_even:
                out[m, c] = (-a + 9 * b + 9 * d - e + 8) // 16 if m >= 1 else (3 * b + 6 * d - e + 4) // 8
            else:
                out[m, c] = (-a + 6 * b + 3 * d + 4) // 8 if m >= 1 else (b + d + 1) // 2
    return out


@kernel
def _context(even_k, even_r, n_odd):
    """Context octave of each odd row: floor(log2(1 + activity)), activity in units of ``K``.

    The activity sums the two neighbours' residuals, twice their difference and the
    curvature across the four; the weights were tuned on real fields.
    """
    n_even = even_k.shape[0]
    out = np.empty((n_odd, even_k.shape[1]), dtype=np.int64)
    for m in range(n_odd):
        right, far_left, far_right = min(m + 1, n_even - 1), max(m - 1, 0), min(m + 2, n_even - 1)
        for c in range(even_k.shape[1]):
            left, right_k = even_k[m, c], even_k[right, c]
            activity = (FRACTION * (abs(even_r[m, c]) + abs(even_r[right, c])) + 2 * abs(left - right_k)
                        + abs(even_k[far_left, c] - left - right_k + even_k[far_right, c]))
            out[m, c] = _octave(activity + 1)
    return out


@kernel
def _octave(v):
    """floor(log2(v)) of an integer v >= 1 (its bit length less one), at most N_BUCKETS - 1."""
    if v >= 1 << (N_BUCKETS - 1):
        return N_BUCKETS - 1
    octave = 0
    for half in (16, 8, 4, 2, 1):
        if v >= 1 << half:
            v >>= half
            octave += half
    return octave


@kernel
def _pass_context(even_k, even_r, finite_odd, n_odd):
    """Context octaves of a pass's odd rows (:func:`_context`), or all 0 where the pass
    codes fewer than ``MIN_CONTEXT`` values (one table: side information would cost more)."""
    if np.count_nonzero(finite_odd) >= MIN_CONTEXT:
        return _context(even_k, even_r, n_odd)
    return np.zeros((n_odd, even_k.shape[1]), dtype=np.int64)


@kernel
def _table_costs(values, inverse, shift, bits, escape, offsets, first, out):
    """``out[o, j]`` += estimated bits of octave ``o``'s ``values >> shift`` under table
    ``first + j``. Where the values span a small range, each octave's distinct values are
    counted first and priced once per table."""
    if values.size == 0:
        return
    q = values >> shift
    lo = q.min()
    span = q.max() - lo + 1
    if span * out.shape[0] > 4 * values.size + 4096:
        for i in range(values.size):
            _add_cost(out, inverse[i], q[i], 1, bits, escape, offsets, first)
        return
    counts = np.zeros((out.shape[0], span), dtype=np.int64)
    for i in range(values.size):
        counts[inverse[i], q[i] - lo] += 1
    for o in range(out.shape[0]):
        for k in range(span):
            if counts[o, k]:
                _add_cost(out, o, lo + k, counts[o, k], bits, escape, offsets, first)


@kernel
def _add_cost(out, o, value, count, bits, escape, offsets, first):
    """``count`` times the estimated bits of ``value`` under each candidate table, added to
    row ``o``: as :func:`price_symbols` prices it."""
    for j in range(out.shape[1]):
        t = first + j
        s = value - offsets[t]
        c = bits[t, s] if 0 <= s < bits.shape[1] else np.inf
        if not np.isfinite(c):
            c = escape[t] + 4 + 4 * _escaped_digits(s)
        out[o, j] += count * c


@kernel
def price_symbols(symbols, indexes, bits, escape, offsets, out):
    """``out[i]``: estimated bits of ``symbols[i]`` under table ``indexes[i]`` (flat arrays;
    ``bits, escape, offsets`` as :meth:`nncodec.entropy.Tables.costs` gives them): the
    table's cost inside its range, else its escape symbol, a 4-bit digit count and
    :func:`_escaped_digits` 4-bit digits."""
    for i in range(symbols.size):
        t = indexes[i]
        s = symbols[i] - offsets[t]
        c = bits[t, s] if 0 <= s < bits.shape[1] else np.inf
        out[i] = c if np.isfinite(c) else escape[t] + 4 + 4 * _escaped_digits(s)


@kernel
def _escaped_digits(s):
    """The 4-bit digits that code an escaped value ``s`` places above the table's offset:
    ceil(log2(2|s| + 2) / 4), the least d with 16 ** d >= 2|s| + 2."""
    digits, reach, need = 0, 1, abs(s) * 2 + 2
    while reach < need:
        reach <<= 4
        digits += 1
    return digits


@kernel
def _side_decode(present, diffs, start):
    """The virtual indexes of one pass from the differences :func:`_emit_pass` sent: the
    first relative to ``start``, then each relative to the previous plus ``SIDE_SLOPE``
    per octave between them. None where one falls outside the tables (a damaged stream)."""
    virtual = np.empty(present.size, dtype=np.int64)
    v = start
    for o in range(present.size):
        v += diffs[o] + (SIDE_SLOPE * (present[o] - present[o - 1]) if o else 0)
        if v < 0 or v >= N_VIRTUAL:
            return None
        virtual[o] = v
    return virtual


@kernel
def _encode_passes(y, finite, predictor, steps, dead, k, bits, escape, offsets, symbols, indexes):
    """The passes of :func:`nncodec.residual.encode_residual` (level ``lev`` quantised with
    step ``steps[lev]``, rounded toward zero by ``dead[lev, axis]``): fills ``k``
    (``k[0, 0]`` given) and writes, from position 1 of ``symbols`` and ``indexes``, each
    pass's table choice and symbols. Returns the number of symbols in all, or -1 when a
    residual would not fit the range coder.

    The passes run coarse to fine, per stride ``s`` a row pass then a column pass, each on
    the stride-``s`` sub-grid viewed with the pass's axis first (the column pass transposed):
    its even rows are known, its odd rows are coded."""
    h, w = k.shape
    r = np.zeros_like(k)
    values = np.empty(h * w, dtype=np.int64)
    octaves = np.empty(h * w, dtype=np.int64)
    levels, edge = 0, max(h, w) - 1
    while edge:
        edge >>= 1
        levels += 1
    n, start = 1, SIDE_START
    for lev in range(levels - 1, -1, -1):
        s, q = 1 << lev, steps[lev]
        for axis in range(2):  # rows, then columns (transposed views: the pass's axis first)
            d = dead[lev, axis]
            if axis == 0:
                ks, rs, fs, ys = k[::s, :: 2 * s], r[::s, :: 2 * s], finite[::s, :: 2 * s], y[::s, :: 2 * s]
            else:
                ks, rs, fs, ys = k[::s, ::s].T, r[::s, ::s].T, finite[::s, ::s].T, y[::s, ::s].T
            n_odd = ks.shape[0] // 2
            if n_odd == 0:
                continue
            k_odd, r_odd, f_odd, y_odd = ks[1::2], rs[1::2], fs[1::2], ys[1::2]
            pred = _predict(ks[0::2], n_odd, predictor)
            ctx = _pass_context(ks[0::2], rs[0::2], f_odd, n_odd)
            m = 0
            for i in range(n_odd):
                for j in range(ks.shape[1]):
                    res = 0
                    if f_odd[i, j]:
                        # round((y - P) / q) in float64 (the factor is exactly 1 at q = FRACTION):
                        # exact enough, and the codec verifies every value anyway
                        u = (y_odd[i, j] - pred[i, j] / FRACTION) * (FRACTION / q)
                        v = np.rint(u) if d == 0 else np.copysign(max(np.floor(abs(u) + 0.5 - d), 0.0), u)
                        if abs(v) >= MAX_SYMBOL:
                            return -1
                        res = int(v)
                        values[m], octaves[m] = res, ctx[i, j]
                        m += 1
                    r_odd[i, j] = res
                    k_odd[i, j] = pred[i, j] + q * res
            if m:
                n, start = _emit_pass(values[:m], octaves[:m], start, bits, escape, offsets, symbols, indexes, n)
    return n


@kernel
def _emit_pass(values, ctx, start, bits, escape, offsets, symbols, indexes, n):
    """One pass's symbols from position ``n``: the virtual index of each context octave
    present (cheapest by ``_table_costs``, sent as differences), then every value under
    its octave's table, then the raw low bits of shifted tables in ``RAW_BITS`` pieces.
    Returns (the next position, the virtual index the next pass's differences start from)."""
    seen = np.zeros(N_BUCKETS, dtype=np.int64)
    for c in ctx:
        seen[c] += 1
    rank = np.zeros(N_BUCKETS, dtype=np.int64)
    present = np.empty(N_BUCKETS, dtype=np.int64)
    n_present = 0
    for o in range(N_BUCKETS):
        if seen[o]:
            rank[o], present[n_present] = n_present, o
            n_present += 1
    present = present[:n_present]
    inverse = np.empty(values.size, dtype=np.int64)
    spread = np.zeros(n_present)
    for i in range(values.size):
        inverse[i] = rank[ctx[i]]
        spread[inverse[i]] += abs(values[i])
    counts = np.empty(n_present, dtype=np.int64)
    widest_spread = 0.0
    for o in range(n_present):
        counts[o] = seen[present[o]]
        spread[o] /= counts[o]
        widest_spread = max(widest_spread, spread[o])
    widest = 2.0 ** ((N_LAPLACE - 17) / 4)
    costs = np.full((n_present, N_VIRTUAL), np.inf)
    for shift in range(MAX_SHIFT + 1):
        # a shift pays only for spreads near or beyond the widest table (mean |r| = b)
        if shift and widest_spread < widest * 2.0 ** (shift - 2):
            break
        first = 0 if shift == 0 else N_LAPLACE - 4
        sums = np.zeros((n_present, N_LAPLACE - first))
        _table_costs(values, inverse, shift, bits, escape, offsets, first, sums)
        for o in range(n_present):
            for j in range(sums.shape[1]):
                costs[o, first + 4 * shift + j] = sums[o, j] + shift * counts[o]
    virtual = np.empty(n_present, dtype=np.int64)
    for o in range(n_present):
        virtual[o] = 0  # the cheapest, the first of equals (as argmin)
        for j in range(1, N_VIRTUAL):
            if costs[o, j] < costs[o, virtual[o]]:
                virtual[o] = j
        expected = start if o == 0 else virtual[o - 1] + SIDE_SLOPE * (present[o] - present[o - 1])
        symbols[n], indexes[n] = virtual[o] - expected, SIDE_TABLE
        n += 1
    shifts = np.empty(values.size, dtype=np.int64)
    for i in range(values.size):
        v = virtual[inverse[i]]
        shifts[i] = _virtual_shift(v)
        symbols[n], indexes[n] = values[i] // (1 << shifts[i]), v - 4 * shifts[i]
        n += 1
    for first in range(0, MAX_SHIFT, RAW_BITS):
        for i in range(values.size):
            width = _piece_width(shifts[i], first)
            if width > 0:
                low = values[i] % (1 << shifts[i])
                symbols[n], indexes[n] = low // (1 << first) % (1 << width), N_LAPLACE + width - 1
                n += 1
    return n, virtual[0]


@kernel
def _decode_context(ks, rs, fs, predictor):
    """A pass's prediction, the context octaves of its finite odd positions (flat, in
    order) and the octaves present, ascending."""
    n_odd = ks.shape[0] // 2
    f_odd = fs[1::2]
    pred = _predict(ks[0::2], n_odd, predictor)
    ctx = _pass_context(ks[0::2], rs[0::2], f_odd, n_odd)
    flat = np.empty(np.count_nonzero(f_odd), dtype=np.int64)
    seen = np.zeros(N_BUCKETS, dtype=np.bool_)
    m = 0
    for i in range(n_odd):
        for j in range(ks.shape[1]):
            if f_odd[i, j]:
                flat[m] = ctx[i, j]
                seen[ctx[i, j]] = True
                m += 1
    return pred, flat, np.flatnonzero(seen)


@kernel
def _symbol_tables(ctx, present, virtual):
    """The table of every symbol of a pass after its side information (in stream order:
    each value under its octave's table, then the raw low-bit pieces), and each value's shift."""
    of_octave = np.zeros(N_BUCKETS, dtype=np.int64)
    for o in range(present.size):
        of_octave[present[o]] = virtual[o]
    shifts = np.empty(ctx.size, dtype=np.int64)
    indexes = np.empty(3 * ctx.size, dtype=np.int32)
    for i in range(ctx.size):
        v = of_octave[ctx[i]]
        shifts[i] = _virtual_shift(v)
        indexes[i] = v - 4 * shifts[i]
    n = ctx.size
    for first in range(0, MAX_SHIFT, RAW_BITS):
        for i in range(ctx.size):
            width = _piece_width(shifts[i], first)
            if width > 0:
                indexes[n] = N_LAPLACE + width - 1
                n += 1
    return indexes[:n], shifts


@kernel
def _join_pieces(symbols, shifts):
    """A pass's residuals from its symbols: each value's table symbol, shifted, plus its raw pieces."""
    values = np.empty(shifts.size, dtype=np.int64)
    for i in range(shifts.size):
        values[i] = symbols[i] * (1 << shifts[i])
    n = shifts.size
    for first in range(0, MAX_SHIFT, RAW_BITS):
        for i in range(shifts.size):
            if _piece_width(shifts[i], first) > 0:
                values[i] += symbols[n] * (1 << first)
                n += 1
    return values


@kernel
def _fill_pass(ks, rs, fs, pred, values, q):
    """A pass's odd rows: the residuals ``values`` at the finite positions, in order, and
    ``K = P + q * r`` (``q``: the level's step)."""
    m = 0
    k_odd, r_odd, f_odd = ks[1::2], rs[1::2], fs[1::2]
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            if f_odd[i, j]:
                r_odd[i, j] = values[m]
                m += 1
            k_odd[i, j] = pred[i, j] + q * r_odd[i, j]


@kernel
def _decode_passes(words, pos, state, cdf, lut, lengths, offsets, finite, predictor, steps, k):
    """A tile's residual (:func:`nncodec.residual.decode_residual`) in one call: its symbols
    range-decoded from ``words`` at (``pos``, ``state``) with the residual tables (``cdf``,
    ``lut``, ``lengths``, ``offsets``), pass after pass as :func:`_encode_passes` wrote
    them, into ``k`` (int64, C order). Every table index it decodes with is in range by
    construction (:func:`_side_decode` checks the table choices). Returns (whether the
    table choices were in range, state, pos)."""
    h, w = k.shape
    r = np.zeros_like(k)
    root = np.empty(1, dtype=np.int32)
    state, pos = _decode(words, pos, state, np.full(1, ROOT_TABLE, dtype=np.int32), cdf, lut, lengths, offsets, root)
    k[0, 0] = steps[-1] * np.int64(root[0])
    levels, edge = 0, max(h, w) - 1
    while edge:
        edge >>= 1
        levels += 1
    start = SIDE_START
    for lev in range(levels - 1, -1, -1):
        s = 1 << lev
        for axis in range(2):  # as _encode_passes cuts them
            if axis == 0:
                ks, rs, fs = k[::s, :: 2 * s], r[::s, :: 2 * s], finite[::s, :: 2 * s]
            else:
                ks, rs, fs = k[::s, ::s].T, r[::s, ::s].T, finite[::s, ::s].T
            if ks.shape[0] < 2:
                continue
            pred, ctx, present = _decode_context(ks, rs, fs, predictor)
            values = np.zeros(0, dtype=np.int64)
            if ctx.size:
                diffs = np.empty(present.size, dtype=np.int32)
                state, pos = _decode(words, pos, state, np.full(present.size, SIDE_TABLE, dtype=np.int32), cdf, lut,
                                     lengths, offsets, diffs)
                virtual = _side_decode(present, diffs.astype(np.int64), start)
                if virtual is None:
                    return False, state, pos
                start = virtual[0]
                indexes, shifts = _symbol_tables(ctx, present, virtual)
                symbols = np.empty(indexes.size, dtype=np.int32)
                state, pos = _decode(words, pos, state, indexes, cdf, lut, lengths, offsets, symbols)
                values = _join_pieces(symbols.astype(np.int64), shifts)
            _fill_pass(ks, rs, fs, pred, values, steps[lev])
    return True, state, pos

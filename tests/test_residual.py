"""The residual layer: exact integer invertibility, integer tables, side information, rate."""

import hashlib

import numpy as np
import pytest

from nncodec import NNCodec
from nncodec.entropy import StreamReader, StreamWriter
from nncodec._kernels import _context, _predict
from nncodec.errors import CorruptStreamError
from nncodec.residual import (
    FRACTION,
    MAX_SYMBOL,
    N_BUCKETS,
    DEADZONE,
    N_LAPLACE,
    PREDICTORS,
    TIGHTER_COARSE_LEVELS,
    Quantiser,
    encode_residual,
    quantisation_step,
    residual_tables,
)
from nncodec.weights import load

SHAPES = [(1, 1), (1, 2), (2, 1), (1, 37), (37, 1), (2, 3), (5, 9), (33, 17), (64, 64), (145, 192)]


@pytest.fixture(scope="module")
def tables():
    return load(None, "cpu").tables


def decoded(code, shape, finite, level_steps=(), tables=None):
    """``k`` as the decoder rebuilds it from a range-coded stream of ``code``'s symbols,
    checking that it reads exactly those: a symbol written after them comes back next."""
    tables = load(None, "cpu").tables if tables is None else tables
    w = StreamWriter(tables)
    w.r(code.symbols, code.indexes)
    w.r(np.array([12345]), np.array([N_LAPLACE - 1]))
    reader = StreamReader(tables, w.finish())
    k = reader.residual(shape, finite, code.predictor, level_steps)
    assert reader.dec.decode(np.array([N_LAPLACE - 1]), tables.r)[0] == 12345, "the decoder read too few or too many"
    return k


def round_trip(y, finite, predictor, tables, level_steps=()):
    code = encode_residual(y, finite, predictor, tables, level_steps)
    k = decoded(code, y.shape, finite, level_steps, tables)
    assert np.array_equal(k, code.k)
    assert np.abs(k - y)[finite].max(initial=0) <= 0.5
    return code


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("predictor", sorted(PREDICTORS.values()))
def test_integer_transform_is_exactly_invertible(shape, predictor, tables):
    rng = np.random.default_rng(sum(shape) + predictor)
    for y in (
        rng.integers(-1000, 1000, shape).astype(np.float64),
        rng.normal(0, 3, shape).cumsum(axis=-1),
        rng.integers(-(2**20), 2**20, shape).astype(np.float64),
    ):
        round_trip(y, np.ones(shape, bool), predictor, tables)


@pytest.mark.parametrize("shape", [(1, 40), (40, 1), (33, 17), (90, 180)])
def test_nonfinite_positions_cost_nothing_and_invert(shape, tables):
    rng = np.random.default_rng(3)
    y = rng.normal(0, 20, shape).cumsum(axis=0)
    finite = rng.random(shape) > 0.4
    finite.flat[0] = False  # the first value is coded even where it is free
    code = round_trip(y, finite, PREDICTORS["cubic"], tables)
    full = encode_residual(y, np.ones(shape, bool), PREDICTORS["cubic"], tables)
    assert code.symbols.size < full.symbols.size


def _levels(shape):
    """The interpolation level that codes each position: the trailing zero bits its row and
    column share (the first value: the coarsest level)."""
    rows, cols = np.indices(shape)
    both = rows | cols
    level = np.zeros(shape, dtype=np.int64)
    while ((both >> level) & 1 == 0).any() and level.max() < 32:
        level += (both >> level) & 1 == 0
    level[0, 0] = (max(shape) - 1).bit_length()
    return level


@pytest.mark.parametrize("shape", [(1, 37), (33, 17), (90, 180)])
@pytest.mark.parametrize("level_steps", [TIGHTER_COARSE_LEVELS, (3,), (13, 1)])
def test_level_steps_tighten_each_level_and_invert(shape, level_steps, tables):
    """With steps per level, each level's values lie within q / 30 of y (q / FRACTION of
    half a step), the decoder rebuilds exactly the encoder's k, and masked positions still
    cost nothing."""
    rng = np.random.default_rng(len(level_steps) + shape[0])
    y = rng.normal(0, 4, shape).cumsum(axis=1).cumsum(axis=0)
    finite = rng.random(shape) > 0.2
    code = round_trip(y, finite, PREDICTORS["cubic"], tables, level_steps)
    level = _levels(shape)
    q = np.array(level_steps)[np.minimum(level, len(level_steps) - 1)]
    assert (np.abs(code.k - y) <= q / (2 * FRACTION) + 1e-12)[finite].all()
    assert code.level_steps == level_steps


def test_dead_zones_round_toward_zero_within_their_reach(ts_field, tables):
    """A pass with dead zone d keeps its values within 1/2 + d of y; the decoder, which
    knows nothing of it, rebuilds exactly the encoder's k; and on a real field the symbols
    cost fewer bits than rounding to nearest with the smaller step that gives the same RMSE."""
    span = float(ts_field.max() - ts_field.min())
    y = (ts_field.astype(np.float64) - float(ts_field.min())) / (2e-2 * span)
    finite = np.ones(y.shape, bool)
    code = encode_residual(y, finite, PREDICTORS["cubic"], tables, (), DEADZONE)
    assert np.array_equal(decoded(code, y.shape, finite, (), tables), code.k)
    err = np.abs(code.k - y)
    level, cols = _levels(y.shape), np.indices(y.shape)[1]
    # the pass that codes each position, finest first: a level's column pass codes the
    # columns with that level's bit set, its row pass the rest
    pass_index = 2 * level + 1 - ((cols >> level) & 1)
    reach = 0.5 + np.array(DEADZONE + (0.0,))[np.minimum(pass_index, len(DEADZONE))]
    assert (err <= reach + 1e-12).all() and err.max() > 0.5
    # rounding to nearest with the largest step (in 1 % increments) whose RMSE is no larger
    rmse, grow = np.sqrt(np.mean(err**2)), 1.0
    nearest = round_trip(y, finite, PREDICTORS["cubic"], tables)
    while True:
        wider = round_trip(y / (grow + 0.01), finite, PREDICTORS["cubic"], tables)
        if np.sqrt(np.mean((wider.k - y / (grow + 0.01)) ** 2)) * (grow + 0.01) > rmse:
            break
        nearest, grow = wider, grow + 0.01
    assert code.bits < 0.92 * nearest.bits  # measured: 0.88 (a step 1.15x larger)


def test_dead_zones_are_checked_and_shrink_the_step():
    with pytest.raises(ValueError, match="dead zones"):
        encode_residual(np.zeros((4, 4)), np.ones((4, 4), bool), PREDICTORS["cubic"], None, (), (0.5,))
    with pytest.raises(ValueError, match="float data"):
        quantisation_step(2.0, np.dtype("int16"), 100.0, 0.0, False, DEADZONE)
    step = quantisation_step(1.0, np.dtype("float64"), 1.0, 0.0, False, DEADZONE)
    assert Quantiser(step, (), DEADZONE).reach <= 1.0 < Quantiser(step).reach * 1.7

def test_wide_residuals_use_raw_low_bits(tables):
    rng = np.random.default_rng(5)
    y = rng.laplace(0, 2e5, (40, 50))
    code = round_trip(y, np.ones(y.shape, bool), PREDICTORS["none"], tables)
    assert (code.indexes >= N_LAPLACE).any()
    # about log2(2 e b) bits a value for a Laplacian of scale b
    assert code.bits / y.size < np.log2(2 * np.e * 2e5) + 0.5


def test_residuals_beyond_the_coder_are_refused(tables):
    y = np.zeros((4, 4))
    y[2, 3] = MAX_SYMBOL * 1.5
    assert encode_residual(y, np.ones(y.shape, bool), PREDICTORS["none"], tables) is None


def test_range_coded_round_trip(tables):
    rng = np.random.default_rng(11)
    ys = [rng.normal(0, s, (31, 47)).cumsum(axis=1) for s in (0.1, 5.0, 3e4)]
    finite = rng.random((31, 47)) > 0.1
    codes = [encode_residual(y, finite, PREDICTORS["cubic"], tables) for y in ys]
    w = StreamWriter(tables)
    for c in codes:
        w.r(c.symbols, c.indexes)
    reader = StreamReader(tables, w.finish())
    for c in codes:
        assert np.array_equal(reader.residual((31, 47), finite, c.predictor), c.k)


def test_side_information_is_small_on_a_constant_residual(tables):
    for shape, bpp in (((256, 256), 0.003), ((73, 144), 0.012)):
        for value in (0.0, 1234.0):
            code = encode_residual(np.full(shape, value), np.ones(shape, bool), PREDICTORS["cubic"], tables)
            assert code.bits / np.prod(shape) < bpp


def test_corrupt_table_choice_is_reported(tables):
    y = np.random.default_rng(0).normal(0, 10, (40, 40))
    code = encode_residual(y, np.ones(y.shape, bool), PREDICTORS["cubic"], tables)
    symbols = code.symbols.copy()
    symbols[1] = 10_000  # the first table-choice difference
    code.symbols = symbols
    with pytest.raises(CorruptStreamError):
        decoded(code, y.shape, np.ones(y.shape, bool), (), tables)


def test_tables_are_integer_and_pinned():
    cdfs, lengths, offsets = residual_tables()
    for cdf, n in zip(cdfs, lengths):
        assert len(cdf) == n and cdf[0] == 0 and cdf[-1] == 1 << 16
        assert min(np.diff(cdf)) >= 1
    blob = np.concatenate([np.asarray(c, np.int64) for c in cdfs] + [np.asarray(offsets, np.int64)])
    # built with exact integer and decimal arithmetic: the same bytes on every machine
    pinned = "8a2346896165dcfe033529754eb2e72547a1f97a172400ea19ed7ba3cbb905b8"
    assert hashlib.sha256(blob.tobytes()).hexdigest() == pinned


def test_rate_at_a_thousandth_of_the_range(ts_field, tables):
    span = float(ts_field.max() - ts_field.min())
    # residual layer alone (no network): 3.26 bits a value measured; SZ3 takes 3.89
    y = (ts_field.astype(np.float64) - float(ts_field.min())) / (2e-3 * span)
    code = encode_residual(y, np.ones(y.shape, bool), PREDICTORS["cubic"], tables)
    assert code.bits / y.size < 3.3
    # the whole chunk, header and tile records included
    buf = NNCodec(abs_error=1e-3 * span).encode(ts_field)
    assert 8 * len(buf) / ts_field.size < 3.35


def _reference_predict_and_context(even_k, even_r, n_odd):
    """The interpolation and context octaves as docs/format.md defines them, row by row."""
    n = even_k.shape[0]
    pred, ctx = [], []
    for m in range(n_odd):
        a, b = even_k[max(m - 1, 0)], even_k[m]
        c, d = even_k[min(m + 1, n - 1)], even_k[min(m + 2, n - 1)]
        if m + 1 >= n:
            p = b
        elif m + 2 < n:
            p = (-a + 9 * b + 9 * c - d + 8) // 16 if m >= 1 else (3 * b + 6 * c - d + 4) // 8
        else:
            p = (-a + 6 * b + 3 * c + 4) // 8 if m >= 1 else (b + c + 1) // 2
        pred.append(p)
        activity = (FRACTION * (np.abs(even_r[m]) + np.abs(even_r[min(m + 1, n - 1)])) + 2 * np.abs(b - c)
                    + np.abs(a - b - c + d))
        ctx.append(np.minimum([int(v + 1).bit_length() - 1 for v in activity], N_BUCKETS - 1))
    return np.array(pred).reshape(n_odd, -1), np.array(ctx).reshape(n_odd, -1)


def test_interpolation_and_context_kernels_match_their_definition():
    rng = np.random.default_rng(5)
    for _ in range(400):
        n_even = int(rng.integers(1, 7))
        n_odd = int(rng.integers(max(1, n_even - 1), n_even + 1))
        scale = int(rng.choice([3, 1000, 2**31]))
        grid = rng.integers(-scale, scale, (2 * n_even, int(rng.integers(1, 5))))
        even_k, even_r = grid[0::2], grid[1::2]  # strided views, as the passes hand them over
        want_pred, want_ctx = _reference_predict_and_context(even_k, even_r, n_odd)
        np.testing.assert_array_equal(_predict(even_k, n_odd, PREDICTORS["cubic"]), want_pred)
        np.testing.assert_array_equal(_context(even_k, even_r, n_odd), want_ctx)
        np.testing.assert_array_equal(_predict(even_k.T.copy().T, n_odd, PREDICTORS["none"]), 0 * want_pred)

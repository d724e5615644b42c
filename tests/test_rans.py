"""The range coder (nncodec/rans.py): byte for byte CompressAI's, which wrote format
versions 1-3, on the shipped model's tables and the residual tables."""

import numpy as np
import pytest

from nncodec.entropy import _residual_coder_tables
from nncodec.rans import CoderTables, Decoder, Encoder
from nncodec.residual import residual_tables
from nncodec.weights import load


@pytest.fixture(scope="module")
def table_sets():
    """(list form for CompressAI, packed form) of the z, y and residual tables."""
    tables = load(None, "cpu").tables
    out = {}
    for name, packed in (("z", tables.z), ("y", tables.y), ("r", _residual_coder_tables())):
        lists = ([row[:n].tolist() for row, n in zip(packed.cdf, packed.lengths)], packed.lengths.tolist(),
                 packed.offsets.tolist())
        out[name] = (lists, packed)
    return out


def _groups(table_sets, seed, n_groups=4):
    """Random groups of symbols (heavy tailed: many escapes, some beyond 2**20) and indexes."""
    rng = np.random.default_rng(seed)
    groups = []
    for _ in range(n_groups):
        name = ["z", "y", "r"][rng.integers(3)]
        n_tables = len(table_sets[name][1])
        size = int(rng.integers(0, 2000))
        scale = [0.5, 5, 500, 1e6][rng.integers(4)]
        symbols = np.clip(rng.standard_cauchy(size) * scale, -(2**27), 2**27).astype(np.int32)
        groups.append((name, symbols, rng.integers(0, n_tables, size).astype(np.int32)))
    return groups


@pytest.mark.parametrize("seed", range(8))
def test_same_bytes_as_compressai_both_ways(table_sets, seed, compressai):
    groups = _groups(table_sets, seed)
    theirs, ours = compressai.BufferedRansEncoder(), Encoder()
    for name, symbols, indexes in groups:
        (cdfs, lengths, offsets), packed = table_sets[name]
        theirs.encode_with_indexes(symbols.tolist(), indexes.tolist(), cdfs, lengths, offsets)
        ours.add(symbols, indexes, packed)
    data = ours.finish()
    assert data == theirs.flush()
    # and CompressAI's decoder reads our bytes, ours reads them too
    reader, dec = compressai.RansDecoder(), Decoder(data)
    reader.set_stream(data)
    for name, symbols, indexes in groups:
        (cdfs, lengths, offsets), packed = table_sets[name]
        assert reader.decode_stream(indexes.tolist(), cdfs, lengths, offsets) == symbols.tolist()
        assert np.array_equal(dec.decode(indexes, packed), symbols)


def _every_symbol(table_sets):
    """Per residual table each in-range value, the escape boundary on both sides, and
    values far outside: (symbols, indexes, bytes)."""
    (_, lengths, offsets), packed = table_sets["r"]
    symbols, indexes = [], []
    for i, (n, off) in enumerate(zip(lengths, offsets)):
        values = list(range(off - 20, off + n + 20)) + [off - 2**20, off + n + 2**24]
        symbols += values
        indexes += [i] * len(values)
    symbols, indexes = np.array(symbols, np.int32), np.array(indexes, np.int32)
    enc = Encoder()
    enc.add(symbols, indexes, packed)
    return symbols, indexes, enc.finish()


def test_every_symbol_of_a_table_and_its_neighbours_round_trips(table_sets):
    symbols, indexes, data = _every_symbol(table_sets)
    assert np.array_equal(Decoder(data).decode(indexes, table_sets["r"][1]), symbols)


def test_every_symbol_of_a_table_and_its_neighbours_as_compressai(table_sets, compressai):
    symbols, indexes, data = _every_symbol(table_sets)
    (cdfs, lengths, offsets), _ = table_sets["r"]
    ref = compressai.BufferedRansEncoder()
    ref.encode_with_indexes(symbols.tolist(), indexes.tolist(), cdfs, lengths, offsets)
    assert data == ref.flush()


def test_an_empty_stream_round_trips():
    table = CoderTables(*residual_tables())
    data = Encoder().finish()
    assert len(data) == 8  # the final state only
    assert Decoder(data).decode(np.zeros(0, np.int32), table).size == 0


def test_bad_indexes_and_tables_raise():
    table = CoderTables(*residual_tables())
    with pytest.raises(ValueError, match="index out of range"):
        Encoder().add(np.zeros(3), np.array([0, 1, len(table)]), table)
    with pytest.raises(ValueError, match="index out of range"):
        Decoder(b"\0" * 16).decode(np.array([-1]), table)
    for cdf in ([0, 9, 5, 65536], [0, 9, 9, 65536], [1, 9, 12, 65536], [0, 9, 12, 65535]):
        with pytest.raises(ValueError, match="increase strictly"):
            CoderTables([cdf], [4], [0])


def test_truncated_or_damaged_bytes_decode_without_crashing(table_sets):
    """The chunk's CRC catches damage; the coder itself must never read out of bounds."""
    _, packed = table_sets["y"]
    rng = np.random.default_rng(3)
    indexes = rng.integers(0, len(packed), 5000).astype(np.int32)
    enc = Encoder()
    enc.add(rng.integers(-50, 50, 5000), indexes, packed)
    data = enc.finish()
    for damaged in (data[: len(data) // 3], data[:5], b"", bytes(rng.integers(0, 256, len(data), dtype=np.uint8))):
        out = Decoder(damaged).decode(indexes, packed)
        assert out.shape == indexes.shape

"""The bitstream: header fields, checksums, truncation, versions, lanes."""

import dataclasses
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from nncodec import NNCodec, format as fmt
from nncodec.errors import CorruptStreamError, FormatError, NewerFormatError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def chunk(ts_field):
    return NNCodec(quality=3).encode(ts_field)


def test_header_describes_chunk(chunk, ts_field):
    h = fmt.read_header(chunk)
    assert chunk[:3] == b"NNC" and chunk[3] == fmt.FORMAT_VERSION
    assert h.shape == ts_field.shape and h.dtype == np.dtype("<f4")
    assert h.model_code == 2 and len(h.weights_sha) == 4 and h.tile == 256  # the default model
    assert not h.bounded and not h.has_nonfinite


def test_fixed_cost_is_small(ts_field):
    # header + tile record, beyond the range-coded stream: the budget is ~32 bytes
    buf = NNCodec().encode(np.full((73, 144), 1.5, np.float32))
    assert len(buf) <= 32


@pytest.mark.parametrize("cut", [0, 2, 5, 10, 30, -1])
def test_truncated_bytes_raise(chunk, cut):
    with pytest.raises(CorruptStreamError):
        NNCodec().decode(chunk[:cut])


def test_every_flipped_byte_is_caught(chunk):
    rng = np.random.default_rng(0)
    header_end = 40
    for pos in list(range(header_end)) + list(rng.choice(np.arange(header_end, len(chunk)), size=40, replace=False)):
        bad = bytearray(chunk)
        bad[pos] ^= 0x5A
        with pytest.raises(FormatError):
            NNCodec().decode(bytes(bad))


def test_newer_version_says_upgrade(chunk):
    bad = bytearray(chunk)
    bad[3] = fmt.FORMAT_VERSION + 1
    with pytest.raises(NewerFormatError, match="upgrade nncodec"):
        NNCodec().decode(bytes(bad))


def test_not_nncodec_bytes():
    with pytest.raises(FormatError, match="not an nncodec chunk"):
        NNCodec().decode(b"\x28\xb5\x2f\xfd" + bytes(40))


def test_varint_round_trip():
    for v in [0, 1, 127, 128, 300, 2**31, 2**63 - 1]:
        out = bytearray()
        fmt.put_varint(out, v)
        assert fmt.Reader(bytes(out)).varint() == v


def test_lanes_split_coded_tiles_evenly():
    from nncodec.entropy import LANE_BITS, LANE_VALUES, lane_count, lane_cuts

    assert lane_count([73 * 144]) == 1  # a small chunk: one lane, as one stream before version 4
    assert lane_count([65536] * 64) == 64 * 65536 // LANE_VALUES
    assert lane_count([LANE_VALUES * 4] * 3) == 3  # never more lanes than tiles
    # residual symbols: a lane per LANE_BITS of them where that gives more lanes
    assert lane_count([145 * 192] * 16, residual_bits=10.5 * LANE_BITS) == 10
    assert lane_count([65536] * 64, residual_bits=LANE_BITS) == 64 * 65536 // LANE_VALUES
    assert lane_count([145 * 192] * 4, residual_bits=100 * LANE_BITS) == 4
    for n, k in [(1, 1), (18, 5), (64, 16), (7, 7)]:
        cuts = lane_cuts(n, k)
        sizes = np.diff(cuts)
        assert cuts[0] == 0 and cuts[-1] == n and sizes.min() >= 1 and sizes.max() - sizes.min() <= 1


@pytest.mark.parametrize("kwargs", [{"quality": 4, "tile": 32}, {"rel_error": 1e-3, "tile": 32}])
def test_lanes_decode_to_the_same_values_as_one_stream(kwargs, monkeypatch):
    """A chunk coded in many lanes (threads side by side) holds what one stream holds, at a
    few bytes per lane; lanes are counted in the chunk, so any lane count decodes."""
    from nncodec import entropy

    field = np.load(DATA / "ferret_etopo5_relief.npz")["rose"][1000:1128, 2000:2192].astype(np.float32)
    one = NNCodec(**kwargs).encode(field)  # 24 tiles, 24,576 values: one lane
    monkeypatch.setattr(entropy, "LANE_VALUES", 2048)
    many = NNCodec(**kwargs).encode(field)  # 12 lanes
    assert np.array_equal(NNCodec().decode(one), NNCodec().decode(many))
    assert 0 < len(many) - len(one) <= 12 * 12
    monkeypatch.setattr(entropy, "LANE_VALUES", 1)
    most = NNCodec(**kwargs).encode(field)  # one lane per tile
    assert np.array_equal(NNCodec().decode(one), NNCodec().decode(most))


def test_lanes_synthesised_as_they_are_decoded_give_the_same_values(monkeypatch):
    """Where the network runs on a GPU, each lane's tiles are synthesised as soon as the
    lane is decoded, while host threads decode the next (``codec._overlapped``). Forced
    here on the CPU, whose kernels compute each tile alone: the same values, bit for bit,
    for learned, error-bounded (network tiles with a residual, residual-only tiles) and
    masked chunks, alone and in one ``decode_batch``."""
    from nncodec import codec, entropy

    relief = np.load(DATA / "ferret_etopo5_relief.npz")["rose"][:512, :768].astype(np.float32)
    sst = np.load(DATA / "ferret_coads_climatology.npz")["sst"][:3].astype(np.float32)  # land is NaN
    monkeypatch.setattr(entropy, "LANE_VALUES", 1 << 16)  # a lane per tile or so
    chunks = [NNCodec(quality=3).encode(relief), NNCodec(rel_error=1e-2).encode(relief),
              NNCodec(rel_error=1e-3).encode(relief), NNCodec(quality=5, tile=64).encode(sst),
              NNCodec(rel_error=1e-2, tile=64).encode(sst)]
    parsed = [codec._parse(*fmt.unpack(c)) for c in chunks]
    assert [len(p.lanes) for p in parsed] == [6, 6, 6, 1, 1]
    kinds = [{(t.kind, t.residual is not None) for t in p.coded} for p in parsed]
    assert (codec.NETWORK, True) in kinds[1] and (codec.RESIDUAL, True) in kinds[1]  # both kinds of residual
    assert kinds[2] == {(codec.RESIDUAL, True)}
    after = [NNCodec().decode(c) for c in chunks]
    together = NNCodec().decode_batch(chunks)
    monkeypatch.setattr(codec, "_overlapped", lambda rt: rt is not None)
    for c, a, t in zip(chunks, after, together):
        assert np.array_equal(NNCodec().decode(c), a, equal_nan=True)
        assert np.array_equal(a, t, equal_nan=True)
    for a, t in zip(after, NNCodec().decode_batch(chunks)):
        assert np.array_equal(a, t, equal_nan=True)


def test_lanes_coded_as_their_tiles_get_symbols_give_the_same_bytes(monkeypatch):
    """Where the network runs on a GPU, a learned-mode lane is range-coded on a host thread
    as soon as the network has given all its tiles symbols, while the next batch runs.
    Forced here on the CPU: the same bytes, for one chunk and for an ``encode_batch``
    whose network batches mix chunks."""
    from nncodec import codec, entropy

    relief = np.load(DATA / "ferret_etopo5_relief.npz")["rose"][:512, :768].astype(np.float32)
    sst = np.load(DATA / "ferret_coads_climatology.npz")["sst"][:3].astype(np.float32)
    monkeypatch.setattr(entropy, "LANE_VALUES", 1 << 16)
    monkeypatch.setenv("NNCODEC_BATCH_VALUES", str(5 << 16))  # batches of 5 tiles: lanes end inside them
    arrays = [relief, sst, relief[:300, :300]]
    one, batch = NNCodec(quality=2).encode(relief), NNCodec(quality=2).encode_batch(arrays)
    monkeypatch.setattr(codec, "_overlapped", lambda rt: rt is not None)
    from nncodec.models.runtime import Runtime

    events, soon, analyse = [], codec.soon, Runtime.analyse
    monkeypatch.setattr(codec, "soon", lambda func, *args: events.append("lane") or soon(func, *args))
    monkeypatch.setattr(Runtime, "analyse", lambda rt, x: events.append("batch") or analyse(rt, x))
    assert NNCodec(quality=2).encode(relief) == one
    assert events == ["batch"] + ["lane"] * 5 + ["batch", "lane"]  # 6 tiles, 6 lanes
    assert NNCodec(quality=2).encode_batch(arrays) == batch


def test_lane_count_beyond_the_tiles_is_corruption():
    field = np.load(DATA / "ferret_etopo5_relief.npz")["rose"][1000:1064, 2000:2064].astype(np.float32)
    header, payload = fmt.unpack(NNCodec(quality=4, tile=32).encode(field))
    records = 4 * (1 + 8 + 1)  # four learned tiles, no mask: then the lane count
    assert payload[records] == 1
    for lanes in (0, 5):
        bad = fmt.pack(header, bytes(payload[:records]) + bytes([lanes]) + bytes(payload[records + 1 :]))
        with pytest.raises(CorruptStreamError, match="lanes"):
            NNCodec().decode(bad)


def test_damaged_mask_runs_are_corruption():
    """The mask's run lengths (read in one compiled pass) must be whole varints that cover
    the chunk exactly; anything else is a damaged chunk, never a crash or a wrong mask."""
    import zlib

    from nncodec.masks import decode_mask, encode_mask

    sst = np.load(DATA / "ferret_coads_climatology.npz")["sst"][0].astype(np.float32)
    good, finite = encode_mask(sst)
    back, values = decode_mask(fmt.Reader(good), sst.shape, sst.dtype)
    assert np.array_equal(back, finite) and np.isnan(values).all()

    def with_body(body: bytes) -> bytes:
        packed = zlib.compressobj(9, zlib.DEFLATED, -15)
        packed = packed.compress(body) + packed.flush()
        out = bytearray(good[:5])  # kind byte and the one NaN pattern
        fmt.put_varint(out, len(packed))
        return bytes(out + packed)

    for body in (bytes([3, 5, 6]),  # 3 runs announced, 2 given
                 bytes([1]) + bytes([0xFF] * 11),  # a varint past 64 bits
                 bytes([2, 10, 10]),  # runs that do not cover 90 x 180
                 bytes([200, 1])):  # more runs announced than bytes left
        with pytest.raises(CorruptStreamError, match="mask"):
            decode_mask(fmt.Reader(with_body(body)), sst.shape, sst.dtype)


def test_level_steps_round_trip_and_are_checked():
    """Version 5 headers carry the residual steps per level of an error-bounded chunk;
    steps the decoder cannot use are refused when writing and reported as damage when
    reading, even behind a valid checksum."""
    from nncodec.residual import FRACTION

    assert fmt.MAX_LEVEL_STEP == FRACTION
    header = fmt.Header(version=fmt.FORMAT_VERSION, dtype=np.dtype("<f4"), shape=(3, 4), fortran_order=False,
                        has_nonfinite=False, model_code=2, weights_sha=b"abcd", tile=256, bound=0.5, step=0.9,
                        level_steps=(15, 9, 3))
    got, payload = fmt.unpack(fmt.pack(header, b"xyz"))
    assert got == header and bytes(payload) == b"xyz"
    for bad in ((15, 8), (17,), (0,)):
        with pytest.raises(ValueError, match="odd"):
            fmt.pack(dataclasses.replace(header, level_steps=bad), b"")
    # an even step behind a valid checksum: rebuild the chunk with the byte changed
    buf = bytearray(fmt.pack(header, b""))
    pos = bytes(buf).index(bytes([3, 15, 9, 3]))
    buf[pos + 2] = 8
    hlen_end = 5  # magic, version, 1-byte header length
    h = bytes(buf[hlen_end:-4])
    buf[-4:] = struct.pack("<I", zlib.crc32(b"", zlib.crc32(h)))
    with pytest.raises(CorruptStreamError, match="level steps"):
        fmt.unpack(bytes(buf))

"""The bitstream: header fields, checksums, truncation, versions; no network needed."""

import numpy as np
import pytest

from nncodec import NNCodec, format as fmt
from nncodec.errors import CorruptStreamError, FormatError, NewerFormatError


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

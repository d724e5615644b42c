"""Latents <-> bytes: the entropy tables of a model and the range-coded streams.

A range-coded stream carries, in order, for the tiles it holds: the hyper-latents of the
network tiles, their latents (with the scale indexes of :mod:`nncodec.hypersynthesis`),
then the residual symbols of the error-bound layer. Up to format version 3 a chunk has one
stream; from version 4 its coded tiles are split into *lanes*, consecutive runs of tiles
with a stream each, which threads code side by side (:func:`lane_cuts`,
:func:`nncodec.threads.side_by_side`).
Nothing here needs torch, so a chunk whose tiles use the residual layer alone decodes
without it.
"""

from __future__ import annotations

import functools

import numpy as np

from .rans import CoderTables, Decoder, Encoder
from ._kernels import price_symbols
from .residual import decode_residual, residual_tables


class Tables:
    """The integer CDF tables of one model, converted once to what the range coder takes."""

    def __init__(self, state: dict | None):
        """``state``: a weights file's state dict (the CDF buffers CompressAI's
        ``update()`` computed at export, and the factorised prior's quantiles); None for
        the residual tables alone (:func:`residual_only_tables`)."""
        if state is not None:
            self.z, self.y = (
                _coder_tables(*(state[f"{model}.{name}"] for name in ("_quantized_cdf", "_cdf_length", "_offset")))
                for model in ("entropy_bottleneck", "gaussian_conditional")
            )
            self.medians = state["entropy_bottleneck.quantiles"][:, 0, 1].detach().clone()
        self._costs = {}

    @property
    def r(self) -> CoderTables:
        """The residual layer's tables (:func:`nncodec.residual.residual_tables`), shared by all models."""
        return _residual_coder_tables()

    def costs(self, which: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(bits per in-range symbol (tables x symbols), escape bits, offsets) for estimating sizes.

        ``which`` is ``"z"``, ``"y"`` or ``"r"`` (the residual tables).
        """
        if which not in self._costs:
            table = getattr(self, which)
            width = int(table.lengths.max()) - 1
            bits = np.empty((len(table), width))
            escape = np.empty(len(table))
            for i, n in enumerate(table.lengths):
                p = np.diff(table.cdf[i, :n].astype(np.float64)) / 65536.0
                c = -np.log2(np.maximum(p, 1.0 / 65536.0))
                escape[i] = c[-1]
                bits[i, : n - 2] = c[:-1]
                bits[i, n - 2 :] = np.inf  # out of range: the escape path is priced separately
            self._costs[which] = (bits, escape, table.offsets.astype(np.int64))
        return self._costs[which]

    def symbol_bits(self, which: str, symbols: np.ndarray, indexes: np.ndarray) -> np.ndarray:
        """Estimated coded size in bits of each symbol under its table index (flat float64)."""
        bits, escape, offsets = self.costs(which)
        sym = np.ascontiguousarray(symbols, dtype=np.int64).reshape(-1)
        idx = getattr(self, which).check(np.broadcast_to(indexes, np.shape(symbols)))
        out = np.empty(sym.size)
        price_symbols(sym, idx, bits, escape, offsets, out)
        return out


def _coder_tables(cdf, lengths, offsets) -> CoderTables:
    """The range coder's form of CompressAI-layout CDF buffers (tensors or arrays)."""
    lengths = lengths.reshape(-1).tolist()
    return CoderTables([row[:n] for row, n in zip(cdf.tolist(), lengths)], lengths, offsets.reshape(-1).tolist())


@functools.lru_cache(maxsize=1)
def _residual_coder_tables() -> CoderTables:
    return CoderTables(*residual_tables())


@functools.lru_cache(maxsize=1)
def residual_only_tables() -> Tables:
    """The tables of chunks whose tiles all use the residual layer alone, which need no
    model (nor torch) to be written or read: only ``"r"``."""
    return Tables(None)


def channel_indexes(shape: tuple[int, ...]) -> np.ndarray:
    """The table index of every hyper-latent of one tile, shape ``(C, h, w)``: its channel
    (the factorised prior has one table per channel). A read-only broadcast view."""
    return np.broadcast_to(np.arange(shape[0])[:, None, None], tuple(shape))


class StreamWriter:
    """Collects (symbols, table indexes) groups; ``finish`` range-codes them in order."""

    def __init__(self, tables: Tables):
        self.tables = tables
        self.enc = Encoder()

    def z(self, symbols: np.ndarray, channels: np.ndarray) -> None:
        self.enc.add(symbols, channels, self.tables.z)

    def y(self, symbols: np.ndarray, indexes: np.ndarray) -> None:
        self.enc.add(symbols, indexes, self.tables.y)

    def r(self, symbols: np.ndarray, indexes: np.ndarray) -> None:
        """Residual symbols, each with its own table index."""
        self.enc.add(symbols, indexes, self.tables.r)

    def finish(self) -> bytes:
        return self.enc.finish()


class StreamReader:
    """Decodes groups in the order :class:`StreamWriter` wrote them (``tables`` may be
    None for a stream of residual symbols only, whose tables belong to no model)."""

    def __init__(self, tables: Tables | None, data: bytes):
        self.tables = tables
        self.dec = Decoder(bytes(data))

    def parts(self, which: str, indexes: list) -> list[np.ndarray]:
        """Symbols for several index arrays in a row (``which``: ``"z"`` or ``"y"``)."""
        return [self.dec.decode(i, getattr(self.tables, which)) for i in indexes]

    def residual(self, shape: tuple[int, int], finite: np.ndarray, predictor: int,
                 level_steps: tuple[int, ...] = ()) -> np.ndarray:
        """A tile's residual ``k``, as :func:`nncodec.residual.decode_residual` rebuilds it."""
        return decode_residual(self.dec, _residual_coder_tables(), shape, finite, predictor, level_steps)


# -- lanes ---------------------------------------------------------------------------------
#: a lane holds the coded tiles of at least this many values: its stream then ends in 8
#: bytes of final rANS state plus at most a partial word, a few bytes in hundreds of kB
LANE_VALUES = 1 << 18
#: ... or of at least this many estimated bits of residual symbols: the residual layer
#: codes several bits a value, so that lanes of LANE_VALUES values would each hold
#: hundreds of kB, which one thread decodes alone; a lane costs about 12 bytes (its
#: final state and its length), under 0.1 % of this
LANE_BITS = 1 << 17


def lane_count(tile_values: list[int], residual_bits: float = 0.0) -> int:
    """Lanes for coded tiles of these sizes, whose residual symbols take about
    ``residual_bits``: one per LANE_VALUES values or per LANE_BITS residual bits, whichever
    gives more, at most one per tile. An encoder's choice: a chunk states its lane count."""
    return max(1, min(len(tile_values), max(sum(tile_values) // LANE_VALUES, int(residual_bits // LANE_BITS))))


def lane_cuts(n_tiles: int, n_lanes: int) -> list[int]:
    """Lane k holds coded tiles ``cuts[k]:cuts[k + 1]`` (as even as whole tiles allow)."""
    return [k * n_tiles // n_lanes for k in range(n_lanes + 1)]

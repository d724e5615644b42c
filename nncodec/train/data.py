"""Training tiles: read fields, split by time, normalise exactly as the codec does.

Sources are ``.npz`` archives, netCDF files or Zarr stores, each with the variables
to use. Leading dimensions (time, member, level) are a stack of 2D slices; the last
``val_fraction`` of the first dimension is held out for validation, so validation is
a split by time (or member), never a random pixel split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..normalize import DEFAULT_TILE, normalise_tile, tile_offset_scale, tiles_2d


@dataclass
class Source:
    """One training input: a file or store and the variables to read from it."""

    path: str
    variables: list[str]


def parse_source(text: str) -> Source:
    """Parse ``path:var1,var2`` (the CLI spelling of a source)."""
    path, _, names = text.rpartition(":") if ":" in text else (text, "", "")
    if not path:
        raise ValueError(f"give sources as PATH:VAR[,VAR...], got {text!r}")
    return Source(path, [n for n in names.split(",") if n])


def _open_variables(src: Source) -> dict[str, object]:
    """Map variable name -> array-like (numpy for npz; lazy dask for netCDF/Zarr)."""
    p = Path(src.path)
    if not p.exists():
        raise FileNotFoundError(f"training input {src.path!r} does not exist")
    if p.suffix == ".npz":
        data = np.load(p)
        names = src.variables or [n for n in data.files if data[n].ndim >= 2]
        missing = [n for n in names if n not in data.files]
        if missing:
            raise KeyError(f"{src.path} has no arrays {missing}; it has {data.files}")
        return {n: data[n] for n in names}
    import xarray as xr

    ds = xr.open_zarr(p) if p.is_dir() else xr.open_dataset(p, chunks={})
    names = src.variables or [n for n, v in ds.data_vars.items() if v.ndim >= 2 and v.dtype.kind == "f"]
    return {n: ds[n].data for n in names}


@dataclass
class _Variable:
    """One training variable: a lazy array and where its codec tiles are."""

    array: object
    lead: tuple[int, ...]
    n_first: int  # length of the first axis (1 for a 2D variable)
    n_train: int  # slices of the first axis before the validation split
    tiles: list[tuple[slice, slice]]
    areas: np.ndarray

    def slice_count(self, train: bool) -> int:
        rest = int(np.prod(self.lead[1:]))
        return (self.n_train if train else self.n_first - self.n_train) * rest

    def slice_index(self, train: bool, i: int) -> tuple:
        """Index of the leading axes of the ``i``-th training (or validation) 2D slice."""
        if not self.lead:
            return ()
        first, inner = divmod(i, int(np.prod(self.lead[1:])))
        return (first + (0 if train else self.n_train), *np.unravel_index(inner, self.lead[1:]))

    def read(self, train: bool, i: int, k: int) -> np.ndarray:
        """Tile ``k`` of the ``i``-th training (or validation) 2D slice, as float64."""
        rs, cs = self.tiles[k]
        return np.asarray(self.array[self.slice_index(train, i) + (rs, cs)], dtype=np.float64)


class TileSource:
    """Codec tiles of the training sources, read lazily and normalised like the codec.

    Only shapes are read up front. A tile (at most ``tile`` x ``tile`` values of one 2D
    slice) is read when it is drawn, so an archive larger than memory trains with the
    memory of :class:`CropSampler`'s pool. The last ``val_fraction`` of each variable's
    first axis (time, member) is the validation split; 2D variables train whole.
    Each variable weighs by the square root of its size, so one huge field (global
    relief) does not drown thirty small ones.
    """

    def __init__(self, sources, tile: int = DEFAULT_TILE, val_fraction: float = 0.15):
        self.variables: list[_Variable] = []
        for src in sources:
            for arr in _open_variables(src).values():
                if arr.ndim < 2:
                    continue
                lead = tuple(arr.shape[:-2])
                n_first = lead[0] if lead else 1
                n_val = int(round(n_first * val_fraction)) if n_first > 1 else 0
                tiles = tiles_2d(arr.shape[-2:], tile)
                areas = np.array([(r.stop - r.start) * (c.stop - c.start) for r, c in tiles], dtype=np.float64)
                self.variables.append(_Variable(arr, lead, n_first, n_first - n_val, tiles, areas))
        self.weights = np.array([np.sqrt(v.slice_count(True) * v.areas.sum()) for v in self.variables])
        if not self.variables or self.weights.sum() == 0:
            raise ValueError("no training slices: every variable is too small or in the validation split")

    def largest_edge(self) -> int:
        """The largest square crop some training tile holds."""
        return max(min(r.stop - r.start, c.stop - c.start) for v in self.variables for r, c in v.tiles)

    @staticmethod
    def _normalised(t: np.ndarray):
        """(normalised float32 tile, finite mask), or None for tiles the codec never models."""
        finite = np.isfinite(t)
        offset, scale = tile_offset_scale(t, finite)
        if scale <= 0 or finite.mean() < 0.05:
            return None  # constant or nearly all missing: sent without the network
        return normalise_tile(t, finite, offset, scale), finite

    def draw(self, rng: np.random.Generator, tries: int = 64):
        """A random training tile (normalised, mask), area-weighted, read now."""
        for _ in range(tries):
            v = self.variables[rng.choice(len(self.variables), p=self.weights / self.weights.sum())]
            k = rng.choice(len(v.tiles), p=v.areas / v.areas.sum())
            got = self._normalised(v.read(True, int(rng.integers(v.slice_count(True))), int(k)))
            if got is not None:
                return got
        raise ValueError(f"{tries} random training tiles in a row were constant or missing: check the variables")

    def validation_tiles(self, count: int = 48) -> list[tuple[np.ndarray, np.ndarray]]:
        """Up to ``count`` validation tiles spread evenly over each variable's held-out slices."""
        out = []
        per_var = max(1, count // max(1, len(self.variables)))
        for v in self.variables:
            n = v.slice_count(False) * len(v.tiles)
            for j in np.linspace(0, n - 1, min(per_var, n)).astype(int) if n else []:
                got = self._normalised(v.read(False, *divmod(int(j), len(v.tiles))))
                if got is not None:
                    out.append(got)
        return out


class CropSampler:
    """Random square crops from a pool of tiles that is refreshed from a :class:`TileSource`.

    The pool holds ``pool`` tiles (256 tiles of 256 x 256: about 85 MB); each batch
    first replaces ``refresh`` random pool entries with newly read tiles, so over a run
    the crops come from the whole archive while memory stays fixed.
    """

    def __init__(self, source: TileSource, seed: int = 0, pool: int = 256, refresh: int = 2):
        self.source = source
        self.rng = np.random.default_rng(seed)
        self.refresh = refresh
        self.tiles = [source.draw(self.rng) for _ in range(pool)]

    def batch(self, size: int, count: int):
        for _ in range(self.refresh):
            self.tiles[int(self.rng.integers(len(self.tiles)))] = self.source.draw(self.rng)
        fits = np.array([min(t.shape) >= size for t, _ in self.tiles])
        if not fits.any():
            raise ValueError(f"no training tile is at least {size}x{size}")
        areas = np.array([t.size for t, _ in self.tiles], dtype=np.float64)
        p = np.where(fits, areas, 0.0)
        picks = self.rng.choice(len(self.tiles), size=count, p=p / p.sum())
        xs, ms = [], []
        for k in picks:
            t, m = self.tiles[k]
            r = self.rng.integers(0, t.shape[0] - size + 1)
            c = self.rng.integers(0, t.shape[1] - size + 1)
            xt, mt = t[r : r + size, c : c + size], m[r : r + size, c : c + size]
            # flips and transposes: fields have no preferred orientation at tile scale
            if self.rng.random() < 0.5:
                xt, mt = xt[:, ::-1], mt[:, ::-1]
            if self.rng.random() < 0.5:
                xt, mt = xt[::-1], mt[::-1]
            xs.append(np.ascontiguousarray(xt))
            ms.append(np.ascontiguousarray(mt))
        return np.stack(xs)[:, None], np.stack(ms)[:, None]


def held_out_slices(sources, val_fraction: float = 0.15, max_per_variable: int = 4) -> list[np.ndarray]:
    """Up to ``max_per_variable`` whole 2D slices per variable from the held-out split
    (the validation split of :class:`TileSource`), evenly spread."""
    out = []
    for v in TileSource(sources, val_fraction=val_fraction).variables:
        count = v.slice_count(False)
        for i in np.linspace(0, count - 1, min(max_per_variable, count)).astype(int) if count else []:
            out.append(np.asarray(v.array[v.slice_index(False, int(i))], dtype=np.float32))
    return out

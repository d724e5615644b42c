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


def load_tiles(sources, tile: int = DEFAULT_TILE, val_fraction: float = 0.15, max_slices: int | None = None):
    """Return (train_tiles, val_tiles): lists of (normalised float32 tile, finite mask, weight).

    Every 2D slice is tiled and normalised with the codec's own functions; constant and
    all-missing tiles are dropped (the codec never sends them through the network).
    """
    train, val = [], []
    for src in sources:
        for name, arr in _open_variables(src).items():
            if arr.ndim < 2:
                continue
            # each variable weighs by the square root of its size, so one huge field
            # (global relief) does not drown thirty small ones
            weight = 1.0 / np.sqrt(float(np.prod(arr.shape)))
            lead = tuple(arr.shape[:-2]) or (1,)
            n_first = lead[0]
            n_val = int(round(n_first * val_fraction)) if n_first > 1 else 0
            count = int(np.prod(lead))
            step = max(1, count // max_slices) if max_slices else 1
            for i in range(0, count, step):
                idx = np.unravel_index(i, lead)
                slice2d = np.asarray(arr[idx] if arr.ndim > 2 else arr, dtype=np.float64)
                first = idx[0]
                target = val if first >= n_first - n_val else train
                for rs, cs in tiles_2d(slice2d.shape, tile):
                    t = slice2d[rs, cs]
                    finite = np.isfinite(t)
                    offset, scale = tile_offset_scale(t, finite)
                    if scale <= 0 or finite.mean() < 0.05:
                        continue
                    target.append((normalise_tile(t, finite, offset, scale), finite, weight))
    return train, val


class CropSampler:
    """Random square crops from a list of tiles, all crops of a batch the same size."""

    def __init__(self, tiles, seed: int = 0):
        self.tiles = tiles
        self.rng = np.random.default_rng(seed)
        self.areas = np.array([t.shape[0] * t.shape[1] * w for t, _, w in tiles], dtype=np.float64)

    def batch(self, size: int, count: int):
        fits = np.array([min(t.shape) >= size for t, _, _ in self.tiles])
        if not fits.any():
            raise ValueError(f"no training tile is at least {size}x{size}")
        p = np.where(fits, self.areas, 0.0)
        picks = self.rng.choice(len(self.tiles), size=count, p=p / p.sum())
        xs, ms = [], []
        for k in picks:
            t, m, _ = self.tiles[k]
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
    """Up to ``max_per_variable`` whole 2D slices per variable from the held-out split."""
    out = []
    for src in sources:
        for arr in _open_variables(src).values():
            if arr.ndim < 3:
                continue
            n_first = arr.shape[0]
            n_val = int(round(n_first * val_fraction))
            if n_val == 0:
                continue
            lead = (n_val,) + tuple(arr.shape[1:-2])
            count = int(np.prod(lead))
            for i in np.linspace(0, count - 1, min(max_per_variable, count)).astype(int):
                idx = np.unravel_index(i, lead)
                idx = (idx[0] + n_first - n_val,) + idx[1:]
                out.append(np.asarray(arr[idx], dtype=np.float32))
    return out

"""Writing xarray Datasets to Zarr with nncodec.

Two pieces, in the manner of xbitinfo: :func:`encoding` builds the ``encoding=`` dict
that ``Dataset.to_zarr`` takes (building it is separate from writing it, so it can be
inspected or combined), and the ``ds.nncodec`` accessor writes with it in one call.

The accessor is registered when this module is imported, never by ``import nncodec``::

    import nncodec.xarray  # registers ds.nncodec

Reading needs nothing: ``xr.open_zarr`` finds the codec through its entry points.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from . import format as fmt
from .codec import NNCodec, _input_array
from .normalize import DEFAULT_TILE

# a 2D slice up to this edge is one chunk; larger edges are cut into near-equal pieces that
# are multiples of the tile edge, so the codec's tiles fill them exactly
MAX_CHUNK_EDGE = 2048
_WRITE_MODES = ("w-", "w")


def encoding(ds: xr.Dataset, zarr_format: int = 3, variables=None, **codec_kwargs) -> dict:
    """Build the ``encoding=`` dict that stores a Dataset's fields with nncodec.

    Parameters
    ----------
    ds : xarray.Dataset
        The Dataset to be written.
    zarr_format : {3, 2}
        Zarr format of the store. Format 3 gives ``{"serializer": NNCodecV3(...),
        "compressors": None}`` per variable, format 2 ``{"compressors": [NNCodec(...)]}``.
    variables : str or list of str, optional
        Variables to code with nncodec. Default: every floating-point data variable with
        at least two dimensions. Integer variables (int8 to int32, uint8 to uint32) and
        multi-dimensional coordinates are coded only when named here.
    **codec_kwargs
        Settings of :class:`nncodec.NNCodec` (``quality``, ``abs_error``, ``rel_error``,
        ``target_psnr``, ``model``, ``device``, ``tile``).

    Returns
    -------
    dict
        ``{name: {...}}`` for ``ds.to_zarr(store, zarr_format=..., encoding=...)``. Each
        entry replaces the variable's own encoding. Dask-backed variables keep their dask
        chunks; others keep the ``chunks`` of their encoding when they have one, and are
        otherwise chunked by 2D slice (leading dimensions 1), edges over 2048 cut into
        near-equal multiples of 256. Float variables get ``_FillValue`` NaN, so missing
        values and the padding of edge chunks go into the codec's mask.

    Raises
    ------
    TypeError
        If ``ds`` is not a Dataset, or a named variable has a dtype nncodec cannot code.
    ValueError
        For an unknown format or variable, a variable with fewer than 2 or more than 5
        dimensions, a float variable whose ``_FillValue`` attribute is not NaN, or when
        there is no variable to code.

    Examples
    --------
    >>> import numpy as np, xarray as xr, zarr
    >>> import nncodec.xarray
    >>> field = np.add.outer(np.sin(np.linspace(0, 3, 90)), np.cos(np.linspace(0, 5, 180))).astype("f4")
    >>> ds = xr.Dataset({"ts": (("time", "lat", "lon"), np.stack([field, field[::-1]]))})
    >>> enc = nncodec.xarray.encoding(ds, abs_error=1e-3)
    >>> enc["ts"]["chunks"], enc["ts"]["compressors"]
    ((1, 90, 180), None)
    >>> store = zarr.storage.MemoryStore()
    >>> _ = ds.to_zarr(store, mode="w", zarr_format=3, encoding=enc)
    >>> back = xr.open_zarr(store)
    >>> bool(abs(back.ts - ds.ts).max() <= 1e-3)
    True
    """
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"encoding() takes an xarray.Dataset, got {type(ds).__name__}; for a DataArray use da.to_dataset()")
    if zarr_format not in (2, 3):
        raise ValueError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
    if zarr_format == 3:
        # imported here: nncodec.zarr3 needs zarr 3, format 2 stores do not
        from .zarr3 import NNCodecV3

        codecs = {"serializer": NNCodecV3(**codec_kwargs), "compressors": None}
    else:
        codecs = {"compressors": [NNCodec(**codec_kwargs)]}
    result = {}
    for name in _selected(ds, variables):
        var = ds.variables[name]
        entry = dict(codecs)
        chunks = _chunks(var)
        if chunks is not None:
            entry["chunks"] = chunks
        if var.dtype.kind == "f" and "_FillValue" not in var.attrs:
            entry["_FillValue"] = np.nan
        result[name] = entry
    return result


def _selected(ds: xr.Dataset, variables) -> list:
    """Names of the variables to code, each checked to be one nncodec can code."""
    if variables is None:
        names = [n for n, v in ds.data_vars.items() if v.dtype.kind == "f" and v.ndim >= 2]
        if not names:
            raise ValueError(
                "the Dataset has no floating-point data variable with 2 or more dimensions; "
                "name the variables to code with variables=[...]"
            )
    else:
        names = [variables] if isinstance(variables, str) else list(variables)
    for name in names:
        if name not in ds.variables:
            raise ValueError(f"variable {name!r} is not in the Dataset (it has {', '.join(map(str, ds.variables))})")
        var = ds.variables[name]
        if not 2 <= var.ndim <= fmt.MAX_NDIM:
            raise ValueError(
                f"nncodec codes variables with 2 to {fmt.MAX_NDIM} dimensions (..., y, x); {name!r} has "
                f"dims {var.dims}: leave it out of variables= (it is then stored losslessly)"
            )
        # the codec's own dtype check on a stand-in chunk: the same message as at encode time
        _input_array(np.zeros((1, 1), dtype=var.dtype))
        fill = var.attrs.get("_FillValue")
        if var.dtype.kind == "f" and fill is not None and not np.isnan(fill):
            raise ValueError(
                f"variable {name!r} has the attribute _FillValue={fill!r}: nncodec would code the fill "
                f"value as data; drop it (ds[{name!r}].attrs.pop('_FillValue')) so missing values are NaN"
            )
    return names


def _chunks(var: xr.Variable):
    """Zarr chunks for a variable: its dask chunks (None), its own, or one 2D slice."""
    if var.chunks is not None:
        # xarray derives the zarr chunks from the dask chunks; chunks in the encoding may
        # be stale (left from the source before a rechunk) and would then clash with them
        return None
    if var.encoding.get("chunks") is not None:
        return var.encoding["chunks"]
    return (1,) * (var.ndim - 2) + tuple(_edge(n) for n in var.shape[-2:])


def _edge(n: int) -> int:
    if n <= MAX_CHUNK_EDGE:
        return n
    pieces = math.ceil(n / MAX_CHUNK_EDGE)
    return DEFAULT_TILE * math.ceil(n / pieces / DEFAULT_TILE)


@xr.register_dataset_accessor("nncodec")
class NNCodecAccessor:
    """``ds.nncodec``: write a Dataset to Zarr with nncodec (registered by ``import nncodec.xarray``).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> import nncodec.xarray
    >>> ds = xr.Dataset({"t2m": (("time", "y", "x"), np.zeros((3, 40, 50), "f4")), "n": ("time", [1, 2, 3])})
    >>> ds.nncodec.encoding(zarr_format=2, quality=6)
    {'t2m': {'compressors': [NNCodec(quality=6)], 'chunks': (1, 40, 50), '_FillValue': nan}}
    """

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    def encoding(self, zarr_format: int = 3, variables=None, **codec_kwargs) -> dict:
        """The ``encoding=`` dict for this Dataset: see :func:`nncodec.xarray.encoding`."""
        return encoding(self._ds, zarr_format, variables, **codec_kwargs)

    def to_zarr(self, store, zarr_format: int = 3, variables=None, mode: str = "w-", to_zarr_kwargs=None,
                **codec_kwargs):
        """Write the Dataset to a Zarr store, its fields coded with nncodec.

        Parameters
        ----------
        store : str, os.PathLike or zarr store
            Where to write, as for ``Dataset.to_zarr``.
        zarr_format : {3, 2}
            Zarr format of the new store.
        variables : str or list of str, optional
            Variables to code; default every float data variable with 2+ dimensions.
        mode : {"w-", "w"}
            ``"w-"`` fails if the store exists, ``"w"`` overwrites it. To append to a store
            written this way use ``ds.to_zarr(store, mode="a", append_dim=...)``: the arrays
            keep their nncodec codecs.
        to_zarr_kwargs : dict, optional
            Further arguments of ``Dataset.to_zarr`` (``consolidated``, ``compute``,
            ``storage_options``, ...).
        **codec_kwargs
            Settings of :class:`nncodec.NNCodec` (``quality``, ``abs_error``, ...).

        Returns
        -------
        xarray.backends.ZarrStore or dask.delayed.Delayed
            What ``Dataset.to_zarr`` returns: the store, or with ``compute=False`` the
            delayed write.

        Raises
        ------
        ValueError
            For another mode, or ``to_zarr_kwargs`` holding ``mode``, ``zarr_format`` or
            ``encoding``; and as :func:`nncodec.xarray.encoding`.

        Examples
        --------
        >>> import numpy as np, xarray as xr, zarr
        >>> import nncodec.xarray
        >>> field = np.add.outer(np.sin(np.linspace(0, 3, 90)), np.cos(np.linspace(0, 5, 180))).astype("f4")
        >>> ds = xr.Dataset({"ts": (("lat", "lon"), field)})
        >>> store = zarr.storage.MemoryStore()
        >>> _ = ds.nncodec.to_zarr(store, zarr_format=2, mode="w", abs_error=1e-3)
        >>> bool(abs(xr.open_zarr(store).ts - ds.ts).max() <= 1e-3)
        True
        """
        if mode not in _WRITE_MODES:
            raise ValueError(
                f"ds.nncodec.to_zarr writes a new store (mode 'w-' or 'w'), got mode={mode!r}; to append to "
                "an nncodec store use ds.to_zarr(store, mode='a', append_dim=...): its arrays keep their codecs"
            )
        extra = dict(to_zarr_kwargs or {})
        clash = sorted({"mode", "zarr_format", "encoding"} & set(extra))
        if clash:
            raise ValueError(
                f"to_zarr_kwargs must not hold {clash}: pass mode and zarr_format as arguments; to combine "
                "with other encodings, merge nncodec.xarray.encoding(ds, ...) into yours and call ds.to_zarr"
            )
        enc = encoding(self._ds, zarr_format, variables, **codec_kwargs)
        return self._ds.to_zarr(store, mode=mode, zarr_format=zarr_format, encoding=enc, **extra)

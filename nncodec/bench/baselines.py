"""Error-bounded baseline compressors behind one small interface.

``Compressor(name, setting).encode(arr) -> bytes`` and ``.decode(buf, like=arr)``
wrap SZ3 (``pysz``, absolute error mode), ZFP (``zfpy``, fixed accuracy), SPERR
(``hdf5plugin.Sperr`` through an in-memory HDF5 file; only the stored chunk is
kept) and BitRound + Zstd (``numcodecs``). ``setting`` is always a pointwise error
bound relative to the finite value range of the data, so all baselines sweep the
same axis; BitRound's keepbits are derived from it (see :class:`Compressor`).

SZ3, ZFP and SPERR cannot store NaN, and BitRound turns NaN into -0 at zero
keepbits, so every baseline fills non-finite values with the finite mean before
compressing and stores the zlib-compressed bit-packed non-finite mask in front of
the payload; those mask bytes count in the compressed size, and decoding restores
NaN there.
"""

from __future__ import annotations

import importlib
import io
import math
import struct
import sys
import zlib

import numpy as np

__all__ = ["BASELINES", "DEFAULT_ERROR_BOUNDS", "Compressor", "available_baselines"]

#: Default sweep of error bounds, relative to the finite value range.
DEFAULT_ERROR_BOUNDS = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 1e-6)

#: Baseline name -> module that has to import for it to run.
BASELINES = {"sz3": "pysz", "zfp": "zfpy", "sperr": "hdf5plugin", "bitround": "numcodecs"}

# Frame layout: a flag byte, then (if flagged) the mask length and the mask blob.
_NO_MASK, _WITH_MASK = b"\x00", b"\x01"
_MASK_LEN = struct.Struct("<I")
_ZSTD_LEVEL = 9


def _sz3_encode(arr: np.ndarray, bound: float) -> bytes:
    from pysz import sz, szConfig, szErrorBoundMode

    config = szConfig()
    config.errorBoundMode = szErrorBoundMode.ABS
    config.absErrorBound = bound
    payload, _ratio = sz.compress(np.ascontiguousarray(arr), config)
    return payload.tobytes()


def _sz3_decode(payload: bytes, like: np.ndarray) -> np.ndarray:
    from pysz import sz

    out, _config = sz.decompress(np.frombuffer(payload, dtype=np.uint8), like.dtype, like.shape)
    return out


def _zfp_encode(arr: np.ndarray, bound: float) -> bytes:
    import zfpy

    return zfpy.compress_numpy(np.ascontiguousarray(arr), tolerance=bound)


def _zfp_decode(payload: bytes, like: np.ndarray) -> np.ndarray:
    import zfpy

    return zfpy.decompress_numpy(payload)


def _sperr_dataset(h5file, like: np.ndarray, bound: float):
    """A single-chunk SPERR dataset shaped like ``like`` in an open HDF5 file."""
    import hdf5plugin

    return h5file.create_dataset(
        "x", shape=like.shape, dtype=like.dtype, chunks=like.shape, **hdf5plugin.Sperr(absolute=bound)
    )


def _sperr_encode(arr: np.ndarray, bound: float) -> bytes:
    import h5py

    with h5py.File(io.BytesIO(), "w") as f:
        dset = _sperr_dataset(f, arr, bound)
        dset[...] = arr
        # Only the compressed chunk counts, not the HDF5 container around it.
        _filter_mask, chunk = dset.id.read_direct_chunk((0,) * arr.ndim)
    return bytes(chunk)


def _sperr_decode(payload: bytes, like: np.ndarray) -> np.ndarray:
    import h5py

    with h5py.File(io.BytesIO(), "w") as f:
        # The SPERR stream carries its own parameters; the filter's bound only
        # matters when compressing.
        dset = _sperr_dataset(f, like, 1.0)
        dset.id.write_direct_chunk((0,) * like.ndim, payload)
        return dset[...]


def _keepbits(arr: np.ndarray, bound: float) -> int:
    """Fewest mantissa bits whose round-to-nearest error stays within ``bound``.

    Rounding to ``k`` mantissa bits moves ``x`` by at most ``|x| * 2**-(k + 1)``.
    """
    mantissa_bits = np.finfo(arr.dtype).nmant
    peak = float(np.max(np.abs(arr))) if arr.size else 0.0
    if peak == 0.0:
        return 0
    needed = math.ceil(math.log2(peak / bound)) - 1
    return int(min(max(needed, 0), mantissa_bits))


def _bitround_encode(arr: np.ndarray, bound: float) -> bytes:
    from numcodecs import BitRound, Zstd

    rounded = BitRound(keepbits=_keepbits(arr, bound)).encode(np.ascontiguousarray(arr))
    return Zstd(level=_ZSTD_LEVEL).encode(rounded)


def _bitround_decode(payload: bytes, like: np.ndarray) -> np.ndarray:
    from numcodecs import Zstd

    return np.frombuffer(Zstd().decode(payload), dtype=like.dtype).reshape(like.shape)


_CODECS = {
    "sz3": (_sz3_encode, _sz3_decode),
    "zfp": (_zfp_encode, _zfp_decode),
    "sperr": (_sperr_encode, _sperr_decode),
    "bitround": (_bitround_encode, _bitround_decode),
}


def _finite_range(arr: np.ndarray) -> float:
    finite = arr[np.isfinite(arr)]
    return float(finite.max() - finite.min()) if finite.size else 0.0


def available_baselines(names) -> list[str]:
    """The baselines among ``names`` whose package imports.

    Prints one line to stderr per baseline skipped for a missing package.

    Raises
    ------
    ValueError
        On a name that is not a known baseline.
    """
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; known: {sorted(BASELINES)}")
    found = []
    for name in names:
        try:
            importlib.import_module(BASELINES[name])
        except ImportError as exc:
            print(f"nncodec bench: skipping baseline {name!r}: {exc}", file=sys.stderr)
        else:
            found.append(name)
    return found


class Compressor:
    """One baseline compressor at one error-bound setting.

    Parameters
    ----------
    name : {"sz3", "zfp", "sperr", "bitround"}
        Which baseline.
    setting : float
        Pointwise error bound relative to the value range, in (0, 1]. The absolute
        bound is ``setting * value_range``. For BitRound the keepbits are the
        fewest that guarantee this bound for the largest ``|x|`` in the array.
    value_range : float, optional
        Range that ``setting`` refers to; by default the finite range of each
        array passed to :meth:`encode` (or 1 for a constant array).

    Attributes
    ----------
    last_params : dict
        Parameters of the last :meth:`encode` call: ``abs_bound`` and, for
        BitRound, ``keepbits``.
    """

    def __init__(self, name: str, setting: float, value_range: float | None = None):
        if name not in _CODECS:
            raise ValueError(f"unknown baseline {name!r}; known: {sorted(_CODECS)}")
        if not 0 < setting <= 1:
            raise ValueError(f"setting must be a relative error bound in (0, 1], got {setting!r}")
        if value_range is not None and not (math.isfinite(value_range) and value_range >= 0):
            raise ValueError(f"value_range must be finite and >= 0, got {value_range!r}")
        self.name = name
        self.setting = float(setting)
        self.value_range = value_range
        self.last_params: dict = {}
        self._encode, self._decode = _CODECS[name]

    def __repr__(self) -> str:
        return f"Compressor({self.name!r}, {self.setting!r})"

    @staticmethod
    def _check_array(arr) -> np.ndarray:
        if not isinstance(arr, np.ndarray) or arr.dtype not in (np.float32, np.float64):
            raise TypeError(f"expected a float32 or float64 numpy array, got {type(arr).__name__}")
        return arr

    def _abs_bound(self, arr: np.ndarray) -> float:
        value_range = _finite_range(arr) if self.value_range is None else self.value_range
        # A constant field has no range; any positive bound reproduces it.
        return self.setting * (value_range if value_range > 0 else 1.0)

    def encode(self, arr: np.ndarray) -> bytes:
        """Compress ``arr`` (float32/float64, NaN allowed) to bytes; every byte counts."""
        arr = self._check_array(arr)
        bound = self._abs_bound(arr)
        finite = np.isfinite(arr)
        self.last_params = {"abs_bound": bound}
        if self.name == "bitround":
            self.last_params["keepbits"] = _keepbits(arr[finite], bound)
        if finite.all():
            return _NO_MASK + self._encode(arr, bound)
        fill = arr[finite].mean() if finite.any() else 0.0
        mask = zlib.compress(np.packbits(~finite).tobytes(), 9)
        filled = np.where(finite, arr, fill).astype(arr.dtype)
        return _WITH_MASK + _MASK_LEN.pack(len(mask)) + mask + self._encode(filled, bound)

    def decode(self, buf: bytes, like: np.ndarray) -> np.ndarray:
        """Decompress ``buf``; ``like`` supplies the shape and dtype of the original.

        Values that were non-finite (NaN or inf) in the original come back as NaN.
        """
        like = self._check_array(like)
        flag, body = buf[:1], buf[1:]
        if flag == _NO_MASK:
            return np.asarray(self._decode(body, like)).reshape(like.shape)
        if flag != _WITH_MASK:
            raise ValueError("not a baseline stream: bad flag byte")
        (n_mask,) = _MASK_LEN.unpack_from(body)
        start = _MASK_LEN.size
        bits = np.frombuffer(zlib.decompress(body[start : start + n_mask]), dtype=np.uint8)
        nonfinite = np.unpackbits(bits, count=like.size).astype(bool).reshape(like.shape)
        out = np.array(self._decode(body[start + n_mask :], like)).reshape(like.shape)
        out[nonfinite] = np.nan
        return out

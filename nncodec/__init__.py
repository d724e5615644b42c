"""nncodec: learned compression of climate fields for Zarr, xarray and Dask."""

from .codec import NNCodec
from .errors import CorruptStreamError, FormatError, ModelError, NewerFormatError, NNCodecError

__all__ = ["NNCodec", "NNCodecError", "FormatError", "NewerFormatError", "CorruptStreamError", "ModelError"]
__version__ = "0.16.0"

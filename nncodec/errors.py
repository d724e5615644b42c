"""Exceptions raised by nncodec. Every message says what to do about it."""


class NNCodecError(Exception):
    """Base class of every error nncodec raises on purpose."""


class FormatError(NNCodecError, ValueError):
    """The bytes are not an nncodec chunk, or use a format this version cannot read."""


class NewerFormatError(FormatError):
    """The chunk was written by a newer nncodec (a format version this one does not know)."""


class CorruptStreamError(FormatError):
    """The chunk is truncated or its payload does not match its checksum."""


class ModelError(NNCodecError, ValueError):
    """A model id is unknown, its weights are missing, or they do not match the chunk."""

"""Shipped weights: stable ids, sha256 check, loading, and a cache per process.

A weights file is a ``torch.save`` of a plain dict (loaded with ``weights_only=True``)::

    {"format": "nncodec-weights-1", "id": str, "config": {...FieldHyperprior kwargs},
     "state_dict": {...}, "integer_h_s": {...}}

The state dict carries the integer CDF tables of both entropy models, so no table is
ever recomputed from floats on the reading machine. Released weights never change:
retraining makes a new id, and a file whose sha256 differs from the registry fails.

``NNCODEC_WEIGHTS_DIR`` names an extra folder of ``<id>.pt`` files (with ``<id>.json``
model cards) that ``NNCodec(model="<id>")`` can use next to the shipped ones.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import ModelError

WEIGHTS_FORMAT = "nncodec-weights-1"
DEFAULT_MODEL = "hyperprior-climate-v2"

# id -> (stable code written in every chunk, sha256 of the weights file). Never renumber.
REGISTRY: dict[str, tuple[int, str]] = {
    "hyperprior-climate-v1": (1, "d4f0ac268defc5d2dfaf242ab33f2c88a9ec6002e20793dac83e41bfa4e00879"),
    # the same training run finished (120k steps): about 20 % fewer bits at equal PSNR
    "hyperprior-climate-v2": (2, "ccfd24f6dcac7d415b902023345909c23a64c2ba86e5bdfa50525fe1ccda0086"),
}
CODES = {code: model_id for model_id, (code, _) in REGISTRY.items()}
USER_WEIGHTS_CODE = 0


def _shipped_dir() -> Path:
    return Path(str(resources.files("nncodec") / "models" / "weights"))


def sha256_file(path: os.PathLike) -> str:
    """sha256 of a file, hashed once per (path, size, mtime) in a process."""
    st = os.stat(path)
    return _sha256_cached(os.fspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ModelRef:
    """Where a model's weights are and how chunks name it."""

    id: str
    code: int
    path: Path
    sha256: str

    @property
    def sha_prefix(self) -> bytes:
        return bytes.fromhex(self.sha256[:8])


@functools.lru_cache(maxsize=None)
def _shipped(name: str) -> ModelRef:
    """A shipped model's reference, its file checked once per process (a decoder resolves
    the model of every chunk it reads)."""
    code, expected = REGISTRY[name]
    path = _shipped_dir() / f"{name}.pt"
    if not path.exists():
        raise ModelError(
            f"the weights of model {name!r} are missing from the installed package ({path}); "
            "reinstall nncodec"
        )
    actual = sha256_file(path)
    if actual != expected:
        raise ModelError(
            f"the weights file of model {name!r} ({path}) has sha256 {actual[:16]}..., expected "
            f"{expected[:16]}...; the installation is damaged: reinstall nncodec"
        )
    return ModelRef(name, code, path, actual)


def resolve(model: str | os.PathLike | None) -> ModelRef:
    """Turn a model id or a weights path into a checked :class:`ModelRef`."""
    name = DEFAULT_MODEL if model is None else os.fspath(model)
    if name in REGISTRY:
        return _shipped(name)
    extra = os.environ.get("NNCODEC_WEIGHTS_DIR")
    candidates = [Path(name)]
    if extra:
        candidates.insert(0, Path(extra) / f"{name}.pt")
    for path in candidates:
        if path.is_file():
            return ModelRef(path.stem, USER_WEIGHTS_CODE, path.resolve(), sha256_file(path))
    raise ModelError(
        f"unknown model {name!r}: not a shipped model ({', '.join(sorted(REGISTRY))}), not a weights file"
        + (f", and not in NNCODEC_WEIGHTS_DIR={extra}" if extra else "")
        + "; pass a shipped id or the path of a file written by `nncodec train`"
    )


def load_model_state(model: str | os.PathLike | None) -> dict:
    """The raw dict of a weights file (for fine-tuning and inspection)."""
    import torch

    ref = resolve(model)
    try:
        data = torch.load(ref.path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a file that is not a checkpoint
        raise ModelError(f"{ref.path} is not a readable nncodec weights file ({type(exc).__name__}); "
                         "pass a file written by `nncodec train`") from exc
    if not isinstance(data, dict) or data.get("format") != WEIGHTS_FORMAT:
        raise ModelError(f"{ref.path} is not an nncodec weights file (format {WEIGHTS_FORMAT!r} expected)")
    return data


def model_card(model: str | os.PathLike | None) -> dict:
    """The JSON model card next to a weights file ({} if there is none)."""
    ref = resolve(model)
    card = ref.path.with_suffix(".json")
    return json.loads(card.read_text()) if card.exists() else {}


_cache: dict[tuple[str, str], object] = {}
_lock = threading.Lock()


def load(model: str | os.PathLike | None, device: str = "cpu"):
    """A ready :class:`~nncodec.models.runtime.Runtime`, loaded once per process and device."""
    ref = resolve(model)
    key = (ref.sha256, device)
    with _lock:
        rt = _cache.get(key)
        if rt is None:
            from .models.runtime import Runtime

            rt = Runtime(ref, load_model_state(ref.path), device)
            _cache[key] = rt
        return rt

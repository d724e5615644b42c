"""The networks, and the registry of shipped models."""

from __future__ import annotations


def list_models() -> list[dict]:
    """Shipped models (and those in ``NNCODEC_WEIGHTS_DIR``) with their card figures.

    Each entry: ``id``, ``code`` (0 for user weights), ``default`` (what ``NNCodec()``
    uses), ``qualities``, ``size_bytes``, ``sha256`` and ``validation`` (per quality level:
    bits per value, PSNR, max error). Older shipped models stay so their chunks decode.

    Examples
    --------
    >>> from nncodec.models import list_models
    >>> [m["id"] for m in list_models() if m["default"]]
    ['hyperprior-climate-v2']
    """
    import os
    from pathlib import Path

    from ..weights import DEFAULT_MODEL, REGISTRY, model_card, resolve

    names = list(REGISTRY)
    extra = os.environ.get("NNCODEC_WEIGHTS_DIR")
    if extra and Path(extra).is_dir():
        names += sorted(p.stem for p in Path(extra).glob("*.pt") if p.stem not in REGISTRY)
    out = []
    for name in names:
        ref = resolve(name)
        card = model_card(name)
        out.append({
            "id": ref.id, "code": ref.code, "default": ref.id == DEFAULT_MODEL, "qualities": card.get("qualities"),
            "size_bytes": ref.path.stat().st_size, "sha256": ref.sha256,
            "validation": card.get("validation", {}),
        })
    return out

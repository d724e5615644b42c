"""Turn a training checkpoint into a weights file and a model card.

The weights file holds the float network, the integer CDF tables computed here once,
and the integer hyper-synthesis; see :mod:`nncodec.weights` for its layout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..weights import WEIGHTS_FORMAT, sha256_file


def export_weights(checkpoint: os.PathLike, out: os.PathLike, model_id: str, card: dict | None = None,
                   validate_on=None, val_fraction: float = 0.15) -> dict:
    """Write ``out`` (weights) and ``out`` with suffix ``.json`` (model card); return the card.

    With ``validate_on`` (training sources), the card gains the codec's real figures per
    quality level (bits per value of the encoded bytes, PSNR, max error / range) on the
    held-out slices of those sources (the last ``val_fraction`` of their first axis).
    """
    import torch

    from ..hypersynthesis import IntegerHyperSynthesis
    from ..models.hyperprior import FieldHyperprior, scale_table

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    cfg = state["config"]
    net = FieldHyperprior(lambdas=cfg["lambdas"], **cfg["arch"])
    net.load_state_dict(state["model"])
    net.eval()
    net.update()
    int_hs = IntegerHyperSynthesis.from_float(net.h_s, scale_table())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "format": WEIGHTS_FORMAT,
        "id": model_id,
        "config": net.config,
        "state_dict": {k: v.clone() for k, v in net.state_dict().items()},
        "integer_h_s": int_hs.state(),
    }
    tmp = out.with_suffix(".tmp")
    torch.save(data, tmp)
    os.replace(tmp, out)
    n_params = sum(p.numel() for p in net.parameters())
    card = {
        "id": model_id,
        "architecture": {"name": "FieldHyperprior (gain-unit scale hyperprior, light synthesis)", **net.config,
                         "parameters": n_params},
        "qualities": len(cfg["lambdas"]),
        "training": {"steps_done": state["step"], "trained_minutes": round(state.get("trained_s", 0.0) / 60, 2),
                     **{k: v for k, v in cfg.items() if k != "arch"}},
        **(card or {}),
        "size_bytes": out.stat().st_size,
        "sha256": sha256_file(out),
    }
    if validate_on:
        card["validation"] = validate_codec(out, validate_on, len(cfg["lambdas"]), val_fraction)
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def rd_point(slices, encode, decode) -> dict:
    """Bits per value, PSNR and worst max error / range of one codec setting on ``slices``.

    ``encode(x) -> bytes`` and ``decode(buf, x) -> array`` wrap any codec, so baselines are
    scored exactly like nncodec. PSNR is 20 log10(range / RMSE) over all values together
    (range per slice, finite values only); every byte of every stream counts.
    """
    import numpy as np

    bits = n = n_finite = 0
    sq = worst = 0.0
    for x in slices:
        buf = encode(x)
        out = decode(buf, x)
        fin = np.isfinite(x)
        span = float(np.nanmax(x) - np.nanmin(x)) or 1.0
        err = (out[fin].astype(np.float64) - x[fin]) / span
        bits += 8 * len(buf)
        n += x.size
        n_finite += err.size
        sq += float((err**2).sum())
        worst = max(worst, float(np.abs(err).max()))
    return {"bpv": round(bits / n, 4), "psnr": round(-10 * np.log10(sq / n_finite), 2), "max_error_range": round(worst, 4)}


def validate_codec(weights: os.PathLike, sources, qualities: int, val_fraction: float = 0.15,
                   max_per_variable: int = 4) -> dict:
    """Real codec figures per quality (see :func:`rd_point`) on held-out slices of ``sources``.

    Up to ``max_per_variable`` slices per variable are taken, evenly spread over the last
    ``val_fraction`` of its first axis.
    """
    from ..codec import NNCodec
    from .data import held_out_slices

    slices = held_out_slices(sources, val_fraction, max_per_variable)
    result = {}
    for q in range(1, qualities + 1):
        codec = NNCodec(quality=q, model=str(weights))
        result[f"q{q}"] = rd_point(slices, codec.encode, lambda buf, _x: codec.decode(buf))
    return result

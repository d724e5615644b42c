"""Turn a training checkpoint into a weights file and a model card.

The weights file holds the float network, the integer CDF tables computed here once,
and the integer hyper-synthesis; see :mod:`nncodec.weights` for its layout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..weights import WEIGHTS_FORMAT, sha256_file


def export_weights(checkpoint: os.PathLike, out: os.PathLike, model_id: str, card: dict | None = None) -> dict:
    """Write ``out`` (weights) and ``out`` with suffix ``.json`` (model card); return the card."""
    import torch

    from ..entropy import IntegerHyperSynthesis
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
        "training": {"steps_done": state["step"], **{k: v for k, v in cfg.items() if k != "arch"}},
        **(card or {}),
        "size_bytes": out.stat().st_size,
        "sha256": sha256_file(out),
    }
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return card

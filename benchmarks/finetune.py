"""Does fine-tuning pay? A shipped model against its fine-tuned (or grown) child on held-out time steps.

Both models code every held-out 2D slice (the last 15 % of the first axis, which the
fine-tuning run never saw) at each quality level, and SZ3 codes the same slices at a
sweep of error bounds, all scored by :func:`nncodec.train.export.rd_point` (every byte
counts; PSNR over all held-out values, range per slice). The BD-rates say how many bits
each curve needs at equal PSNR relative to another, over the PSNR interval both cover.

Usage::

    nncodec train DATA.npz:VAR --init hyperprior-climate-v1 --out runs/ft --steps 20000
    python benchmarks/finetune.py DATA.npz:VAR --tuned runs/ft/ft.pt [--base MODEL]

Prints a markdown table (``--out FILE`` also writes it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nncodec.bench.baselines import Compressor
from nncodec.bench.metrics import bd_rate
from nncodec.train import parse_source
from nncodec.train.data import held_out_slices
from nncodec.train.export import rd_point, validate_codec
from nncodec.weights import DEFAULT_MODEL, model_card, resolve

SZ3_BOUNDS = (1e-1, 5e-2, 2e-2, 1e-2, 5e-3, 2e-3, 1e-3, 5e-4, 2e-4, 1e-4)


def _bd(a: dict, b: dict) -> str:
    value, reason = bd_rate([p["bpv"] for p in a.values()], [p["psnr"] for p in a.values()],
                            [p["bpv"] for p in b.values()], [p["psnr"] for p in b.values()])
    return f"{value:+.1f} %" if reason is None else f"n/a ({reason})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="PATH:VAR, the data the model was fine-tuned on")
    parser.add_argument("--tuned", required=True, help="the fine-tuned weights file")
    parser.add_argument("--base", default=DEFAULT_MODEL, help=f"the parent model (default: {DEFAULT_MODEL})")
    parser.add_argument("--max-slices", type=int, default=1000, help="held-out slices to use (default all)")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()

    sources = [parse_source(args.source)]
    slices = held_out_slices(sources, max_per_variable=args.max_slices)
    # a grown model (``train(..., grow=True)``) may have other levels than its parent
    curves = {
        name: validate_codec(path, sources, len(model_card(path)["architecture"]["lambdas"]), max_per_variable=args.max_slices)
        for name, path in (("base", resolve(args.base).path), ("tuned", args.tuned))
    }
    sz3 = {}
    for rel in SZ3_BOUNDS:
        codec = Compressor("sz3", rel)
        sz3[f"{rel:g}"] = rd_point(slices, codec.encode, codec.decode)
    tuned_card = model_card(args.tuned)
    lines = [
        f"Fine-tuning `{args.base}` on `{args.source}` "
        f"({tuned_card.get('training', {}).get('steps_done', '?')} steps); "
        f"{len(slices)} held-out slices of {slices[0].shape[0]}x{slices[0].shape[1]}.",
        "",
        "| level | base bpv | base PSNR | tuned bpv | tuned PSNR |",
        "|---|---|---|---|---|",
    ]
    for q in sorted({*curves["base"], *curves["tuned"]}, key=lambda k: int(k[1:])):
        cells = [f"{c[q]['bpv']:.3f} | {c[q]['psnr']:.2f}" if q in c else "- | -" for c in (curves["base"], curves["tuned"])]
        lines.append(f"| {q} | {cells[0]} | {cells[1]} |")
    lines += [
        "",
        f"- BD-rate tuned vs base: {_bd(curves['tuned'], curves['base'])}",
        f"- BD-rate base vs SZ3: {_bd(curves['base'], sz3)}",
        f"- BD-rate tuned vs SZ3: {_bd(curves['tuned'], sz3)}",
        "",
        "SZ3 points (relative bound: bpv, PSNR): "
        + ", ".join(f"{k}: {v['bpv']:.3f}, {v['psnr']:.2f}" for k, v in sz3.items()),
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
        args.out.with_suffix(".json").write_text(json.dumps({"curves": curves, "sz3": sz3}, indent=1) + "\n")


if __name__ == "__main__":
    main()

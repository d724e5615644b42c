"""Encoder-side latent refinement (``NNCodec(refine=N)``) against plain encoding.

For each held-out field below, every quality level 1..8 is encoded with ``refine=0`` and
with ``refine=N`` for each N; each 2D slice is its own chunk. Rate is every byte of every
stream (``nncodec.train.export.rd_point``), PSNR is 20 log10(range / RMSE) over finite
values with the range per slice. The table gives the BD-rate of ``refine=N`` against
``refine=0`` over the 8 levels (``nncodec.bench.metrics.bd_rate``: negative = fewer bits
at equal PSNR), the PSNR reached at quality 8, and encode throughput (original bytes /
encode wall time, all levels together; decoding is unchanged by refinement).

Usage::

    python benchmarks/refine.py [--steps 10 30 100] [--threads 1] [--json out.json]
    python benchmarks/refine.py --steps 30 --lam train --surrogate ste   # ablations

``--lam`` and ``--surrogate`` set the defaults of ``Runtime.refine`` (the lambda of the
refinement loss and the rounding relaxation) for the ablation rows of docs/refinement.md.

The data come from ``../shared/data`` beside the repository (``--data`` to change).
About ten minutes on one core with the default settings.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from nncodec import NNCodec
from nncodec.bench.metrics import bd_rate
from nncodec.train.export import rd_point

ROOT = Path(__file__).resolve().parents[1]

#: (label, file, variable, index giving (slices, y, x)): slices held out from training
FIELDS = [
    ("GloSea4 TS (member 12, slices 0,2,4)", "iris_glosea4_surface_temperature.npz", "ts", (12, [0, 2, 4])),
    ("FNOC vorticity (months 120-131)", "ferret_fnoc_monthly_winds_vorticity.npz", "vorticity", (slice(120, 132),)),
    ("Stage IV precip (hours 20-22)", "stars_stageiv_hourly_precip.npz", "precip_stageiv", (slice(20, 23),)),
]


def curve(slices, steps: int, qualities) -> dict:
    """Rate-distortion points of ``refine=steps`` at every level, and encode seconds."""
    points, seconds = [], 0.0
    for q in qualities:
        codec = NNCodec(quality=q, refine=steps, device="cpu")

        def encode(x, codec=codec):
            nonlocal seconds
            t0 = time.perf_counter()
            buf = codec.encode(x)
            seconds += time.perf_counter() - t0
            return buf

        points.append({"q": q, **rd_point(slices, encode, lambda buf, _x, codec=codec: codec.decode(buf))})
    return {"points": points, "encode_s": seconds}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 30, 100])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--fields", type=int, nargs="+", help="indexes into FIELDS (default all)")
    ap.add_argument("--lam", choices=["tangent", "train"], default="tangent",
                    help="lambda of the refinement loss (default tangent)")
    ap.add_argument("--surrogate", choices=["sga", "ste"], default="sga", help="rounding relaxation (default sga)")
    ap.add_argument("--json", type=Path, help="also write the raw curves here")
    args = ap.parse_args(argv)
    import torch

    from nncodec.models import runtime

    torch.set_num_threads(args.threads)
    runtime.REFINE_LAMBDA, runtime.REFINE_SURROGATE = args.lam, args.surrogate
    variant = f"lam={args.lam}, {args.surrogate}"
    qualities = range(1, 9)
    picks = args.fields if args.fields is not None else range(len(FIELDS))
    result = {}
    rows = []
    for k in picks:
        label, file, var, index = FIELDS[k]
        arr = np.load(args.data / file)[var][index]
        slices = [np.ascontiguousarray(s) for s in arr]
        mb = sum(s.nbytes for s in slices) * len(qualities) / 1e6
        curves = {}
        for n in [0, *args.steps]:
            curves[n] = curve(slices, n, qualities)
            c = curves[n]
            print(f"{label} refine={n}: " + " ".join(f"q{p['q']} {p['bpv']:.3f}/{p['psnr']:.2f}" for p in c["points"])
                  + f" ({mb / c['encode_s']:.2f} MB/s)", flush=True)
        base = curves[0]["points"]
        for n in [0, *args.steps]:
            pts = curves[n]["points"]
            row = {"field": label, "refine": n, "variant": variant, "q8_psnr": pts[-1]["psnr"],
                   "q8_bpv": pts[-1]["bpv"], "encode_mb_s": mb / curves[n]["encode_s"],
                   "per_level": [(p["bpv"] / b["bpv"] - 1, p["psnr"] - b["psnr"]) for p, b in zip(pts, base)]}
            for key, top in (("bd_rate", len(pts)), ("bd_rate_q1_5", 5)):
                bd, why = (0.0, None) if n == 0 else bd_rate(
                    [p["bpv"] for p in pts[:top]], [p["psnr"] for p in pts[:top]],
                    [p["bpv"] for p in base[:top]], [p["psnr"] for p in base[:top]])
                row[key] = bd if why is None else f"n/a ({why})"
            rows.append(row)
        result[label] = {str(n): c for n, c in curves.items()}

    def pct(v):
        return v if isinstance(v, str) else f"{v:+.1f} %"

    print()
    print(f"refinement: {variant}, lr {runtime.REFINE_LR}, {args.threads} torch thread(s)")
    print("| field | refine | BD-rate (q1-8) | BD-rate (q1-5) | q8 PSNR [dB] | q8 bpv | encode MB/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        bd = ("-", "-") if r["refine"] == 0 else (pct(r["bd_rate"]), pct(r["bd_rate_q1_5"]))
        print(f"| {r['field']} | {r['refine']} | {bd[0]} | {bd[1]} | {r['q8_psnr']:.2f} | {r['q8_bpv']:.3f} | "
              f"{r['encode_mb_s']:.2f} |")
    print()
    print("bits change / PSNR change [dB] per level against refine=0")
    print("| field | refine | " + " | ".join(f"q{q}" for q in qualities) + " |")
    print("|---|---|" + "---|" * len(qualities))
    for r in rows:
        if r["refine"]:
            print(f"| {r['field']} | {r['refine']} | "
                  + " | ".join(f"{100 * b:+.0f} % / {d:+.2f}" for b, d in r["per_level"]) + " |")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "variant": variant, "rows": rows, "curves": result},
                                        indent=1) + "\n")
    return {"rows": rows, "curves": result}


if __name__ == "__main__":
    main()

"""Recipe: models trained on one GPU for a fixed time (``schedule_minutes``).

    python workflows/train_gpu.py highrate --out runs/highrate --minutes 6     # train on CUDA
    python workflows/train_gpu.py highrate --out runs/highrate --export        # weights + card

Runs (each fits its whole schedule into ``--minutes`` of training, however fast the GPU):

- ``highrate``: a wider network for 1.5-4+ bits per value (the default model's light
  synthesis caps its quality near 44 dB on smooth fields): analysis 96 channels, 192
  latent channels, synthesis (96, 64, 32), 6 quality levels, lambda 5e4 .. 1.5e7, trained
  from scratch. Batch 64 of 64 x 64 crops, 128 x 128 for the last 20 %, Adam 4e-4 with
  cosine decay to 1e-5.
- ``default-gpu``: the default model's architecture and levels, continued from
  ``hyperprior-climate-v2`` with batch 64 (v2 saw batch 8), Adam 1e-4 to 1e-5.
- ``highrate-grown``: ``hyperprior-climate-v2`` grown (``nncodec.train.widen``: the same
  function at the start) to 128 latent channels and a (96, 64, 32) synthesis, 5 quality
  levels, lambda 5e4 .. 5e6, Adam 1e-4 to 1e-5, batch 128.
- ``highrate-grown-wide``: v2 grown further: analysis 96 channels, 192 latent channels,
  synthesis (128, 96, 48), 5 levels, lambda 2e4 .. 2e6, Adam 1e-4 to 1e-5, batch 128.

Data: every 2D+ array of ``--data`` (default ``../shared/data``), the last 15 % of each
array's first axis held out, as for the shipped CPU recipe (``train_shipped.py``). To a GPU
machine that has no ``../shared``, the fields travel packed to 16 bits
(``scripts/pack_fields.py``; the 2026-11-30 and 2026-12-01 runs trained on such copies).
"""

import argparse
import glob
from pathlib import Path

from nncodec.train import Source, TrainConfig, export_weights, train

ROOT = Path(__file__).resolve().parents[1]
COMMON = {"batch": 64, "crop": 64, "crop_late": 128, "threads": 2, "device": "cuda", "checkpoint_every": 1000,
          "log_every": 500}
RUNS = {
    "highrate": {"config": {**COMMON, "lr": 4e-4, "arch": {"N": 96, "M": 192, "Nh": 64, "synthesis": [96, 64, 32]},
                            "lambdas": [5e4, 1.5e5, 5e5, 1.5e6, 5e6, 1.5e7]}},
    "default-gpu": {"config": {**COMMON, "lr": 1e-4}, "init": "hyperprior-climate-v2"},
    "highrate-grown": {"config": {**COMMON, "lr": 1e-4, "batch": 128,
                                  "arch": {"N": 64, "M": 128, "Nh": 48, "synthesis": [96, 64, 32]},
                                  "lambdas": [5e4, 1.5e5, 5e5, 1.5e6, 5e6]},
                       "init": "hyperprior-climate-v2", "grow": True},
    "highrate-grown-wide": {"config": {**COMMON, "lr": 1e-4, "batch": 128,
                                       "arch": {"N": 96, "M": 192, "Nh": 48, "synthesis": [128, 96, 48]},
                                       "lambdas": [2e4, 6e4, 2e5, 6e5, 2e6]},
                            "init": "hyperprior-climate-v2", "grow": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", choices=sorted(RUNS))
    parser.add_argument("--out", required=True, help="run folder (checkpoint.pt)")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder of .npz fields")
    parser.add_argument("--minutes", type=float, default=6.0, help="training time the schedule is fitted into")
    parser.add_argument("--device", help="override the run's device (cuda)")
    parser.add_argument("--export", metavar="ID", help="export the finished run as model ID (weights + card in --out)")
    args = parser.parse_args()
    sources = [Source(p, []) for p in sorted(glob.glob(str(Path(args.data) / "*.npz")))]
    run = Path(args.out) / "checkpoint.pt"
    if args.export:
        card = export_weights(run, Path(args.out) / f"{args.export}.pt", args.export, validate_on=sources,
                              card={"data": "all 2D+ arrays of ../shared/data/*.npz; last 15 % of the first axis held out",
                                    "recipe": f"workflows/train_gpu.py {args.run}"})
        print(f"wrote {args.export}.pt sha256 {card['sha256']}")
        return
    spec = RUNS[args.run]
    cfg = TrainConfig(**{**spec["config"], **({"device": args.device} if args.device else {})},
                      schedule_minutes=args.minutes)
    train(sources, args.out, cfg, init=spec.get("init"), resume=run.exists(), grow=spec.get("grow", False))


if __name__ == "__main__":
    main()

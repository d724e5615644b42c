"""Recipe: reproduce the shipped model ``hyperprior-climate-v1``.

    python workflows/train_shipped.py --out runs/shipped              # train (resumable: run again)
    python workflows/train_shipped.py --out runs/shipped --export     # weights + card into the package

Data: every 2D+ array of ``../shared/data/*.npz`` (TS, winds, vorticity, SST, precipitation,
relief, turbulence); the last 15 % of each array's first axis (time, member, depth) is held
out for validation and never trained on. Tiles are normalised exactly as the codec does.
Recipe: ``TrainConfig`` defaults (8 quality levels, lambda 150 .. 500000, 64x64 crops,
batch 8, 128x128 crops for the last 20 % of steps, Adam 2e-4 with cosine decay), one
thread, seed 0.

How the shipped weights were made (see the model card for the step count): one 1-thread
process on a 2-core x86-64 VM (no GPU) for about two hours, sharing the machine with
development work (13-23 steps/s). The run was stopped by its time limit before the cosine
schedule ended; ``--resume`` continues it from ``workflows/checkpoint-hyperprior-climate-v1.pt``
(optimiser state dropped to keep the file small).
"""

import argparse
import glob
from pathlib import Path

from nncodec.train import Source, TrainConfig, export_weights, train

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
MODEL_ID = "hyperprior-climate-v1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/shipped", help="run folder (checkpoint.pt)")
    parser.add_argument("--minutes", type=float, help="stop after this long (resume later)")
    parser.add_argument("--export", action="store_true", help="export the run's checkpoint into the package")
    args = parser.parse_args()
    sources = [Source(p, []) for p in sorted(glob.glob(str(SHARED / "*.npz")))]
    if args.export:
        target = ROOT / "nncodec" / "models" / "weights" / f"{MODEL_ID}.pt"
        card = export_weights(Path(args.out) / "checkpoint.pt", target, MODEL_ID, validate_on=sources,
                              card={"data": "all 2D+ arrays of ../shared/data/*.npz; last 15 % of the first axis held out",
                                    "hardware": "2-core x86-64 VM, CPU only, 1 torch thread"})
        print(f"wrote {target} sha256 {card['sha256']}: put it in nncodec/weights.py REGISTRY")
        return
    train(sources, args.out, TrainConfig(steps=120_000, max_minutes=args.minutes), resume=True)


if __name__ == "__main__":
    main()

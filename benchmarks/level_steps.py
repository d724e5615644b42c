"""Residual steps per interpolation level, and dead zones: bits at equal PSNR against uniform steps.

    python benchmarks/level_steps.py [--data ../shared/data]

Codes held-out slices of four development fields in the error-bounded mode at a sweep of
bounds, once with uniform steps (format 4's residual layer) and once with each schedule of
steps per level (format 5: finest level first, in fifteenths of the step; coarser levels
take the last), with or without dead zones (encoder only: rounding toward zero). Prints,
per schedule and bound, the PSNR over the slices, the bits per value (every byte of every
chunk), the largest error over the bound, and the bits against uniform steps at the same
PSNR (interpolated in log bits between the uniform sweep's points). This is the
measurement behind ``nncodec.residual.TIGHTER_COARSE_LEVELS`` and ``DEADZONE``, which
``target_psnr`` tries besides uniform steps rounded to nearest.
"""

import argparse
import math
from pathlib import Path

import numpy as np

from nncodec import NNCodec
from nncodec.residual import DEADZONE, TIGHTER_COARSE_LEVELS

ROOT = Path(__file__).resolve().parents[1]
BOUNDS = (0.03, 0.02, 0.014, 0.01, 0.007, 0.005, 0.0035, 0.0025)  # of the value range
SCHEDULES = {  # (level steps, dead zones)
    "uniform": ((), ()), "tighter": (TIGHTER_COARSE_LEVELS, ()), "milder": ((15, 13, 11, 9, 7), ()),
    "steeper": ((15, 9, 5, 3, 1), ()), "uniform, dead zones": ((), DEADZONE),
    "tighter, dead zones (shipped)": (TIGHTER_COARSE_LEVELS, DEADZONE),
}


def fields(data: Path) -> dict:
    def load(file, var):
        return np.load(data / file)[var].astype(np.float32)

    return {  # the held-out parts of the training split (last 15 % of the first axis)
        "GloSea4 TS, member 12": load("iris_glosea4_surface_temperature.npz", "ts")[12],
        "FNOC vorticity, last 3 months": load("ferret_fnoc_monthly_winds_vorticity.npz", "vorticity")[-3:],
        "COADS SST, months 11-12": load("ferret_coads_climatology.npz", "sst")[10:12],
        "Stage IV precipitation, last 6 hours": load("stars_stageiv_hourly_precip.npz", "precip_stageiv")[-6:],
    }


def sweep(x: np.ndarray, level_steps, deadzone) -> list[tuple[float, float, float]]:
    """(PSNR, bits per value, max error / bound) per bound of ``BOUNDS``."""
    codec, finite = NNCodec(abs_error=1.0), np.isfinite(x)
    span = float(x[finite].max() - x[finite].min())
    out = []
    for rel in BOUNDS:
        bits, sq, worst = 0, 0.0, 0.0
        for s in x:
            buf = codec._encode(s, None, rel * span, level_steps, deadzone=deadzone)
            f = np.isfinite(s)
            err = codec.decode(buf)[f].astype(np.float64) - s[f]
            bits, sq, worst = bits + 8 * len(buf), sq + float((err**2).sum()), max(worst, float(np.abs(err).max()))
        out.append((20 * math.log10(span / math.sqrt(sq / finite.sum())), bits / x.size, worst / (rel * span)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    print("| field | steps | bound / range | PSNR dB | bits per value | max error / bound | bits vs uniform at this PSNR |")
    print("|---|---|---|---|---|---|---|")
    for name, x in fields(args.data).items():
        uniform = None
        for label, (steps, deadzone) in SCHEDULES.items():
            points = sweep(x, steps, deadzone)
            uniform = uniform or sorted(points)
            for rel, (psnr, bpv, worst) in zip(BOUNDS, points):
                ref = np.interp(psnr, [p for p, _, _ in uniform], [math.log(b) for _, b, _ in uniform],
                                left=np.nan, right=np.nan)
                print(f"| {name} | {label} | {rel:g} | {psnr:.2f} | {bpv:.3f} | {worst:.4f} | {bpv / math.exp(ref):.3f} |",
                      flush=True)


if __name__ == "__main__":
    main()

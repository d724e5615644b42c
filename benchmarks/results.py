"""Regenerate docs/results.md and its figures: the shipped model on the development fields.

    python benchmarks/results.py            # needs ../shared/data beside the repo, ~5 min on 2 cores

Held-out slices only (the training split keeps the last 15 % of each field's first axis
for validation): GloSea4 TS (member 12), Stage IV precipitation (last hours), FNOC
vorticity (last months), COADS SST with its land mask (December) and a 512 x 1024 section
of ETOPO5 relief (relief has one slice and was seen in training; it is here for tiling and
the int16 path). The benchmark itself is ``nncodec bench`` (nncodec.bench.run_bench).
"""

import re
import sys
from pathlib import Path

import numpy as np

from nncodec.bench.run import MATCHED_PSNRS, run_bench

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "docs" / "results"


def fields() -> dict:
    def load(file, var):
        return np.load(SHARED / file)[var]

    return {
        "ts": load("iris_glosea4_surface_temperature.npz", "ts")[12, ::3],
        "precip": load("stars_stageiv_hourly_precip.npz", "precip_stageiv")[-2:],
        "vorticity": load("ferret_fnoc_monthly_winds_vorticity.npz", "vorticity")[-2:],
        "sst": load("ferret_coads_climatology.npz", "sst")[-2:],
        "relief": load("ferret_etopo5_relief.npz", "rose")[1000:1512, 2000:3024][None].astype(np.float32),
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    data = OUT / "fields.npz"
    np.savez(data, **fields())
    try:
        run_bench([str(data)], out_dir=OUT, max_slices=2, repeats=2, target_psnrs=MATCHED_PSNRS)
    finally:
        data.unlink()
    # docs/results.md sits one folder up from the figures it shows
    page = re.sub(r"\]\(([^)/]+\.png)\)", r"](results/\1)", (OUT / "report.md").read_text())
    (ROOT / "docs" / "results.md").write_text(page)
    print(f"wrote {ROOT / 'docs' / 'results.md'} and figures in {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()

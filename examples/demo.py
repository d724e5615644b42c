"""The main job on the bundled demo data.

Compresses ``examples/data/demo.nc`` (GloSea4 surface temperature; COADS SST with its land
mask) into Zarr with nncodec on a Dask ``LocalCluster``, twice: with the learned codec at
one quality level, and with a pointwise error bound. Each store is then reopened lazily
with xarray and compared with the source, every value, to print its size, compression
ratio, PSNR and max error.

Run ``scripts/demo.sh`` (installs first), or ``python examples/demo.py [--out DIR]``.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import xarray as xr

from nncodec.parallel import compress

DEMO = Path(__file__).resolve().parent / "data" / "demo.nc"


def compare(source: xr.Dataset, store: Path) -> list[str]:
    """One line per variable: sizes, ratio, PSNR and max error over all values."""
    decoded = xr.open_zarr(store)  # lazy: chunks decode on the Dask workers when computed
    lines = []
    for name in source.data_vars:
        a = source[name].values.astype(np.float64)
        b = decoded[name].values.astype(np.float64)  # .values computes the dask graph
        finite = np.isfinite(a)
        if not np.array_equal(finite, np.isfinite(b)):
            raise SystemExit(f"{name}: the NaN mask changed -- this is a bug, please report it")
        err = np.abs(b[finite] - a[finite])
        span = a[finite].max() - a[finite].min()
        rmse = np.sqrt(np.mean(err**2))
        stored = sum(f.stat().st_size for f in (store / name).rglob("*") if f.is_file())
        original = a.size * source[name].dtype.itemsize
        lines.append(f"  {name:4s} {source[name].attrs.get('units', ''):5s} original {original / 1e3:7.1f} kB  "
                     f"stored {stored / 1e3:6.1f} kB  ratio {original / stored:6.1f}  "
                     f"bits/value {8 * stored / a.size:5.2f}  PSNR {20 * np.log10(span / rmse):5.1f} dB  "
                     f"max error {err.max():.3g}")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-output", help="folder for the Zarr stores (default demo-output)")
    parser.add_argument("--quality", type=int, default=4)
    parser.add_argument("--abs-error", type=float, default=0.05, help="bound for the second run, in K / degC")
    args = parser.parse_args(argv)
    out = Path(args.out)
    source = xr.open_dataset(DEMO)
    runs = {"learned codec, quality %d" % args.quality: ("demo-q%d.zarr" % args.quality, {"quality": args.quality}),
            "error-bounded, abs_error=%g" % args.abs_error: ("demo-bounded.zarr", {"abs_error": args.abs_error})}
    for title, (name, kwargs) in runs.items():
        store = out / name
        if store.exists():
            shutil.rmtree(store)
        t0 = time.perf_counter()
        summary = compress([str(DEMO)], str(store), progress=True, **kwargs)
        print(f"\n{title}: {store} written in {time.perf_counter() - t0:.1f} s on a Dask LocalCluster")
        print(summary.format())
        print("reopened lazily with xarray, every value compared with the source:")
        print("\n".join(compare(source, store)))


if __name__ == "__main__":
    main()

"""Pack the development fields small enough to travel to a lent GPU machine, and unpack them there.

    python scripts/pack_fields.py pack ../shared/data .devdata     # here: 54 MB -> 29 MB
    python scripts/pack_fields.py unpack .devdata /tmp/data        # there

A lent machine receives the working tree (64 MiB at most) but not ``../shared``. Float
arrays of 2+ dimensions travel as 16-bit integers of their finite range (65533 levels,
an error of at most 1/131066 of the range: far below what the codec's figures resolve;
65535 marks non-finite values), int16 arrays exactly; both as differences along rows,
which deflate compresses well. Other arrays travel as they are.
"""

import argparse
from pathlib import Path

import numpy as np

LEVELS = 65533  # 0 .. LEVELS hold values; NONFINITE marks NaN and inf
NONFINITE = 65535


def pack(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob("*.npz")):
        z, out = np.load(f), {}
        for k in z.files:
            a = z[k]
            if a.dtype.kind == "f" and a.ndim >= 2:
                fin = np.isfinite(a)
                lo, hi = (float(a[fin].min()), float(a[fin].max())) if fin.any() else (0.0, 0.0)
                q = np.round((np.where(fin, a, lo) - lo) / max(hi - lo, 1e-30) * LEVELS).astype(np.uint16)
                q[~fin] = NONFINITE
                out[k + "__q"] = np.diff(q, axis=-1, prepend=np.uint16(0))  # wraps modulo 2**16
                out[k + "__range"] = np.array([lo, hi])
                out[k + "__dtype"] = np.array(a.dtype.str)
            elif a.dtype == np.int16 and a.ndim >= 2:
                out[k + "__i"] = np.diff(a.view(np.uint16), axis=-1, prepend=np.uint16(0))
            else:
                out[k] = a
        np.savez_compressed(dst / f.name, **out)
        print(f"{f.name}: {f.stat().st_size / 1e6:.1f} -> {(dst / f.name).stat().st_size / 1e6:.1f} MB")


def unpack(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob("*.npz")):
        z, out = np.load(f), {}
        for k in z.files:
            if k.endswith("__q"):
                name = k[:-3]
                q = np.cumsum(z[k], axis=-1, dtype=np.uint16)
                lo, hi = z[name + "__range"]
                a = (lo + q / LEVELS * (hi - lo)).astype(str(z[name + "__dtype"]))
                a[q == NONFINITE] = np.nan
                out[name] = a
            elif k.endswith("__i"):
                out[k[:-3]] = np.cumsum(z[k], axis=-1, dtype=np.uint16).view(np.int16)
            elif not k.endswith(("__range", "__dtype")):
                out[k] = z[k]
        np.savez(dst / f.name, **out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["pack", "unpack"])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    args = parser.parse_args()
    (pack if args.action == "pack" else unpack)(args.src, args.dst)


if __name__ == "__main__":
    main()

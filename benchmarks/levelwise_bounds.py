"""Would tighter bounds at coarse interpolation levels pay? A prototype estimate for #4.

    python benchmarks/levelwise_bounds.py [--data ../shared/data]

Under an error bound nncodec codes smooth fields with its residual layer alone (multilevel
cubic interpolation, docs/error-bounds.md). This prototype codes held-out GloSea4 TS the
same way: anchors every 2**5 values, then cubic interpolation along rows and columns level
by level, uniform quantisation of each prediction error. It compares the same bound at every
level (alpha 1) with bounds tightened at coarse levels: level l (0 = finest) gets
``e / min(alpha**l, 4)``. This is after QoZ (Liu et al. 2022, "Dynamic quality metric oriented
error bounded lossy compression"): coarse values predict all finer ones, so their accuracy
pays off. The maximum error stays at most ``e``.

Rate: zeroth-order entropy of each pass's quantisation codes, plus 16 bits per distinct code.
That is cruder than nncodec's context-adaptive tables, but equal for both settings. The
printed ratio is bits at matched PSNR against alpha 1 (interpolated linearly between alpha 1's
points). It is a prototype, not the codec: a format version with per-level steps is what
would bring the gain to users.
"""

import argparse
import math
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LEVELS = 5
CAP = 4.0


def _cubic(even: np.ndarray, n_odd: int) -> np.ndarray:
    """Predictions of the samples between consecutive ``even`` ones along the last axis:
    cubic where four neighbours exist, else linear, else the last value."""
    m = even.shape[-1]
    pred = np.empty(even.shape[:-1] + (n_odd,))
    for i in range(n_odd):
        if i + 1 >= m:
            pred[..., i] = even[..., i]
        elif i >= 1 and i + 2 < m:
            pred[..., i] = (-even[..., i - 1] + 9 * even[..., i] + 9 * even[..., i + 1] - even[..., i + 2]) / 16
        else:
            pred[..., i] = (even[..., i] + even[..., i + 1]) / 2
    return pred


def code(x: np.ndarray, bound_at) -> tuple[np.ndarray, list[np.ndarray]]:
    """(reconstruction, quantisation codes per pass) of a 2D field; ``bound_at(level)``."""
    h, w = x.shape
    rec = np.zeros_like(x)
    s = 2**LEVELS
    q = np.round(x[::s, ::s] / (2 * bound_at(LEVELS)))
    codes = [np.diff(q.ravel(), prepend=0)]
    rec[::s, ::s] = q * 2 * bound_at(LEVELS)
    for level in range(LEVELS, 0, -1):
        st, half, e = 2**level, 2 ** (level - 1), bound_at(level - 1)
        rows, cols = np.arange(0, h, st), np.arange(half, w, st)
        if len(cols):  # along rows, on the rows of this level
            pred = _cubic(rec[rows][:, 0::st], len(cols))
            q = np.round((x[np.ix_(rows, cols)] - pred) / (2 * e))
            codes.append(q.ravel())
            rec[np.ix_(rows, cols)] = pred + q * 2 * e
        rows, cols = np.arange(half, h, st), np.arange(0, w, half)
        if len(rows):  # along columns, every column known so far
            pred = _cubic(rec[0::st][:, cols].T, len(rows)).T
            q = np.round((x[np.ix_(rows, cols)] - pred) / (2 * e))
            codes.append(q.ravel())
            rec[np.ix_(rows, cols)] = pred + q * 2 * e
    return rec, codes


def _bits(codes: list[np.ndarray]) -> float:
    total = 0.0
    for c in codes:
        if c.size:
            _, n = np.unique(c, return_counts=True)
            total += float(-(n * np.log2(n / n.sum())).sum()) + 16 * len(n)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    ts = np.load(args.data / "iris_glosea4_surface_temperature.npz")["ts"].astype(np.float64)[12]  # held-out member
    span = float(ts.max() - ts.min())
    rows = {}
    for alpha in (1.0, 1.5, 2.0):
        for rel in (0.02, 0.01, 0.005, 0.003):
            e = rel * span
            bits, se, worst = 0.0, 0.0, 0.0
            for x in ts:
                rec, codes = code(x, lambda level: e / min(alpha**level, CAP))
                bits += _bits(codes)
                se += float(((rec - x) ** 2).sum())
                worst = max(worst, float(np.abs(rec - x).max()))
            rows[alpha, rel] = (bits / ts.size, 20 * math.log10(span / math.sqrt(se / ts.size)), worst / span)
    base = sorted((p, b) for (a, _), (b, p, _) in rows.items() if a == 1.0)
    print("| alpha | bound / range | bits per value | PSNR dB | max error / range | bits vs alpha 1 at this PSNR |")
    print("|---|---|---|---|---|---|")
    for (alpha, rel), (bpv, psnr, worst) in rows.items():
        ref = np.interp(psnr, [p for p, _ in base], [b for _, b in base], left=np.nan, right=np.nan)
        print(f"| {alpha:g} | {rel:g} | {bpv:.3f} | {psnr:.2f} | {worst:.4f} | {bpv / ref:.2f} |")


if __name__ == "__main__":
    main()

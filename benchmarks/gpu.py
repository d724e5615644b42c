"""nncodec with the network on a GPU: throughput, memory, and what decodes where.

    python benchmarks/gpu.py [--data ../shared/data] [--out docs] [--reference DIR]
    python benchmarks/gpu.py --make-reference DIR     # on another machine: chunks to check here

Part 1 times encode and decode on CUDA (fastest of 3 after a warm-up) on the fields of
``benchmarks/speed.py``, in the chunk shapes stores use: the 2161 x 4320 relief as one
chunk, 256 x 256 turbulence (4 slices per chunk), and the small grids one slice per chunk
and many slices per chunk. Settings: quality 1, 4, 8 and error bounds of 1e-3 and 5e-2 of the
range (the relief also at quality 4 without overlapping the range coder with the GPU). It records the peak GPU memory of each chunk, and the same chunks on this
machine's CPU at quality 4 for comparison. Stacks of small slices are also stored one
slice per chunk and read back with one ``decode_batch`` call. The page is rewritten after
each chunk, so a run stopped early keeps what it measured.

Part 2 checks device independence on every chunk, at quality 4 and at the error bounds:
the bytes written on CUDA decode on the CPU (largest difference from the CUDA decode, and
the bound kept), and whether the CPU writes the same bytes.

Part 3 (``--reference``) decodes chunks written on another machine, here on the CPU and on
CUDA, and compares the values with those that machine decoded.

Part 4 splits one CUDA encode and decode of the relief chunk (quality 4) into stages with
cProfile (the stages of ``benchmarks/speed.py``).

Writes OUT/gpu.md and OUT/gpu.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from nncodec import NNCodec
from nncodec.bench.metrics import psnr_db, timed

ROOT = Path(__file__).resolve().parents[1]
#: (label, file, variable, slices per chunk): slices of the array's leading axes, reshaped to one stack
#: (the large chunk and the stacks first: a run stopped by a time limit keeps what it measured)
CHUNKS = [
    ("relief 2161x4320", "ferret_etopo5_relief.npz", "rose", 1),
    ("TS 64x145x192", "iris_glosea4_surface_temperature.npz", "ts", 64),
    ("vorticity 64x73x144", "ferret_fnoc_monthly_winds_vorticity.npz", "vorticity", 64),
    ("turbulence 4x256x256", "pyqgjax_qg2layer_vorticity_256.npz", "rel_vorticity", 4),
    ("SST with land 12x90x180", "ferret_coads_climatology.npz", "sst", 12),
    ("vorticity 73x144", "ferret_fnoc_monthly_winds_vorticity.npz", "vorticity", 1),
    ("TS 145x192", "iris_glosea4_surface_temperature.npz", "ts", 1),
]
QUALITIES = [1, 4, 8]
REL_BOUND = 1e-3
#: a looser bound, where the network predicts tiles (float64 syntheses on the GPU): at 5e-2
#: of the range every TS tile uses it, at 1e-2 none does (tiles below 2e-2 of their range
#: never try it, nncodec.codec.RESIDUAL_ALONE_BELOW)
LOOSE_BOUND = 5e-2
#: chunks of --make-reference: (name, file, variable, slice index, codec settings)
REFERENCE = [
    ("vorticity-q4", "ferret_fnoc_monthly_winds_vorticity.npz", "vorticity", 120, {"quality": 4}),
    ("ts-q8", "iris_glosea4_surface_temperature.npz", "ts", 75, {"quality": 8}),
    ("sst-q2", "ferret_coads_climatology.npz", "sst", 11, {"quality": 2}),
    ("ts-bound", "iris_glosea4_surface_temperature.npz", "ts", 76, {"abs_error": 0.05}),
]


def load_chunk(data: Path, file: str, var: str, n: int) -> np.ndarray:
    arr = np.load(data / file)[var].astype(np.float32)
    stack = arr.reshape(-1, *arr.shape[-2:])
    return np.ascontiguousarray(stack[0] if n == 1 else stack[:n])


BOUNDED, LOOSE = f"abs {REL_BOUND:g} x range", f"abs {LOOSE_BOUND:g} x range"


def settings(x: np.ndarray, names=None) -> list[tuple[str, dict]]:
    """(name, codec settings) of ``names`` (default: every quality level and the bounds)."""
    span = float(np.nanmax(x) - np.nanmin(x))
    every = {**{f"q{q}": {"quality": q} for q in QUALITIES}, BOUNDED: {"abs_error": REL_BOUND * span},
             LOOSE: {"abs_error": LOOSE_BOUND * span}}
    return [(name, every[name]) for name in (names or every)]


def psnr(x: np.ndarray, y: np.ndarray) -> float:
    fin = np.isfinite(x)
    rmse = float(np.sqrt(np.mean((y[fin].astype(np.float64) - x[fin]) ** 2)))
    return psnr_db(rmse, float(x[fin].max() - x[fin].min()))


def max_diff(a: np.ndarray, b: np.ndarray, span: float) -> float:
    fin = np.isfinite(a) | np.isfinite(b)
    same_nan = bool((np.isnan(a) == np.isnan(b)).all())
    d = np.abs(a[fin].astype(np.float64) - b[fin]) / span if fin.any() else np.zeros(1)
    return float(np.nanmax(d)) if same_nan else float("inf")


def throughput(x: np.ndarray, device: str, repeats: int, names=None) -> list[dict]:
    rows = []
    for name, kw in settings(x, names):
        codec = NNCodec(device=device, **kw)
        codec.decode(codec.encode(x))  # warm-up: weights, kernels, autotuning
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        buf, enc = timed(codec.encode, x, repeats=repeats)
        out, dec = timed(codec.decode, buf, repeats=repeats)
        row = {"setting": name, "device": device, "encode_mbps": x.nbytes / 1e6 / enc, "decode_mbps": x.nbytes / 1e6 / dec,
               "bpv": 8 * len(buf) / x.size, "psnr": round(psnr(x, out), 2)}
        if device.startswith("cuda"):
            row["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 1e6
        rows.append(row)
    return rows


def not_overlapped(x: np.ndarray, device: str, repeats: int) -> dict:
    """Quality 4 with the range coder's lanes and the GPU's batches one after the other,
    as before 0.16.0 (``nncodec.codec._overlapped`` off): what the overlap gains."""
    from nncodec import codec as codec_module

    overlapped = codec_module._overlapped
    codec_module._overlapped = lambda rt: False
    try:
        (row,) = throughput(x, device, repeats, ["q4"])
    finally:
        codec_module._overlapped = overlapped
    return {**row, "setting": "q4, lanes not overlapped"}


def one_slice_chunks(x: np.ndarray, device: str, repeats: int) -> dict:
    """A stack stored one slice per chunk at quality 4: each chunk encoded alone, then all
    decoded in one ``decode_batch`` call (their tiles share the device's batches)."""
    codec = NNCodec(quality=4, device=device)
    codec.decode_batch([codec.encode(s) for s in x[:2]])  # warm-up
    bufs, enc = timed(lambda: [codec.encode(s) for s in x], repeats=repeats)
    out, dec = timed(codec.decode_batch, bufs, repeats=repeats)
    return {"setting": f"q4, {len(x)} one-slice chunks, decode_batch", "device": device,
            "encode_mbps": x.nbytes / 1e6 / enc, "decode_mbps": x.nbytes / 1e6 / dec,
            "bpv": 8 * sum(map(len, bufs)) / x.size, "psnr": round(psnr(x, np.stack(out)), 2)}


def cross_device(x: np.ndarray, device: str) -> list[dict]:
    """Chunks written on ``device`` decoded on the CPU, and the CPU's own bytes."""
    span = float(np.nanmax(x) - np.nanmin(x))
    rows = []
    for name, kw in settings(x, ["q4", BOUNDED, LOOSE]):
        gpu, cpu = NNCodec(device=device, **kw), NNCodec(device="cpu", **kw)
        buf = gpu.encode(x)
        on_gpu, on_cpu = gpu.decode(buf), cpu.decode(buf)
        cpu_buf = cpu.encode(x)
        row = {"setting": name, "gpu_vs_cpu_decode_max_diff": max_diff(on_gpu, on_cpu, span),
               "cpu_writes_same_bytes": cpu_buf == buf, "gpu_bytes": len(buf), "cpu_bytes": len(cpu_buf),
               "psnr_gpu_written": round(psnr(x, on_cpu), 2), "psnr_cpu_written": round(psnr(x, cpu.decode(cpu_buf)), 2)}
        if "abs_error" in kw:
            fin = np.isfinite(x)
            row["bound_kept_on_cpu"] = bool((np.abs(on_cpu[fin].astype(np.float64) - x[fin]) <= kw["abs_error"]).all())
            row["bound_kept_on_gpu"] = bool((np.abs(on_gpu[fin].astype(np.float64) - x[fin]) <= kw["abs_error"]).all())
        rows.append(row)
    return rows


def make_reference(data: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    meta = {}
    for name, file, var, index, kw in REFERENCE:
        arr = np.load(data / file)[var].astype(np.float32)
        x = np.ascontiguousarray(arr.reshape(-1, *arr.shape[-2:])[index])
        buf = NNCodec(device="cpu", **kw).encode(x)
        (out / f"{name}.bin").write_bytes(buf)
        np.save(out / f"{name}.npy", NNCodec(device="cpu").decode(buf))
        meta[name] = {"bytes_sha256": hashlib.sha256(buf).hexdigest(), **kw}
    (out / "reference.json").write_text(json.dumps(meta, indent=1))
    print(f"wrote {len(meta)} reference chunks to {out}")


def check_reference(ref: Path, device: str) -> list[dict]:
    rows = []
    for name, meta in json.loads((ref / "reference.json").read_text()).items():
        buf = (ref / f"{name}.bin").read_bytes()
        theirs = np.load(ref / f"{name}.npy")
        span = float(np.nanmax(theirs) - np.nanmin(theirs))
        row = {"chunk": name}
        for dev in ("cpu", device):
            ours = NNCodec(device=dev).decode(buf)
            row[f"{dev}_identical"] = bool(np.array_equal(ours, theirs, equal_nan=True))
            row[f"{dev}_max_diff"] = max_diff(ours, theirs, span)
        rows.append(row)
    return rows


def profile(x: np.ndarray, device: str) -> dict:
    """Seconds per stage of one encode and one decode at quality 4 (after a warm-up)."""
    from speed import stage_profile  # benchmarks/speed.py, beside this script

    codec = NNCodec(quality=4, device=device)
    buf = codec.encode(x)
    codec.decode(buf)
    return {"chunk": f"{x.shape[0]} x {x.shape[1]}, quality 4", "encode": stage_profile(lambda: codec.encode(x)),
            "decode": stage_profile(lambda: codec.decode(buf))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--reference", type=Path, help="folder written by --make-reference on another machine")
    parser.add_argument("--make-reference", type=Path, metavar="DIR", help="write reference chunks and stop")
    parser.add_argument("--device", default="cuda", help="the accelerator to time (cpu only to test this script)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.make_reference:
        make_reference(args.data, args.make_reference)
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("torch sees no CUDA device: run this on a GPU machine (or --device cpu to test the script)")
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    result = {"device": name, "torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "chunks": []}
    for label, file, var, n in CHUNKS:
        t0 = time.perf_counter()
        x = load_chunk(args.data, file, var, n)
        if label == CHUNKS[0][0]:
            profiled = x  # the large chunk, profiled at the end
        entry = {"chunk": label, "shape": list(x.shape), "mb": x.nbytes / 1e6,
                 "gpu": throughput(x, args.device, args.repeats),
                 "cpu_q4": throughput(x, "cpu", 1, ["q4"])[0], "cross_device": cross_device(x, args.device)}
        if label == CHUNKS[0][0] and args.device.startswith("cuda"):
            entry["gpu"].append(not_overlapped(x, args.device, args.repeats))
        if x.ndim == 3 and len(x) > 1 and x.shape[-1] < 256:  # small grids: many one-slice chunks at once
            entry["gpu"].append(one_slice_chunks(x, args.device, args.repeats))
        result["chunks"].append(entry)
        print(f"{label}: {time.perf_counter() - t0:.1f} s " + json.dumps(entry), flush=True)
        write(result, args.out)  # each chunk's figures are kept should a time limit stop the run
    if args.reference:
        result["reference"] = check_reference(args.reference, args.device)
        print(json.dumps(result["reference"]), flush=True)
    result["profile"] = profile(profiled, args.device)
    write(result, args.out)
    print(report(result))


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "gpu.md").write_text(report(result))


def report(r: dict) -> str:
    lines = [
        "# nncodec on a GPU", "",
        f"Written by `python benchmarks/gpu.py`: {r['device']}, torch {r['torch']}, {r['cpu_threads']} CPU threads. "
        "MB/s of float32 input (10^6 bytes), fastest of 3 after a warm-up; the network on the GPU, range coding "
        "and the integer hyper-synthesis on the CPU. `cpu q4`: the same chunk on this machine's CPU."
        + (f" {r['note']}" if r.get("note") else ""), "",
        "| chunk | MB | setting | encode MB/s | decode MB/s | bits/value | PSNR dB | GPU peak MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in r["chunks"]:
        for row in [*c["gpu"], {**c["cpu_q4"], "setting": "cpu q4"}]:
            lines.append(f"| {c['chunk']} | {c['mb']:.2f} | {row['setting']} | {row['encode_mbps']:.1f} | "
                         f"{row['decode_mbps']:.1f} | {row['bpv']:.3f} | {row['psnr']:.2f} | "
                         f"{row.get('gpu_peak_mb', float('nan')):.0f} |")
    lines += ["", "## Written on the GPU, read on the CPU", "",
              "| chunk | setting | max difference / range (GPU vs CPU decode) | CPU writes the same bytes | "
              "PSNR written on GPU / CPU | bound kept (CPU, GPU) |", "|---|---|---|---|---|---|"]
    for c in r["chunks"]:
        for row in c["cross_device"]:
            kept = (f"{row['bound_kept_on_cpu']}, {row['bound_kept_on_gpu']}" if "bound_kept_on_cpu" in row else "")
            lines.append(f"| {c['chunk']} | {row['setting']} | {row['gpu_vs_cpu_decode_max_diff']:.2e} | "
                         f"{row['cpu_writes_same_bytes']} | {row['psnr_gpu_written']} / {row['psnr_cpu_written']} | {kept} |")
    if "reference" in r:
        lines += ["", "## Chunks written on another machine", "",
                  "| chunk | CPU: identical values | max diff / range | GPU: identical | max diff / range |",
                  "|---|---|---|---|---|"]
        for row in r["reference"]:
            dev = [k[: -len("_identical")] for k in row if k.endswith("_identical") and not k.startswith("cpu")]
            d = dev[0] if dev else "cpu"
            lines.append(f"| {row['chunk']} | {row['cpu_identical']} | {row['cpu_max_diff']:.2e} | "
                         f"{row[d + '_identical']} | {row[d + '_max_diff']:.2e} |")
    if "profile" in r:
        from speed import stage_table  # benchmarks/speed.py, beside this script

        lines += ["", f"## Where the time goes ({r['profile']['chunk']}, cProfile, one call each)", "",
                  *stage_table(r["profile"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

"""Peak memory of encoding and decoding one chunk, as a multiple of the chunk's size.

Dask workers size their chunks by this figure. Each case runs in a fresh process: the
model is loaded and warmed up on a small tile first, then the kernel's peak-RSS counter
(``VmHWM``) is reset through ``/proc/self/clear_refs`` and one chunk is encoded (or
decoded). The extra memory is peak RSS minus the RSS before the call, so the process's
fixed cost (Python, torch, the model: reported separately) is not counted.

A second table times a fresh process's first encoded and first decoded chunk (import
included: what a Dask worker or a notebook pays once) and its peak RSS, for a learned
chunk, an error-bounded chunk and a residual-only one, and lists which heavy packages it
imported.

Usage::

    python benchmarks/memory.py [--data ../shared/data] [--docs docs]

Chunks are cut from the ETOPO5 relief (2161 x 4320, as float32). Linux only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EDGES = (256, 512, 1024, 2048)
MODES = {"quality=4": {"quality": 4}, "abs_error=1 m": {"abs_error": 1.0}}

_CHILD = r"""
import json, os, sys
import numpy as np
from nncodec import NNCodec

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)

edge, kwargs, data, op, stream = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
x = np.load(data)["rose"][:edge, :edge].astype(np.float32)
codec = NNCodec(**kwargs)
codec.decode(codec.encode(x[:64, :64]))  # load the model, warm torch up
buf = open(stream, "rb").read() if op == "decode" else None  # written by the encode case
fixed = rss("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM to the current RSS
if op == "decode":
    codec.decode(buf)
else:
    open(stream, "wb").write(codec.encode(x))
print(json.dumps({"extra": rss("VmHWM") - fixed, "fixed": fixed, "bytes": x.nbytes}))
"""


_FIRST = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from nncodec import NNCodec
op, stream = sys.argv[1], sys.argv[2]
if op == "decode":
    NNCodec().decode(open(stream, "rb").read())
else:
    open(stream, "wb").write(NNCodec(**json.loads(sys.argv[3])).encode(np.load(sys.argv[4])))
seconds = time.perf_counter() - t0
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(seconds, peak, " ".join(m for m in ("torch", "compressai") if m in sys.modules) or "-")
"""
#: (label, codec settings) of the fresh-process cases, on a 512 x 512 relief chunk
FIRST_CASES = (("learned, quality=4", {"quality": 4}), ("error-bounded, abs_error=100 m", {"abs_error": 100.0}),
               ("error-bounded, abs_error=1 m", {"abs_error": 1.0}))


def first_chunk(data: Path, tmp: Path, repeats: int = 3) -> list[list[str]]:
    """Table rows: per case the fastest of ``repeats`` fresh processes encoding one chunk
    (which writes the stream), then of ``repeats`` decoding it."""
    import numpy as np

    crop, stream = tmp / "crop.npy", tmp / "first.nnc"
    np.save(crop, np.load(data)["rose"][:512, :512].astype(np.float32))
    rows = []
    for label, kwargs in FIRST_CASES:
        cells = [label]
        for op in ("encode", "decode"):
            runs = []
            for _ in range(repeats):
                out = subprocess.run([sys.executable, "-c", _FIRST, op, str(stream), json.dumps(kwargs), str(crop)],
                                     capture_output=True, text=True, check=True)
                seconds, peak, modules = out.stdout.split(maxsplit=2)
                runs.append((float(seconds), int(peak), modules.strip()))
            seconds, peak, modules = min(runs)
            cells += [f"{seconds:.2f}", f"{peak / 2**20:.0f}", modules.replace(" ", ", ")]
        rows.append(cells)
    return rows


def measure(edge: int, kwargs: dict, op: str, data: Path, stream: Path) -> dict:
    """Run one case in a fresh interpreter and return its JSON line.

    The encode case writes the stream to ``stream``; the decode case (a fresh process, so
    memory freed by the encoder is not reused) reads it from there.
    """
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(edge), json.dumps(kwargs), str(data), op, str(stream)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--docs", type=Path, help="write DOCS/memory.md")
    args = parser.parse_args()
    relief = args.data / "ferret_etopo5_relief.npz"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        stream = Path(tmp) / "chunk.nnc"
        for label, kwargs in MODES.items():
            for edge in EDGES:
                cells = [label, f"{edge} x {edge}", f"{edge * edge * 4 / 2**20:.2f}"]
                for op in ("encode", "decode"):
                    r = measure(edge, kwargs, op, relief, stream)
                    cells += [f"{r['fixed'] / 2**20:.0f}", f"{r['extra'] / 2**20:.0f}", f"{r['extra'] / r['bytes']:.1f}"]
                rows.append(cells)
                print(" | ".join(cells), flush=True)
        first = first_chunk(relief, Path(tmp))
    lines = [
        "# Memory per chunk",
        "",
        "Written by `python benchmarks/memory.py`. Extra resident memory while one float32 chunk of the "
        "ETOPO5 relief is encoded or decoded, on top of the process's fixed cost (\"before\": Python, "
        "numba, torch and the model, which the warm-up on a 64 x 64 tile loads; a process whose chunks' "
        "tiles all skip the network needs neither: next table). On CPU the network runs one tile (at most 256 x 256) "
        "per thread at a time; on a GPU `NNCODEC_BATCH_VALUES` (default 2**20 values) bounds the tiles "
        "sent through the network at once.",
        "",
        "| mode | chunk | chunk MiB | encode: before MiB | extra MiB | x chunk | decode: before MiB "
        "| extra MiB | x chunk |",
        "|---|---|---|---|---|---|---|---|---|",
        *("| " + " | ".join(c) + " |" for c in rows),
        "",
        "## A fresh process's first chunk",
        "",
        "One 512 x 512 relief chunk encoded, then decoded, by a new interpreter each, timed from its "
        "first line (importing nncodec, loading the model where the chunk needs it, numba's cached "
        "kernels), fastest of 3; peak RSS of the whole process. Tiles that use the network need torch; "
        "a chunk whose tiles all use the residual layer alone (the usual case at tight bounds, and "
        "from 0.15.0 what the encoder writes without trying the network below 5e-3 of a tile's range: "
        "1 m is 1e-4 of this crop's range) needs neither torch nor the weights, to write or to read. "
        "CompressAI is imported only to train or to refine latents.",
        "",
        "| chunk | first encode s | peak RSS MB | heavy packages imported | first decode s | peak RSS MB "
        "| heavy packages imported |",
        "|---|---|---|---|---|---|---|",
        *("| " + " | ".join(c) + " |" for c in first),
    ]
    text = "\n".join(lines) + "\n"
    if args.docs:
        (args.docs / "memory.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""Peak memory of encoding and decoding one chunk, as a multiple of the chunk's size.

Dask workers size their chunks by this figure. Each case runs in a fresh process: the
model is loaded and warmed up on a small tile first, then the kernel's peak-RSS counter
(``VmHWM``) is reset through ``/proc/self/clear_refs`` and one chunk is encoded (or
decoded). The extra memory is peak RSS minus the RSS before the call, so the process's
fixed cost (Python, torch, the model: reported separately) is not counted.

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
                    cells += [f"{r['extra'] / 2**20:.0f}", f"{r['extra'] / r['bytes']:.1f}"]
                rows.append(cells)
                print(" | ".join(cells), flush=True)
    fixed = r["fixed"] / 2**20
    lines = [
        "# Memory per chunk",
        "",
        f"Written by `python benchmarks/memory.py`. Extra resident memory while one float32 chunk of the "
        f"ETOPO5 relief is encoded or decoded, on top of the process's fixed cost (Python, torch and the "
        f"loaded model: {fixed:.0f} MB RSS here). On CPU the network runs one tile (at most 256 x 256) "
        "per thread at a time; on a GPU `NNCODEC_BATCH_VALUES` (default 2**20 values) bounds the tiles "
        "sent through the network at once.",
        "",
        "| mode | chunk | chunk MiB | encode extra MiB | x chunk | decode extra MiB | x chunk |",
        "|---|---|---|---|---|---|---|",
        *("| " + " | ".join(c) + " |" for c in rows),
    ]
    text = "\n".join(lines) + "\n"
    if args.docs:
        (args.docs / "memory.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

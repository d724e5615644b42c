"""Speed of nncodec against SZ3 and SPERR on large fields and small chunks, and where the time goes.

Part 1 runs :func:`nncodec.bench.run_speed` (the engine of ``nncodec bench --speed``) on a
large field (ETOPO5 relief, 2161 x 4320, widened to float32), 256 x 256 turbulence, and the
small chunks scientists read (73 x 144 vorticity, 145 x 192 surface temperature): nncodec
encode/decode MB/s per quality level and in the error-bounded mode, nncodec, SZ3 and SPERR
at the same 1e-3 relative bound, the ratios, all in one run on the same slices (fastest of
3 repeats).

Part 2 times small grids chunked one slice per chunk against several slices per chunk,
and small chunks coded from 1, 2 and 6 threads (``WORKER_CALLERS``) of a process whose
torch runs one thread (as in a Dask worker).

Part 3 profiles one decode and one encode of a 1024 x 1024 relief chunk with cProfile and
splits the time into stages (synthesis / analysis network, integer hyper-synthesis, range
coding, the rest), and counts the network's multiply-adds per value with torch's FLOP
counter; then splits one small chunk's decode (73 x 144) the same way, timing each stage
alone (cProfile's own cost would swamp a 2 ms call), and times the synthesis of such a
chunk for lighter inner widths.

Usage::

    python benchmarks/speed.py [--data ../shared/data] [--docs docs]

Writes DOCS/speed.md and DOCS/results/speed.json. Figures depend on what else the machine
runs: the ratios against SZ3/SPERR, measured in the same run, are the robust part.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from pathlib import Path

import numpy as np
import torch

from nncodec import NNCodec
from nncodec.bench import run_speed
from nncodec.bench.metrics import timed
from nncodec.bench.report import environment_info, speed_table, write_json

ROOT = Path(__file__).resolve().parents[1]
FIELDS = [  # file, variable, slices: large fields first, then small chunks
    ("ferret_etopo5_relief.npz", "rose", 1),
    ("pyqgjax_qg2layer_vorticity_256.npz", "rel_vorticity", 4),
    ("ferret_fnoc_monthly_winds_vorticity.npz", "vorticity", 4),
    ("iris_glosea4_surface_temperature.npz", "ts", 4),
]
QUALITIES = [1, 4, 8]
#: small grids stacked along their leading axes into one chunk: (file, variable, slices per chunk)
STACKED = [("ferret_fnoc_monthly_winds_vorticity.npz", "vorticity", 64),
           ("iris_glosea4_surface_temperature.npz", "ts", 24)]
ZARR_BATCH = 16  # zarr's codec_pipeline.batch_size in the batched zarr reads
#: calling threads of a one-thread process (worker_threads); 6: zarr's threads decoding
#: format-2 chunks on 2 cores
WORKER_CALLERS = (1, 2, 6)
#: (file, function) -> stage, for cProfile. The stages are disjoint call subtrees, so
#: their cumulative times add up.
STAGES = {
    ("runtime.py", "synthesise"): "synthesis network (g_s)",
    ("runtime.py", "analyse"): "analysis network (g_a)",
    ("runtime.py", "quantise"): "h_a, rounding, integer hyper-synthesis (encoder)",
    ("runtime.py", "indexes"): "integer hyper-synthesis (decoder)",
    ("rans.py", "decode"): "range decoding",
    ("rans.py", "finish"): "range encoding",
}


def stage_profile(func) -> dict:
    """Seconds per stage of one call of ``func`` (cumulative times of the stage functions)."""
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(func)
    total = time.perf_counter() - t0
    stats = pstats.Stats(prof).stats
    out = {}
    for (file, _line, name), (_cc, _nc, _tt, cum, _callers) in stats.items():
        stage = STAGES.get((Path(file).name, name))
        if stage is not None:
            out[stage] = out.get(stage, 0.0) + cum
    out["everything else (tiling, normalisation, masks, header, CRC)"] = total - sum(out.values())
    return {"total": total, "stages": out}


def stage_table(profiles: dict) -> list[str]:
    """Markdown rows: seconds and share per stage of :func:`stage_profile`'s ``encode`` and ``decode``."""
    lines = ["| stage | encode s | share | decode s | share |", "|---|---|---|---|---|"]
    for name in dict.fromkeys([*profiles["encode"]["stages"], *profiles["decode"]["stages"]]):
        cells = []
        for op in ("encode", "decode"):
            s = profiles[op]["stages"].get(name)
            cells += ["", ""] if s is None else [f"{s:.3f}", f"{100 * s / profiles[op]['total']:.0f} %"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(f"| total | {profiles['encode']['total']:.3f} | | {profiles['decode']['total']:.3f} | |")
    lines += ["", "cProfile sees the calling thread only. A chunk's range-coded lanes (format v4: one per "
              "2^18 values) run on several threads, so the range-coding rows count the calling thread's "
              "lanes, and the other threads' lanes overlap it."]
    return lines


def stacked_chunks(data: Path) -> list[dict]:
    """nncodec (quality 4) on small grids: one slice per chunk against n slices per chunk
    (the same values; the tiles of a chunk run side by side on the tile pool), called one
    chunk after another; the one-slice chunks coded together (``encode_batch``,
    ``decode_batch``); and one slice per chunk written and read through a zarr array (in
    memory), as xarray does, where zarr codes several chunks at once, with zarr's default
    batch size and with ``codec_pipeline.batch_size`` = ZARR_BATCH. ``zstd via zarr`` codes
    the same slices in a zstd-compressed zarr array: what zarr's own per-chunk work allows."""
    import zarr
    from zarr.codecs import ZstdCodec

    from nncodec.zarr3 import NNCodecV3

    codec = NNCodec(quality=4)
    rows = []
    for file, var, n in STACKED:
        arr = np.load(data / file)[var].astype(np.float32)
        stack = np.ascontiguousarray(arr.reshape(-1, *arr.shape[-2:])[:n])
        mb = stack.nbytes / 1e6
        row = {"field": f"{file}:{var}", "grid": list(stack.shape[1:]), "slices": n}
        coded = {}
        for key, chunks in (("per_slice", list(stack)), ("stacked", [stack])):
            bufs = coded[key] = [codec.encode(c) for c in chunks]
            _, enc = timed(lambda: [codec.encode(c) for c in chunks], repeats=3)
            _, dec = timed(lambda: [codec.decode(b) for b in bufs], repeats=3)
            row[key] = {"encode_mbps": mb / enc, "decode_mbps": mb / dec}
        _, enc = timed(lambda: codec.encode_batch(list(stack)), repeats=3)
        _, dec = timed(lambda: codec.decode_batch(coded["per_slice"]), repeats=3)
        row["batch"] = {"encode_mbps": mb / enc, "decode_mbps": mb / dec}
        for key, settings in (("zarr_per_slice", {"serializer": NNCodecV3(quality=4), "compressors": None}),
                              ("zstd_zarr", {"compressors": ZstdCodec()})):
            z = zarr.create_array(store={}, shape=stack.shape, chunks=(1, *stack.shape[1:]), dtype="f4", **settings)
            _, enc = timed(lambda: z.__setitem__(slice(None), stack), repeats=3)
            _, dec = timed(lambda: z[:], repeats=3)
            row[key] = {"encode_mbps": mb / enc, "decode_mbps": mb / dec}
            with zarr.config.set({"codec_pipeline.batch_size": ZARR_BATCH}):
                z = zarr.open_array(z.store, mode="r+")
                _, enc = timed(lambda: z.__setitem__(slice(None), stack), repeats=3)
                _, dec = timed(lambda: z[:], repeats=3)
            row[key].update(encode_batched_mbps=mb / enc, decode_batched_mbps=mb / dec)
        rows.append(row)
    return rows


#: one-slice chunks coded by the given numbers of threads of a process with OMP_NUM_THREADS=1
#: (a Dask worker's setting)
_WORKER_THREADS = """
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
import numpy as np, torch
from nncodec import NNCodec
file, var, n, callers = sys.argv[1:5]
arr = np.load(file)[var]
stack = arr.astype(np.float32).reshape(-1, *arr.shape[-2:])[: int(n)]
codec = NNCodec(quality=4)
bufs = [codec.encode(c) for c in stack]
out = {"torch_threads": torch.get_num_threads()}
for threads in map(int, callers.split(",")):
    with ThreadPoolExecutor(threads) as ex:
        for op, items in (("decode", bufs), ("encode", list(stack))):
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                list(ex.map(getattr(codec, op), items))
                best = min(best, time.perf_counter() - t)
            out[f"{op}_{threads}"] = stack.nbytes / 1e6 / best
print(json.dumps(out))
"""


def worker_threads(data: Path) -> list[dict]:
    """MB/s of one-slice chunks (nncodec quality 4) coded one after another by each of
    ``WORKER_CALLERS`` threads of a fresh process with ``OMP_NUM_THREADS=1``, as Dask's nannies start workers:
    each thread runs the network itself (the tile pool is for multi-threaded torch), at
    most one per core at a time."""
    import json
    import os
    import subprocess
    import sys

    rows = []
    for file, var, n in STACKED:
        callers = ",".join(map(str, WORKER_CALLERS))
        done = subprocess.run([sys.executable, "-c", _WORKER_THREADS, str(data / file), var, str(n), callers],
                              capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        rows.append({"field": f"{file}:{var}", "slices": n, **json.loads(done.stdout)})
    return rows


def network_macs(codec: NNCodec, edge: int = 256) -> dict:
    """Multiply-adds per value of the analysis and synthesis transforms on one tile."""
    from torch.utils.flop_counter import FlopCounterMode

    from nncodec.models.transforms import decoder_synthesis
    from nncodec.weights import load

    rt = load(codec.model)
    x = torch.zeros(1, 1, edge, edge)
    out = {}
    with torch.no_grad():
        y = rt.g_a(x)
        for name, fn, arg in (("analysis g_a", rt.g_a, x), ("synthesis g_s", rt.g_s, y),
                              ("g_s in its decoder form (format v3)", decoder_synthesis(rt.g_s), y),
                              ("hyper-analysis h_a", rt.h_a, y)):
            counter = FlopCounterMode(display=False)
            with counter:
                fn(arg)
            out[name] = counter.get_total_flops() / 2 / (edge * edge)
    return out


#: inner synthesis widths timed by :func:`synthesis_widths`: the shipped model's, then lighter ones
WIDTHS = [(48, 32, 16), (40, 24, 12), (32, 16, 8), (16, 8, 4)]


def synthesis_widths(latent=(5, 9), repeats=300) -> list[dict]:
    """Time of the decoder-form synthesis on one small tile (73 x 144 values have 5 x 9
    latents) for several inner widths, single-threaded on the tile pool as the codec runs
    it: how much a lighter synthesis would save there. Untrained weights (timing only)."""
    from torch.utils.flop_counter import FlopCounterMode

    from nncodec.models import tilepool, transforms
    from nncodec.weights import load

    m = load(None).g_s[0].in_channels
    y = torch.randn(1, m, *latent)
    rows = []
    for widths in WIDTHS:
        g_s = transforms.decoder_synthesis(transforms.synthesis(m, widths))
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            g_s(y)

        def best():
            with torch.inference_mode():
                for _ in range(20):
                    g_s(y)
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    g_s(y)
                    times.append(time.perf_counter() - t0)
            return min(times)

        rows.append({"widths": list(widths), "macs": counter.get_total_flops() / 2, "ms": 1e3 * tilepool.run(best)})
    return rows


#: the small chunk whose decode :func:`small_chunk_budget` splits up
SMALL = ("ferret_fnoc_monthly_winds_vorticity.npz", "vorticity")


def small_chunk_budget(data: Path, repeats: int = 300) -> dict:
    """Milliseconds of one small chunk's decode (73 x 144, one tile, quality 4) and of
    its compute stages timed alone inside ``tilepool.run`` (the calling thread switched to
    one intra-op thread) as the codec runs them: the synthesis network, the integer
    hyper-synthesis, the range decoding of the chunk's symbols. What remains is Python
    around them and the switch itself."""
    from nncodec.entropy import StreamReader, StreamWriter, channel_indexes
    from nncodec.models import tilepool
    from nncodec.normalize import normalise_tile, tile_offset_scale
    from nncodec.weights import load

    x = np.load(data / SMALL[0])[SMALL[1]].astype(np.float32).reshape(-1, 73, 144)[0]
    codec, rt = NNCodec(quality=4), load(None)
    buf = codec.encode(x)
    finite = np.isfinite(x)
    norm = normalise_tile(x, finite, *tile_offset_scale(x, finite))
    sym = rt.quantise(rt.analyse(norm[None, None].astype(np.float32)), 4)
    channels = channel_indexes(sym["z"].shape[1:])
    writer = StreamWriter(rt.tables)
    writer.z(sym["z"][0], channels)
    writer.y(sym["y"][0], sym["idx"][0])
    stream = writer.finish()

    def range_decode():
        reader = StreamReader(rt.tables, stream)
        return reader.parts("z", [channels]), reader.parts("y", [sym["idx"][0]])

    def fastest(func):
        func()
        return 1e3 * timed(func, repeats=repeats)[1]

    stages = {
        "synthesis network (g_s)": lambda: rt.synthesise(sym["y"], 4, x.shape),
        "integer hyper-synthesis": lambda: rt.indexes(sym["z"], sym["y"].shape[-2:]),
        "range decoding": range_decode,
        "the whole decode, already switched": lambda: codec.decode(buf),
    }
    out = {"chunk": f"{SMALL[0]}:{SMALL[1]} slice 0, 73 x 144, quality 4", "bytes": x.nbytes,
           "decode_ms": fastest(lambda: codec.decode(buf)),
           "stages_ms": tilepool.run(lambda: {k: fastest(f) for k, f in stages.items()})}
    return out


def budget_table(budget: dict) -> list[str]:
    """Markdown rows of :func:`small_chunk_budget`: milliseconds and share of the decode."""
    total, st = budget["decode_ms"], budget["stages_ms"]
    inside = st["the whole decode, already switched"]
    compute = {k: v for k, v in st.items() if k != "the whole decode, already switched"}
    rows = {**compute,
            "the rest (parsing, tiling, masks, Python around the kernels)": inside - sum(compute.values()),
            "switching the calling thread to one intra-op thread and back": total - inside}
    lines = ["| stage | ms | share |", "|---|---|---|"]
    lines += [f"| {k} | {v:.3f} | {100 * v / total:.0f} % |" for k, v in rows.items()]
    lines.append(f"| decode, one call ({budget['bytes'] / 1e3 / total:.1f} MB/s) | {total:.3f} | |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = parser.parse_args()

    runs = [run_speed([args.data / f], [v], qualities=QUALITIES, max_slices=n, progress=False)
            for f, v, n in FIELDS]
    result = {"meta": runs[0]["meta"], "variables": [v for r in runs for v in r["variables"]]}

    chunk = np.load(args.data / "ferret_etopo5_relief.npz")["rose"][:1024, :1024].astype(np.float32)
    codec = NNCodec(quality=4)
    codec.decode(codec.encode(chunk[:64, :64]))  # load and warm up
    buf = codec.encode(chunk)
    profiles = {"encode": stage_profile(lambda: codec.encode(chunk)),
                "decode": stage_profile(lambda: codec.decode(buf))}
    macs = network_macs(codec)
    result["stacked"] = stacked_chunks(args.data)
    result["worker_threads"] = worker_threads(args.data)
    result["synthesis_widths"] = synthesis_widths()
    result["small_chunk"] = small_chunk_budget(args.data)
    result["profile"] = {"chunk": "1024 x 1024 relief, quality=4", "threads": torch.get_num_threads(),
                         **profiles, "macs_per_value": macs}
    (args.docs / "results").mkdir(parents=True, exist_ok=True)
    write_json(args.docs / "results" / "speed.json", result)

    env = environment_info()
    gpu = f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    lines = [
        "# Speed",
        "",
        f"Written by `python benchmarks/speed.py`: {env['cpu']}, {env['cores']} cores, torch threads "
        f"{torch.get_num_threads()}, {gpu}. MB/s of float32 input (10^6 bytes), fastest of 3 repeats; "
        "nncodec's error-bounded mode (`abs_error`), SZ3 and SPERR at the same error bound, 1e-3 of the "
        "value range (R), on the same slices in the same run. Where torch "
        "sees a GPU the same command adds nncodec rows with the network on CUDA (`... cuda`; "
        "`nncodec bench --speed FILES` does the same for your own fields).",
        "",
        "```",
        speed_table(result),
        "```",
        "",
        "## Small grids: one slice per chunk, or several",
        "",
        "A chunk of one small slice is one tile, and fixed per-chunk costs weigh. Stacking slices "
        "along time (or member, level) into one chunk runs its tiles side by side. Chunks coded "
        "together (`NNCodec.encode_batch`, `decode_batch`) share network batches and give each chunk "
        "the bytes and values it has alone. Through zarr (an in-memory array, one slice per chunk, "
        "written and read whole), zarr codes several chunks at once, and `NNCodecV3` codes the "
        "chunks that are waiting together: with zarr's defaults (`async.concurrency` 10, batch size 1), and with "
        f"`zarr.config.set({{'codec_pipeline.batch_size': {ZARR_BATCH}}})`. `zstd via zarr`: the same "
        "array compressed with zstd instead, what zarr's own per-chunk work leaves. nncodec quality 4, "
        "fastest of 3.",
        "",
        "| field | grid | slices | 1 per chunk | decode_batch | all in one chunk | zarr, 1 per chunk "
        f"| zarr, batch size {ZARR_BATCH} | zstd via zarr, batch size 1 / {ZARR_BATCH} |",
        "|---|---|---|---|---|---|---|---|---|",
        *[f"| {r['field']} | {r['grid'][0]} x {r['grid'][1]} | {r['slices']} | "
          f"{r['per_slice']['decode_mbps']:.1f} | {r['batch']['decode_mbps']:.1f} | "
          f"{r['stacked']['decode_mbps']:.1f} | {r['zarr_per_slice']['decode_mbps']:.1f} | "
          f"{r['zarr_per_slice']['decode_batched_mbps']:.1f} | {r['zstd_zarr']['decode_mbps']:.0f} / "
          f"{r['zstd_zarr']['decode_batched_mbps']:.0f} |" for r in result["stacked"]],
        "",
        "Decode MB/s above; encode MB/s:",
        "",
        f"| field | 1 per chunk | encode_batch | all in one chunk | zarr, 1 per chunk | zarr, batch size {ZARR_BATCH} |",
        "|---|---|---|---|---|---|",
        *[f"| {r['field']} | {r['per_slice']['encode_mbps']:.1f} | {r['batch']['encode_mbps']:.1f} | "
          f"{r['stacked']['encode_mbps']:.1f} | {r['zarr_per_slice']['encode_mbps']:.1f} | "
          f"{r['zarr_per_slice']['encode_batched_mbps']:.1f} |" for r in result["stacked"]],
        "",
        "In a process whose torch runs one thread (`OMP_NUM_THREADS=1`, as Dask's nannies start "
        "workers), each thread that calls the codec runs the network itself, so a worker's threads "
        "code side by side (until 0.12.0 they queued behind the process's one tile-pool thread: "
        "73 x 144 chunks from 2 threads decoded at 19.9 and encoded at 8.1 MB/s), at most one per "
        "core at a time: more callers, such as zarr's 6 threads decoding format-2 chunks, take turns "
        "(until 0.13.0 they all ran at once: 73 x 144 chunks from 6 threads decoded at 17-19 MB/s, "
        "against 22-26 so, same-session A/B). One-slice chunks, one call each, MB/s:",
        "",
        "| field | slices | " + " | ".join(f"{op}, {k} thread{'s' * (k > 1)}" for op in ("decode", "encode")
                                         for k in WORKER_CALLERS) + " |",
        "|---|---|" + "---|" * (2 * len(WORKER_CALLERS)),
        *[f"| {r['field']} | {r['slices']} | "
          + " | ".join(f"{r[f'{op}_{k}']:.1f}" for op in ("decode", "encode") for k in WORKER_CALLERS) + " |"
          for r in result["worker_threads"]],
        "",
        f"## Where the time goes ({result['profile']['chunk']}, cProfile)",
        "",
        *stage_table(profiles),
    ]
    lines += ["", "Network multiply-adds per value (one 256 x 256 tile): "
              + ", ".join(f"{k} {v:,.0f}" for k, v in macs.items()) + "."]
    lines += ["", f"## Where a small chunk's time goes ({result['small_chunk']['chunk']})", "",
              "Each compute stage timed alone on the calling thread switched to one intra-op thread, "
              "as the codec runs a one-tile chunk (until 0.14.0 it handed the chunk to a tile-pool "
              "thread instead: 0.21 ms of 1.78), fastest of 300; the rest is the difference:", "",
              *budget_table(result["small_chunk"])]
    base = result["synthesis_widths"][0]
    lines += [
        "", "## Would a lighter synthesis speed up small chunks?", "",
        "The synthesis (decoder form) on one 73 x 144 tile (5 x 9 latents), one thread, fastest "
        f"of 300, for the shipped inner widths {tuple(base['widths'])} and lighter ones (untrained "
        "weights: the time does not depend on them):", "",
        "| inner widths | multiply-adds | share | ms | share |", "|---|---|---|---|---|",
        *[f"| {tuple(r['widths'])} | {r['macs'] / 1e6:.1f} M | {r['macs'] / base['macs']:.0%} | "
          f"{r['ms']:.3f} | {r['ms'] / base['ms']:.0%} |" for r in result["synthesis_widths"]],
        "", "At this size the time follows the number of layers more than their work: each "
        "convolution has a fixed cost that a narrower layer does not remove.",
    ]
    text = "\n".join(lines) + "\n"
    (args.docs / "speed.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

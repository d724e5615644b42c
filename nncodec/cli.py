"""The ``nncodec`` command.

Each subcommand is a :class:`Command`: its name, a line of help, a function that adds its
arguments to an ``argparse`` parser, and a function that runs it and returns the exit
status. To add a subcommand, write those two functions and append a ``Command`` to
:data:`COMMANDS`. The functions stay thin: the work is done by the library (the archive
subcommands call :mod:`nncodec.parallel`), which is imported only when a subcommand runs,
so ``nncodec --help`` is quick.

Exit status: 0 success, 1 a check failed (``verify``), 2 a usage or input error (the
message says what to change), 130 interrupted (rerun ``compress`` to resume).
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, NamedTuple

from . import __version__
from .errors import NNCodecError


class Command(NamedTuple):
    """One subcommand of ``nncodec``."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# -- shared options ----------------------------------------------------------------------
def _add_engine(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "where to run", "default: a local Dask cluster, one single-threaded worker per CPU core"
    )
    group.add_argument("--scheduler", metavar="ADDRESS", help="address of a running Dask scheduler (tcp://host:8786)")
    group.add_argument("--jobqueue", metavar="YAML",
                       help="dask-jobqueue settings (e.g. workflows/jobqueue.yaml); needs --cluster")
    group.add_argument("--cluster", choices=("slurm", "pbs"), help="batch system for --jobqueue")
    group.add_argument("--workers", type=int, metavar="N", help="workers to start (local cluster or batch jobs)")
    group.add_argument("--gpu", action="store_true",
                       help="coding tasks need the worker resource GPU=1 (one worker per GPU; dask-cuda if installed)")


def _engine(args: argparse.Namespace):
    from .parallel import Engine

    return Engine(scheduler=args.scheduler, jobqueue=args.jobqueue, cluster=args.cluster, n_workers=args.workers,
                  gpu=args.gpu)


# -- compress ----------------------------------------------------------------------------
def _add_compress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="netCDF files or globs, or one Zarr store")
    parser.add_argument("output", metavar="OUTPUT.zarr", help="the archive to write (or to resume)")
    parser.add_argument("--var", dest="variables", action="append", metavar="NAME",
                        help="a variable to code with nncodec (repeat; default every float variable with 2+ dims)")
    parser.add_argument("--quality", type=int, help="rate level, 1 (fewest bits) to 8; default 4")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--abs-error", type=float, help="every decoded value within this of the original")
    mode.add_argument("--rel-error", type=float, help="as --abs-error, times each chunk's value range")
    mode.add_argument("--target-psnr", type=float, help="each chunk's PSNR at least this (dB)")
    parser.add_argument("--fidelity", metavar="FILE.yaml",
                        help="instead of the settings above: thresholds (docs/metrics.md); each variable gets the "
                             "cheapest setting that meets them on sample chunks")
    parser.add_argument("--model", help="shipped model id or weights file (default: the shipped model)")
    parser.add_argument("--refine", type=int, default=0, metavar="N",
                        help="encoder-side latent refinement steps: ~20 %% fewer bits at N=30, encoding ~35x slower "
                             "(docs/refinement.md; worth it on GPUs)")
    parser.add_argument("--zarr-format", type=int, choices=(2, 3), help="Zarr format (default 3)")
    parser.add_argument("--chunk-bytes", metavar="SIZE", help="target chunk size, e.g. 4MiB (default)")
    parser.add_argument("--region-bytes", metavar="SIZE",
                        help="target size of a restartable region, e.g. 64MiB (default)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT instead of resuming it")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    _add_engine(parser)


def _compress(args: argparse.Namespace) -> int:
    from .parallel import compress

    summary = compress(
        args.inputs, args.output, variables=args.variables, quality=args.quality, abs_error=args.abs_error,
        rel_error=args.rel_error, target_psnr=args.target_psnr, fidelity=args.fidelity, model=args.model, refine=args.refine,
        zarr_format=args.zarr_format, chunk_bytes=args.chunk_bytes, region_bytes=args.region_bytes,
        engine=_engine(args), overwrite=args.overwrite, progress=args.progress,
    )
    print(summary.format())
    return 0


# -- verify ------------------------------------------------------------------------------
def _add_verify(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", metavar="STORE.zarr")
    parser.add_argument("--source", nargs="+", metavar="INPUT",
                        help="the inputs it was written from: check each chunk's error bound against them")
    parser.add_argument("--fidelity", metavar="FILE.yaml",
                        help="also check these thresholds on each whole variable against --source")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    _add_engine(parser)


def _verify(args: argparse.Namespace) -> int:
    from .parallel import verify

    report = verify(args.store, args.source, fidelity=args.fidelity, engine=_engine(args), progress=args.progress)
    print(report.format())
    return 0 if report.ok else 1


# -- info --------------------------------------------------------------------------------
def _add_info(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", metavar="STORE.zarr")


def _info(args: argparse.Namespace) -> int:
    from .parallel import info

    print(info(args.store).format())
    return 0


# -- decompress --------------------------------------------------------------------------
def _add_decompress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", metavar="STORE.zarr")
    parser.add_argument("output", metavar="OUT.nc|OUT.zarr", help="netCDF file, or a Zarr store without nncodec")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    _add_engine(parser)


def _decompress(args: argparse.Namespace) -> int:
    from .parallel import decompress

    out = decompress(args.store, args.output, engine=_engine(args), overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


# -- bench -------------------------------------------------------------------------------
def _add_bench(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help=".npz, netCDF files or a Zarr store")
    parser.add_argument("--var", dest="variables", action="append", metavar="NAME", help="a variable (repeat; default all 2D+ floats)")
    parser.add_argument("--out", default="nncodec-bench", metavar="DIR", help="where report.md, results.json and PNGs go")
    parser.add_argument("--quality", dest="qualities", type=int, action="append", metavar="Q", help="levels to run (repeat; default all)")
    parser.add_argument("--baseline", dest="baselines", action="append", choices=("sz3", "zfp", "sperr", "bitround"),
                        help="baselines to run (repeat; default all installed)")
    parser.add_argument("--max-slices", type=int, default=4, help="2D slices per variable (default 4)")
    parser.add_argument("--speed", action="store_true",
                        help="time encode/decode MB/s (learned levels, and abs_error at the baselines' bound) "
                             "against SZ3 and SPERR instead")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _bench(args: argparse.Namespace) -> int:
    from .bench.run import run_bench, run_speed

    common = {"variables": args.variables, "qualities": args.qualities, "max_slices": args.max_slices,
              "progress": args.progress}
    if args.speed:
        run_speed(args.inputs, out_dir=args.out, baselines=tuple(args.baselines or ("sz3", "sperr")), **common)
    else:
        run_bench(args.inputs, out_dir=args.out, baselines=tuple(args.baselines or ("sz3", "zfp", "sperr", "bitround")),
                  **common)
    print(f"wrote {args.out}/")
    return 0


# -- models ------------------------------------------------------------------------------
def _add_models(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _models(args: argparse.Namespace) -> int:
    import json

    from .models import list_models

    models = list_models()
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    for m in models:
        print(f"{m['id']}{'  [default]' if m['default'] else ''}  (code {m['code']}, {m['qualities']} quality levels, "
              f"{m['size_bytes'] / 1e6:.1f} MB, sha256 {m['sha256'][:12]})")
        for q, v in m["validation"].items():
            print(f"  {q}: {v['bpv']:.3f} bits/value  PSNR {v['psnr']:.1f} dB  max error {v['max_error_range']:.3g} x range")
    return 0


# -- train -------------------------------------------------------------------------------
def _add_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", metavar="PATH[:VAR,...]",
                        help=".npz, netCDF or Zarr inputs, each with the variables to use (default: all 2D+ floats)")
    parser.add_argument("--out", required=True, metavar="DIR", help="run folder: checkpoint.pt, and the weights at the end")
    parser.add_argument("--id", dest="model_id", help="id of the exported model (default: the run folder's name)")
    parser.add_argument("--init", metavar="MODEL", help="fine-tune from a shipped model id or weights file")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument("--steps", type=int, default=100_000, help="training steps (default 100000)")
    parser.add_argument("--minutes", type=float, help="stop (with a checkpoint) after this long; --resume continues")
    parser.add_argument("--schedule-minutes", type=float, metavar="M",
                        help="instead of --steps: fit the whole schedule (learning-rate decay, larger late crops) "
                             "into M minutes of training, however fast the machine is")
    parser.add_argument("--lambda", dest="lambdas", type=float, action="append", metavar="L",
                        help="rate-distortion lambda of a quality level (repeat; default the shipped family's 8)")
    parser.add_argument("--target-bpp", type=float, metavar="B",
                        help="train one quality level, steering its lambda until training runs at B bits per value")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=64, help="crop edge (the last 20 %% of steps use 2x)")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (two 1-thread runs beat one 2-thread run)")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="last fraction of the first axis held out")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .train import TrainConfig, export_weights, parse_source, train

    sources = [parse_source(s) for s in args.sources]
    if args.init and (args.lambdas or args.target_bpp):
        raise SystemExit("--init excludes --lambda and --target-bpp: a fine-tuned model keeps its parent's quality levels")
    cfg = TrainConfig(steps=args.steps, batch=args.batch, crop=args.crop, crop_late=2 * args.crop, lr=args.lr,
                      threads=args.threads, val_fraction=args.val_fraction, max_minutes=args.minutes,
                      schedule_minutes=args.schedule_minutes, device=args.device, target_bpp=args.target_bpp, **({"lambdas": args.lambdas} if args.lambdas else {}))
    ckpt = train(sources, args.out, cfg, init=args.init, resume=args.resume)
    import torch

    from .train.loop import finished

    if not finished(torch.load(ckpt, map_location="cpu", weights_only=False)):
        print(f"stopped early; continue with: nncodec train {' '.join(args.sources)} --out {args.out} --resume")
        return 0
    model_id = args.model_id or Path(args.out).resolve().name
    out = Path(args.out) / f"{model_id}.pt"
    card = export_weights(ckpt, out, model_id, validate_on=sources, val_fraction=args.val_fraction)
    print(f"wrote {out} and {out.with_suffix('.json')} (sha256 {card['sha256'][:12]}); use NNCodec(model={str(out)!r})")
    for q, v in card.get("validation", {}).items():
        print(f"  {q}: {v['bpv']:.3f} bits/value  PSNR {v['psnr']:.1f} dB")
    return 0


COMMANDS: list[Command] = [
    Command("compress", "compress netCDF files or a Zarr store into an nncodec Zarr archive (resumable)",
            _add_compress, _compress),
    Command("verify", "decode every chunk; check completeness and, with --source, the bounds and --fidelity",
            _add_verify, _verify),
    Command("info", "sizes, ratios and codecs of an archive", _add_info, _info),
    Command("decompress", "decode an archive into netCDF or a Zarr store without nncodec",
            _add_decompress, _decompress),
    Command("bench", "rate, distortion, fidelity and speed against SZ3, ZFP, SPERR and BitRound", _add_bench, _bench),
    Command("models", "list the shipped models with their validation figures", _add_models, _models),
    Command("train", "train or fine-tune a model on your own archive (resumable)", _add_train, _train),
]


def build_parser() -> argparse.ArgumentParser:
    """The ``nncodec`` parser with every subcommand of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="nncodec", description="Learned compression of climate fields for Zarr.")
    parser.add_argument("--version", action="version", version=f"nncodec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``nncodec`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (NNCodecError, ValueError, TypeError, OSError, ImportError) as e:
        # errors in what was asked for: the message names the fix, a traceback would bury it
        print(f"nncodec {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = "; run the same command again to resume" if args.command == "compress" else ""
        print(f"nncodec {args.command}: interrupted{hint}", file=sys.stderr)
        return 130

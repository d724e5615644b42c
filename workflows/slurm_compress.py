"""Compress a netCDF collection into an nncodec archive on Slurm GPU nodes.

A recipe for the Python API (``nncodec.parallel``): it builds a dask-jobqueue
``SLURMCluster`` from ``workflows/jobqueue.yaml`` (one batch job, one worker, one GPU
each), scales it, and runs :func:`nncodec.parallel.compress` with GPU resources::

    python workflows/slurm_compress.py "/data/run1/ts_*.nc" /scratch/run1.zarr --abs-error 0.05 --gpus 16

Run it where it can outlive the whole job (a long CPU job or a tmux session on a login
node): this process holds the Dask scheduler. If it dies, or the workers' jobs hit their
walltime, run the same command again: finished regions are kept, the rest is redone.
Check the result with ``nncodec verify /scratch/run1.zarr --source "/data/run1/ts_*.nc"``.

The same run from the command line::

    nncodec compress "/data/run1/ts_*.nc" /scratch/run1.zarr --abs-error 0.05 \\
        --jobqueue workflows/jobqueue.yaml --cluster slurm --workers 16 --gpu
"""

from __future__ import annotations

import argparse
from pathlib import Path

import dask.config
from distributed import Client

from nncodec import parallel

JOBQUEUE = Path(__file__).resolve().with_name("jobqueue.yaml")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", help="netCDF files or globs (quoted), or one Zarr store")
    parser.add_argument("output", help="the archive (on a shared filesystem)")
    parser.add_argument("--abs-error", type=float, help="error bound of every value (default: learned mode)")
    parser.add_argument("--quality", type=int, help="rate level 1-8 (default 4)")
    parser.add_argument("--gpus", type=int,
                        help="GPU workers = batch jobs (default: dask.config nncodec.n-workers, else 1)")
    parser.add_argument("--jobqueue", default=JOBQUEUE,
                        help="dask-jobqueue settings (default: the file beside this one)")
    args = parser.parse_args(argv)

    gpus = args.gpus or dask.config.get("nncodec.n-workers") or 1
    with parallel.jobqueue_cluster(args.jobqueue, "slurm") as cluster, Client(cluster) as client:
        cluster.scale(n=gpus)
        print(f"{gpus} GPU workers requested; dashboard: {client.dashboard_link}")
        summary = parallel.compress(
            args.inputs, args.output, abs_error=args.abs_error, quality=args.quality, client=client,
            engine=parallel.Engine(gpu=True),  # coding tasks run only on workers with GPU=1
            progress=True,
        )
    print(summary.format())


if __name__ == "__main__":
    main()

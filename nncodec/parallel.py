"""Archives at scale: many netCDF files (or a Zarr store) into one nncodec Zarr store, with Dask.

The workflow is a thin layer over xarray, Dask and Zarr:

1. the inputs are opened lazily (``xr.open_mfdataset`` / ``xr.open_zarr``) and every
   variable gets chunks that suit the codec (:func:`plan_chunks`);
2. the store's metadata, attributes and index coordinates are written first
   (``Dataset.to_zarr(compute=False)``), with nncodec as the codec of the chosen variables
   (:func:`nncodec.xarray.encoding`) and the default lossless codec for the others;
3. the data are written region by region (``Dataset.to_zarr(region=...)``), a bounded
   number of regions in flight on a Dask cluster, so neither the workers' nor the
   scheduler's memory grows with the size of the archive;
4. after all chunks of a region are written, a marker file for it appears (atomically,
   by rename) in ``STORE/.nncodec-progress/done/``. Running the same command again skips
   the marked regions and rewrites the others whole, so a chunk half-written by a killed
   process is always rewritten. When every region is marked the root attribute
   ``nncodec_complete`` (UTC time) is set: a store without it is unfinished.

The codec is deterministic on a machine, so a resumed store holds the same chunk bytes as
an uninterrupted one. :func:`verify` decodes every chunk (each checked against its CRC),
checks completeness and, given the source, the error bounds and fidelity thresholds.

Given fidelity thresholds instead of a codec setting, :func:`compress` picks each
variable's setting on sample chunks (:func:`nncodec.fidelity.choose_setting`) and records
the choice in the plan, so a resumed run codes with the settings it started with.

Knobs left as ``None`` fall back to ``dask.config`` (``nncodec.*``, see
:data:`CONFIG_DEFAULTS`), e.g. ``DASK_NNCODEC__CHUNK_BYTES=8MiB``.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import json
import math
import os
import shutil
import time
import urllib.parse
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import dask
import dask.config
import dask.system
import dask.utils
import numpy as np
import xarray as xr
import zarr

from . import format as fmt
from .codec import NNCodec
from .errors import NNCodecError
from .fidelity import FidelityChoice, as_thresholds, check_thresholds, choose_setting, fidelity_report
from .normalize import DEFAULT_TILE

CONFIG_DEFAULTS = {
    "nncodec": {
        # target bytes of one chunk (uncompressed): the codec's unit of work
        "chunk-bytes": "4MiB",
        # target bytes of one region: the unit of restart (one marker file each)
        "region-bytes": "64MiB",
        "zarr-format": 3,
        # chunks per variable decoded against the source for the PSNR / max-error summary,
        # and coded with candidate settings to choose one by fidelity thresholds
        "sample-chunks": 4,
        # Dask workers of the default LocalCluster (None: one per CPU core)
        "n-workers": None,
        # regions submitted at once (None: twice the cluster's threads)
        "regions-in-flight": None,
    }
}
dask.config.update_defaults(CONFIG_DEFAULTS)

PROGRESS_DIR = ".nncodec-progress"
COMPLETE_ATTR = "nncodec_complete"
PLAN_VERSION = 1
# a 2D slice up to this many values is one chunk; a larger slice is cut into pieces whose
# edges are multiples of the codec's tile and at most this edge
MAX_FIELD_EDGE = 1024
# verify --fidelity keeps a variable (decoded and source) on the workers for its report's
# two passes when both take at most this share of their memory limits
HELD_SHARE = 0.25
# encoding keys that say what the values mean (CF); storage keys of the source (its chunks,
# compressors, netCDF settings) are dropped because the archive chooses its own
_CF_KEYS = ("dtype", "_FillValue", "missing_value", "scale_factor", "add_offset", "units", "calendar")
# zarr warns about any folder in a store that is not a Zarr node, like the progress record
_FOREIGN_NODE = f"Object at {PROGRESS_DIR} is not recognized"
_V3_CONSOLIDATED = "Consolidated metadata is currently not part"


# -- chunks and regions ------------------------------------------------------------------
def _config_bytes(value, key: str) -> int:
    """A byte count from an argument, or from ``dask.config`` when it is None."""
    value = dask.config.get(f"nncodec.{key}") if value is None else value
    n = dask.utils.parse_bytes(value) if isinstance(value, str) else int(value)
    if n <= 0:
        raise ValueError(f"{key} must be a positive number of bytes (e.g. '4MiB'), got {value!r}")
    return n


def _fill(counts, unit_bytes: int, target: int) -> tuple[int, ...]:
    """How many units to take along each axis, innermost first, to stay near ``target`` bytes.

    Inner axes are taken whole while they fit, the first one that does not is taken in
    part, and outer axes get 1: the block is contiguous and about ``target`` bytes (at
    least one unit).
    """
    room = max(1, target // max(1, unit_bytes))
    taken = []
    for n in reversed(counts):
        k = max(1, min(n, room))
        taken.append(k)
        room //= k
    return tuple(reversed(taken))


def _field_edge(n: int) -> int:
    """Chunk edge along one axis of a large 2D field: near-equal pieces, multiples of the tile."""
    pieces = math.ceil(n / MAX_FIELD_EDGE)
    return min(n, DEFAULT_TILE * math.ceil(n / pieces / DEFAULT_TILE))


def plan_chunks(shape, itemsize: int, chunk_bytes=None, fields: bool = True) -> tuple[int, ...]:
    """Chunk shape for a variable of the archive.

    Parameters
    ----------
    shape : tuple of int
        The variable's shape.
    itemsize : int
        Bytes per value.
    chunk_bytes : int or str, optional
        Target (uncompressed) chunk size; default ``dask.config`` ``nncodec.chunk-bytes``.
    fields : bool
        The last two axes are a 2D field coded by nncodec: the whole slice is one chunk
        when it has at most 1024 x 1024 values, else its edges are cut into near-equal
        multiples of the codec's tile (256), at most 1024. The leading axes then take as
        many slices as fit ``chunk_bytes`` (innermost first). With ``fields=False`` (for
        variables stored losslessly) all axes are filled that way.

    Returns
    -------
    tuple of int

    Examples
    --------
    >>> plan_chunks((13, 6, 145, 192), 4, "4MiB")
    (6, 6, 145, 192)
    >>> plan_chunks((2161, 4320), 2)
    (768, 1024)
    """
    target = _config_bytes(chunk_bytes, "chunk-bytes")
    shape = tuple(int(n) for n in shape)
    if not fields or len(shape) < 2:
        return _fill(shape, itemsize, target)
    rows, cols = shape[-2:]
    if rows * cols > MAX_FIELD_EDGE * MAX_FIELD_EDGE:
        rows, cols = _field_edge(rows), _field_edge(cols)
    return _fill(shape[:-2], rows * cols * itemsize, target) + (rows, cols)


@dataclass(frozen=True)
class Region:
    """A box of whole chunks of one variable: the unit of work and of restart."""

    name: str
    bounds: tuple[tuple[int, int], ...]  # (start, stop) per axis

    @property
    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in self.bounds)

    @property
    def nvalues(self) -> int:
        return math.prod(b - a for a, b in self.bounds)

    @property
    def id(self) -> str:
        """File name of the region's marker."""
        return "_".join(f"{a}-{b}" for a, b in self.bounds)

    def chunk_coords(self, chunks) -> list[tuple[int, ...]]:
        """Grid coordinates of the chunks in the region."""
        return list(itertools.product(*(range(a // c, -(-b // c)) for (a, b), c in zip(self.bounds, chunks))))


def regions(name: str, shape, chunks, itemsize: int, region_bytes=None) -> list[Region]:
    """Cut a variable into regions of whole chunks of about ``region_bytes``.

    Regions are boxes of the chunk grid (inner axes whole while they fit), so a region
    write never touches a chunk of another region and regions can run in any order.
    """
    target = _config_bytes(region_bytes, "region-bytes")
    grid = [-(-n // c) for n, c in zip(shape, chunks)]
    per = _fill(grid, int(np.prod(chunks)) * itemsize, target)
    out = []
    for start in itertools.product(*(range(0, g, p) for g, p in zip(grid, per))):
        out.append(Region(name, tuple((k * c, min((k + p) * c, n)) for k, p, c, n in zip(start, per, chunks, shape))))
    return out


# -- inputs ------------------------------------------------------------------------------
def _is_zarr(path) -> bool:
    p = Path(path)
    return p.suffix == ".zarr" or any((p / m).exists() for m in ("zarr.json", ".zgroup"))


def open_inputs(inputs, chunks=None) -> xr.Dataset:
    """Open the inputs lazily as one Dataset.

    Parameters
    ----------
    inputs : str, path, list of them, or xarray.Dataset
        netCDF files or glob patterns (combined by their coordinates with
        ``xr.open_mfdataset``), or one Zarr store. A Dataset is returned as it is.
    chunks : dict, optional
        Dask chunks per dimension to open with (default: the files' own).

    Returns
    -------
    xarray.Dataset

    Raises
    ------
    FileNotFoundError
        A path or pattern matches nothing.
    ValueError
        Several Zarr stores, or a store mixed with files, or no inputs.
    """
    if isinstance(inputs, xr.Dataset):
        return inputs
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise ValueError("no inputs given: name netCDF files (globs allowed) or one Zarr store")
    chunks = {} if chunks is None else chunks
    if any(_is_zarr(item) for item in items):
        if len(items) > 1:
            raise ValueError(
                f"give one Zarr store or netCDF files, not {len(items)} inputs with a store among them; "
                "to combine stores, open them with xarray and pass the Dataset to nncodec.parallel.compress"
            )
        if not Path(items[0]).exists():
            raise FileNotFoundError(f"Zarr store {os.fspath(items[0])!r} does not exist; check the path")
        return xr.open_zarr(items[0], chunks=chunks)
    paths = []
    for item in items:
        matches = sorted(glob.glob(os.fspath(item)))
        if not matches:
            raise FileNotFoundError(
                f"no file matches {os.fspath(item)!r}: check the path (quote a glob so the shell passes it on)"
            )
        paths.extend(matches)
    # combine along the coordinates that differ between files (e.g. time); variables without
    # that dimension are taken from the first file; other coordinates must match exactly
    return xr.open_mfdataset(
        paths, chunks=chunks, combine="by_coords", data_vars="minimal", coords="minimal",
        compat="override", join="exact",
    )


def _input_paths(inputs) -> list[str] | None:
    """The inputs as recorded in the plan (resolved paths; None for a Dataset)."""
    if isinstance(inputs, xr.Dataset):
        return None
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    return sorted(os.path.abspath(p) for item in items for p in (glob.glob(os.fspath(item)) or [item]))


# -- engines -----------------------------------------------------------------------------
#: glibc malloc thresholds for the worker processes of the clusters nncodec starts itself.
#: distributed's nanny sets MALLOC_TRIM_THRESHOLD_=65536 (to hand freed memory back to the
#: system); setting a threshold also stops glibc from raising its mmap threshold as it
#: goes, so every temporary over 128 KiB (a tile's activations) is mapped and page-faulted
#: afresh: 145 x 192 chunks decoded 30 % slower than in a plain process. With both at
#: 16 MiB the temporaries stay on the heap, and memory beyond 16 MiB still goes back.
WORKER_MALLOC = {"MALLOC_TRIM_THRESHOLD_": 16 * 2**20, "MALLOC_MMAP_THRESHOLD_": 16 * 2**20}


def _nanny_environ() -> dict:
    """The environment distributed's nannies give their workers (dask config)."""
    return dask.config.get("distributed.nanny.pre-spawn-environ", default=None) or {}


def _worker_malloc() -> dict:
    """:data:`WORKER_MALLOC`, or nothing where the user set an mmap threshold (in
    distributed's worker environment or this process's): theirs stands."""
    user = "MALLOC_MMAP_THRESHOLD_" in _nanny_environ() or "MALLOC_MMAP_THRESHOLD_" in os.environ
    return {} if user else dict(WORKER_MALLOC)


@contextlib.contextmanager
def worker_settings():
    """A context in which the nannies of clusters started in this process give their
    workers :data:`WORKER_MALLOC` (used by :class:`Engine`; hold it for the cluster's
    lifetime, since nannies read it again when they restart a worker)::

        with nncodec.parallel.worker_settings(), LocalCluster() as cluster, Client(cluster):
            ...

    A nanny lets this process's environment override its configuration, and writes its
    settings into that environment when it starts a worker (so every cluster started
    earlier left ``MALLOC_TRIM_THRESHOLD_=65536`` there): the variables are set here too,
    and restored on exit.
    """
    malloc = _worker_malloc()
    env = {**_nanny_environ(), **malloc}
    saved = {k: os.environ.get(k) for k in malloc}
    os.environ.update({k: str(v) for k, v in malloc.items()})
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class Engine:
    """Where the work runs: a local cluster (default), a running scheduler, or a batch system.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``).
    jobqueue : str or path, optional
        A dask-jobqueue YAML file (see ``workflows/jobqueue.yaml``): workers are batch jobs.
        A value left null there is taken from ``dask.config``.
    cluster : {"slurm", "pbs"}, optional
        The batch system, with ``jobqueue``.
    n_workers : int, optional
        Workers to start (local: default ``nncodec.n-workers`` or one per core; jobqueue:
        default one job's workers).
    gpu : bool
        Coding tasks ask for the worker resource ``GPU=1`` (``dask.annotate``), so they run
        only on workers that declare it (``--resources GPU=1``, one worker per GPU). A local
        cluster then uses dask-cuda's ``LocalCUDACluster`` (one worker per GPU) when it is
        installed, else one worker with ``GPU=1``. With ``device="auto"`` the codec uses
        CUDA on any worker that has it, with or without this flag.
    """

    scheduler: str | None = None
    jobqueue: str | os.PathLike | None = None
    cluster: str | None = None
    n_workers: int | None = None
    gpu: bool = False

    def __post_init__(self):
        if self.scheduler and self.jobqueue:
            raise ValueError("give either a scheduler address or a jobqueue file, not both")
        if self.jobqueue and self.cluster not in ("slurm", "pbs"):
            raise ValueError(f"a jobqueue file needs cluster='slurm' or 'pbs' (--cluster), got {self.cluster!r}")
        if self.cluster and not self.jobqueue:
            raise ValueError("cluster= (--cluster) goes with a jobqueue file (--jobqueue workflows/jobqueue.yaml)")
        if self.n_workers is not None and self.n_workers < 1:
            raise ValueError(f"n_workers must be at least 1, got {self.n_workers}")

    @property
    def resources(self) -> dict | None:
        """Worker resources each coding task asks for."""
        return {"GPU": 1} if self.gpu else None

    @contextlib.contextmanager
    def client(self):
        """A ``distributed.Client`` connected to the engine, closed (with its cluster) on exit."""
        from distributed import Client

        if self.scheduler:
            with Client(self.scheduler) as client:
                yield client
            return
        with worker_settings(), self._cluster() as cluster, Client(cluster) as client:
            yield client

    def _cluster(self):
        if self.jobqueue:
            return self._jobqueue_cluster()
        n = self.n_workers or dask.config.get("nncodec.n-workers") or dask.system.CPU_COUNT
        # one thread per worker process: the codec's torch work is then single-threaded
        # (distributed's nanny sets OMP_NUM_THREADS=1), and n workers use n cores
        kwargs = {"threads_per_worker": 1, "resources": self.resources}
        if self.gpu:
            try:
                from dask_cuda import LocalCUDACluster
            except ImportError:
                warnings.warn(
                    "gpu=True without dask-cuda: one local worker with GPU=1; install dask-cuda for "
                    "one worker per GPU (LocalCUDACluster)", stacklevel=3,
                )
                from distributed import LocalCluster

                return LocalCluster(n_workers=self.n_workers or 1, processes=True, **kwargs)
            return LocalCUDACluster(n_workers=self.n_workers, **kwargs)
        from distributed import LocalCluster

        return LocalCluster(n_workers=n, processes=True, **kwargs)

    def _jobqueue_cluster(self):
        cluster = jobqueue_cluster(self.jobqueue, self.cluster)
        if self.n_workers:
            cluster.scale(n=self.n_workers)
        else:
            cluster.scale(jobs=1)
        return cluster


def jobqueue_cluster(path, kind: str):
    """A dask-jobqueue cluster (not yet scaled) from a YAML file of settings.

    Parameters
    ----------
    path : str or path
        YAML in ``dask.config`` layout (``jobqueue: {slurm: {...}, pbs: {...}}``), e.g.
        ``workflows/jobqueue.yaml``. The section of ``kind`` becomes the cluster's keyword
        arguments; a null value is left out, so dask-jobqueue takes it from ``dask.config``
        (site files, ``DASK_JOBQUEUE__...`` variables).
    kind : {"slurm", "pbs"}
        The batch system.

    Returns
    -------
    dask_jobqueue.SLURMCluster or dask_jobqueue.PBSCluster
        Call ``.scale(n=...)`` or ``.adapt(...)`` on it, then ``Client(cluster)``.
    """
    import yaml

    try:
        import dask_jobqueue
    except ImportError as e:
        raise ImportError("jobqueue clusters need dask-jobqueue: pip install 'nncodec[hpc]'") from e
    classes = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}
    if kind not in classes:
        raise ValueError(f"cluster must be 'slurm' or 'pbs', got {kind!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"jobqueue file {os.fspath(path)!r} does not exist (see workflows/jobqueue.yaml)")
    section = ((yaml.safe_load(path.read_text()) or {}).get("jobqueue") or {}).get(kind)
    if not section:
        raise ValueError(f"{os.fspath(path)!r} has no jobqueue.{kind} section; see workflows/jobqueue.yaml")
    # config key "name" is the constructor's job_name (its name= names a worker)
    kwargs = {("job_name" if key == "name" else key.replace("-", "_")): value
              for key, value in section.items() if value is not None}
    # the nanny on the node reads its dask config when it starts the worker; a DASK_ variable
    # holding a dict is merged over distributed's defaults there
    malloc = _worker_malloc()
    if malloc:
        prologue = kwargs.get("job_script_prologue", dask.config.get(f"jobqueue.{kind}.job-script-prologue", None))
        kwargs["job_script_prologue"] = [*(prologue or []),
                                         f'export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON="{malloc!r}"']
    return classes[kind](**kwargs)


def _stream(client, jobs, submit):
    """Yield ``(job, future)`` as futures finish, with a bounded number submitted at a time.

    Only a window of the work (``nncodec.regions-in-flight``, default twice the cluster's
    threads, looked up as workers come and go) is ever in the scheduler, so its memory and
    the graph shipped per call do not grow with the archive. Unfinished futures are
    cancelled when the caller stops (an error, Ctrl-C).
    """
    from distributed import as_completed

    jobs = iter(jobs)
    running = {}  # future key -> (job, future)
    done = as_completed()

    def top_up():
        window = dask.config.get("nncodec.regions-in-flight") or 2 * max(1, sum(client.nthreads().values()))
        for job in itertools.islice(jobs, max(0, window - len(running))):
            future = submit(job)
            running[future.key] = (job, future)
            done.add(future)

    top_up()
    try:
        for future in done:
            yield running.pop(future.key)
            top_up()
    finally:
        if running:
            client.cancel([f for _, f in running.values()])


# -- store layout ------------------------------------------------------------------------
def _local(store) -> Path:
    text = os.fspath(store)
    if "://" in text:
        raise ValueError(
            f"{text!r}: archives are written to a local or shared-filesystem path (the progress "
            "record and checks read files); copy the finished store to object storage afterwards"
        )
    return Path(text)


def _progress(store: Path) -> Path:
    return store / PROGRESS_DIR


def _marker(store: Path, region: Region) -> Path:
    return _progress(store) / "done" / urllib.parse.quote(region.name, safe="") / region.id


def _atomic_write(path: Path, text: str) -> None:
    """Write a file so that it exists whole or not at all (write, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


@contextlib.contextmanager
def _quiet_zarr():
    """Silence zarr's warnings about what nncodec does on purpose: the progress folder in
    the store, and consolidated metadata in format 3 (one read opens a large archive)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_FOREIGN_NODE)
        warnings.filterwarnings("ignore", message=_V3_CONSOLIDATED)
        yield


def _consolidate(store: Path) -> None:
    with _quiet_zarr():
        zarr.consolidate_metadata(os.fspath(store))


def _nncodec_config(arr) -> dict | None:
    """The nncodec settings of a Zarr array whose only bytes codec is nncodec, else None."""
    if arr.metadata.zarr_format == 3:
        if arr.compressors or arr.filters or not hasattr(arr.serializer, "to_dict"):
            return None
        spec = arr.serializer.to_dict()
        return dict(spec.get("configuration") or {}) if spec.get("name") == NNCodec.codec_id else None
    if len(arr.compressors) != 1 or arr.filters or getattr(arr.compressors[0], "codec_id", None) != NNCodec.codec_id:
        return None
    return {k: v for k, v in arr.compressors[0].get_config().items() if k != "id"}


def _codec_label(config: dict | None) -> str:
    if config is None:
        return "lossless"
    return "nncodec(" + ", ".join(f"{k}={v}" for k, v in config.items()) + ")" if config else "nncodec()"


# -- plan --------------------------------------------------------------------------------
def _prepare(ds: xr.Dataset, names: list[str], chunk_bytes) -> tuple[xr.Dataset, dict]:
    """The Dataset to write (chunks set, storage encodings dropped) and its chunk plan."""
    variables, plan = {}, {}
    for name, var in ds.variables.items():
        if name in ds.indexes or var.ndim == 0:
            # small and in memory: written with the metadata
            var = var.compute()
        else:
            chunks = plan_chunks(var.shape, var.dtype.itemsize, chunk_bytes, fields=name in names)
            var = var.chunk(dict(zip(var.dims, chunks)))
            plan[name] = chunks
        keep = () if name in names else _CF_KEYS
        var.encoding = {k: v for k, v in var.encoding.items() if k in keep}
        variables[name] = var
    out = xr.Dataset({n: v for n, v in variables.items() if n in ds.data_vars}, attrs=ds.attrs)
    return out.assign_coords({n: v for n, v in variables.items() if n in ds.coords}), plan


def _dim_chunks(ds: xr.Dataset, names, chunk_bytes) -> dict:
    """Per-dimension chunks to reopen the inputs with: the finest any variable's plan needs."""
    out = {}
    for name, var in ds.variables.items():
        if name in ds.indexes or var.ndim == 0:
            continue
        for dim, c in zip(var.dims, plan_chunks(var.shape, var.dtype.itemsize, chunk_bytes, fields=name in names)):
            out[dim] = min(out.get(dim, c), c)
    return out


def _plan_record(ds, chunks, codecs, zarr_format, region_bytes, inputs, model_sha256) -> dict:
    return {
        "nncodec_archive": PLAN_VERSION,
        "zarr_format": zarr_format,
        "region_bytes": region_bytes,
        "inputs": inputs,
        # chunks name their weights: a resumed archive must be coded with the same ones
        "model_sha256": model_sha256,
        "variables": {
            name: {
                "dims": list(ds[name].dims), "shape": list(ds[name].shape), "dtype": str(ds[name].dtype),
                "chunks": list(c), "codec": codecs.get(name),
            }
            for name, c in chunks.items()
        },
    }


def _choose_settings(plan: dict, ds: xr.Dataset, names, thresholds: dict, model, refine: int,
                     previous: dict | None, progress: bool) -> None:
    """Set each variable's codec in ``plan`` to the cheapest that meets ``thresholds``.

    The choices and the thresholds go into the plan. With ``previous``, the plan of the
    run to resume, the choices recorded there are taken instead of choosing again (the
    sample chunks need not decide the same way twice, and the store's chunks are coded
    with them); a plan that still differs is refused by :func:`_start_store` as any other
    change of settings.
    """
    plan["fidelity"] = thresholds
    if previous is not None:
        for name in names:
            recorded = previous["variables"].get(name, {})
            if "fidelity" in recorded:
                plan["variables"][name].update(codec=recorded["codec"], fidelity=recorded["fidelity"])
        return
    n_samples = dask.config.get("nncodec.sample-chunks")
    with contextlib.ExitStack() as stack:
        bar = _bar(stack, progress, total=len(names), unit="variable", desc="choose settings")
        for name in names:
            # read here, in this process: the candidates are coded on these chunks one after the other
            chunks = [np.asarray(ds[name].data[r.slices]) for r in _samples(plan, name, n_samples)]
            try:
                choice = choose_setting(chunks, thresholds, model, refine)
            except ValueError as e:
                raise ValueError(f"variable {name!r}: {e}") from e
            config = NNCodec(model=model, refine=refine, **choice.setting).get_config()
            plan["variables"][name].update(codec={k: v for k, v in config.items() if k != "id"},
                                           fidelity=choice.to_dict())
            if bar is not None:
                bar.update(1)


def _all_regions(plan: dict) -> list[Region]:
    return [
        r
        for name, v in plan["variables"].items()
        for r in regions(name, v["shape"], v["chunks"], np.dtype(v["dtype"]).itemsize, plan["region_bytes"])
    ]


def _start_store(store: Path, ds, encoding, plan, zarr_format, overwrite: bool) -> str:
    """Create the store's metadata (or find the run to resume); returns "new", "resume" or "complete"."""
    record = _read_json(_progress(store) / "plan.json")
    if record is not None and not overwrite:
        if record != plan:
            changed = sorted(k for k in plan if plan[k] != record.get(k))
            how = ("resume it with the nncodec installation (model weights) that started it"
                   if changed == ["model_sha256"] else "rerun with the same inputs and options to resume it")
            raise ValueError(
                f"{os.fspath(store)!r} holds an archive started with other settings (differs in {changed}): "
                f"{how}, or pass overwrite=True (--overwrite) to start again"
            )
        return "complete" if COMPLETE_ATTR in zarr.open_group(os.fspath(store), mode="r").attrs else "resume"
    if store.exists():
        ours = _progress(store).is_dir()  # an archive whose start was cut short: nothing to keep
        if not ours and not (overwrite and _is_zarr(store)):
            raise FileExistsError(
                f"{os.fspath(store)!r} exists and is not an nncodec archive in progress; choose another "
                "output, or pass overwrite=True (--overwrite) to replace a Zarr store"
            )
        shutil.rmtree(store)
    # the progress folder comes first: a store that has it is ours to restart
    _progress(store).mkdir(parents=True)
    with _quiet_zarr():
        ds.to_zarr(os.fspath(store), mode="w-", compute=False, zarr_format=zarr_format, encoding=encoding,
                   consolidated=True)
    # the plan is the last thing written at the start: with it, the metadata is complete
    _atomic_write(_progress(store) / "plan.json", json.dumps(plan, indent=1))
    return "new"


def _write_region(ds: xr.Dataset, store: Path, region: Region, resources):
    """A Delayed that writes one region (``to_zarr(region=...)``)."""
    var = ds[region.name].variable[region.slices]
    sub = xr.Dataset({region.name: var})
    with dask.annotate(resources=resources) if resources else contextlib.nullcontext():
        return sub.to_zarr(
            os.fspath(store), region=dict(zip(var.dims, region.slices)), mode="r+", compute=False,
            write_empty_chunks=True,  # every chunk exists: a missing one means unfinished
            consolidated=True,  # read the metadata consolidated at the start (mode r+ never rewrites it)
        )


# -- checks (run on the workers) ---------------------------------------------------------
def _check_region(store: str, name: str, chunk_coords, origin, source) -> dict:
    """Decode the chunks of a region from their files; compare with the source if given.

    Every failure to decode a chunk is reported with its key: the point is to find
    damaged chunks, not to stop at the first one.
    """
    arr = zarr.open_array(store, path=name, mode="r")
    config = _nncodec_config(arr)
    # device is where to run, not what the data mean: decode wherever this worker can
    codec = NNCodec(**{**config, "device": "auto"}) if config is not None else None
    stats = {"chunks": 0, "missing": [], "corrupt": [], "violations": [], "max_error": 0.0,
             "sse": 0.0, "count": 0, "vmin": math.inf, "vmax": -math.inf}
    for coords in chunk_coords:
        key = f"{name}/{arr.metadata.encode_chunk_key(coords)}"
        path = Path(store) / key
        stats["chunks"] += 1
        if not path.is_file():
            stats["missing"].append(key)
            continue
        box = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(coords, arr.chunks, arr.shape))
        try:
            if codec is None:
                decoded = np.asarray(arr.get_block_selection(coords))
                bound = None
            else:
                raw = path.read_bytes()
                bound = fmt.read_header(raw).bound
                chunk = codec.decode(raw)
                if chunk.shape != arr.chunks:
                    raise NNCodecError(f"decoded shape {chunk.shape} is not the chunk shape {arr.chunks}")
                decoded = chunk[tuple(slice(0, s.stop - s.start) for s in box)]
        except Exception as e:  # noqa: BLE001 - any failure to decode means a damaged chunk
            stats["corrupt"].append((key, f"{type(e).__name__}: {e}"))
            continue
        if source is None or codec is None:
            continue
        src = np.asarray(source[tuple(slice(s.start - o, s.stop - o) for s, o in zip(box, origin))], np.float64)
        out = decoded.astype(np.float64)
        finite = np.isfinite(src)
        err = np.abs(out[finite] - src[finite])
        if err.size:
            # a value that should be finite and is not, or the reverse, breaks any bound
            mismatch = not np.isfinite(err).all() or (np.isfinite(out) != finite).any()
            worst = math.inf if mismatch else float(err.max())
            stats["max_error"] = max(stats["max_error"], worst)
            stats["sse"] += float(np.sum(err**2))
            stats["count"] += int(err.size)
            stats["vmin"] = min(stats["vmin"], float(src[finite].min()))
            stats["vmax"] = max(stats["vmax"], float(src[finite].max()))
            if bound is not None and worst > bound:
                stats["violations"].append((key, worst, bound))
    return stats


def _merge(total: dict, part: dict) -> dict:
    if not total:
        return dict(part)
    out = {k: total[k] + part[k] for k in ("chunks", "missing", "corrupt", "violations", "sse", "count")}
    out.update(max_error=max(total["max_error"], part["max_error"]), vmin=min(total["vmin"], part["vmin"]),
               vmax=max(total["vmax"], part["vmax"]))
    return out


def _psnr(stats: dict) -> float | None:
    """PSNR (dB) of the compared values: 20 log10(range / RMSE); None without any."""
    if not stats or not stats["count"]:
        return None
    rmse = math.sqrt(stats["sse"] / stats["count"])
    if rmse == 0:
        return math.inf
    span = stats["vmax"] - stats["vmin"]
    return 20 * math.log10(span / rmse) if span > 0 else -math.inf


def _run_checks(client, store: Path, boxes, source: xr.Dataset | None, resources, bar=None) -> dict:
    """Run :func:`_check_region` over ``(name, region, coded)`` boxes; merged stats per variable."""
    group = zarr.open_group(os.fspath(store), mode="r")

    def submit(job):
        name, region, coded = job
        coords = region.chunk_coords(group[name].chunks)
        src = None
        if source is not None and coded and name in source.variables:
            # a Dask array argument: the worker gets the source region as one NumPy block
            src = source[name].transpose(*_dims(group[name], source[name].dims)).data[region.slices]
        with dask.annotate(resources=resources) if resources and coded else contextlib.nullcontext():
            # not pure: it reads files that change (a repaired chunk must be read again)
            task = dask.delayed(_check_region, pure=False)(
                os.fspath(store), name, coords, tuple(a for a, _ in region.bounds), src
            )
        return client.compute(task)

    merged = {}
    for (name, region, _), future in _stream(client, boxes, submit):
        merged[name] = _merge(merged.get(name, {}), future.result())
        if bar is not None:
            bar.update(1)
    return merged


def _dims(arr, default) -> list:
    """Dimension names of a Zarr array (as xarray writes them), else ``default``."""
    names = arr.metadata.dimension_names if arr.metadata.zarr_format == 3 else arr.attrs.get("_ARRAY_DIMENSIONS")
    return list(names) if names else list(default)


def _samples(plan: dict, name: str, k: int) -> list[Region]:
    """Up to ``k`` one-chunk regions spread evenly over a variable's chunk grid."""
    v = plan["variables"][name]
    grid = [-(-n // c) for n, c in zip(v["shape"], v["chunks"])]
    total = int(np.prod(grid))
    picks = sorted({int(i) for i in np.linspace(0, total - 1, min(k, total))})
    out = []
    for flat in picks:
        coords = np.unravel_index(flat, grid)
        bounds = tuple((i * c, min((i + 1) * c, n)) for i, c, n in zip(coords, v["chunks"], v["shape"]))
        out.append(Region(name, bounds))
    return out


# -- summaries ---------------------------------------------------------------------------
@dataclass
class VariableSummary:
    """Sizes and fidelity of one variable of an archive."""

    name: str
    shape: tuple
    chunks: tuple
    codec: str
    original_bytes: int
    stored_bytes: int
    psnr: float | None = None
    max_error: float | None = None
    seconds: float | None = None  # writing its regions, in the run that finished the archive
    written_bytes: int | None = None  # uncompressed bytes that run wrote (less than all if resumed)
    choice: FidelityChoice | None = None  # how its codec setting was chosen by fidelity thresholds

    @property
    def ratio(self) -> float:
        return self.original_bytes / self.stored_bytes if self.stored_bytes else math.inf

    @property
    def mb_per_s(self) -> float | None:
        return self.written_bytes / 1e6 / self.seconds if self.seconds and self.written_bytes else None


@dataclass
class ArchiveSummary:
    """What :func:`compress` wrote, or what :func:`info` finds in a store."""

    store: str
    complete: bool
    variables: list[VariableSummary] = field(default_factory=list)
    seconds: float | None = None
    regions_done: int = 0
    regions_total: int = 0
    note: str = ""
    fidelity: dict | None = None  # the thresholds the codec settings were chosen by

    def format(self) -> str:
        """A plain-text report: one row per variable, the totals, then how settings were chosen."""
        head = ("variable", "shape", "chunks", "codec", "original", "stored", "ratio", "PSNR dB", "max error",
                "wall s", "MB/s")
        rows = [head]
        for v in self.variables:
            rows.append((
                v.name, "x".join(map(str, v.shape)), "x".join(map(str, v.chunks)), v.codec,
                _size(v.original_bytes), _size(v.stored_bytes), f"{v.ratio:.1f}", _num(v.psnr, ".1f"),
                _num(v.max_error, ".3g"), _num(v.seconds, ".1f"), _num(v.mb_per_s, ".2f"),
            ))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = [f"{self.store}: {'complete' if self.complete else 'INCOMPLETE'} "
                 f"({self.regions_done}/{self.regions_total} regions)"]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        original = sum(v.original_bytes for v in self.variables)
        stored = sum(v.stored_bytes for v in self.variables)
        total = f"total: {_size(original)} -> {_size(stored)}"
        if stored:
            total += f", ratio {original / stored:.1f}"
        if self.seconds:
            total += f", {self.seconds:.1f} s, {original / 1e6 / self.seconds:.2f} MB/s"
        lines.append(total)
        if self.fidelity is not None:
            lines.append("codec settings chosen by fidelity thresholds "
                         + ", ".join(f"{k}={v}" for k, v in self.fidelity.items()) + ":")
            for v in self.variables:
                if v.choice is not None:
                    first, *tried = v.choice.explain()
                    lines += [f"  {v.name}: {first}"] + [f"    {line}" for line in tried]
            lines.append(f"  (on sample chunks; check the whole store: nncodec verify {self.store} "
                         "--source INPUTS --fidelity FILE)")
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)


def _size(n: int) -> str:
    return dask.utils.format_bytes(n)


def _num(x, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def info(store) -> ArchiveSummary:
    """Describe an archive from the store alone: sizes, codecs, completeness.

    PSNR and max error need the source (:func:`verify`); the values measured on a sample
    of chunks when the archive was written, and the wall time of that run, are shown
    when the store has them.

    Parameters
    ----------
    store : str or path
        A Zarr store (written by :func:`compress` or any nncodec writer).

    Returns
    -------
    ArchiveSummary
    """
    path = _local(store)
    if not path.exists() or not _is_zarr(path):
        raise FileNotFoundError(f"{os.fspath(path)!r} is not a Zarr store; give the path of an OUTPUT.zarr")
    group = zarr.open_group(os.fspath(path), mode="r")
    plan = _read_json(_progress(path) / "plan.json")
    recorded = (_read_json(_progress(path) / "summary.json") or {}).get("variables", {})
    variables = []
    with _quiet_zarr():
        arrays = sorted(group.arrays())
    for name, arr in arrays:
        if plan is not None and name not in plan["variables"]:
            continue  # index coordinates: written with the metadata, not part of the work
        rec = recorded.get(name, {})
        choice = plan["variables"][name].get("fidelity") if plan is not None else None
        variables.append(VariableSummary(
            name=name, shape=arr.shape, chunks=arr.chunks, codec=_codec_label(_nncodec_config(arr)),
            original_bytes=arr.nbytes, stored_bytes=arr.nbytes_stored(), psnr=rec.get("psnr"),
            max_error=rec.get("max_error"), seconds=rec.get("seconds"), written_bytes=rec.get("written_bytes"),
            choice=FidelityChoice.from_dict(choice) if choice else None,
        ))
    summary = ArchiveSummary(os.fspath(path), COMPLETE_ATTR in group.attrs, variables,
                             fidelity=plan.get("fidelity") if plan is not None else None)
    if plan is not None:
        todo = _all_regions(plan)
        summary.regions_total = len(todo)
        summary.regions_done = sum(_marker(path, r).is_file() for r in todo)
    summary.note = (
        "PSNR / max error: measured against the source on sample chunks when the archive was written"
        if recorded else "PSNR / max error: not available without the source"
    ) + f" (check: nncodec verify {os.fspath(path)} --source INPUTS)"
    return summary


# -- the workflow ------------------------------------------------------------------------
def compress(inputs, output, *, variables=None, quality=None, abs_error=None, rel_error=None, target_psnr=None,
             fidelity=None, model=None, refine=0, zarr_format=None, chunk_bytes=None, region_bytes=None, engine=None,
             client=None, overwrite=False, progress=False) -> ArchiveSummary:
    """Compress netCDF files or a Zarr store into a Zarr archive coded with nncodec.

    Resumable: run it again with the same arguments after a crash, a killed job or a
    killed worker and it writes only the regions that are not finished.

    Parameters
    ----------
    inputs : str, path, list of them, or xarray.Dataset
        netCDF files or globs, one Zarr store, or a (lazy) Dataset: see :func:`open_inputs`.
    output : str or path
        The Zarr store to write (a local or shared-filesystem path).
    variables : list of str, optional
        Variables to code with nncodec; default every float data variable with 2+
        dimensions. All others are stored losslessly (Zarr's default codec).
    quality, abs_error, rel_error, target_psnr, model, refine
        Settings of :class:`nncodec.NNCodec`. The codec runs with ``device="auto"``: on
        CUDA on workers that have it, else on the CPU (the bytes decode the same anywhere).
    fidelity : dict, str or path, optional
        Acceptance thresholds (a mapping of :data:`nncodec.fidelity.THRESHOLD_KEYS`, or a
        YAML file of them) instead of ``quality`` / ``abs_error`` / ``rel_error`` /
        ``target_psnr``: each variable is coded with the cheapest setting that meets them
        on ``nncodec.sample-chunks`` sample chunks (:func:`nncodec.fidelity.choose_setting`,
        run in this process before the writing starts). The thresholds and each choice,
        with every setting tried, are recorded in the store and shown by :func:`info`; a
        resumed run keeps the recorded choices. ``verify(..., fidelity=...)`` checks the
        whole store.
    zarr_format : {3, 2}, optional
        Default ``dask.config`` ``nncodec.zarr-format`` (3).
    chunk_bytes, region_bytes : int or str, optional
        Target chunk and region sizes (``"4MiB"``); default ``nncodec.chunk-bytes``,
        ``nncodec.region-bytes``.
    engine : Engine, optional
        Where to run; default a local cluster (one single-threaded worker per core).
    client : distributed.Client, optional
        Run on this client instead (``engine`` is then only used for its ``gpu`` flag).
    overwrite : bool
        Replace ``output`` (an archive or any Zarr store) instead of resuming it.
    progress : bool
        Show a progress bar (tqdm, on stderr).

    Returns
    -------
    ArchiveSummary
        Per variable: sizes, ratio, PSNR and max error on sample chunks, wall time, MB/s.

    Raises
    ------
    ValueError
        Conflicting codec settings, an unknown variable, ``output`` holding an archive
        started with other settings, or fidelity thresholds no setting meets.
    FileExistsError
        ``output`` exists and is not an archive in progress (without ``overwrite``).
    FileNotFoundError
        An input matches no file.
    """
    settings = dict(quality=quality, abs_error=abs_error, rel_error=rel_error, target_psnr=target_psnr)
    codec_kwargs = {k: v for k, v in {**settings, "model": model, "refine": refine or None}.items() if v is not None}
    NNCodec(**codec_kwargs)  # settings errors before any file is touched
    thresholds = None
    if fidelity is not None:
        fixed = [k for k, v in settings.items() if v is not None]
        if fixed:
            flags = ", ".join("--" + k.replace("_", "-") for k in fixed)
            raise ValueError(
                f"fidelity thresholds choose the codec setting themselves: give them or {', '.join(fixed)}, "
                f"not both (drop {flags}, or --fidelity)"
            )
        thresholds = as_thresholds(fidelity)
    from .weights import resolve
    from .xarray import encoding as nncodec_encoding

    store = _local(output)
    zarr_format = zarr_format or dask.config.get("nncodec.zarr-format")
    engine = engine or Engine()
    region_bytes = _config_bytes(region_bytes, "region-bytes")
    started = time.perf_counter()

    ds = open_inputs(inputs)
    names = list(nncodec_encoding(ds, zarr_format, variables, **codec_kwargs))
    if not isinstance(inputs, xr.Dataset):
        # reopen with chunks no larger than the plan's: a source chunk is read in pieces
        ds = open_inputs(inputs, chunks=_dim_chunks(ds, names, chunk_bytes))
    ds, chunks = _prepare(ds, names, chunk_bytes)
    config = {k: v for k, v in NNCodec(**codec_kwargs).get_config().items() if k != "id"}
    plan = _plan_record(ds, chunks, dict.fromkeys(names, config), zarr_format, region_bytes, _input_paths(inputs),
                        resolve(model).sha256)
    if thresholds is not None:
        previous = None if overwrite else _read_json(_progress(store) / "plan.json")
        _choose_settings(plan, ds, names, thresholds, model, refine, previous, progress)
    enc = {}
    for name in names:
        enc.update(nncodec_encoding(ds, zarr_format, [name], **plan["variables"][name]["codec"]))
    for name, c in chunks.items():
        enc.setdefault(name, {})["chunks"] = c
    state = _start_store(store, ds, enc, plan, zarr_format, overwrite)
    if state == "complete":
        summary = info(store)
        summary.note = "already complete: nothing to do\n" + summary.note
        return summary

    todo = [r for r in _all_regions(plan) if not _marker(store, r).is_file()]
    itemsize = {n: np.dtype(v["dtype"]).itemsize for n, v in plan["variables"].items()}
    nbytes = {r: r.nvalues * itemsize[r.name] for r in todo}
    first, last, written = {}, {}, {}
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(engine.client())
        bar = _bar(stack, progress, total=sum(nbytes.values()), unit="B", desc="compress")

        def submit(region):
            first.setdefault(region.name, time.perf_counter())
            resources = engine.resources if region.name in names else None
            return client.compute(_write_region(ds, store, region, resources))

        for region, future in _stream(client, todo, submit):
            future.result()  # raises the task's error; the finished regions stay marked
            _atomic_write(_marker(store, region), json.dumps({"finished": _now()}))
            last[region.name] = time.perf_counter()
            written[region.name] = written.get(region.name, 0) + nbytes[region]
            if bar is not None:
                bar.update(nbytes[region])

        group = zarr.open_group(os.fspath(store), mode="r+")
        group.attrs[COMPLETE_ATTR] = _now()
        _consolidate(store)

        k = dask.config.get("nncodec.sample-chunks")
        boxes = [(n, r, True) for n in names for r in _samples(plan, n, k)]
        stats = _run_checks(client, store, boxes, ds, engine.resources)
    elapsed = time.perf_counter() - started

    record = {"seconds": elapsed, "variables": {}}
    for name in plan["variables"]:
        rec = {"seconds": last[name] - first[name], "written_bytes": written[name]} if name in last else {}
        if name in stats:
            rec.update(psnr=_psnr(stats[name]), max_error=stats[name]["max_error"])
        record["variables"][name] = rec
    _atomic_write(_progress(store) / "summary.json", json.dumps(record, indent=1))
    summary = info(store)
    summary.seconds = elapsed
    if state == "resume":
        summary.note = "resumed: wall times are this run's\n" + summary.note
    return summary


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _bar(stack, progress: bool, **kwargs):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return stack.enter_context(tqdm(unit_scale=True, **kwargs))


@dataclass
class VerifyReport:
    """What :func:`verify` found."""

    store: str
    complete: bool
    problems: list[str]
    variables: dict
    # per variable, with fidelity thresholds: {"ok": bool, "failures": [...], "report": fidelity_report(...)}
    fidelity: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.complete and not self.problems and all(f["ok"] for f in self.fidelity.values())

    def format(self) -> str:
        lines = [f"{self.store}: {'OK' if self.ok else 'FAILED'}"]
        for name, s in self.variables.items():
            line = f"  {name}: {s['chunks']} chunks"
            if s["count"]:
                line += f", max error {s['max_error']:.4g}, PSNR {_psnr(s):.1f} dB vs source"
            lines.append(line)
            if name in self.fidelity:
                f = self.fidelity[name]
                lines.append(f"    fidelity thresholds, whole variable: {'pass' if f['ok'] else 'FAIL'}")
                lines += [f"      {failure}" for failure in f["failures"]]
        if not self.complete:
            lines.append("  incomplete: run the same `nncodec compress` command again to finish it")
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


def verify(store, source=None, *, fidelity=None, engine=None, client=None, progress=False) -> VerifyReport:
    """Decode every chunk of an archive; check completeness and, with the source, the bounds.

    Parameters
    ----------
    store : str or path
        The archive.
    source : inputs, optional
        What it was written from (as for :func:`compress`). Each chunk coded with an
        error bound is then checked against it (max |decoded - source| <= bound).
    fidelity : dict, str or path, optional
        Acceptance thresholds (a mapping or a YAML file, as for :func:`compress`), checked
        with :func:`nncodec.fidelity.check_thresholds` on the
        :func:`~nncodec.fidelity.fidelity_report` of each whole nncodec variable against
        ``source`` (needed). The report is computed lazily on the cluster, so a variable
        larger than memory is fine; it reads the store once more where a variable and its
        source take at most a quarter of the workers' memory (kept there for the report's
        two passes), else twice more.
    engine : Engine, optional
        Where to run; default a local cluster.
    client : distributed.Client, optional
        Run on this client instead.
    progress : bool
        Show a progress bar.

    Returns
    -------
    VerifyReport
        ``ok`` is False for an unfinished archive, a missing or undecodable chunk (listed
        by key), a bound violation or a variable failing the fidelity thresholds.
    """
    thresholds = None
    if fidelity is not None:
        if source is None:
            raise ValueError("fidelity thresholds compare the store with what it was written from: "
                             "give the source too (source=..., --source INPUTS)")
        thresholds = as_thresholds(fidelity)
    path = _local(store)
    if not path.exists() or not _is_zarr(path):
        raise FileNotFoundError(f"{os.fspath(path)!r} is not a Zarr store; give the path of an OUTPUT.zarr")
    engine = engine or Engine()
    group = zarr.open_group(os.fspath(path), mode="r")
    plan = _read_json(_progress(path) / "plan.json")
    problems = []
    if plan is not None:
        todo = _all_regions(plan)
        unmarked = [r for r in todo if not _marker(path, r).is_file()]
        complete = COMPLETE_ATTR in group.attrs and not unmarked
        if unmarked:
            problems.append(f"{len(unmarked)} of {len(todo)} regions were never finished")
    else:
        # not written by compress: every array in whole-array regions of the default size
        with _quiet_zarr():
            arrays = list(group.arrays())
        todo = [r for name, a in arrays for r in regions(name, a.shape, a.chunks, a.dtype.itemsize)]
        complete = True
    src = None
    if source is not None:
        src = open_inputs(source, chunks=_store_chunks(group, todo))
    coded = {name for name in {r.name for r in todo} if _nncodec_config(group[name]) is not None}
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(engine.client())
        bar = _bar(stack, progress, total=len(todo), unit="region", desc="verify")
        stats = _run_checks(client, path, [(r.name, r, r.name in coded) for r in todo], src, engine.resources, bar)
        checked = {}
        if thresholds is not None:
            checked = _check_fidelity(client, path, src, sorted(n for n in coded if n in src.variables), thresholds)
    for name, s in stats.items():
        problems += [f"missing chunk {key}" for key in s["missing"]]
        problems += [f"corrupt chunk {key}: {msg}" for key, msg in s["corrupt"]]
        problems += [f"error bound exceeded in {key}: {err:.4g} > {bound:.4g}" for key, err, bound in s["violations"]]
    if source is not None and not any(stats[n]["count"] for n in coded if n in stats):
        problems.append("the source has none of the archive's nncodec variables: nothing was compared")
    return VerifyReport(os.fspath(path), complete, problems, stats, checked)


def _check_fidelity(client, path: Path, source: xr.Dataset, names, thresholds: dict) -> dict:
    """Fidelity report of each whole variable against the source, checked against thresholds.

    The store is read as a Dask array, its chunks decoded on the workers (the source too
    when it comes from files), so a variable need not fit in memory. The report takes two
    passes over both; a variable that fits (:func:`_held`) is read once and kept on the
    workers for them.
    """
    with _quiet_zarr():
        stored = xr.open_zarr(os.fspath(path))
    out = {}
    for name in names:
        decoded = stored[name]
        original = source[name].transpose(*decoded.dims)
        with dask.config.set(scheduler=client):
            report = fidelity_report(*_held(client, [original.data, decoded.data]))
        ok, failures = check_thresholds(report, thresholds)
        out[name] = {"ok": ok, "failures": failures, "report": report}
    return out


def _held(client, arrays: list) -> list:
    """``arrays`` (Dask or NumPy), the Dask ones computed and kept on the cluster's
    workers (``persist``) when together they take at most HELD_SHARE of the workers'
    memory limits; else unchanged (then each pass over them reads them again)."""
    lazy = [a for a in arrays if dask.is_dask_collection(a)]
    limits = [w.get("memory_limit") or 0 for w in client.scheduler_info()["workers"].values()]
    if not lazy or not limits or 0 in limits or sum(a.nbytes for a in lazy) > HELD_SHARE * sum(limits):
        return arrays
    held = iter(client.persist(lazy))
    return [next(held) if dask.is_dask_collection(a) else a for a in arrays]


def _store_chunks(group, todo) -> dict:
    """Per-dimension chunks of the store's region-written arrays (to read the source in step)."""
    out = {}
    for name in {r.name for r in todo}:
        arr = group[name]
        for dim, c in zip(_dims(arr, [f"dim_{i}" for i in range(arr.ndim)]), arr.chunks):
            out[dim] = min(out.get(dim, c), c)
    return out


def decompress(store, output, *, engine=None, client=None, overwrite=False) -> Path:
    """Decode a finished archive into netCDF (``.nc``) or a Zarr store without nncodec.

    Parameters
    ----------
    store : str or path
        A complete archive (its ``nncodec_complete`` attribute set).
    output : str or path
        ``*.nc`` (netCDF4) or ``*.zarr`` (values stored with Zarr's default lossless codec,
        readable without nncodec).
    engine : Engine, optional
        Where to decode; default a local cluster.
    client : distributed.Client, optional
        Run on this client instead.
    overwrite : bool
        Replace an existing output.

    Returns
    -------
    pathlib.Path
        The output written.
    """
    path = _local(store)
    out = _local(output)
    if out.suffix not in (".nc", ".zarr"):
        raise ValueError(f"output {os.fspath(out)!r} must end in .nc (netCDF) or .zarr")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{os.fspath(out)!r} exists; choose another output or pass overwrite=True (--overwrite)")
    if not path.exists() or not _is_zarr(path):
        raise FileNotFoundError(f"{os.fspath(path)!r} is not a Zarr store; give the path of an archive")
    ds = xr.open_zarr(os.fspath(path))
    if COMPLETE_ATTR not in ds.attrs and _progress(path).is_dir():
        raise ValueError(
            f"{os.fspath(path)!r} is unfinished (no {COMPLETE_ATTR} attribute): its unwritten chunks would "
            "read as missing values; finish it by running the same `nncodec compress` command again"
        )
    ds.attrs.pop(COMPLETE_ATTR, None)
    for var in ds.variables.values():
        # the archive's codecs and chunks stay behind; what the values mean is kept
        var.encoding = {k: v for k, v in var.encoding.items() if k in _CF_KEYS}
    engine = engine or Engine()
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(engine.client())
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        with _quiet_zarr():
            # the chunks are decoded by the cluster's workers, then written
            write = ds.to_netcdf(out, compute=False) if out.suffix == ".nc" else \
                ds.to_zarr(os.fspath(out), mode="w-", consolidated=True, compute=False)
            client.compute(write).result()
    return out

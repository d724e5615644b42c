"""Archives at scale (nncodec.parallel): a real multi-file archive on a real LocalCluster,
resumed after the run was killed, verified, and read back lazily on the workers."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from nncodec import parallel
from nncodec.parallel import COMPLETE_ATTR, PROGRESS_DIR, Engine, plan_chunks, regions

from conftest import load_field

ABS = 0.5
# 250 kB chunks hold two 145x192 float32 slices; 300 kB regions hold one chunk: 6 regions of ts
OPTIONS = {"abs_error": ABS, "quality": 4, "chunk_bytes": 250_000, "region_bytes": 300_000}
CLI_OPTIONS = ["--abs-error", str(ABS), "--quality", "4", "--chunk-bytes", "250000", "--region-bytes", "300000"]


def write_inputs(folder: Path) -> str:
    """Three netCDF files of 4 months each (GloSea4 surface temperature); returns their glob."""
    ts = load_field("iris_glosea4_surface_temperature.npz", "ts")[:2].reshape(12, 145, 192)
    ds = xr.Dataset(
        {
            "ts": (("time", "lat", "lon"), ts, {"units": "K", "long_name": "surface temperature"}),
            "count": (("time",), np.arange(100, 112, dtype="int32"), {"long_name": "a non-float variable"}),
        },
        coords={
            "time": pd.date_range("2000-01-01", periods=12, freq="MS"),
            "lat": ("lat", np.linspace(-90, 90, 145), {"units": "degrees_north"}),
            "lon": ("lon", np.arange(192) * 1.875, {"units": "degrees_east"}),
        },
        attrs={"title": "GloSea4 TS", "source": "iris-sample-data (Open Government Licence, Crown copyright)"},
    )
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        ds.isel(time=slice(4 * i, 4 * i + 4)).to_netcdf(folder / f"ts_{i}.nc")
    return str(folder / "ts_*.nc")


def chunk_files(store: Path) -> dict:
    """Bytes of every chunk file of a store, by key (metadata and progress records left out)."""
    out = {}
    for path in store.rglob("*"):
        key = path.relative_to(store).as_posix()
        # left out: metadata, the progress record, and zarr's temporary files of a killed write
        if path.is_file() and not key.startswith(PROGRESS_DIR) and not path.name.startswith((".z", "zarr.json")) \
                and not path.name.endswith(".partial"):
            out[key] = path.read_bytes()
    return out


@contextlib.contextmanager
def local_cluster():
    """A client of a real LocalCluster: 2 worker processes, 1 thread each."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c, \
            Client(c) as client:
        yield client


@pytest.fixture(scope="module")
def cluster():
    with local_cluster() as client:
        yield client


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="module")
def archive(cluster, inputs, tmp_path_factory):
    store = tmp_path_factory.mktemp("archive") / "ts.zarr"
    summary = parallel.compress(inputs, store, client=cluster, **OPTIONS)
    return store, summary


# -- plans ------------------------------------------------------------------------------
def test_plan_chunks_follow_the_tiles_and_the_byte_target():
    # a slice of at most 1024x1024 values is one chunk; leading axes fill ~4 MiB
    assert plan_chunks((13, 6, 145, 192), 4, "4MiB") == (6, 6, 145, 192)
    assert plan_chunks((100, 145, 192), 4, 250_000) == (2, 145, 192)
    # ETOPO5-sized slices: edges cut into near-equal multiples of 256, at most 1024
    assert plan_chunks((2161, 4320), 2, "4MiB") == (768, 1024)
    assert plan_chunks((3, 1024, 1024), 4, 1) == (1, 1024, 1024)
    # lossless variables fill all axes
    assert plan_chunks((10, 1000), 8, 16_000, fields=False) == (2, 1000)


def test_regions_cover_every_chunk_once():
    shape, chunks = (7, 5, 300, 200), (2, 1, 128, 200)
    cut = regions("v", shape, chunks, 4, 3 * 2 * 128 * 200 * 4)
    seen = np.zeros(shape, int)
    for r in cut:
        seen[r.slices] += 1
        # region edges are chunk edges (or the array's end): no chunk is shared
        for (a, b), c, n in zip(r.bounds, chunks, shape):
            assert a % c == 0 and (b % c == 0 or b == n)
    assert (seen == 1).all()
    assert len({r.id for r in cut}) == len(cut)


def test_engine_refuses_inconsistent_settings():
    with pytest.raises(ValueError, match="--cluster"):
        Engine(jobqueue="workflows/jobqueue.yaml")
    with pytest.raises(ValueError, match="jobqueue"):
        Engine(cluster="slurm")
    with pytest.raises(ValueError, match="not both"):
        Engine(scheduler="tcp://localhost:8786", jobqueue="x.yaml", cluster="pbs")


@pytest.mark.distributed
def test_jobqueue_file_gives_one_single_threaded_gpu_worker_per_job():
    yaml_file = Path(__file__).resolve().parents[1] / "workflows" / "jobqueue.yaml"
    scripts = {}
    for kind in ("slurm", "pbs"):
        cluster = parallel.jobqueue_cluster(yaml_file, kind)
        scripts[kind] = cluster.job_script()
        cluster.close()
    for script in scripts.values():
        assert "--resources GPU=1" in script
        assert "--nthreads 1" in script
    assert "#SBATCH --gres=gpu:1" in scripts["slurm"]
    assert "ngpus=1" in scripts["pbs"]
    # the workers' malloc thresholds travel as a dask setting the node's nanny reads
    env = f'export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON="{parallel.WORKER_MALLOC!r}"'
    assert all(env in script for script in scripts.values())


# -- the archive ------------------------------------------------------------------------
@pytest.mark.distributed
def test_archive_reads_back_within_the_bound(archive, inputs):
    store, summary = archive
    src = xr.open_mfdataset(inputs).load()
    out = xr.open_zarr(store).load()
    err = np.abs(out.ts.values.astype(np.float64) - src.ts.values)
    assert err.max() <= ABS
    assert err.max() > ABS / 10  # lossy, and the bound was what paid for it
    assert out.ts.encoding["chunks"] == (2, 145, 192)
    np.testing.assert_array_equal(out["count"].values, src["count"].values)
    assert out["count"].dtype == np.int32
    for name in ("time", "lat", "lon"):
        np.testing.assert_array_equal(out[name].values, src[name].values)
        assert out[name].attrs == src[name].attrs
    assert out.ts.attrs == src.ts.attrs
    assert {k: v for k, v in out.attrs.items() if k != COMPLETE_ATTR} == src.attrs
    assert COMPLETE_ATTR in out.attrs
    # one marker per region: 6 of ts, 1 of count
    assert len(list((store / PROGRESS_DIR / "done").rglob("*-*"))) == 7

    ts = next(v for v in summary.variables if v.name == "ts")
    assert ts.original_bytes == 12 * 145 * 192 * 4
    assert ts.ratio > 5
    assert 0 < ts.max_error <= ABS
    assert ts.psnr > 40
    assert ts.mb_per_s > 0
    assert summary.complete and summary.regions_done == summary.regions_total == 7


@pytest.mark.distributed
def test_verify_passes_and_checks_the_bound_against_the_source(archive, inputs, cluster):
    store, _ = archive
    report = parallel.verify(store, inputs, client=cluster)
    assert report.ok, report.format()
    assert report.variables["ts"]["chunks"] == 6
    assert report.variables["ts"]["count"] == 12 * 145 * 192
    assert report.variables["ts"]["max_error"] <= ABS

    # against a source that is off by 2 K every chunk breaks its bound
    shifted = xr.open_mfdataset(inputs)
    shifted = shifted.assign(ts=shifted.ts + 2.0)
    report = parallel.verify(store, shifted, client=cluster)
    assert not report.ok
    assert sum("error bound exceeded" in p for p in report.problems) == 6
    assert report.variables["ts"]["max_error"] > 2.0 - ABS


@pytest.mark.distributed
def test_fidelity_report_keeps_what_fits_on_the_workers(cluster, monkeypatch):
    """verify --fidelity's two passes read a variable once when it and its source fit in
    a quarter of the workers' memory (persisted there); larger ones stay lazy."""
    import dask.array as da
    from distributed import futures_of

    lazy, eager = da.arange(12_000, chunks=1000) * 0.5, np.ones(3)
    held = parallel._held(cluster, [lazy, eager])
    assert len(futures_of(held[0])) == 12 and not futures_of(lazy) and held[1] is eager
    np.testing.assert_array_equal(held[0].compute(), lazy.compute())
    limits = sum(w["memory_limit"] for w in cluster.scheduler_info()["workers"].values())
    monkeypatch.setattr(parallel, "HELD_SHARE", 0.99 * lazy.nbytes / limits)
    assert parallel._held(cluster, [lazy, eager])[0] is lazy


@pytest.mark.distributed
def test_verify_reports_corrupt_and_missing_chunks_by_key(archive, cluster, tmp_path):
    store = tmp_path / "damaged.zarr"
    shutil.copytree(archive[0], store)
    chunk = store / "ts" / "c" / "2" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10
    chunk.write_bytes(bytes(data))
    (store / "ts" / "c" / "4" / "0" / "0").unlink()

    report = parallel.verify(store, client=cluster)
    assert not report.ok
    assert report.variables["ts"]["chunks"] == 6  # the other chunks were still checked
    corrupt = [p for p in report.problems if p.startswith("corrupt chunk")]
    assert len(corrupt) == 1 and corrupt[0].startswith("corrupt chunk ts/c/2/0/0: CorruptStreamError")
    assert report.problems.count("missing chunk ts/c/4/0/0") == 1
    # a half-written chunk never reads as data
    with pytest.raises(Exception, match="checksum"):
        xr.open_zarr(store).ts[4:6].compute(scheduler="synchronous")


@pytest.mark.distributed
def test_resumed_run_after_kill_equals_uninterrupted(archive, inputs, cluster, tmp_path):
    from nncodec.cli import main

    store = tmp_path / "killed.zarr"
    script = Path(sys.executable).with_name("nncodec")
    proc = subprocess.Popen(
        [str(script), "compress", inputs, str(store), *CLI_OPTIONS, "--workers", "1", "--no-progress"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    done = store / PROGRESS_DIR / "done" / "ts"
    deadline = time.monotonic() + 120
    try:
        while not (done.is_dir() and any(done.iterdir())):
            assert proc.poll() is None, "the run ended before its first region was marked"
            assert time.monotonic() < deadline, "no region was finished within 120 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its cluster, as a killed job would be
        proc.wait()
    marked = {p.name for p in done.iterdir()}
    assert 1 <= len(marked) < 6
    report = parallel.verify(store, client=cluster)
    assert not report.complete and not report.ok

    # a chunk half-written when the run died, in a region without marker
    unmarked = next(r for r in regions("ts", (12, 145, 192), (2, 145, 192), 4, 300_000)
                    if r.id not in marked)
    half = store / "ts" / "c" / str(unmarked.bounds[0][0] // 2) / "0" / "0"
    half.parent.mkdir(parents=True, exist_ok=True)
    half.write_bytes((archive[0] / half.relative_to(store)).read_bytes()[:100])

    assert main(["compress", inputs, str(store), *CLI_OPTIONS, "--scheduler", cluster.scheduler_info()["address"],
                 "--no-progress"]) == 0
    resumed, reference = chunk_files(store), chunk_files(archive[0])
    assert resumed.keys() == reference.keys()
    assert [k for k in reference if resumed[k] != reference[k]] == []
    assert parallel.verify(store, client=cluster).ok


@pytest.mark.distributed
def test_rerun_with_other_settings_is_refused(archive, inputs, tmp_path):
    store, _ = archive
    with pytest.raises(ValueError, match="overwrite"):
        parallel.compress(inputs, store, **{**OPTIONS, "abs_error": 0.1})
    foreign = tmp_path / "notes"
    foreign.mkdir()
    with pytest.raises(FileExistsError, match="not an nncodec archive"):
        parallel.compress(inputs, foreign, **OPTIONS)


@pytest.mark.distributed
def test_workers_decode_lazily_without_importing_nncodec(archive, cluster):
    store, _ = archive
    cluster.restart()  # fresh worker processes: nothing imported by earlier tests
    assert not any(cluster.run(lambda: "nncodec" in sys.modules).values())
    ds = xr.open_zarr(store)
    lazy = ds.ts.sum(dim=("lat", "lon"))  # decoded where the chunks are summed: on the workers
    expected = xr.open_zarr(store).ts.compute(scheduler="synchronous").sum(dim=("lat", "lon"))
    np.testing.assert_allclose(cluster.compute(lazy).result().values, expected.values, rtol=1e-6)
    # zarr found the codec through the package's entry points, on the workers
    assert all(cluster.run(lambda: "nncodec.zarr3" in sys.modules).values())


def _initial_malloc_env() -> dict:
    """The worker process's malloc variables as it started (what glibc read), not as now."""
    start = dict(kv.split("=", 1) for kv in Path("/proc/self/environ").read_text().split("\0") if "=" in kv)
    return {k: start.get(k) for k in parallel.WORKER_MALLOC}


@pytest.mark.distributed
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc (Linux)")
def test_local_engine_workers_start_with_nncodec_malloc_thresholds(monkeypatch):
    """distributed's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which made coding
    about 30 % slower; the clusters nncodec starts give them WORKER_MALLOC from the start,
    also after another cluster's nanny left its setting in this process's environment."""
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # what any earlier LocalCluster leaves
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    with Engine(n_workers=1).client() as client:
        got = list(client.run(_initial_malloc_env).values())
    assert got == [{k: str(v) for k, v in parallel.WORKER_MALLOC.items()}]
    # and the environment is as it was
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536" and "MALLOC_MMAP_THRESHOLD_" not in os.environ


@pytest.mark.distributed
def test_gpu_flag_sends_coding_tasks_only_to_gpu_workers(inputs, tmp_path):
    from distributed import Client, Scheduler, SpecCluster, Worker, get_task_stream

    # two workers in this process, one declaring the resource GPU=1 (no GPU is needed for that)
    workers = {
        "gpu": {"cls": Worker, "options": {"nthreads": 1, "resources": {"GPU": 1}}},
        "cpu": {"cls": Worker, "options": {"nthreads": 1}},
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    with SpecCluster(workers=workers, scheduler=scheduler) as spec, Client(spec) as client:
        gpu = next(a for a, w in client.scheduler_info()["workers"].items() if w["resources"])
        with get_task_stream(client) as stream:
            parallel.compress(inputs, tmp_path / "gpu.zarr", client=client, engine=Engine(gpu=True), **OPTIONS)
    coding = [t for t in stream.data if "store" in str(t["key"]) and "-ts-" in str(t["key"])]
    checks = [t for t in stream.data if "_check_region" in str(t["key"])]
    assert len(coding) >= 6 and len(checks) >= 1
    assert {t["worker"] for t in coding + checks} == {gpu}

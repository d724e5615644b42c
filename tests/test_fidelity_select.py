"""Choosing bits by fidelity: the setting search on real fields, `compress --fidelity` on a real
LocalCluster, and `verify --fidelity` over the whole store."""

import contextlib
import io
import json
import shutil
from pathlib import Path

import dask
import pytest
import xarray as xr
import zarr

from nncodec import parallel
from nncodec.cli import main
from nncodec.fidelity import choose_setting, load_thresholds
from nncodec.parallel import COMPLETE_ATTR, PROGRESS_DIR

from test_parallel import local_cluster

ROOT = Path(__file__).resolve().parents[1]
# the shipped example: correlation >= 0.99999, spectrum within 5 % up to k = 32, |bias| <= 0.01 sigma,
# every value within 0.1, NaN mask kept
EXAMPLE = ROOT / "examples" / "fidelity.yaml"
LOOSE = {"correlation_min": 0.99, "require_nan_mask": True}
# one 2D slice per chunk and per region: two chunks per variable, both sampled (nncodec.sample-chunks is 4)
SLICE_BYTES = 145 * 192 * 4
SIZES = ["--chunk-bytes", str(SLICE_BYTES), "--region-bytes", str(SLICE_BYTES)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Two months of the demo data: GloSea4 surface temperature and COADS SST (with NaN land)."""
    with xr.open_dataset(ROOT / "examples" / "data" / "demo.nc") as demo:
        small = demo.isel(month=slice(0, 2), month_sst=slice(0, 2)).load()
    path = tmp_path_factory.mktemp("inputs") / "demo2.nc"
    small.to_netcdf(path)
    return str(path)


@pytest.fixture(scope="module")
def ts_chunks(inputs):
    """The sample chunks compress reads for ts: its two one-slice chunks."""
    with xr.open_dataset(inputs) as ds:
        ts = ds.ts.values
    return [ts[0:1], ts[1:2]]


@pytest.fixture(scope="module")
def choices(ts_chunks):
    return {"loose": choose_setting(ts_chunks, LOOSE), "strict": choose_setting(ts_chunks, EXAMPLE)}


@pytest.fixture(scope="module")
def cluster():
    with local_cluster() as client:
        yield client


def _plan(store: Path) -> dict:
    return json.loads((store / PROGRESS_DIR / "plan.json").read_text())


# -- the search --------------------------------------------------------------------------
def test_loose_thresholds_choose_fewer_bits_than_strict(choices):
    loose, strict = choices["loose"], choices["strict"]
    assert loose.setting == {"quality": 1}  # the learned codec's fewest bits meet correlation 0.99
    assert set(strict.setting) == {"abs_error"}  # no learned level keeps every value within 0.1
    assert strict.setting["abs_error"] <= 0.1
    assert loose.chosen.bits_per_value < 0.5 < 1.5 < strict.chosen.bits_per_value
    assert 5 * loose.chosen.bytes < strict.chosen.bytes
    for choice in (loose, strict):
        assert choice.chosen.values == 2 * 145 * 192  # both sample chunks
        passing = [t for t in choice.tried if t.passed]
        assert choice.chosen.bytes == min(t.bytes for t in passing)
        for t in choice.tried:
            # a trial passes, fails naming thresholds, or stops once dearer than one that passed
            assert t.passed + bool(t.failures) + t.dearer == 1, t
            if t.dearer:
                assert t.bytes > choice.chosen.bytes
    # each family is searched from its cheapest member: level 1 passing ends the learned search at once,
    # and a family that never passes is probed at 1, 2, 4, 8
    assert [t.setting for t in loose.tried if "quality" in t.setting] == [{"quality": 1}]
    levels = [t for t in strict.tried if "quality" in t.setting]
    assert [t.setting["quality"] for t in levels] == [1, 2, 4, 8]
    assert all(t.failures[0].startswith("correlation_min") for t in levels)
    bounds = [t for t in strict.tried if "abs_error" in t.setting]
    assert bounds[0].setting == {"abs_error": 0.1}  # the ladder starts at abs_error_max
    assert len(strict.tried) <= 4 + 8
    lines = strict.explain()
    assert lines[0].startswith(f"abs_error={strict.setting['abs_error']:.4g}: ")
    assert len(lines) == 1 + len(strict.tried)


def test_no_passing_setting_is_a_clear_error(ts_chunks, inputs, tmp_path):
    with pytest.raises(ValueError, match=r"quality=8: abs_error_max: .* violated.*loosen these thresholds"):
        choose_setting(ts_chunks[:1], {"abs_error_max": 0})
    store = tmp_path / "never.zarr"
    with pytest.raises(ValueError, match=r"variable 'ts': no codec setting meets the thresholds"):
        parallel.compress(inputs, store, variables=["ts"], fidelity={"abs_error_max": 0}, chunk_bytes=SLICE_BYTES)
    assert not store.exists()  # chosen before any file is written


def test_fidelity_with_a_fixed_setting_or_verify_without_source_is_refused(tmp_path, capsys):
    assert main(["compress", "in.nc", str(tmp_path / "o.zarr"), "--fidelity", str(EXAMPLE), "--quality", "3"]) == 2
    assert "not both (drop --quality, or --fidelity)" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "o.zarr"), "--fidelity", str(EXAMPLE)]) == 2
    assert "give the source too" in capsys.readouterr().err
    assert not (tmp_path / "o.zarr").exists()


# -- archives ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def strict_store(cluster, inputs, tmp_path_factory):
    """`nncodec compress --fidelity examples/fidelity.yaml`, and what it printed."""
    store = tmp_path_factory.mktemp("strict") / "demo.zarr"
    address = cluster.scheduler_info()["address"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["compress", inputs, str(store), "--fidelity", str(EXAMPLE), *SIZES, "--scheduler", address,
                     "--no-progress"]) == 0
    return store, printed.getvalue()


@pytest.fixture(scope="module")
def loose_store(cluster, inputs, tmp_path_factory):
    store = tmp_path_factory.mktemp("loose") / "demo.zarr"
    summary = parallel.compress(inputs, store, fidelity=LOOSE, chunk_bytes=SLICE_BYTES, region_bytes=SLICE_BYTES,
                                client=cluster)
    return store, summary


@pytest.mark.distributed
def test_cli_compress_records_and_reports_the_choice_and_verify_rechecks_it(strict_store, choices, inputs, cluster,
                                                                           capsys, tmp_path):
    store, printed = strict_store
    plan = _plan(store)
    assert plan["fidelity"] == load_thresholds(EXAMPLE)
    # the choice recorded is the search's on the chunks the store holds
    assert plan["variables"]["ts"]["fidelity"] == choices["strict"].to_dict()
    bounds = {name: plan["variables"][name]["codec"]["abs_error"] for name in ("ts", "sst")}
    assert bounds["ts"] == choices["strict"].setting["abs_error"]
    assert bounds["sst"] != bounds["ts"]  # each variable gets its own setting
    for name, bound in bounds.items():
        row = next(line for line in printed.splitlines() if line.startswith(f"{name} "))
        assert f"nncodec(abs_error={bound})" in row
        assert f"  {name}: abs_error={bound:.4g}: " in printed
    assert "codec settings chosen by fidelity thresholds correlation_min=0.99999" in printed
    assert "quality=4: FAIL" in printed
    assert main(["info", str(store)]) == 0
    assert f"  ts: {choices['strict'].explain()[0]}" in capsys.readouterr().out

    address = cluster.scheduler_info()["address"]
    verify = ["verify", str(store), "--source", inputs, "--scheduler", address, "--no-progress", "--fidelity"]
    assert main([*verify, str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{store}: OK")
    assert out.count("fidelity thresholds, whole variable: pass") == 2

    # a file stricter than the one the store was written for fails, naming the threshold
    stricter = tmp_path / "stricter.yaml"
    stricter.write_text(EXAMPLE.read_text().replace("abs_error_max: 0.1", f"abs_error_max: {bounds['ts'] / 4}"))
    assert main([*verify, str(stricter)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{store}: FAILED")
    ts_block = out.split("  ts:")[1].split("  sst:")[0]
    assert "fidelity thresholds, whole variable: FAIL" in ts_block
    assert "abs_error_max: max_abs_error <= value violated" in ts_block


@pytest.mark.distributed
def test_api_loose_store_is_smaller_and_verify_checks_the_whole_variable(loose_store, strict_store, inputs, cluster):
    store, summary = loose_store
    loose = {v.name: v for v in summary.variables}
    strict = {v.name: v for v in parallel.info(strict_store[0]).variables}
    for name in ("ts", "sst"):
        assert set(loose[name].choice.setting) == {"quality"}
        assert loose[name].codec == f"nncodec(quality={loose[name].choice.setting['quality']})"
        assert 3 * loose[name].stored_bytes < strict[name].stored_bytes
    assert summary.fidelity == LOOSE
    assert "codec settings chosen by fidelity thresholds correlation_min=0.99" in summary.format()

    report = parallel.verify(store, inputs, fidelity=LOOSE, client=cluster)
    assert report.ok, report.format()
    ts = report.fidelity["ts"]["report"]
    assert ts["quantiles_exact"] is False  # lazy: computed from Dask arrays of the store
    assert ts["n_valid"] == 2 * 145 * 192
    assert 0.99 <= ts["correlation"] < 0.99999
    assert report.fidelity["sst"]["report"]["nan_mask_identical"] is True

    report = parallel.verify(store, inputs, fidelity=EXAMPLE, client=cluster)
    assert not report.ok
    assert not report.problems  # every chunk is fine: only the thresholds fail
    for name in ("ts", "sst"):
        failed = {line.split(":")[0] for line in report.fidelity[name]["failures"]}
        assert {"correlation_min", "abs_error_max"} <= failed


@pytest.mark.distributed
@pytest.mark.filterwarnings("ignore:Object at .nncodec-progress")
def test_resume_keeps_the_recorded_choice(loose_store, inputs, cluster, tmp_path):
    store = tmp_path / "unfinished.zarr"
    shutil.copytree(loose_store[0], store)
    plan_before = (store / PROGRESS_DIR / "plan.json").read_text()
    marker = sorted((store / PROGRESS_DIR / "done" / "ts").iterdir())[-1]
    marker.unlink()
    group = zarr.open_group(store, mode="r+")
    del group.attrs[COMPLETE_ATTR]
    zarr.consolidate_metadata(store)

    options = {"chunk_bytes": SLICE_BYTES, "region_bytes": SLICE_BYTES, "client": cluster}
    # one sample chunk would choose from other evidence (and record samples=1): the resumed run must not choose
    with dask.config.set({"nncodec.sample-chunks": 1}):
        summary = parallel.compress(inputs, store, fidelity=LOOSE, **options)
    assert summary.complete and "resumed" in summary.note
    assert marker.is_file()
    assert (store / PROGRESS_DIR / "plan.json").read_text() == plan_before
    assert _plan(store)["variables"]["ts"]["fidelity"]["samples"] == 2
    assert parallel.verify(store, inputs, fidelity=LOOSE, client=cluster).ok

    with pytest.raises(ValueError, match=r"differs in \['fidelity'\].*overwrite"):
        parallel.compress(inputs, store, fidelity={**LOOSE, "correlation_min": 0.999}, **options)

"""The nncodec command: compress, info, verify, decompress on real files and a real cluster."""

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import xarray as xr
import zarr

from nncodec import cli
from nncodec.cli import Command, main
from nncodec.parallel import COMPLETE_ATTR

from test_parallel import ABS, CLI_OPTIONS, local_cluster, write_inputs

SCRIPT = Path(sys.executable).with_name("nncodec")


class Archive(NamedTuple):
    address: str  # of the cluster's scheduler, for --scheduler
    inputs: str
    store: Path


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A real LocalCluster, netCDF inputs, and a zarr format 2 archive written by `nncodec compress`."""
    inputs = write_inputs(tmp_path_factory.mktemp("inputs"))
    store = tmp_path_factory.mktemp("cli") / "ts.zarr"
    with local_cluster() as client:
        address = client.scheduler_info()["address"]
        code = main(["compress", inputs, str(store), *CLI_OPTIONS, "--zarr-format", "2", "--scheduler", address,
                     "--no-progress"])
        assert code == 0
        yield Archive(address, inputs, store)


@pytest.mark.distributed
def test_compress_writes_a_format_2_archive_and_reports_it(archive, capsys):
    address, inputs, store = archive
    assert zarr.open_group(store, mode="r").metadata.zarr_format == 2
    src = xr.open_mfdataset(inputs).load()
    out = xr.open_zarr(store).load()
    assert float(np.abs(out.ts - src.ts).max()) <= ABS
    np.testing.assert_array_equal(out["count"].values, src["count"].values)

    # the same command again: nothing left to do
    assert main(["compress", inputs, str(store), *CLI_OPTIONS, "--zarr-format", "2", "--scheduler", address,
                 "--no-progress"]) == 0
    report = capsys.readouterr().out
    assert "already complete" in report
    assert "complete (7/7 regions)" in report
    row = next(line for line in report.splitlines() if line.startswith("ts "))
    assert "nncodec(quality=4, abs_error=0.5)" in row
    ratio = float(re.split(r"\s{2,}", row)[6])  # columns are at least two spaces apart
    assert ratio == pytest.approx(src.ts.nbytes / zarr.open_array(store, path="ts", mode="r").nbytes_stored(), rel=0.01)


@pytest.mark.distributed
def test_info_and_verify(archive, capsys):
    address, inputs, store = archive
    assert main(["info", str(store)]) == 0
    info = capsys.readouterr().out
    assert "complete (7/7 regions)" in info
    assert "measured against the source on sample chunks" in info

    assert main(["verify", str(store), "--source", inputs, "--scheduler", address, "--no-progress"]) == 0
    verified = capsys.readouterr().out
    assert verified.startswith(f"{store}: OK")
    assert "ts: 6 chunks, max error" in verified


@pytest.mark.distributed
def test_info_of_a_store_without_source_record_says_psnr_needs_it(archive, tmp_path, capsys):
    store = archive.store
    plain = tmp_path / "plain.zarr"
    shutil.copytree(store, plain)
    shutil.rmtree(plain / ".nncodec-progress")
    assert main(["info", str(plain)]) == 0
    out = capsys.readouterr().out
    assert "not available without the source" in out
    row = next(line for line in out.splitlines() if line.startswith("ts "))
    assert re.split(r"\s{2,}", row)[7:9] == ["n/a", "n/a"]  # PSNR, max error


@pytest.mark.distributed
def test_verify_exits_1_and_names_a_corrupt_chunk(archive, tmp_path, capsys):
    address, store = archive.address, archive.store
    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(store, damaged)
    chunk = damaged / "ts" / "1.0.0"
    data = bytearray(chunk.read_bytes())
    data[-5] ^= 0xFF
    chunk.write_bytes(bytes(data))
    assert main(["verify", str(damaged), "--scheduler", address, "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{damaged}: FAILED")
    assert "corrupt chunk ts/1.0.0: CorruptStreamError" in out


@pytest.mark.distributed
@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_decompress_gives_the_decoded_values(archive, tmp_path, suffix):
    address, store = archive.address, archive.store
    target = tmp_path / f"decoded{suffix}"
    assert main(["decompress", str(store), str(target), "--scheduler", address]) == 0
    stored = xr.open_zarr(store).load()
    decoded = xr.open_dataset(target, engine="zarr" if suffix == ".zarr" else None).load()
    xr.testing.assert_identical(decoded.drop_attrs(deep=False), stored.drop_attrs(deep=False))
    assert COMPLETE_ATTR not in decoded.attrs
    assert decoded.attrs["title"] == stored.attrs["title"]
    if suffix == ".zarr":
        # readable without nncodec: no array of it names the codec
        assert "nncodec" not in (target / "ts" / "zarr.json").read_text()


@pytest.mark.distributed
@pytest.mark.filterwarnings("ignore:Object at .nncodec-progress")
def test_decompress_refuses_an_unfinished_archive(archive, tmp_path, capsys):
    store = archive.store
    unfinished = tmp_path / "unfinished.zarr"
    shutil.copytree(store, unfinished)
    group = zarr.open_group(unfinished, mode="r+")
    del group.attrs[COMPLETE_ATTR]
    zarr.consolidate_metadata(unfinished)
    assert main(["decompress", str(unfinished), str(tmp_path / "x.nc")]) == 2
    assert "the same `nncodec compress` command again" in capsys.readouterr().err


def test_user_errors_exit_2_naming_the_fix(tmp_path, capsys):
    assert main(["compress", str(tmp_path / "nothing_*.nc"), str(tmp_path / "o.zarr")]) == 2
    assert "no file matches" in capsys.readouterr().err
    assert main(["compress", "a.nc", str(tmp_path / "o.zarr"), "--jobqueue", "workflows/jobqueue.yaml"]) == 2
    assert "--cluster" in capsys.readouterr().err
    assert main(["decompress", str(tmp_path / "s.zarr"), str(tmp_path / "out.txt")]) == 2
    assert "must end in .nc" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing.zarr")]) == 2
    assert "not a Zarr store" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["compress", "a.nc", "o.zarr", "--abs-error", "1", "--rel-error", "0.1"])
    assert stop.value.code == 2


def test_a_subcommand_is_one_entry(monkeypatch, capsys):
    names = [c.name for c in cli.COMMANDS]
    assert names == ["compress", "verify", "info", "decompress", "bench", "models", "train"]
    hello = Command("hello", "greet", lambda p: p.add_argument("who"), lambda a: print(f"hello {a.who}") or 0)
    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, hello])
    assert main(["hello", "world"]) == 0
    assert capsys.readouterr().out == "hello world\n"


@pytest.mark.distributed
def test_installed_script(archive):
    store = archive.store
    result = subprocess.run([str(SCRIPT), "info", str(store)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "complete (7/7 regions)" in result.stdout


def test_cli_imports_neither_torch_nor_dask_jobqueue():
    code = ("import sys, nncodec.cli, nncodec.parallel; "
            "print(sorted(m for m in ('torch', 'dask_jobqueue', 'distributed') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stderr

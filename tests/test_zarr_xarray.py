"""nncodec in real Zarr stores through xarray: both zarr formats, the helper and accessor,
dask reads, NaN masks, edge chunks, and discovery by entry points in fresh processes.

Floors measured with the weights sha256 27c3b93a (hyperprior-climate-v1, mid-training) on
GloSea4 ts, member 12, months 0-1 (2 x 145 x 192 float32, 222,720 bytes): quality 4 gave
PSNR 30.6 dB in 3,214 bytes (69x); abs_error 0.05 K gave 36,216 bytes (6.1x). The floors sit
well below (25 dB, 20x, 3x) because the model is still training; the abs_error bounds are
exact and model-independent.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import dask.array
import numpy as np
import pytest
import xarray as xr
import zarr

import nncodec.xarray
from nncodec import FormatError, NNCodec
from nncodec.format import read_header
from nncodec.zarr3 import NNCodecV3

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# xarray writes consolidated metadata by default; zarr 3 warns that it is outside the spec
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")
QUALITY, PSNR_FLOOR, RATIO_FLOOR = 4, 25.0, 20.0
ABS_ERROR, ABS_RATIO_FLOOR = 0.05, 3.0
CODECS = {  # the spelling each zarr format takes, as in the README
    2: lambda **kw: {"compressors": [NNCodec(**kw)]},
    3: lambda **kw: {"serializer": NNCodecV3(**kw), "compressors": None},
}


def _field(file: str, var: str) -> np.ndarray:
    path = DATA / file
    if not path.exists():
        pytest.fail(f"test data {path} is missing: the tests need ../shared/data beside the repo")
    return np.load(path)[var]


def _dataset(values: np.ndarray, name: str) -> xr.Dataset:
    lat = np.linspace(-90, 90, values.shape[-2])
    lon = np.linspace(0, 360, values.shape[-1], endpoint=False)
    return xr.Dataset({name: (("time", "lat", "lon"), values, {"units": "K"})},
                      coords={"time": np.arange(values.shape[0]), "lat": lat, "lon": lon})


@pytest.fixture(scope="module")
def ts_ds() -> xr.Dataset:
    """GloSea4 surface temperature, held-out member 12, two months: 2 x 145 x 192."""
    return _dataset(_field("iris_glosea4_surface_temperature.npz", "ts")[12, :2], "ts")


@pytest.fixture(scope="module")
def sst_ds() -> xr.Dataset:
    """COADS SST, two months of 90 x 180 with ~41 % NaN land."""
    return _dataset(_field("ferret_coads_climatology.npz", "sst")[:2], "sst")


@pytest.fixture(scope="module")
def abs_store(ts_ds, tmp_path_factory) -> Path:
    """ts written by the accessor in zarr format 3 with abs_error."""
    store = tmp_path_factory.mktemp("abs") / "ts.zarr"
    ts_ds.nncodec.to_zarr(store, abs_error=ABS_ERROR)
    return store


def _psnr(orig: np.ndarray, back: np.ndarray) -> float:
    finite = np.isfinite(orig)
    span = float(orig[finite].max() - orig[finite].min())
    rmse = float(np.sqrt(np.mean((back[finite].astype(np.float64) - orig[finite]) ** 2)))
    return 20 * np.log10(span / rmse)


def _chunk_bytes(array_dir: Path) -> int:
    return sum(p.stat().st_size for p in array_dir.rglob("*")
               if p.is_file() and not p.name.startswith(".") and p.name != "zarr.json")


def _run(script: str, *args) -> str:
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_to_zarr_round_trip_quality(ts_ds, tmp_path, zarr_format):
    store = tmp_path / "ts.zarr"
    enc = {"ts": {**CODECS[zarr_format](quality=QUALITY), "chunks": (1, 145, 192)}}
    ts_ds.to_zarr(store, zarr_format=zarr_format, encoding=enc)
    back = xr.open_zarr(store)
    psnr = _psnr(ts_ds.ts.values, back.ts.values)
    ratio = ts_ds.ts.nbytes / _chunk_bytes(store / "ts")
    assert psnr >= PSNR_FLOOR, f"PSNR {psnr:.2f} dB"
    assert ratio >= RATIO_FLOOR, f"compression ratio {ratio:.1f}"
    assert back.ts.dtype == np.float32 and back.ts.attrs["units"] == "K"
    np.testing.assert_array_equal(back.lat.values, ts_ds.lat.values)  # coordinates stay lossless
    if zarr_format == 3:
        meta = json.loads((store / "ts" / "zarr.json").read_text())
        assert meta["codecs"] == [{"name": "nncodec", "configuration": {"quality": QUALITY}}]
    else:
        meta = json.loads((store / "ts" / ".zarray").read_text())
        assert meta["compressor"] == {"id": "nncodec", "quality": QUALITY}


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_accessor_abs_error_bound(ts_ds, tmp_path, zarr_format):
    store = tmp_path / "ts.zarr"
    ts_ds.nncodec.to_zarr(store, zarr_format=zarr_format, abs_error=ABS_ERROR)
    back = xr.open_zarr(store)
    assert float(np.abs(back.ts.values - ts_ds.ts.values).max()) <= ABS_ERROR
    assert ts_ds.ts.nbytes / _chunk_bytes(store / "ts") >= ABS_RATIO_FLOOR
    assert back.ts.encoding["chunks"] == (1, 145, 192)
    with pytest.raises(FileExistsError):  # mode "w-" by default: an existing store is kept
        ts_ds.nncodec.to_zarr(store, zarr_format=zarr_format, abs_error=ABS_ERROR)


def test_encoding_helper_layout(ts_ds):
    ds = ts_ds.assign(mask=(("lat", "lon"), np.zeros((145, 192), "i2")),
                      big=(("y", "x"), np.broadcast_to(np.float32(0), (3000, 5000))))
    v3 = nncodec.xarray.encoding(ds, abs_error=ABS_ERROR)
    assert sorted(v3) == ["big", "ts"]  # int and 1-D coordinates left alone
    assert v3["ts"]["serializer"] == NNCodecV3(abs_error=ABS_ERROR) and v3["ts"]["compressors"] is None
    assert v3["ts"]["chunks"] == (1, 145, 192) and np.isnan(v3["ts"]["_FillValue"])
    assert v3["big"]["chunks"] == (1536, 1792)  # 2 and 3 near-equal pieces, multiples of 256
    v2 = nncodec.xarray.encoding(ds, zarr_format=2, variables=["mask"], quality=2)
    assert list(v2) == ["mask"] and "_FillValue" not in v2["mask"]
    assert v2["mask"]["compressors"][0].get_config() == {"id": "nncodec", "quality": 2}
    kept = ts_ds.copy(deep=False)
    kept["ts"].encoding = {"chunks": (2, 145, 96)}
    assert nncodec.xarray.encoding(kept)["ts"]["chunks"] == (2, 145, 96)
    # xarray takes the zarr chunks from dask's, which win over stale encoding chunks
    assert "chunks" not in nncodec.xarray.encoding(kept.chunk({"time": 1, "lat": 100}))["ts"]
    assert ts_ds.nncodec.encoding(zarr_format=2)["ts"]["compressors"] == [NNCodec()]


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda ds: nncodec.xarray.encoding(ds, zarr_format=4), ValueError, "zarr_format must be 2 or 3"),
    (lambda ds: nncodec.xarray.encoding(ds, variables="lat"), ValueError, "leave it out of variables="),
    (lambda ds: nncodec.xarray.encoding(ds, variables="nope"), ValueError, "'nope' is not in the Dataset"),
    (lambda ds: nncodec.xarray.encoding(ds.astype("i8"), variables="ts"), TypeError, r"astype\('float32'\)"),
    (lambda ds: nncodec.xarray.encoding(ds[["lat"]]), ValueError, "name the variables to code"),
    (lambda ds: nncodec.xarray.encoding(ds.ts), TypeError, "da.to_dataset"),
    (lambda ds: nncodec.xarray.encoding(ds, quality=0), ValueError, "quality must be a positive"),
    (lambda ds: nncodec.xarray.encoding(ds.assign(ts=ds.ts.assign_attrs(_FillValue=-999.0))),
     ValueError, "attrs.pop"),
    (lambda ds: ds.nncodec.to_zarr({}, mode="a"), ValueError, "append_dim"),
    (lambda ds: ds.nncodec.to_zarr({}, to_zarr_kwargs={"encoding": {}}), ValueError, "merge nncodec.xarray"),
])
def test_encoding_helper_rejects(ts_ds, call, error, message):
    with pytest.raises(error, match=message):
        call(ts_ds)


def test_dask_lazy_read_matches(ts_ds, abs_store):
    lazy = xr.open_zarr(abs_store)
    assert isinstance(lazy.ts.data, dask.array.Array)
    assert lazy.ts.data.chunks == ((1, 1), (145,), (192,))
    computed = lazy.ts.compute().values
    np.testing.assert_array_equal(computed, zarr.open_array(abs_store / "ts", mode="r")[:])
    assert float(np.abs(computed - ts_ds.ts.values).max()) <= ABS_ERROR


def test_dask_backed_lazy_write(ts_ds, tmp_path):
    store = tmp_path / "ts.zarr"
    lazy = ts_ds.chunk({"time": 1, "lat": 100})
    delayed = lazy.nncodec.to_zarr(store, abs_error=ABS_ERROR, to_zarr_kwargs={"compute": False})
    assert not (store / "ts" / "c" / "0" / "0" / "0").exists()  # nothing coded before compute
    delayed.compute()
    back = xr.open_zarr(store).ts
    assert back.encoding["chunks"] == (1, 100, 192)
    assert float(np.abs(back.values - ts_ds.ts.values).max()) <= ABS_ERROR


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_nan_land_mask_exact(sst_ds, tmp_path, zarr_format):
    store = tmp_path / "sst.zarr"
    sst_ds.nncodec.to_zarr(store, zarr_format=zarr_format, abs_error=ABS_ERROR)
    orig, back = sst_ds.sst.values, xr.open_zarr(store).sst.values
    np.testing.assert_array_equal(np.isnan(back), np.isnan(orig))
    finite = np.isfinite(orig)
    assert 0.3 < 1 - finite.mean() < 0.5  # the land mask is really there
    assert float(np.abs(back[finite] - orig[finite]).max()) <= ABS_ERROR


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_partial_edge_chunks(ts_ds, tmp_path, zarr_format):
    store = tmp_path / "ts.zarr"
    enc = {"ts": {**CODECS[zarr_format](abs_error=ABS_ERROR), "chunks": (1, 100, 100)}}
    ts_ds.to_zarr(store, zarr_format=zarr_format, encoding=enc)
    back = xr.open_zarr(store).ts.values
    assert back.shape == (2, 145, 192)
    assert float(np.abs(back - ts_ds.ts.values).max()) <= ABS_ERROR
    corner = store / "ts" / ("c/1/1/1" if zarr_format == 3 else "1.1.1")
    # zarr pads the 45 x 92 corner to the full chunk with the NaN fill value, which the mask holds
    header = read_header(corner.read_bytes())
    assert header.shape == (1, 100, 100) and header.has_nonfinite


def test_partial_edge_chunks_numeric_fill(ts_ds, tmp_path):
    field = ts_ds.ts.values[0]
    arr = zarr.create_array(tmp_path / "a.zarr", shape=field.shape, chunks=(100, 100), dtype="f4",
                            fill_value=0.0, serializer=NNCodecV3(abs_error=ABS_ERROR), compressors=None)
    arr[:] = field  # the padding is zeros next to ~280 K: coded as data, still within the bound
    back = zarr.open_array(tmp_path / "a.zarr", mode="r")[:]
    assert back.dtype == np.float32
    assert float(np.abs(back - field).max()) <= ABS_ERROR


def test_chunk_from_another_layout_is_refused(ts_ds, tmp_path):
    def make(name, chunks):
        return zarr.create_array(tmp_path / name, shape=(145, 192), chunks=chunks, dtype="f4", fill_value=np.nan,
                                 serializer=NNCodecV3(abs_error=ABS_ERROR), compressors=None)

    make("a.zarr", (100, 100))[:] = ts_ds.ts.values[0]
    wrong = make("b.zarr", (50, 50))
    (tmp_path / "b.zarr" / "c" / "0").mkdir(parents=True)
    (tmp_path / "b.zarr" / "c" / "0" / "0").write_bytes((tmp_path / "a.zarr" / "c" / "0" / "0").read_bytes())
    with pytest.raises(FormatError, match=r"expects float32 \(50, 50\)"):
        wrong[:50, :50]


# One fresh process for all three discoveries (each start costs seconds of torch import):
# it never imports nncodec; zarr format 2 finds NNCodec by the numcodecs.codecs entry point,
# format 3 finds NNCodecV3 by the zarr.codecs one (nncodec.zarr3 is not imported until
# then), and numcodecs.get_codec goes through numcodecs' registry of entry points.
_FRESH = """
import json, sys
import numcodecs
import numpy as np
import xarray as xr
seen = ["nncodec" in sys.modules]
np.save(sys.argv[3], xr.open_zarr(sys.argv[1])["ts"].values)
seen.append("nncodec.zarr3" in sys.modules)
np.save(sys.argv[4], xr.open_zarr(sys.argv[2])["ts"].values)
seen.append("nncodec.zarr3" in sys.modules)
codec = numcodecs.get_codec({"id": "nncodec", "abs_error": 0.05})
np.save(sys.argv[6], codec.decode(open(sys.argv[5], "rb").read()))
print(json.dumps([seen, type(codec).__module__, codec.get_config()]))
"""


def test_fresh_process_finds_codecs_by_entry_points(ts_ds, abs_store, tmp_path):
    v2_store = tmp_path / "ts2.zarr"
    ts_ds.nncodec.to_zarr(v2_store, zarr_format=2, abs_error=ABS_ERROR)
    codec = NNCodec(abs_error=ABS_ERROR)
    chunk = codec.encode(ts_ds.ts.values[0])
    (tmp_path / "chunk").write_bytes(chunk)
    outs = [tmp_path / f"{name}.npy" for name in ("v2", "v3", "chunk")]
    seen, module, config = json.loads(_run(_FRESH, v2_store, abs_store, outs[0], outs[1], tmp_path / "chunk", outs[2]))
    assert seen == [False, False, True]
    assert (module, config) == ("nncodec.codec", {"id": "nncodec", "abs_error": ABS_ERROR})
    np.testing.assert_array_equal(np.load(outs[0]), xr.open_zarr(v2_store).ts.values)
    np.testing.assert_array_equal(np.load(outs[1]), xr.open_zarr(abs_store).ts.values)
    np.testing.assert_array_equal(np.load(outs[2]), codec.decode(chunk))


_IMPORT_ROOT = """
import json, sys
import xarray as xr
import nncodec
state = [hasattr(xr.Dataset, "nncodec"), "nncodec.xarray" in sys.modules, "nncodec.zarr3" in sys.modules]
import nncodec.xarray
print(json.dumps(state + [hasattr(xr.Dataset, "nncodec")]))
"""


def test_accessor_registered_only_by_nncodec_xarray():
    assert json.loads(_run(_IMPORT_ROOT)) == [False, False, False, True]


def test_v3_metadata_leaves_out_the_device():
    # where the network runs is the reader's choice: a store written on a GPU node opens anywhere
    assert NNCodecV3(abs_error=0.5, device="cpu").to_dict() == {"name": "nncodec", "configuration": {"abs_error": 0.5}}


@pytest.mark.parametrize("kwargs", [{}, {"quality": 3, "tile": 128}, {"abs_error": 0.5},
                                    {"rel_error": 1e-3, "model": "hyperprior-climate-v1"}, {"target_psnr": 40}])
def test_v3_metadata_round_trip(kwargs):
    codec = NNCodecV3(**kwargs)
    meta = json.loads(json.dumps(codec.to_dict()))
    assert meta == {"name": "nncodec", "configuration": kwargs}
    assert NNCodecV3.from_dict(meta) == codec and hash(NNCodecV3.from_dict(meta)) == hash(codec)
    assert NNCodecV3.from_dict(meta).to_dict() == meta


def test_v3_metadata_rejects():
    assert NNCodecV3.from_dict({"name": "nncodec"}) == NNCodecV3()
    with pytest.raises(ValueError, match="pip install -U nncodec"):
        NNCodecV3.from_dict({"name": "nncodec", "configuration": {"lossless": True}})
    with pytest.raises(ValueError, match="nncodec"):
        NNCodecV3.from_dict({"name": "bytes", "configuration": {}})
    with pytest.raises(ValueError, match="at most one of"):
        NNCodecV3(abs_error=1.0, target_psnr=30)


def test_one_dimensional_chunks_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"2 to 5 dimensions .* got shape \(100,\)"):
        zarr.create_array(tmp_path / "a.zarr", shape=(100,), chunks=(10,), dtype="f4",
                          serializer=NNCodecV3(), compressors=None)
    with pytest.raises(TypeError, match="float16"):
        zarr.create_array(tmp_path / "b.zarr", shape=(10, 10), dtype="f2", serializer=NNCodecV3(), compressors=None)
    with pytest.raises(ValueError, match=re.escape("serializer=NNCodecV3()")):
        NNCodec().encode(np.linspace(0, 1, 100, dtype="f4"))


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_old_compressor_spelling_error_as_documented(ts_ds, tmp_path, zarr_format):
    # the README quotes these messages and points to nncodec.xarray; keep them in step
    with pytest.raises(ValueError, match=re.escape("unexpected encoding parameters for zarr backend:  ['compressor']")):
        ts_ds.to_zarr(tmp_path / "ts.zarr", zarr_format=zarr_format, encoding={"ts": {"compressor": NNCodec()}})
    if zarr_format == 3:
        with pytest.raises(TypeError, match="Expected a BytesBytesCodec"):
            ts_ds.to_zarr(tmp_path / "ts3.zarr", zarr_format=3, encoding={"ts": {"compressors": [NNCodec()]}})


def test_v3_one_tile_chunks_decode_as_numcodecs_decode_does(ts_ds):
    """Chunks of one tile read through zarr (coded on the threads zarr hands them to)
    decode to the values NNCodec.decode gives their bytes."""
    field = ts_ds["ts"].values
    z = zarr.create_array(store={}, shape=field.shape, chunks=(1, *field.shape[1:]), dtype="f4",
                          **CODECS[3](quality=QUALITY, device="cpu"))
    z[:] = field
    store = z.store._store_dict
    for i in range(field.shape[0]):
        raw = store[f"c/{i}/0/0"].to_bytes()
        assert np.array_equal(z[i : i + 1], NNCodec().decode(raw))


def _spy_batches(monkeypatch):
    """Sizes of the batches NNCodecV3 codes together, per operation."""
    import nncodec.zarr3 as zarr3

    sizes = {"encode": [], "decode": []}
    each = zarr3._each

    def spy(codec, op, items):
        sizes[op].append(len(items))
        return each(codec, op, items)

    monkeypatch.setattr(zarr3, "_each", spy)
    return sizes


def test_v3_small_chunks_are_written_in_shared_batches(tmp_path, monkeypatch):
    """Chunks written at the same time are encoded together (their tiles share network
    batches): with zarr's defaults and with a zarr batch size, every chunk file holds the
    bytes NNCodec.encode writes for it alone."""
    field = _field("ferret_fnoc_monthly_winds_vorticity.npz", "vorticity").astype("f4").reshape(-1, 73, 144)[:24]
    alone = [NNCodec(quality=QUALITY).encode(f[None]) for f in field]
    sizes = _spy_batches(monkeypatch)
    for batch_size in (1, 8):
        with zarr.config.set({"codec_pipeline.batch_size": batch_size}):
            z = zarr.create_array(tmp_path / f"b{batch_size}.zarr", shape=field.shape, chunks=(1, 73, 144), dtype="f4",
                                  fill_value=np.nan, **CODECS[3](quality=QUALITY))
            z[:] = field
        assert [(tmp_path / f"b{batch_size}.zarr" / "c" / str(i) / "0" / "0").read_bytes() for i in range(24)] == alone
    assert max(sizes["encode"]) > 1  # the chunks did share batches


def test_v3_small_chunks_decode_in_shared_batches(tmp_path, monkeypatch):
    """Chunks read at the same time decode together (their tiles share network batches):
    with zarr's defaults and with a zarr batch size, every chunk holds exactly what
    NNCodec.decode gives it alone, and a damaged chunk fails its own read only."""
    field = _field("ferret_fnoc_monthly_winds_vorticity.npz", "vorticity").astype("f4").reshape(-1, 73, 144)[:24]
    z = zarr.create_array(tmp_path / "v.zarr", shape=field.shape, chunks=(1, 73, 144), dtype="f4",
                          fill_value=np.nan, **CODECS[3](quality=QUALITY))
    z[:] = field
    alone = np.stack([NNCodec().decode((tmp_path / "v.zarr" / "c" / str(i) / "0" / "0").read_bytes())[0]
                      for i in range(len(field))])
    sizes = _spy_batches(monkeypatch)
    for batch_size in (1, 8):
        with zarr.config.set({"codec_pipeline.batch_size": batch_size}):
            back = zarr.open_array(tmp_path / "v.zarr", mode="r")[:]
        assert np.array_equal(back, alone, equal_nan=True)
    assert max(sizes["decode"]) > 1  # the chunks did share batches
    bad = tmp_path / "v.zarr" / "c" / "5" / "0" / "0"
    raw = bytearray(bad.read_bytes())
    raw[-3] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with zarr.config.set({"codec_pipeline.batch_size": 8}):
        arr = zarr.open_array(tmp_path / "v.zarr", mode="r")
        with pytest.raises(FormatError, match="damaged|checksum"):
            arr[:]
        assert np.array_equal(arr[6:], alone[6:], equal_nan=True)

"""The model-side subcommands: models, train (with export) and bench, through main()."""

import json
import subprocess
import sys

import numpy as np

from nncodec.cli import main

from conftest import load_field


def test_models_json(capsys):
    assert main(["models", "--json"]) == 0
    models = json.loads(capsys.readouterr().out)
    assert [m["id"] for m in models[:2]] == ["hyperprior-climate-v1", "hyperprior-climate-v2"]
    assert [m["default"] for m in models[:2]] == [False, True]
    for shipped in models[:2]:
        assert shipped["qualities"] == 8 and shipped["size_bytes"] < 5e6
        assert set(shipped["validation"]) == {f"q{q}" for q in range(1, 9)}
    # v2 is v1's training run finished: fewer bits at every level for about the same PSNR
    v1, v2 = (m["validation"] for m in models[:2])
    for q in v1:
        assert v2[q]["bpv"] < v1[q]["bpv"] and v2[q]["psnr"] > v1[q]["psnr"] - 0.1


def test_train_exports_usable_weights(tmp_path, capsys, compressai):
    data = tmp_path / "tas.npz"
    np.savez(data, tas=load_field("iris_hadcm3_north_america_tas_A1B.npz", "tas_A1B")[:30])
    out = tmp_path / "run"
    args = ["train", f"{data}:tas", "--out", str(out), "--steps", "6", "--batch", "2", "--crop", "32",
            "--lambda", "100", "--lambda", "1000", "--id", "mine"]
    assert main(args) == 0
    assert "NNCodec(model=" in capsys.readouterr().out
    card = json.loads((out / "mine.json").read_text())
    assert card["training"]["steps_done"] == 6 and set(card["validation"]) == {"q1", "q2"}
    # --schedule-minutes: the run is finished when its time is spent, and exports
    timed_run = ["train", f"{data}:tas", "--out", str(tmp_path / "timed"), "--schedule-minutes", "0.02", "--batch", "2",
                 "--crop", "32", "--lambda", "100", "--id", "timed"]
    assert main(timed_run) == 0
    card = json.loads((tmp_path / "timed" / "timed.json").read_text())
    assert card["training"]["schedule_minutes"] == 0.02 and card["training"]["trained_minutes"] >= 0.02


def test_without_compressai_training_and_refinement_name_the_extra(tmp_path):
    """Without the train extra (CompressAI), ``nncodec train`` and ``refine=`` stop with the
    command that installs it, before reading any data; plain coding works as before."""
    code = (
        "import sys; sys.modules['compressai'] = None\n"  # makes `import compressai` fail, as if not installed
        "import numpy as np; from nncodec import NNCodec; from nncodec.cli import main\n"
        "x = np.add.outer(np.sin(np.arange(40) / 9), np.cos(np.arange(50) / 7)).astype(np.float32)\n"
        "assert np.abs(NNCodec(quality=2).decode(NNCodec(quality=2).encode(x)) - x).mean() < 0.05\n"
        "try:\n    NNCodec(quality=2, refine=2).encode(x)\nexcept ImportError as e:\n    print('refine:', e)\n"
        f"sys.exit(main(['train', {str(tmp_path / 'absent.npz')!r}, '--out', {str(tmp_path / 'run')!r}]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    fix = "pip install 'nncodec[train]'"
    assert out.stdout.startswith("refine: ") and fix in out.stdout
    assert out.stderr.startswith("nncodec train: error: ") and fix in out.stderr


def test_bench_one_baseline(tmp_path):
    data = tmp_path / "f.npz"
    np.savez(data, tas=load_field("iris_hadcm3_north_america_tas_A1B.npz", "tas_A1B")[-1:])
    out = tmp_path / "bench"
    assert main(["bench", str(data), "--var", "tas", "--out", str(out), "--quality", "2",
                 "--baseline", "sz3", "--max-slices", "1", "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    codecs = {p["codec"] for v in results["variables"] for p in v["points"]}
    assert codecs == {"nncodec", "sz3"}

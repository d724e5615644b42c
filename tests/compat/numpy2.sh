#!/usr/bin/env bash
# nncodec on numpy 2, in two steps.
# 1. Without the train extra: build an environment with `pip install -e .[test,hpc]` and no
#    CompressAI (whose metadata holds numpy below 2; only the train extra brings it), check
#    that pip picked numpy 2, and run the suite. The tests that train, refine or compare
#    with CompressAI's coder skip; everything else must pass.
# 2. With CompressAI added as docs/training.md shows for numpy 2 (`--no-deps`): those
#    tests must pass too.
#
# Usage (from anywhere; paths are relative to the repository root):
#   tests/compat/numpy2.sh [pytest args]
# PYTHON: the interpreter to build the environment with (default: python3)
# NUMPY2_VENV: where to build it (default: .venv-numpy2, git-ignored; about 6 GB with torch)
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python3}
VENV=${NUMPY2_VENV:-.venv-numpy2}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip uninstall -q -y compressai 2>/dev/null || true  # step 2 of an earlier run
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test,hpc]" "numpy>=2"
"$VENV/bin/python" - <<'PY'
import importlib.util, numcodecs, numpy, zarr
assert int(numpy.__version__.split(".")[0]) >= 2, numpy.__version__
assert importlib.util.find_spec("compressai") is None, "this environment must not have CompressAI"
print(f"numpy {numpy.__version__}, zarr {zarr.__version__}, numcodecs {numcodecs.__version__}, no CompressAI")
PY
# numba's kernel cache of its own: the main environment caches beside the package
NUMBA_CACHE_DIR="$VENV/numba-cache" "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests "$@"

# Then CompressAI on numpy 2 as docs/training.md shows (its metadata says numpy<2; the parts
# nncodec uses work): the tests that skipped above must pass. --no-deps keeps numpy 2.
torch_release=$("$VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==$torch_release" torchvision \
    torch-geometric einops pytorch-msssim
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps "compressai>=1.2.6"
"$VENV/bin/python" -c "import numpy, nncodec._compressai; assert int(numpy.__version__.split('.')[0]) >= 2"
NUMBA_CACHE_DIR="$VENV/numba-cache" "$VENV/bin/python" -m pytest -q -p no:cacheprovider -m train tests "$@"

#!/usr/bin/env bash
# The codec without the train extra, on numpy 2: build an environment with
# `pip install -e .[test,hpc]` and no CompressAI (compressai 1.2 holds numpy below 2, so
# only the train extra pins it), check that pip picked numpy 2, and run the test suite
# there. Tests that train or refine need CompressAI and skip; everything else must pass.
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
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test,hpc]" "numpy>=2"
"$VENV/bin/python" - <<'PY'
import importlib.util, numcodecs, numpy, zarr
assert int(numpy.__version__.split(".")[0]) >= 2, numpy.__version__
assert importlib.util.find_spec("compressai") is None, "this environment must not have CompressAI"
print(f"numpy {numpy.__version__}, zarr {zarr.__version__}, numcodecs {numcodecs.__version__}, no CompressAI")
PY
# numba's kernel cache of its own: the main environment caches beside the package
NUMBA_CACHE_DIR="$VENV/numba-cache" "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests "$@"

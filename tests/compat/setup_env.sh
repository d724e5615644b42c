#!/usr/bin/env bash
# Build the zarr-python 2 test environment and run tests/compat in it.
#
# The environment holds zarr 2.18 and the xarray of its time (the releases that take
# encoding={"v": {"compressor": ...}}); everything else, torch and compressai included,
# comes from the main environment through a .pth file, so nothing large is installed
# twice. Packages installed here come first on sys.path and shadow the main ones.
#
# Usage (from anywhere; paths are relative to the repository root):
#   PYTHON=.venv/bin/python tests/compat/setup_env.sh [pytest args]
# PYTHON: the main environment's interpreter (default: python on PATH)
# ZARR2_VENV: where to build the environment (default: .venv-zarr2, git-ignored)
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python}
VENV=${ZARR2_VENV:-.venv-zarr2}

# Pinned together: zarr 2.18.7 needs numcodecs <0.16 and not 0.14.x; numcodecs 0.15.1 and
# pandas 2.2.3 work with numpy 1.26 (held below 2 by compressai); xarray 2024.11.0 is the
# last release before its zarr 3 support renamed the encoding keys; dask 2024.11.2 is its
# contemporary (the main environment's dask and pandas 3 are too new for that xarray).
# zfpy is not installed here: the main environment's 1.0.1 is fine, 1.0.1.post0 would
# break `import numcodecs`.
PINS=(
    zarr==2.18.7 numcodecs==0.15.1 xarray==2024.11.0 pandas==2.2.3 dask==2024.11.2
    # their dependencies that the main environment lacks
    asciitree==0.3.3 fasteners==0.19 deprecated==1.2.18 wrapt==1.17.2 pytz==2025.2
)

if ! "$PYTHON" -c "import torch, compressai" 2>/dev/null; then
    echo "error: $PYTHON cannot import torch and compressai; set PYTHON to the main environment's python" >&2
    exit 1
fi
main_site=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
venv_site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# --no-deps: the pins are the whole set; a resolver run would try to reinstall torch
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps "${PINS[@]}"
echo "$main_site" > "$venv_site/_nncodec_main_env.pth"
# the project's own build backend (setuptools>=64, wheel) comes from the main environment
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .

# -p no:zarr: pytest loads plugins from every dist-info on sys.path, and the main
# environment's zarr 3 registers one (zarr.testing) that cannot import under zarr 2
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -p no:zarr tests/compat "$@"

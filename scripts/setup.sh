#!/usr/bin/env bash
# Create (or reuse) ./.venv and install nncodec with the given extras, e.g. `scripts/setup.sh test`.
# torch comes from PyPI (a CUDA build, ~6 GB); on machines with a local wheel cache it takes ~1 min.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-netcdf}"
if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[${extras}]"

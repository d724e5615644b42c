#!/usr/bin/env bash
# The main job on the bundled demo data: install, compress with Dask, reopen lazily, report.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh "netcdf"
.venv/bin/python examples/demo.py "$@"

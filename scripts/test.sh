#!/usr/bin/env bash
# The test command: installs what the tests need (training included), runs the suite, then the zarr-2 compatibility check.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh "test,hpc,train"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@" tests
PYTHON=.venv/bin/python bash tests/compat/setup_env.sh

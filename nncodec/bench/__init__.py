"""Benchmark nncodec against error-bounded baselines (SZ3, ZFP, SPERR, BitRound).

Entry points: :func:`run_bench` (rate-distortion and fidelity, writes
``results.json``, ``report.md`` and figures) and :func:`run_speed` (throughput).
"""

from .baselines import DEFAULT_ERROR_BOUNDS, Compressor, available_baselines
from .run import run_bench, run_speed

__all__ = ["DEFAULT_ERROR_BOUNDS", "Compressor", "available_baselines", "run_bench", "run_speed"]

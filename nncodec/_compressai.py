"""The CompressAI pieces nncodec uses for training (and the latent refinement), imported
once; its range coder only as the reference that tests/test_rans.py compares nncodec's
own with. Encoding and decoding never import it (:mod:`nncodec.models.transforms`).

CompressAI comes with the ``train`` extra only (``pip install 'nncodec[train]'``): its
metadata holds numpy below 2, which readers and writers of stores need not accept.

Importing compressai makes torch warn that ``torch.jit.script`` is deprecated (from
CompressAI's own modules, not ours); every Dask worker would print it on first decode.
"""

import warnings

try:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)
        from compressai.ans import BufferedRansEncoder, RansDecoder
        from compressai.entropy_models import EntropyBottleneck, GaussianConditional
        from compressai.layers import GDN
except ImportError as e:  # not installed, or installed without what it imports
    raise ImportError(
        f"training and latent refinement (refine=) need CompressAI, which could not be imported ({e}); "
        "install nncodec's train extra: pip install 'nncodec[train]' (it holds numpy below 2, as "
        "CompressAI's metadata requires; to keep numpy 2, see 'Training on numpy 2' in docs/training.md)"
    ) from e

__all__ = ["BufferedRansEncoder", "RansDecoder", "EntropyBottleneck", "GaussianConditional", "GDN"]

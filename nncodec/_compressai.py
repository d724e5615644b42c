"""The CompressAI pieces nncodec uses for training (and the latent refinement), imported
once; its range coder only as the reference that tests/test_rans.py compares nncodec's
own with. Encoding and decoding never import it (:mod:`nncodec.models.transforms`).

Importing compressai makes torch warn that ``torch.jit.script`` is deprecated (from
CompressAI's own modules, not ours); every Dask worker would print it on first decode.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)
    from compressai.ans import BufferedRansEncoder, RansDecoder
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional
    from compressai.layers import GDN

__all__ = ["BufferedRansEncoder", "RansDecoder", "EntropyBottleneck", "GaussianConditional", "GDN"]

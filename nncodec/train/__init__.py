"""Training and fine-tuning of nncodec models on your own archive.

Examples
--------
Fine-tune the shipped model on two variables of a netCDF archive, then use it::

    from nncodec.train import Source, TrainConfig, train, export_weights
    ckpt = train([Source("era5_2019.nc", ["t2m", "tp"])], "runs/era5",
                 TrainConfig(steps=20_000), init="hyperprior-climate-v2")
    export_weights(ckpt, "runs/era5/era5-v1.pt", "era5-v1",
                   validate_on=[Source("era5_2019.nc", ["t2m", "tp"])])
    # NNCodec(model="runs/era5/era5-v1.pt")
"""

from .data import Source, parse_source
from .export import export_weights
from .loop import TrainConfig, train

__all__ = ["Source", "parse_source", "TrainConfig", "train", "export_weights"]

"""Recipe for examples/data/demo.nc, the small real data set the demo compresses.

Run from the repository root with ../shared/data beside it::

    python examples/make_demo_data.py

Sources (see examples/data/README.md for licences):
* ``ts``: GloSea4 seasonal-ensemble surface temperature, member 0, six months, N96 grid
  (iris-sample-data 2.5.2).
* ``sst``: COADS monthly marine climatology sea-surface temperature, 2 degrees, land NaN
  (Debian ferret-datasets 7.6.0-5).
"""

from pathlib import Path

import numpy as np
import xarray as xr

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
OUT = Path(__file__).resolve().parent / "data" / "demo.nc"


def main() -> None:
    ts = np.load(SHARED / "iris_glosea4_surface_temperature.npz")["ts"][0]
    coads = np.load(SHARED / "ferret_coads_climatology.npz")
    ds = xr.Dataset(
        {
            "ts": (("month", "lat", "lon"), ts, {"units": "K", "long_name": "surface temperature",
                                                  "source": "Met Office GloSea4 via iris-sample-data 2.5.2"}),
            "sst": (("month_sst", "lat_sst", "lon_sst"), coads["sst"],
                    {"units": "degC", "long_name": "sea surface temperature",
                     "source": "COADS climatology via Debian ferret-datasets 7.6.0-5"}),
        },
        coords={
            "month": np.arange(1, 7), "lat": np.linspace(-90, 90, ts.shape[1]),
            "lon": np.arange(ts.shape[2]) * 360.0 / ts.shape[2],
            "month_sst": np.arange(1, 13), "lat_sst": coads["lat"], "lon_sst": coads["lon"],
        },
        attrs={"title": "nncodec demo data",
               "licence": "ts: Contains public sector information licensed under the Open Government "
                          "Licence v3.0 (Crown copyright Met Office); sst: NOAA/PMEL, public domain"},
    )
    encoding = {v: {"zlib": True, "complevel": 4} for v in ds.data_vars}
    ds.to_netcdf(OUT, encoding=encoding)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()

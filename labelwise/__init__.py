"""labelwise: one small GAN per class label, trained independently, measured and plotted.

Stages (each a module, each runnable without Snakemake through `labelwise <stage>`):
data (raw dataset -> per-label HDF5 shards), train (one generator per label), sample,
metrics, plots.
"""

__version__ = "0.1.0"

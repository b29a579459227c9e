"""Data layer: manifests, reading and writing ntuples, region selections, splits, transforms, DataModules.

The DataModules are imported on first use, so that `lit_vae.mc` (which writes through `lit_vae.data.io`)
never loads torch or Lightning.
"""

from lit_vae.data.selection import evaluate_cut

__all__ = ["EventDataModule", "Wh1LbbDataModule", "ZGammaDataModule", "evaluate_cut"]


def __getattr__(name: str):
    if name in ("EventDataModule", "Wh1LbbDataModule", "ZGammaDataModule"):
        from lit_vae.data import datamodule

        return getattr(datamodule, name)
    raise AttributeError(f"module 'lit_vae.data' has no attribute '{name}'")

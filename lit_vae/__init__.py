"""lit-vae: Lightning experiments with variational autoencoders on LHC collision events."""

__version__ = "0.1.0"

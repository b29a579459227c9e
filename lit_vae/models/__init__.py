"""Models: VAE, VAE + discriminator, likelihood VAE with a learnable prior; shared parts in components and
distributions."""

from lit_vae.models.base import BaseVAE, load_model
from lit_vae.models.likelihood_vae import LikelihoodVAE
from lit_vae.models.vae import VAE
from lit_vae.models.vae_d import VAED

__all__ = ["VAE", "VAED", "BaseVAE", "LikelihoodVAE", "load_model"]

"""The VAE of the Zgamma paper: MSE reconstruction + beta * KL to N(0, 1) (eqs. 1-3).

Conventions: the MSE is averaged over batch x features; the KL is the true Gaussian KL
1/2 sum(sigma^2 + mu^2 - 2 ln sigma - 1), summed over latent dimensions and averaged over the batch, so
that beta keeps its meaning whatever the batch size (Table 1 spans 1 to 512). `kl_form='paper'` uses
the paper's printed sum(sigma^2 + mu^2 - ln sigma - 1) for reproduction only: its minimum sits at
sigma = 1/sqrt(2), which mismatches sampling from N(0, 1).
"""

from __future__ import annotations

from typing import Literal

import torch

from lit_vae.models.base import BaseVAE
from lit_vae.models.components import Decoder, GaussianEncoder, reparameterise
from lit_vae.models.distributions import kl_standard_normal


class VAE(BaseVAE):
    """Encoder -> z ~ N(mu, sigma) -> decoder reconstructing the transformed features."""

    def __init__(self, n_features: int, kl_form: Literal["true", "paper"] = "true", **kwargs):
        super().__init__(n_features=n_features, **kwargs)
        self.kl_form = kl_form
        self.encoder = GaussianEncoder(n_features, self.sizes, self.latent_dim, self.activation)
        self.decoder = Decoder(self.latent_dim, self.sizes, n_features, self.activation)

    def encode(self, x: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, ...]:
        """(z, mu, log sigma); z is mu itself when deterministic."""
        mu, log_sigma = self.encoder(x)
        return (mu if deterministic else reparameterise(mu, log_sigma)), mu, log_sigma

    @staticmethod
    def mse(reconstruction: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-event squared error averaged over features."""
        return ((reconstruction - x) ** 2).mean(dim=-1)

    def losses(self, batch: dict, deterministic: bool = False) -> dict[str, torch.Tensor]:
        z, mu, log_sigma = self.encode(batch["x"], deterministic)
        recon = self.mse(self.decoder(z), batch["x"])
        kl = kl_standard_normal(mu, log_sigma, self.kl_form)
        return {"loss": recon + self.beta * kl, "elbo": recon + kl, "recon": recon, "kl": kl}

    def sample_physical(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.latent_dim, generator=generator, device=self.device)
        return self.transform.inverse(self.decoder(z))

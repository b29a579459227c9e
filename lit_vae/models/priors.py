"""Latent priors every model can take (`prior: normal | learnable | flow`).

Each prior gives the KL term of the loss for a posterior N(mu, sigma) and draws latent vectors from a
seeded generator. The normal and learnable Gaussians have a closed-form KL; the flow prior (a zuko
neural-spline flow over the latent space, trained jointly) uses the one-sample Monte Carlo estimate
log q(z|x) - log p(z) at the posterior sample z (at mu when decoding deterministically).
"""

from __future__ import annotations

import torch
from torch import nn

from lit_vae.errors import ConfigError
from lit_vae.models.distributions import (
    LOG_2PI,
    LearnablePrior,
    kl_standard_normal,
)

PRIORS = ("normal", "learnable", "flow")


class NormalPrior(nn.Module):
    """N(0, 1): the sources' prior for the VAE and VAE+D; `kl_form` as in `kl_standard_normal`."""

    def __init__(self, latent_dim: int, kl_form: str = "true"):
        super().__init__()
        self.latent_dim, self.kl_form = latent_dim, kl_form
        self.register_buffer("_device", torch.zeros(0), persistent=False)

    def kl(self, mu: torch.Tensor, log_sigma: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return kl_standard_normal(mu, log_sigma, self.kl_form)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (z**2 + LOG_2PI).sum(dim=-1)

    def standardise(self, z: torch.Tensor) -> torch.Tensor:
        """z in the prior's standard-normal space (here z itself)."""
        return z

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.from_noise(torch.randn(n, self.latent_dim, generator=generator, device=self._device.device))

    def from_noise(self, eps: torch.Tensor) -> torch.Tensor:
        """Latent vectors from standard-normal noise (the generator's input in ONNX)."""
        return eps


class LearnableGaussianPrior(LearnablePrior):
    """N(mu_p, sigma_p) with trained mu_p, sigma_p: the thesis's prior (closed-form KL)."""

    def kl(self, mu: torch.Tensor, log_sigma: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        return super().kl(mu, log_sigma)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        u = (z - self.mu) / torch.exp(self.log_sigma)
        return (-0.5 * (u**2 + LOG_2PI) - self.log_sigma).sum(dim=-1)


class FlowPrior(nn.Module):
    """A neural-spline flow p(z) over the latent space (zuko), trained with the model."""

    def __init__(self, latent_dim: int, transforms: int = 3, hidden: int = 64, bins: int = 8):
        super().__init__()
        import zuko

        if latent_dim < 2:
            raise ConfigError("prior: flow needs latent_dim >= 2 (a 1-D flow has nothing to couple)")
        self.latent_dim = latent_dim
        self.flow = zuko.flows.NSF(latent_dim, transforms=transforms, hidden_features=[hidden, hidden], bins=bins)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.flow().log_prob(z)

    def standardise(self, z: torch.Tensor) -> torch.Tensor:
        """z mapped by the flow to its standard-normal base space."""
        return self.flow().transform(z)

    def kl(self, mu: torch.Tensor, log_sigma: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        u = (z - mu) / torch.exp(log_sigma)
        log_q = (-0.5 * (u**2 + LOG_2PI) - log_sigma).sum(dim=-1)
        return log_q - self.log_prob(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Base noise from generator pushed through the inverse flow (zuko's own sample() takes no generator)."""
        device = next(self.parameters()).device
        return self.from_noise(torch.randn(n, self.latent_dim, generator=generator, device=device))

    def from_noise(self, eps: torch.Tensor) -> torch.Tensor:
        return self.flow().transform.inv(eps)


def build_prior(kind: str, latent_dim: int, kl_form: str = "true") -> nn.Module:
    if kind == "normal":
        return NormalPrior(latent_dim, kl_form)
    if kind == "learnable":
        return LearnableGaussianPrior(latent_dim)
    if kind == "flow":
        return FlowPrior(latent_dim)
    raise ConfigError(f"prior: '{kind}' is not one of {', '.join(PRIORS)}")

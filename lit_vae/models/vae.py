"""The VAE of the Zgamma paper: MSE reconstruction + beta * KL to N(0, 1) (eqs. 1-3).

Conventions: the MSE is averaged over batch x features; the KL is the true Gaussian KL
1/2 sum(sigma^2 + mu^2 - 2 ln sigma - 1), summed over latent dimensions and averaged over the batch, so
that beta keeps its meaning whatever the batch size (Table 1 spans 1 to 512). `kl_form='paper'` uses
the paper's printed sum(sigma^2 + mu^2 - ln sigma - 1) for reproduction only: its minimum sits at
sigma = 1/sqrt(2), which mismatches sampling from N(0, 1).

The paper's model is the default (`decoder: mse`, `prior: normal`); `decoder: likelihood | flow` samples
the features at generation instead of decoding a mean, `prior: learnable | flow` learns the prior.
"""

from __future__ import annotations

from lit_vae.models.base import BaseVAE


class VAE(BaseVAE):
    """Encoder -> z ~ N(mu, sigma) -> decoder head; the paper's preset by default."""

    def __init__(self, n_features: int, **kwargs):
        super().__init__(n_features=n_features, **kwargs)

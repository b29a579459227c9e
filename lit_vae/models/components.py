"""Networks shared by every model: the MLP builder, the Gaussian encoder, the decoder, the discriminator."""

from __future__ import annotations

import torch
from torch import nn

from lit_vae.errors import ConfigError, ImplausibleArchitecture

ACTIVATIONS = {
    "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "selu": nn.SELU, "gelu": nn.GELU,
    "silu": nn.SiLU, "tanh": nn.Tanh,
}
LOG_SIGMA_RANGE = (-10.0, 5.0)  # keeps exp(2 log sigma) finite in float32


def hidden_sizes(n_hidden_layers: int, n_nodes: int, hidden: list[int] | None = None) -> list[int]:
    """Widths of the hidden layers: an explicit list, or n_hidden_layers layers of n_nodes."""
    sizes = list(hidden) if hidden else [n_nodes] * n_hidden_layers
    if not sizes or any(s < 1 for s in sizes):
        raise ConfigError(f"hidden layers must be positive widths, got {sizes}: set n_hidden_layers >= 1 and n_nodes")
    return sizes


def check_plausible(sizes: list[int], latent_dim: int) -> None:
    """The architecture rule (the paper notes some Table 1 combinations are implausible): every hidden
    layer is at least as wide as the latent space, so the encoder compresses and the decoder expands."""
    if min(sizes) < latent_dim:
        raise ImplausibleArchitecture(f"implausible architecture: hidden layers {sizes} are narrower than latent_dim = "
                          f"{latent_dim}; use n_nodes >= latent_dim")


def mlp(n_in: int, hidden: list[int], n_out: int, activation: str = "relu") -> nn.Sequential:
    """Linear layers of the given widths with the named activation between them (none after the last)."""
    if activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation '{activation}'; one of {', '.join(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(n_in, width), ACTIVATIONS[activation]()]
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class GaussianEncoder(nn.Module):
    """x -> (mu, log sigma) of a diagonal Gaussian in the latent space."""

    def __init__(self, n_in: int, hidden: list[int], latent_dim: int, activation: str = "relu"):
        super().__init__()
        self.net = mlp(n_in, hidden, 2 * latent_dim, activation)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_sigma = self.net(x).chunk(2, dim=-1)
        return mu, log_sigma.clamp(*LOG_SIGMA_RANGE)


class Decoder(nn.Module):
    """z -> decoder outputs (reconstructed features, or distribution parameters)."""

    def __init__(self, latent_dim: int, hidden: list[int], n_out: int, activation: str = "relu"):
        super().__init__()
        self.net = mlp(latent_dim, list(reversed(hidden)), n_out, activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Discriminator(nn.Module):
    """x -> one logit: real (Monte Carlo) versus reconstructed or generated."""

    def __init__(self, n_in: int, hidden: list[int], activation: str = "leaky_relu"):
        super().__init__()
        self.net = mlp(n_in, hidden, 1, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def reparameterise(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps, differentiable in mu and sigma."""
    return mu + torch.exp(log_sigma) * torch.randn_like(mu)

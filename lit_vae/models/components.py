"""Networks shared by every model: the MLP builder, the Gaussian encoder, the decoder, the discriminator."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from lit_vae.data.transforms import KIND_CODE
from lit_vae.errors import ConfigError, ImplausibleArchitecture
from lit_vae.models.distributions import CLIP_THRESHOLD, DEFAULT_HEAD, HEADS

# In place where torch allows: an activation overwrites the Linear output it follows instead of allocating
# a copy (a decoder samples ~1.4x faster on a CPU; autograd keeps what each backward needs).
ACTIVATIONS = {
    "relu": partial(nn.ReLU, inplace=True), "leaky_relu": partial(nn.LeakyReLU, inplace=True),
    "elu": partial(nn.ELU, inplace=True), "selu": partial(nn.SELU, inplace=True), "gelu": nn.GELU,
    "silu": partial(nn.SiLU, inplace=True), "tanh": nn.Tanh,
}
LOG_SIGMA_RANGE = (-10.0, 5.0)  # keeps exp(2 log sigma) finite in float32
QUANTILE_LIMIT = 2**24  # torch.quantile refuses more values: a larger training part is strided down to it


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


def activation_layer(activation: str) -> nn.Module:
    """The named activation, or a ConfigError that lists the known ones."""
    if activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation '{activation}'; one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[activation]()


def mlp(n_in: int, hidden: list[int], n_out: int, activation: str = "relu") -> nn.Sequential:
    """Linear layers of the given widths with the named activation between them (none after the last)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(n_in, width), activation_layer(activation)]
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

    def __init__(self, latent_dim: int, hidden: list[int], n_out: int, activation: str = "relu",
                 net: nn.Module | None = None):
        super().__init__()
        self.net = net if net is not None else mlp(latent_dim, list(reversed(hidden)), n_out, activation)

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


# --- Decoder heads: what a decoder predicts, its reconstruction term, and how it generates -------------
# Every head has terms(z, batch, transform) -> {"per_feature", "recon" (the weighted training term),
# "nll" (unweighted, for the ELBO)} per event, and sample(z, transform, generator) -> physical events.
DECODERS = ("mse", "likelihood", "autoregressive", "flow")


class MSEHead(Decoder):
    """The paper's decoder: z -> the transformed features; squared error, generation decodes the mean."""

    is_density = False  # its reconstruction term is a squared error, not a likelihood

    def __init__(self, latent_dim: int, hidden: list[int], n_features: int, activation: str = "relu"):
        super().__init__(latent_dim, hidden, n_features, activation)

    def terms(self, z: torch.Tensor, batch: dict, transform) -> dict[str, torch.Tensor]:
        error = (self(z) - batch["x"]) ** 2
        return {"per_feature": error, "recon": error.mean(dim=-1), "nll": error.mean(dim=-1)}

    def sample(self, z: torch.Tensor, transform, generator: torch.Generator | None = None) -> torch.Tensor:
        return transform.inverse(self(z))

    def decoded(self, z: torch.Tensor, transform) -> torch.Tensor:
        """Decoded events in the transformed space, differentiable (what VAE+D's discriminator sees): the mean."""
        return self(z)


class DensityHead(Decoder):
    """Per-feature densities of the physical values (the thesis's likelihood decoder): clipped log-normal
    for positive features, truncated discrete Gaussian for counts, von Mises for angles, Gaussian for
    reals (overridable per feature through `heads`); generation samples them."""

    is_density = True  # nll is -log p(x | z) of the physical values

    def __init__(self, latent_dim: int, hidden: list[int], names: list[str], kinds: list[str],
                 activation: str = "relu", heads: dict[str, str] | None = None,
                 feature_weights: dict[str, float] | None = None):
        heads, feature_weights = heads or {}, feature_weights or {}
        for name in {*heads, *feature_weights} - set(names):
            raise ConfigError(f"heads/feature_weights name '{name}', which is not a feature: {names}")
        for name, head in heads.items():
            if head not in HEADS:
                raise ConfigError(f"heads.{name}: unknown head '{head}'; one of {', '.join(HEADS)}")
        head_names = [heads.get(n, DEFAULT_HEAD[k]) for n, k in zip(names, kinds, strict=True)]
        n_params = [HEADS[h].n_params for h in head_names]
        super().__init__(latent_dim, hidden, sum(n_params), activation,
                         net=self.network(latent_dim, list(reversed(hidden)), n_params, activation))
        self.head_names, self.n_params = head_names, n_params
        self.register_buffer("feature_weight", torch.tensor([float(feature_weights.get(n, 1.0)) for n in names]))

    def network(self, latent_dim: int, hidden: list[int], n_params: list[int], activation: str) -> nn.Module:
        """z -> every feature's raw parameters, in feature order."""
        return mlp(latent_dim, hidden, sum(n_params), activation)

    def raw_parameters(self, z: torch.Tensor, x: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The raw outputs split per feature, (events, n_params) each (x, the transformed event, is for
        heads that condition on it)."""
        return list(self(z).split(self.n_params, dim=-1))

    def terms(self, z: torch.Tensor, batch: dict, transform) -> dict[str, torch.Tensor]:
        raw, target = self.raw_parameters(z, batch["x"]), batch["target"]
        nll = torch.stack([-HEADS[h].log_prob(target[:, j], raw[j]) for j, h in enumerate(self.head_names)], dim=-1)
        return {"per_feature": nll, "recon": (nll * self.feature_weight).sum(dim=-1), "nll": nll.sum(dim=-1)}

    def sample(self, z: torch.Tensor, transform, generator: torch.Generator | None = None) -> torch.Tensor:
        raw = self.raw_parameters(z)
        targets = torch.stack([HEADS[h].sample(raw[j], generator) for j, h in enumerate(self.head_names)], dim=-1)
        return transform.physical(targets)

    def decoded(self, z: torch.Tensor, transform) -> torch.Tensor:
        """Sampled events in the transformed space with a gradient (Head.rsample: reparameterised or
        straight-through): what VAE+D's discriminator sees."""
        raw = self.raw_parameters(z)
        targets = torch.stack([HEADS[h].rsample(raw[j]) for j, h in enumerate(self.head_names)], dim=-1)
        return transform(transform.physical(targets))

    @torch.no_grad()
    def initialise_output_bias(self, targets: torch.Tensor) -> None:
        """Start each head at the training marginal (log-mean/log-std, mean/std, fraction below the clip),
        so that training begins near the data instead of O(100) nats away; a restored checkpoint
        overrides it."""
        bias = self.net[-1].bias
        offsets = [0, *torch.tensor(self.n_params).cumsum(0).tolist()]
        inverse_softplus = lambda s: torch.log(torch.expm1(torch.clamp(s, min=1e-2)))  # noqa: E731
        for j, head in enumerate(self.head_names):
            x, start = targets[:, j].double(), offsets[j]
            if head in ("clipped_lognormal", "clipped_lognormal_mixture"):
                above = x[x >= CLIP_THRESHOLD]
                fraction = ((x < CLIP_THRESHOLD).double().mean()).clamp(1e-3, 1 - 1e-3)
                log_x = torch.log(above) if len(above) > 1 else torch.zeros(2, dtype=x.dtype)
                values = [torch.logit(fraction), log_x.mean(), inverse_softplus(log_x.std())]
                if head == "clipped_lognormal_mixture":  # equal weights, locations at the marginal's quantiles
                    k = HEADS[head].components
                    every = -(-len(log_x) // QUANTILE_LIMIT)
                    locations = torch.quantile(log_x[::every], (torch.arange(k, dtype=x.dtype) + 0.5) / k)
                    values = [values[0], *torch.zeros(k, dtype=x.dtype), *locations, *[values[2]] * k]
            elif head in ("gaussian", "discrete_gaussian"):
                values = [x.mean(), inverse_softplus(x.std())]
            else:
                continue
            bias[start:start + len(values)] = torch.stack(values).to(bias.dtype)


class MaskedLinear(nn.Linear):
    """A Linear layer whose weight is multiplied by a fixed 0/1 mask (MADE, Germain et al. 2015)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


def made(n_features: int, latent_dim: int, hidden: list[int], n_params: list[int], activation: str) -> nn.Sequential:
    """A masked MLP on [x, z] whose outputs for feature j (n_params[j] of them, in feature order) depend on z
    and x_0..x_{j-1} only. Degrees: x_j has j + 1, z has 0, hidden unit h has h mod n_features (so the first
    feature's parameters see z alone), the outputs of feature j have j + 1; a unit sees a lower degree only.
    Every layer needs all n_features degrees, else a feature silently loses some of the features before it."""
    if min(hidden) < n_features:
        raise ConfigError(f"decoder: autoregressive needs hidden layers at least as wide as the {n_features} "
                          f"features, got {hidden}; raise n_nodes")
    degree_in = torch.cat([torch.arange(1, n_features + 1), torch.zeros(latent_dim, dtype=torch.long)])
    layers: list[nn.Module] = []
    for width in hidden:
        degree = torch.arange(width) % n_features
        layers += [MaskedLinear(degree[:, None] >= degree_in[None, :]), activation_layer(activation)]
        degree_in = degree
    degree_out = torch.arange(1, n_features + 1).repeat_interleave(torch.tensor(n_params))
    layers.append(MaskedLinear(degree_out[:, None] > degree_in[None, :]))
    return nn.Sequential(*layers)


class AutoregressiveDensityHead(DensityHead):
    """The thesis's per-feature densities, each conditioned on z and on the features before it:
    p(x | z) = prod_j f_j(x_j | z, x_<j), a joint model of the event (correlations and kinematic edges
    between features) that stays exact and keeps every feature's family. Generation samples the features
    in order, one network pass each."""

    def network(self, latent_dim: int, hidden: list[int], n_params: list[int], activation: str) -> nn.Module:
        """[x, z] -> every feature's raw parameters, feature j's from z and x_<j only."""
        return made(len(n_params), latent_dim, hidden, n_params, activation)

    def raw_parameters(self, z: torch.Tensor, x: torch.Tensor | None = None) -> list[torch.Tensor]:
        if x is None:
            raise ValueError("an autoregressive head needs the transformed event x")
        return list(self.net(torch.cat([x.to(z.dtype), z], dim=-1)).split(self.n_params, dim=-1))

    def _draw(self, z: torch.Tensor, transform, draw) -> torch.Tensor:
        """Targets drawn feature by feature: draw(j, raw parameters of feature j) -> (events,)."""
        columns: list[torch.Tensor] = []
        zeros = z.new_zeros(len(z), len(self.head_names))
        for j in range(len(self.head_names)):
            targets = torch.cat([torch.stack(columns, dim=-1), zeros[:, j:]], dim=-1) if columns else zeros
            columns.append(draw(j, self.raw_parameters(z, transform(transform.physical(targets)))[j]))
        return torch.stack(columns, dim=-1)

    def sample(self, z: torch.Tensor, transform, generator: torch.Generator | None = None) -> torch.Tensor:
        return transform.physical(self._draw(z, transform, lambda j, raw: HEADS[self.head_names[j]].sample(
            raw, generator).to(z.dtype)))

    def decoded(self, z: torch.Tensor, transform) -> torch.Tensor:
        targets = self._draw(z, transform, lambda j, raw: HEADS[self.head_names[j]].rsample(raw).to(z.dtype))
        return transform(transform.physical(targets))


class FlowHead(nn.Module):
    """A conditional neural-spline flow p(x | z) over the transformed features (zuko): the decoder models
    the features jointly instead of independently. Counts are dequantised with uniform noise of one unit
    (the transform's inverse rounds them back); generation pushes seeded base noise through the flow.
    passes: None is fully autoregressive (sampling costs one network pass per feature and transform);
    2 is a coupling flow (two passes each way: generation ~n_features/2 times faster)."""

    is_density = False  # a density of the transformed features: no Jacobian to the physical values (yet)

    def __init__(self, latent_dim: int, n_features: int, transforms: int = 5, hidden: int = 128, bins: int = 12,
                 passes: int | None = None):
        super().__init__()
        import zuko

        if passes is not None and not 2 <= passes <= n_features:
            raise ConfigError(f"flow_passes must be null (autoregressive) or 2..{n_features}, got {passes}")
        self.n_features = n_features
        self.flow = zuko.flows.NSF(n_features, context=latent_dim, transforms=transforms,
                                   hidden_features=[hidden, hidden], bins=bins, passes=passes)

    def terms(self, z: torch.Tensor, batch: dict, transform) -> dict[str, torch.Tensor]:
        x = batch["x"]
        if self.training:
            is_count = (transform.kind == KIND_CODE["count"]).to(x.dtype)
            x = x + is_count * (torch.rand_like(x) - 0.5) / transform.std.to(x.dtype)
        nll = -self.flow(z).log_prob(x)
        return {"per_feature": nll[:, None], "recon": nll, "nll": nll}

    def sample(self, z: torch.Tensor, transform, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(len(z), self.n_features, generator=generator, device=z.device)
        return transform.inverse(self.flow(z).transform.inv(eps))

    def decoded(self, z: torch.Tensor, transform) -> torch.Tensor:
        """Sampled events in the transformed space, reparameterised through the flow (VAE+D's discriminator)."""
        return self.flow(z).rsample()


def build_decoder(kind: str, latent_dim: int, hidden: list[int], names: list[str], kinds: list[str],
                  activation: str, heads: dict[str, str] | None, feature_weights: dict[str, float] | None,
                  flow_transforms: int = 5, flow_hidden: int = 128, flow_passes: int | None = None) -> nn.Module:
    if kind == "mse":
        return MSEHead(latent_dim, hidden, len(names), activation)
    if kind == "likelihood":
        return DensityHead(latent_dim, hidden, names, kinds, activation, heads, feature_weights)
    if kind == "autoregressive":
        return AutoregressiveDensityHead(latent_dim, hidden, names, kinds, activation, heads, feature_weights)
    if kind == "flow":
        return FlowHead(latent_dim, len(names), flow_transforms, flow_hidden, passes=flow_passes)
    raise ConfigError(f"decoder: '{kind}' is not one of {', '.join(DECODERS)}")

"""The likelihood VAE of the Wh1Lbb thesis: the decoder predicts a probability density per feature and
the latent prior N(mu_p, sigma_p) is learned with the model.

L = -(1/k) sum_i sum_j w_j ln f_j(x_ij | alpha_ij) + beta * KL(q(z|x) || N(mu_p, sigma_p)), with f the
clipped log-normal for positive continuous features and the truncated discrete Gaussian for counts
(Gaussian otherwise; overridable per feature through `heads`). The encoder sees the transformed inputs;
the densities are evaluated on the physical targets (x / target_scale, counts as integers), never on
standardised numbers. The anomaly score of an event is its loss.
"""

from __future__ import annotations

import torch

from lit_vae.data.transforms import KIND_CODE
from lit_vae.errors import ConfigError
from lit_vae.models.base import BaseVAE
from lit_vae.models.components import Decoder, GaussianEncoder, reparameterise
from lit_vae.models.distributions import CLIP_THRESHOLD, DEFAULT_HEAD, HEADS, LearnablePrior


class LikelihoodVAE(BaseVAE):
    """Per-feature density heads and a learnable Gaussian prior; see the module docstring."""

    is_generator = False  # trained for anomaly scores; sample() still works

    def __init__(self, n_features: int, heads: dict[str, str] | None = None,
                 feature_weights: dict[str, float] | None = None, **kwargs):
        super().__init__(n_features=n_features, **kwargs)
        heads, feature_weights = heads or {}, feature_weights or {}
        for name in {*heads, *feature_weights} - set(self.feature_names):
            raise ConfigError(f"heads/feature_weights name '{name}', which is not a feature: {self.feature_names}")
        for name, head in heads.items():
            if head not in HEADS:
                raise ConfigError(f"heads.{name}: unknown head '{head}'; one of {', '.join(HEADS)}")
        self.head_names = [heads.get(n, DEFAULT_HEAD[k]) for n, k in zip(self.feature_names, self.feature_kinds,
                                                                          strict=True)]
        self.register_buffer("feature_weight", torch.tensor([float(feature_weights.get(n, 1.0))
                                                             for n in self.feature_names]))
        self.n_params = [HEADS[h].n_params for h in self.head_names]
        self.encoder = GaussianEncoder(n_features, self.sizes, self.latent_dim, self.activation)
        self.decoder = Decoder(self.latent_dim, self.sizes, sum(self.n_params), self.activation)
        self.prior = LearnablePrior(self.latent_dim)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and datamodule is not None:
            self.initialise_output_bias(datamodule.part("train")["target"])

    @torch.no_grad()
    def initialise_output_bias(self, targets: torch.Tensor) -> None:
        """Start each head at the training marginal (log-mean/log-std, mean/std, fraction below the clip),
        so that training begins near the data instead of O(100) nats away; a restored checkpoint
        overrides it."""
        bias = self.decoder.net[-1].bias
        offsets = [0, *torch.tensor(self.n_params).cumsum(0).tolist()]
        inverse_softplus = lambda s: torch.log(torch.expm1(torch.clamp(s, min=1e-2)))  # noqa: E731
        for j, head in enumerate(self.head_names):
            x, start = targets[:, j].double(), offsets[j]
            if head == "clipped_lognormal":
                above = x[x >= CLIP_THRESHOLD]
                fraction = ((x < CLIP_THRESHOLD).double().mean()).clamp(1e-3, 1 - 1e-3)
                log_x = torch.log(above) if len(above) else torch.zeros(1, dtype=x.dtype)
                values = [torch.logit(fraction), log_x.mean(), inverse_softplus(log_x.std())]
            elif head in ("gaussian", "discrete_gaussian"):
                values = [x.mean(), inverse_softplus(x.std())]
            else:
                continue
            bias[start:start + len(values)] = torch.stack(values).to(bias.dtype)

    def raw_parameters(self, z: torch.Tensor) -> list[torch.Tensor]:
        """The decoder's raw outputs split per feature, (events, n_params) each."""
        return list(self.decoder(z).split(self.n_params, dim=-1))

    def feature_nll(self, batch: dict, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-event, per-feature negative log-likelihood (events, features) and the KL (events)."""
        mu, log_sigma = self.encoder(batch["x"])
        raw = self.raw_parameters(mu if deterministic else reparameterise(mu, log_sigma))
        target = batch["target"]
        nll = torch.stack([-HEADS[h].log_prob(target[:, j], raw[j]) for j, h in enumerate(self.head_names)], dim=-1)
        return nll, self.prior.kl(mu, log_sigma)

    def _terms(self, batch: dict, deterministic: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(per-feature NLL, feature-weighted NLL, KL) per event."""
        nll, kl = self.feature_nll(batch, deterministic)
        return nll, (nll * self.feature_weight).sum(dim=-1), kl

    def losses(self, batch: dict, deterministic: bool = False) -> dict[str, torch.Tensor]:
        nll, weighted, kl = self._terms(batch, deterministic)
        return {"loss": weighted + self.beta * kl, "elbo": nll.sum(dim=-1) + kl, "recon": weighted, "kl": kl}

    @torch.no_grad()
    def score(self, batch: dict) -> dict[str, torch.Tensor]:
        nll, weighted, kl = self._terms(batch, deterministic=True)
        per_feature = {f"nll_{name}": nll[:, j] for j, name in enumerate(self.feature_names)}
        return {"score": weighted + self.beta * kl, "nll": weighted, "kl": kl, **per_feature}

    def sample_physical(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = self.prior.sample(n, generator)
        raw = self.raw_parameters(z)
        targets = torch.stack([HEADS[h].sample(raw[j], generator) for j, h in enumerate(self.head_names)], dim=-1)
        is_count = self.transform.kind == KIND_CODE["count"]
        return torch.where(is_count, targets, targets * self.transform.target_scale.to(targets.dtype))

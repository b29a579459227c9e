"""The likelihood VAE of the Wh1Lbb thesis: the decoder predicts a probability density per feature and
the latent prior N(mu_p, sigma_p) is learned with the model.

L = -(1/k) sum_i sum_j w_j ln f_j(x_ij | alpha_ij) + beta * KL(q(z|x) || N(mu_p, sigma_p)), with f the
clipped log-normal for positive continuous features and the truncated discrete Gaussian for counts
(von Mises for angles, Gaussian otherwise; overridable per feature through `heads`). The encoder sees
the transformed inputs; the densities are evaluated on the physical targets (x / target_scale, counts as
integers), never on standardised numbers. The thesis scores an event by its loss (`anomaly_score: total`,
the default); the shipped configs take -log p(x) (`iwae`), see configs/wh1lbb/*.yaml.
"""

from __future__ import annotations

import torch

from lit_vae.models.base import BaseVAE


class LikelihoodVAE(BaseVAE):
    """The thesis's preset: per-feature density heads and a learnable Gaussian prior; see the module
    docstring. Every other part (a flow prior, a flow decoder) can replace them."""

    is_generator = False  # trained for anomaly scores; sample() still works
    preset = {"decoder": "likelihood", "prior": "learnable"}

    def __init__(self, n_features: int, **kwargs):
        super().__init__(n_features=n_features, **kwargs)

    def score_suite(self, batch: dict) -> dict[str, torch.Tensor]:
        """Every score of BaseVAE.score_suite and the per-feature NLLs (nll_<feature>)."""
        t = self.terms(batch, deterministic=True)
        per_feature = {f"nll_{name}": t["per_feature"][:, j] for j, name in enumerate(self.feature_names)} \
            if t["per_feature"].shape[1] == self.n_features else {}
        return {**super().score_suite(batch), **per_feature}

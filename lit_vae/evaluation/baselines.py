"""Unsupervised anomaly baselines beside the model's scores, fitted on the model's training background only.

The training background is rebuilt from the score file's recorded data split (the same mask the DataModule
used), the features are transformed as the model's inputs were (the kind-based transform, fitted on those
events), and the events are resampled by their cross-section weights so that every baseline sees the same
weighted mixture of processes as the model. scikit-learn does the fitting:

- `baseline: isolation forest`: IsolationForest, score = -score_samples (shorter isolation paths);
- `baseline: gaussian mixture`: GaussianMixture with the component count of lowest BIC (1-16, background
  only), score = -log density;
- `baseline: gaussian nll`: one multivariate Gaussian (EmpiricalCovariance), score = -log density.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from sklearn.covariance import EmpiricalCovariance
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from lit_vae.data.split import background_subset_mask, background_train_mask
from lit_vae.data.transforms import FeatureTransform
from lit_vae.errors import DataError

BASELINES = ("baseline: isolation forest", "baseline: gaussian mixture", "baseline: gaussian nll")
FIT_EVENTS = 20_000  # weighted resample size: enough for 8-20 features, about a second per baseline
COMPONENTS = (1, 2, 4, 8, 16)


def training_background(table, data_split: dict, path: str) -> np.ndarray:
    """True for the rows of a region table (`read_region`) that the model was trained on (the split's training
    background, within its max_events subset when it had one)."""
    seed = data_split.get("split_seed", data_split.get("seed"))
    if seed is None or data_split.get("train_fraction") is None:
        raise DataError(f"{path}: its metadata records no data split (split_seed, train_fraction); score it "
                        "again with `lit-vae predict`, or pass --no-references")
    return (background_train_mask(table, int(seed), float(data_split["train_fraction"]))
            & background_subset_mask(table, int(seed), data_split.get("max_events")))


def weighted_sample(x: np.ndarray, weights: np.ndarray, seed: int) -> np.ndarray:
    """FIT_EVENTS rows of x drawn with replacement in proportion to their weights (the weighted mixture)."""
    rng = np.random.default_rng(seed)
    return x[rng.choice(len(x), size=FIT_EVENTS, p=weights / weights.sum())]


def gaussian_mixture(sample: np.ndarray, n_events: int, seed: int) -> GaussianMixture:
    """The full-covariance mixture of lowest BIC on the sample (components allowed while the parameters
    stay well below the n_events it was drawn from)."""
    n_features = sample.shape[1]
    if (n_features + 1) ** 2 >= n_events:
        raise DataError(f"{n_events} training background events are too few for a Gaussian mixture of {n_features} "
                        "features")
    with warnings.catch_warnings():  # EM stopping at max_iter still gives a usable density; say nothing
        warnings.simplefilter("ignore", ConvergenceWarning)
        mixtures = [GaussianMixture(k, covariance_type="full", reg_covar=1e-4, max_iter=300,
                                    random_state=seed).fit(sample)
                    for k in COMPONENTS if k * (n_features + 1) ** 2 < n_events]
    return min(mixtures, key=lambda g: g.bic(sample))


def baseline_scores(train_x: np.ndarray, train_w: np.ndarray, x: np.ndarray, kinds: list[str],
                    seed: int = 0) -> dict[str, np.ndarray]:
    """Each baseline's score of the events x (physical units, larger = more anomalous), fitted on the
    training events train_x with weights train_w."""
    if len(train_x) < 2 * len(kinds):
        raise DataError(f"{len(train_x)} training background events are too few to fit the baselines")
    transform = FeatureTransform.fit(train_x, kinds)
    with torch.no_grad():
        fit_on, score_on = (transform(torch.as_tensor(a, dtype=torch.float32)).double().numpy() for a in (train_x, x))
    sample = weighted_sample(fit_on, train_w, seed)
    forest = IsolationForest(n_estimators=200, random_state=seed).fit(sample)
    mixture = gaussian_mixture(sample, len(train_x), seed)
    gaussian = EmpiricalCovariance().fit(sample)
    log_det = np.linalg.slogdet(gaussian.covariance_)[1]
    return {
        BASELINES[0]: -forest.score_samples(score_on),
        BASELINES[1]: -mixture.score_samples(score_on),
        BASELINES[2]: 0.5 * (gaussian.mahalanobis(score_on) + log_det + len(kinds) * math.log(2 * math.pi)),
    }

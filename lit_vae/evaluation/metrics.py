"""The numbers that judge a model, from arrays alone (no model, no file).

Generation fidelity compares generated events with held-out Monte Carlo (physical units, same features):
per-feature distances, correlations, the whole-event Frechet and kernel physics distances of Kansal et
al. (JetNet), and a classifier two-sample test. Anomaly detection turns per-event scores of background
and signal into ROC AUC, signal efficiency at fixed background efficiency and the significance
improvement, all with event weights and Poisson-bootstrap intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import linalg, stats
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.inspection import permutation_importance
from sklearn.metrics import roc_auc_score

# --- one feature at a time ---------------------------------------------------------------------------


def common_edges(reference: np.ndarray, other: np.ndarray, kind: str, n_bins: int = 40) -> np.ndarray:
    """Bin edges shared by two samples of one feature: one bin per integer for counts, else n_bins equal
    bins over the reference's 0.1-99.9 % range (values outside are counted in the edge bins)."""
    if kind == "count":
        lo = np.floor(min(reference.min(), other.min()))
        hi = min(np.ceil(max(reference.max(), other.max())), lo + 200)
        return np.arange(lo - 0.5, hi + 1.5)
    lo, hi = np.quantile(reference, [0.001, 0.999])
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, n_bins + 1)


def histogram(values: np.ndarray, edges: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Counts in edges with under- and overflow folded into the first and last bin."""
    return np.histogram(np.clip(values, edges[0], edges[-1]), edges, weights=weights)[0].astype(np.float64)


def chi2_ndf(h1: np.ndarray, h2: np.ndarray) -> float:
    """Two-sample chi2 / ndf of unweighted histograms with different totals (ROOT's Chi2Test "UU"):
    sum (sqrt(N2/N1) n1 - sqrt(N1/N2) n2)^2 / (n1 + n2) over filled bins, ndf = filled bins - 1."""
    n1, n2 = h1.sum(), h2.sum()
    used = (h1 + h2) > 0
    chi2 = np.sum((np.sqrt(n2 / n1) * h1[used] - np.sqrt(n1 / n2) * h2[used]) ** 2 / (h1[used] + h2[used]))
    return float(chi2 / max(int(used.sum()) - 1, 1))


def separation(h1: np.ndarray, h2: np.ndarray) -> float:
    """Separation power 1/2 sum (p - q)^2 / (p + q) of the normalised histograms: 0 identical, 1 disjoint."""
    p, q = h1 / h1.sum(), h2 / h2.sum()
    used = (p + q) > 0
    return float(0.5 * np.sum((p[used] - q[used]) ** 2 / (p[used] + q[used])))


def feature_metrics(reference: np.ndarray, other: np.ndarray, kinds: Sequence[str],
                    names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per feature: Wasserstein-1 on values standardised by the reference's mean and spread, the KS
    statistic, chi2/ndf and separation power on a common binning (counts per integer)."""
    out = {}
    for j, (name, kind) in enumerate(zip(names, kinds, strict=True)):
        a, b = reference[:, j], other[:, j]
        scale = a.std() or 1.0
        edges = common_edges(a, b, kind)
        ha, hb = histogram(a, edges), histogram(b, edges)
        out[name] = {"w1": float(stats.wasserstein_distance(a / scale, b / scale)),
                     "ks": float(stats.ks_2samp(a, b, method="asymp").statistic),
                     "chi2_ndf": chi2_ndf(ha, hb), "separation": separation(ha, hb)}
    return out


# --- correlations --------------------------------------------------------------------------------------


def correlation(x: np.ndarray) -> np.ndarray:
    """Pearson correlation matrix of the columns (0 where a column is constant)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(np.corrcoef(x, rowvar=False))


def correlation_metrics(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Max and mean |delta rho| over the off-diagonal pairs of the two Pearson matrices."""
    delta = np.abs(correlation(other) - correlation(reference))[np.triu_indices(reference.shape[1], 1)]
    return {"max_abs_delta_rho": float(delta.max()), "mean_abs_delta_rho": float(delta.mean())}


# --- whole-event distances (Kansal et al., JetNet) -----------------------------------------------------------


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Frechet distance of two Gaussians: |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))."""
    covmean = linalg.sqrtm(cov1 @ cov2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(np.real(covmean)))


def normalise_by_max(reference: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Every array divided by the reference's max |x| per feature (JetNet's normalisation)."""
    scale = np.abs(reference).max(axis=0)
    scale[scale == 0] = 1.0
    return [reference / scale] + [o / scale for o in others]


def fpd(reference: np.ndarray, other: np.ndarray, n_points: int = 8, n_draws: int = 5,
        seed: int = 0) -> tuple[float, float]:
    """Frechet physics distance extrapolated to infinite samples, with its error: evaluated on random
    subsets of n_points sizes from 20 % to 100 % of the smaller sample, fitted linearly in 1/N."""
    x, y = normalise_by_max(reference, other)
    rng = np.random.default_rng(seed)
    n_max = min(len(x), len(y))
    sizes = np.linspace(max(n_max // 5, 2), n_max, n_points).astype(int)
    values = []
    for n in sizes:
        draws = []
        for _ in range(n_draws):
            a, b = x[rng.choice(len(x), n, replace=False)], y[rng.choice(len(y), n, replace=False)]
            draws.append(frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)))
        values.append(np.mean(draws))
    fit = stats.linregress(1.0 / sizes, values)
    return float(fit.intercept), float(fit.intercept_stderr)


def mmd_poly(x: np.ndarray, y: np.ndarray, degree: int = 4) -> float:
    """Unbiased MMD^2 with the polynomial kernel k(a, b) = (a.b / d + 1)^degree."""
    d, m, n = x.shape[1], len(x), len(y)

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        base = a @ b.T / d + 1
        k = base.copy()
        for _ in range(degree - 1):  # in-place products: an integer power without pow()'s cost
            k *= base
        return k

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kpd(reference: np.ndarray, other: np.ndarray, batch_size: int = 5000, n_batches: int = 10,
        seed: int = 0) -> tuple[float, float]:
    """Kernel physics distance: median over n_batches random batches of the unbiased polynomial MMD^2,
    and half the 16-84 % spread. Batches hold at most half of each sample, so that they differ (and the
    spread means something) also when a sample is no larger than one batch."""
    x, y = normalise_by_max(reference, other)
    rng = np.random.default_rng(seed)
    n = min(batch_size, len(x) // 2, len(y) // 2)
    if n < 2:
        raise ValueError(f"KPD needs at least 4 events per sample, got {len(x)} and {len(y)}")
    values = [mmd_poly(x[rng.choice(len(x), n, replace=False)], y[rng.choice(len(y), n, replace=False)])
              for _ in range(n_batches)]
    lo, median, hi = np.percentile(values, [16, 50, 84])
    return float(median), float((hi - lo) / 2)


# --- classifier two-sample test ---------------------------------------------------------------------------


def _balanced_halves(a: np.ndarray, b: np.ndarray, rng: np.random.Generator):
    """Equal numbers of a (label 0) and b (label 1), shuffled, split into a training and a test half."""
    n = min(len(a), len(b))
    x = np.vstack([a[rng.choice(len(a), n, replace=False)], b[rng.choice(len(b), n, replace=False)]])
    y = np.repeat([0, 1], n)
    order = rng.permutation(2 * n)
    train, test = order[: n], order[n:]
    return x[train], y[train], x[test], y[test]


def bootstrap_auc(labels: np.ndarray, scores: np.ndarray, n_boot: int, rng: np.random.Generator,
                  weights: np.ndarray | None = None) -> tuple[float, float]:
    """16-84 % interval of the ROC AUC under a Poisson bootstrap of the events."""
    w = np.ones(len(labels)) if weights is None else weights
    values = [roc_auc_score(labels, scores, sample_weight=w * rng.poisson(1.0, len(w))) for _ in range(n_boot)]
    lo, hi = np.percentile(values, [16, 84])
    return float(lo), float(hi)


def binned_ratio_auc(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                     kind: str) -> float:
    """AUC of one feature's binned likelihood ratio (learnt on the training half): how well that feature
    alone tells the two samples apart, whatever the shape of the difference."""
    edges = common_edges(x_train[y_train == 0], x_train[y_train == 1], kind)
    h0, h1 = histogram(x_train[y_train == 0], edges) + 0.5, histogram(x_train[y_train == 1], edges) + 0.5
    ratio = (h1 / h1.sum()) / (h0 / h0.sum() + h1 / h1.sum())
    index = np.clip(np.searchsorted(edges, x_test, side="right") - 1, 0, len(ratio) - 1)
    return float(roc_auc_score(y_test, ratio[index]))


def classifier_test(reference: np.ndarray, other: np.ndarray, kinds: Sequence[str], names: Sequence[str],
                    seed: int = 0, n_boot: int = 200, importance_events: int = 4000) -> dict:
    """A gradient-boosted classifier trained to tell other (1) from reference (0) on half of a balanced
    sample; its AUC on the other half (0.5 = indistinguishable) with a bootstrap interval, the permutation
    importance of each feature (drop in AUC) and each feature's one-dimensional AUC."""
    rng = np.random.default_rng(seed)
    x_train, y_train, x_test, y_test = _balanced_halves(reference, other, rng)
    model = HistGradientBoostingClassifier(max_iter=200, random_state=seed).fit(x_train, y_train)
    scores = model.predict_proba(x_test)[:, 1]
    lo, hi = bootstrap_auc(y_test, scores, n_boot, rng)
    sub = rng.choice(len(x_test), min(importance_events, len(x_test)), replace=False)
    importance = permutation_importance(model, x_test[sub], y_test[sub], scoring="roc_auc", n_repeats=3,
                                        random_state=seed).importances_mean
    return {"auc": float(roc_auc_score(y_test, scores)), "auc_lo": lo, "auc_hi": hi,
            "permutation_importance": {n: float(v) for n, v in zip(names, importance, strict=True)},
            "auc_1d": {n: binned_ratio_auc(x_train[:, j], y_train, x_test[:, j], y_test, k)
                       for j, (n, k) in enumerate(zip(names, kinds, strict=True))}}


# --- physics consistency of generated Zgamma events -----------------------------------------------------


def _four_vectors(columns: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    pt, eta, phi, e = (np.asarray(columns[f"{prefix}_{v}"], dtype=np.float64) for v in ("pt", "eta", "phi", "e"))
    return np.stack([e, pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)])


def _mass(p: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(p[0] ** 2 - p[1] ** 2 - p[2] ** 2 - p[3] ** 2, 0.0))


def zgamma_consistency(columns: dict[str, np.ndarray], tolerance: float = 0.05) -> dict:
    """Relations every real Zgamma event obeys, checked on (generated) columns: m_llg and pT_ll/m_llg
    recomputed from the lepton and photon four-vectors against the stored columns (relative residuals and
    the fraction beyond tolerance), dR_ll recomputed from the leptons' eta and phi, and impossible
    combinations (an object with E < pT cosh(eta), more c-jets than jets). Returns numbers and residuals."""
    l1, l2, ph = (_four_vectors(columns, p) for p in ("l1", "l2", "ph"))
    m_llg = np.asarray(columns["m_llg"], dtype=np.float64)
    m_re = _mass(l1 + l2 + ph)
    pt_ll = np.hypot(l1[1] + l2[1], l1[2] + l2[2])
    with np.errstate(divide="ignore", invalid="ignore"):  # a generator may emit zeros: inf residuals count as off
        residuals = {
            "m_llg": m_re / m_llg - 1,
            "pt_ll_over_m_llg": (pt_ll / np.maximum(m_re, 1e-9)) / columns["pt_ll_over_m_llg"] - 1,
        }
        if "dR_ll" in columns:
            dphi = np.angle(np.exp(1j * (np.asarray(columns["l1_phi"]) - columns["l2_phi"])))
            dr = np.hypot(np.asarray(columns["l1_eta"]) - columns["l2_eta"], dphi)
            residuals["dR_ll"] = dr / columns["dR_ll"] - 1
    impossible = np.zeros(len(m_llg), dtype=bool)
    for prefix in ("l1", "l2", "ph"):  # massless within 0.1 %: E >= |p| = pT cosh(eta)
        pt, eta, e = (np.asarray(columns[f"{prefix}_{v}"], np.float64) for v in ("pt", "eta", "e"))
        impossible |= e < pt * np.cosh(eta) * (1 - 1e-3)
    energy = impossible.copy()
    if "n_cjets" in columns and "n_jets" in columns:
        impossible |= np.asarray(columns["n_cjets"]) > np.asarray(columns["n_jets"])
    out = {f"{name}_frac_beyond_{round(100 * tolerance)}pct": float(np.mean(~(np.abs(r) <= tolerance)))
           for name, r in residuals.items()}
    out.update({f"{name}_median_residual": float(np.nanmedian(r)) for name, r in residuals.items()})
    out.update({"energy_below_momentum_frac": float(energy.mean()), "impossible_frac": float(impossible.mean())})
    return {"metrics": out, "residuals": residuals}


def physics_consistency(physics, columns: dict[str, np.ndarray], tolerance: float = 1e-4) -> dict:
    """The manifest's declarations checked on (generated) columns: every derived feature recomputed from
    the others (fraction of events beyond tolerance, relative; absolute for angles and counts), every
    declared bound (preselection clause) and the region's cut. impossible_frac counts events that breach
    any bound, outside_region_frac those outside the region's cut; inconsistent_frac those with any
    relation off. Relations and bounds whose columns the file lacks are left out (and not listed)."""
    residuals = physics.consistency(columns)
    n = len(next(iter(columns.values())))
    off = np.zeros(n, dtype=bool)
    out = {}
    for name, r in residuals.items():
        beyond = ~(np.abs(r) <= tolerance)
        off |= beyond
        out[f"{name}_frac_inconsistent"] = float(beyond.mean())
    masks = physics.bound_masks(columns)
    region = {k: v for k, v in masks.items() if k.startswith("region: ")}
    bounds = {k: v for k, v in masks.items() if not k.startswith("region: ")}
    impossible = np.logical_or.reduce([np.zeros(n, dtype=bool), *(~v for v in bounds.values())])
    outside = np.logical_or.reduce([np.zeros(n, dtype=bool), *(~v for v in region.values())])
    out.update({"inconsistent_frac": float(off.mean()) if residuals else float("nan"),
                "impossible_frac": float(impossible.mean()), "outside_region_frac": float(outside.mean()),
                "n_relations_checked": len(residuals), "n_bounds_checked": len(bounds)})
    out.update({f"breach: {k}": float((~v).mean()) for k, v in bounds.items()})
    return {"metrics": out, "residuals": residuals}


def peak(values: np.ndarray) -> tuple[float, float]:
    """A mass peak's position and width: the median and the half-width of the 16-84 % interval."""
    lo, mid, hi = np.percentile(np.asarray(values, dtype=np.float64), [16, 50, 84])
    return float(mid), float((hi - lo) / 2)


ZGAMMA_CONSISTENCY_COLUMNS = ("m_llg", "pt_ll_over_m_llg", "l1_pt", "l1_eta", "l1_phi", "l1_e", "l2_pt",
                              "l2_eta", "l2_phi", "l2_e", "ph_pt", "ph_eta", "ph_phi", "ph_e")


# --- anomaly detection ---------------------------------------------------------------------------------------

BACKGROUND_EFFICIENCIES = (1e-1, 1e-2, 1e-3)


def effective_count(weights: np.ndarray) -> float:
    """Kish's effective number of events, (sum w)^2 / sum w^2."""
    return float(weights.sum() ** 2 / np.sum(weights**2)) if len(weights) else 0.0


def weighted_roc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray,
                 order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(eps_B, eps_S) at every distinct score threshold, from (0, 0) to (1, 1), as sklearn's roc_curve
    without dropping collinear points; order (the events by decreasing score) may be given, so that a
    bootstrap that only changes the weights sorts once."""
    order = np.argsort(-scores, kind="stable") if order is None else order
    ranked, signal, w = scores[order], labels[order] == 1, weights[order]
    last = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # the last event of each tied score
    tp = np.r_[0.0, np.cumsum(np.where(signal, w, 0.0))[last]]
    fp = np.r_[0.0, np.cumsum(np.where(signal, 0.0, w))[last]]
    return fp / fp[-1], tp / tp[-1]


def anomaly_metrics(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray, min_background: float = 10.0,
                    order: np.ndarray | None = None, n_eff_background: float | None = None) -> dict[str, float]:
    """Weighted ROC AUC, signal efficiency at background efficiency 1e-1, 1e-2, 1e-3 (NaN where the
    background sample holds fewer than one effective event there), and the maximum significance
    improvement eps_S / sqrt(eps_B) over cuts keeping at least min_background effective background events.
    order: the events by decreasing score, if known (see weighted_roc). n_eff_background: the background's
    effective count that sets those limits (default: from weights); a bootstrap passes the sample's own, so
    that every replica keeps the same cuts (resampled weights have about half the effective count, which
    would otherwise drag max SIC's interval below its value)."""
    fpr, tpr = weighted_roc(labels, scores, weights, order)
    n_eff = effective_count(weights[labels == 0]) if n_eff_background is None else n_eff_background
    out = {"auc": float(np.trapezoid(tpr, fpr))}
    for eps in BACKGROUND_EFFICIENCIES:
        out[f"eff_s_at_eff_b_{eps:g}"] = float(np.interp(eps, fpr, tpr)) if eps * n_eff >= 1 else float("nan")
    usable = fpr >= min(min_background / max(n_eff, 1e-9), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sic = np.where(usable & (fpr > 0), tpr / np.sqrt(fpr), 0.0)
    out["max_sic"] = float(sic.max())
    return out


def tail_composition(scores: np.ndarray, weights: np.ndarray, samples: np.ndarray,
                     eff_b: float = 1e-2) -> dict[str, float]:
    """Each background sample's share of the weight in the background's tail: the highest-scored events
    that first hold eff_b of the total weight (eff_b = 1: each sample's share of the whole background).
    Read without signals, it says which process a score finds least typical."""
    order = np.argsort(-scores, kind="stable")
    covered = np.cumsum(weights[order]) / weights.sum()
    tail = order[: min(int(np.searchsorted(covered, eff_b * (1 - 1e-12))) + 1, len(order))]
    total = weights[tail].sum()
    return {str(name): float(weights[tail][samples[tail] == name].sum() / total) for name in np.unique(samples)}


def bootstrap_intervals(fn: Callable[..., dict[str, float]], labels: np.ndarray, scores: np.ndarray,
                        weights: np.ndarray, n_boot: int = 100, seed: int = 0,
                        groups: np.ndarray | None = None) -> dict[str, tuple[float, float]]:
    """16-84 % intervals of every number fn(labels, scores, weights) returns, Poisson-bootstrapping events:
    rows with the same group index (the rows of one truth-tagged event) share one Poisson count."""
    rng = np.random.default_rng(seed)
    groups = np.arange(len(weights)) if groups is None else groups
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    draws = [fn(labels, scores, weights * rng.poisson(1.0, n_groups)[groups]) for _ in range(n_boot)]
    return {k: tuple(float(v) for v in np.nanpercentile([d[k] for d in draws], [16, 84]))
            if not all(np.isnan(d[k]) for d in draws) else (float("nan"), float("nan")) for k in draws[0]}


def supervised_scores(x: np.ndarray, labels: np.ndarray, weights: np.ndarray, seed: int = 0,
                      groups: np.ndarray | None = None) -> np.ndarray:
    """Out-of-fold signal probabilities of a gradient-boosted classifier trained on signal vs background
    (two folds, classes balanced by weight; the rows of one event, same group index, in one fold): the
    supervised ceiling for an anomaly score."""
    rng = np.random.default_rng(seed)
    groups = np.arange(len(labels)) if groups is None else groups
    fold = rng.integers(0, 2, int(groups.max()) + 1)[groups]
    balanced = weights / np.where(labels == 1, weights[labels == 1].sum(), weights[labels == 0].sum())
    out = np.zeros(len(labels))
    for k in (0, 1):
        train = fold != k
        model = HistGradientBoostingClassifier(max_iter=200, random_state=seed)
        model.fit(x[train], labels[train], sample_weight=balanced[train] * train.sum())
        out[~train] = model.predict_proba(x[~train])[:, 1]
    return out


def best_single_cut(x: np.ndarray, names: Sequence[str], labels: np.ndarray,
                    weights: np.ndarray) -> tuple[str, np.ndarray]:
    """The one feature whose cut (x > c or x < c) separates signal from background best by weighted AUC,
    and its values as a score (negated for an upper cut)."""
    aucs = [roc_auc_score(labels, x[:, j], sample_weight=weights) for j in range(len(names))]
    j = int(np.argmax(np.abs(np.array(aucs) - 0.5)))
    sign = 1.0 if aucs[j] >= 0.5 else -1.0
    return (names[j] if sign > 0 else f"-{names[j]}"), sign * x[:, j]

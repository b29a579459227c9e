"""Every metric against an independent computation: scipy, sklearn or a closed form."""

import numpy as np
import pytest
from scipy import optimize, stats
from sklearn.metrics import roc_auc_score

from lit_vae.evaluation import metrics as m
from lit_vae.evaluation.report import score_block


@pytest.fixture
def rng() -> np.random.Generator:
    """A generator seeded per test: a test's draws do not depend on which tests ran before it."""
    return np.random.default_rng(7)



def test_chi2_ndf_equals_the_contingency_table_statistic():
    h1 = np.array([120.0, 340, 510, 260, 70])
    h2 = np.array([50.0, 180, 240, 160, 20])
    chi2, _, dof, _ = stats.chi2_contingency(np.vstack([h1, h2]), correction=False)
    assert m.chi2_ndf(h1, h2) == pytest.approx(chi2 / dof, rel=1e-10)


def test_separation_is_zero_for_identical_and_one_for_disjoint_histograms():
    assert m.separation(np.array([1.0, 2, 3]), np.array([2.0, 4, 6])) == pytest.approx(0)
    assert m.separation(np.array([5.0, 0, 0]), np.array([0.0, 0, 7])) == pytest.approx(1)


def test_feature_metrics_match_scipy_on_standardised_values(rng):
    a = rng.normal(10, 2, size=(5000, 2))
    b = a[::-1] + np.array([1.0, 0.0])
    result = m.feature_metrics(a, b, ["real", "real"], ["x", "y"])
    sigma = a[:, 0].std()
    assert result["x"]["w1"] == pytest.approx(stats.wasserstein_distance(a[:, 0] / sigma, b[:, 0] / sigma))
    assert result["x"]["w1"] == pytest.approx(1.0 / a[:, 0].std(), rel=1e-6)  # a pure shift by 1 = 1/sigma
    assert result["x"]["ks"] == pytest.approx(stats.ks_2samp(a[:, 0], b[:, 0]).statistic)
    assert result["y"]["w1"] == pytest.approx(0, abs=1e-12) and result["y"]["ks"] == 0


def test_count_features_are_binned_per_integer():
    edges = m.common_edges(np.array([0, 1, 2, 2]), np.array([0, 5]), "count")
    np.testing.assert_array_equal(edges, np.arange(-0.5, 6.5))


def test_frechet_distance_closed_form():
    mu1, mu2 = np.array([0.0, 1.0]), np.array([2.0, -1.0])
    s1, s2 = np.diag([1.0, 4.0]), np.diag([9.0, 1.0])
    # diagonal covariances: |mu1 - mu2|^2 + sum (sigma1 - sigma2)^2
    assert m.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(8 + (1 - 3) ** 2 + (2 - 1) ** 2)
    rotation = np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
    s = rotation @ np.diag([2.0, 0.5]) @ rotation.T
    assert m.frechet_distance(mu1, s, mu1, s) == pytest.approx(0, abs=1e-9)


def test_fpd_recovers_the_distance_of_two_shifted_gaussians(rng):
    a = rng.normal(0, 1, size=(20000, 3)) + 5
    b = rng.normal(0, 1, size=(20000, 3)) + 5 + np.array([0.5, 0, 0])
    scale = np.abs(a).max(axis=0)
    expected = (0.5 / scale[0]) ** 2
    value, error = m.fpd(a, b, seed=1)
    assert value == pytest.approx(expected, rel=0.15)
    same, same_error = m.fpd(a, rng.normal(0, 1, size=(20000, 3)) + 5, seed=1)
    assert abs(same) < max(5 * same_error, 0.05 * expected)


def test_mmd_of_the_linear_kernel_is_the_mean_difference(rng):
    d = 4
    x = rng.normal(0, 1, size=(4000, d))
    y = rng.normal(0, 1, size=(4000, d)) + 0.3
    # k(a, b) = a.b / d + 1: E[MMD^2] = |mu_x - mu_y|^2 / d
    assert m.mmd_poly(x, y, degree=1) == pytest.approx(d * 0.3**2 / d, rel=0.2)


def test_kpd_is_zero_for_identical_distributions_and_positive_for_different_ones(rng):
    a, b = rng.normal(size=(6000, 3)), rng.normal(size=(6000, 3))
    value, spread = m.kpd(a, b, batch_size=2000, seed=0)
    assert abs(value) < 3 * spread + 1e-5
    shifted, shifted_spread = m.kpd(a, b * 1.5, batch_size=2000, seed=0)
    assert shifted > 10 * shifted_spread > 0
    # Samples no larger than one batch still give a spread (batches of half of each sample differ).
    small, small_spread = m.kpd(a[:1500], b[:1500] * 1.5, batch_size=5000, seed=0)
    assert small_spread > 0 and small > 3 * small_spread


def test_classifier_test_is_half_for_identical_samples_and_names_the_broken_feature(rng):
    a = rng.normal(size=(6000, 4))
    same = m.classifier_test(a[:3000], a[3000:], ["real"] * 4, list("abcd"), n_boot=50)
    assert 0.45 < same["auc"] < 0.55
    assert same["auc_lo"] <= same["auc"] <= same["auc_hi"]
    broken = a[3000:].copy()
    broken[:, 2] = rng.uniform(-3, 3, size=3000)  # one feature replaced by noise
    result = m.classifier_test(a[:3000], broken, ["real"] * 4, list("abcd"), n_boot=50)
    assert result["auc"] > 0.6
    assert max(result["permutation_importance"], key=result["permutation_importance"].get) == "c"
    assert max(result["auc_1d"], key=result["auc_1d"].get) == "c"


def _zgamma_events(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Massless leptons and a photon with exact derived columns."""
    out = {}
    p = np.zeros((4, n))
    ll = np.zeros((4, n))
    for name in ("l1", "l2", "ph"):
        pt, eta, phi = rng.uniform(20, 80, n), rng.uniform(-2.4, 2.4, n), rng.uniform(-np.pi, np.pi, n)
        out.update({f"{name}_pt": pt, f"{name}_eta": eta, f"{name}_phi": phi, f"{name}_e": pt * np.cosh(eta)})
        v = np.stack([pt * np.cosh(eta), pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)])
        p += v
        if name != "ph":
            ll += v
    out["m_llg"] = np.sqrt(p[0] ** 2 - p[1] ** 2 - p[2] ** 2 - p[3] ** 2)
    out["pt_ll_over_m_llg"] = np.hypot(ll[1], ll[2]) / out["m_llg"]
    dphi = np.angle(np.exp(1j * (out["l1_phi"] - out["l2_phi"])))
    out["dR_ll"] = np.hypot(out["l1_eta"] - out["l2_eta"], dphi)
    return out


def test_zgamma_consistency_passes_real_events_and_catches_a_generator_that_ignores_the_relations(rng):
    events = _zgamma_events(2000, rng)
    good = m.zgamma_consistency(events)["metrics"]
    assert good["m_llg_frac_beyond_5pct"] == 0 and good["impossible_frac"] == 0
    assert good["dR_ll_frac_beyond_5pct"] == 0
    broken = dict(events)
    broken["m_llg"] = rng.permutation(events["m_llg"])  # right marginal, wrong relation
    broken["l1_e"] = events["l1_e"] * 0.8  # E < pT cosh(eta)
    bad = m.zgamma_consistency(broken)["metrics"]
    assert bad["m_llg_frac_beyond_5pct"] > 0.5
    assert bad["energy_below_momentum_frac"] == 1.0


def test_anomaly_metrics_of_two_gaussians_match_the_closed_form(rng):
    n = 200_000
    labels = np.repeat([0, 1], n)
    scores = np.concatenate([rng.normal(0, 1, n), rng.normal(1, 1, n)])
    result = m.anomaly_metrics(labels, scores, np.ones(2 * n))
    assert result["auc"] == pytest.approx(stats.norm.cdf(1 / np.sqrt(2)), abs=0.003)
    for eps in (1e-1, 1e-2, 1e-3):  # cut at the background quantile 1 - eps
        expected = stats.norm.sf(stats.norm.isf(eps) - 1)
        assert result[f"eff_s_at_eff_b_{eps:g}"] == pytest.approx(expected, rel=0.1)  # 200 background events at 1e-3
    best = -optimize.minimize_scalar(lambda c: -stats.norm.sf(c - 1) / np.sqrt(stats.norm.sf(c)),
                                     bounds=(-3, 3.0), method="bounded").fun  # SIC is largest at the 10-event limit
    assert result["max_sic"] >= 0.97 * best


def test_weights_count_like_repeated_events_and_unresolvable_efficiencies_are_nan():
    labels = np.array([0, 0, 0, 1, 1, 0, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.3, 0.2, 0.9])
    weights = np.array([1.0, 2, 1, 1, 3, 1, 1])
    repeated = np.repeat(np.arange(7), weights.astype(int))
    weighted = m.anomaly_metrics(labels, scores, weights)
    assert weighted["auc"] == pytest.approx(roc_auc_score(labels[repeated], scores[repeated]))
    assert np.isnan(weighted["eff_s_at_eff_b_0.01"])  # 6 background events cannot resolve 1 %


def test_tail_composition_matches_the_closed_form_of_two_gaussian_samples(rng):
    """Background a ~ N(0, 1) at weight 1 and b ~ N(1, 1) at weight 0.5: the 1 % tail starts at the t where
    sf(t) + 0.5 sf(t - 1) = 0.015, and b's share there is 0.5 sf(t - 1) / 0.015; at eff_b = 1, 1/3."""
    n = 400_000
    scores = np.concatenate([rng.normal(0, 1, n), rng.normal(1, 1, n)])
    weights, samples = np.repeat([1.0, 0.5], n), np.repeat(["a", "b"], n)
    t = optimize.brentq(lambda c: stats.norm.sf(c) + 0.5 * stats.norm.sf(c - 1) - 0.015, 0, 6)
    tail = m.tail_composition(scores, weights, samples)
    assert tail["b"] == pytest.approx(0.5 * stats.norm.sf(t - 1) / 0.015, abs=0.01)
    assert tail["a"] + tail["b"] == pytest.approx(1.0)
    whole = m.tail_composition(scores, weights, samples, eff_b=1.0)
    assert whole["b"] == pytest.approx(1 / 3, rel=1e-9)


def test_bootstrap_interval_brackets_the_value(rng):
    labels = np.repeat([0, 1], 2000)
    scores = np.concatenate([rng.normal(0, 1, 2000), rng.normal(0.5, 1, 2000)])
    weights = np.ones(4000)
    value = m.anomaly_metrics(labels, scores, weights)["auc"]
    lo, hi = m.bootstrap_intervals(m.anomaly_metrics, labels, scores, weights, n_boot=100)["auc"]
    assert lo < value < hi and hi - lo < 0.05


def test_max_sic_interval_holds_its_value_when_the_maximum_sits_at_the_resolvable_limit(rng):
    """A well-separated signal puts max SIC at the smallest eps_B that keeps 10 effective background events;
    Poisson-resampled weights halve the effective count, so replicas must keep the sample's own limit."""
    labels = np.repeat([0, 1], [20_000, 2_000])
    scores = np.concatenate([rng.normal(0, 1, 20_000), rng.normal(3, 1, 2_000)])
    block = score_block(labels, scores, np.ones(22_000), n_boot=100, seed=0)
    fpr, tpr = m.weighted_roc(labels, scores, np.ones(22_000))
    floor = fpr >= 10 / 20_000
    assert block["max_sic"] == pytest.approx((tpr[floor] / np.sqrt(fpr[floor])).max(), rel=1e-12)
    assert block["max_sic_lo"] < block["max_sic"] < block["max_sic_hi"]


def test_references_find_the_discriminating_variable(rng):
    n = 3000
    labels = np.repeat([0, 1], n)
    x = rng.normal(size=(2 * n, 3))
    x[labels == 1, 1] -= 2.0  # signal sits low in feature 'b'
    name, cut = m.best_single_cut(x, ["a", "b", "c"], labels, np.ones(2 * n))
    assert name == "-b" and roc_auc_score(labels, cut) > 0.9
    supervised = m.supervised_scores(x, labels, np.ones(2 * n))
    assert roc_auc_score(labels, supervised) > 0.9


def test_the_bootstrap_resamples_events_not_rows(rng):
    """Each event split into two rows of half its weight (a truth-tagged event's configurations): with the
    rows grouped by event the intervals are exactly those of the events; resampling rows alone would
    narrow them."""
    labels = rng.integers(0, 2, 400)
    scores = rng.normal(labels * 0.8, 1.0)
    weights = rng.uniform(0.5, 1.5, 400)
    rows = np.repeat(np.arange(400), 2)
    events = m.bootstrap_intervals(m.anomaly_metrics, labels, scores, weights, n_boot=60, seed=3)
    grouped = m.bootstrap_intervals(m.anomaly_metrics, labels[rows], scores[rows], weights[rows] / 2, n_boot=60,
                                    seed=3, groups=rows)
    assert grouped["auc"] == pytest.approx(events["auc"], rel=1e-12)
    wide = m.bootstrap_intervals(m.anomaly_metrics, labels, scores, weights, n_boot=400, seed=4)
    narrow = m.bootstrap_intervals(m.anomaly_metrics, labels[rows], scores[rows], weights[rows] / 2, n_boot=400,
                                   seed=4)  # the rows drawn apart: about 1/sqrt(2) of the width
    assert narrow["auc"][1] - narrow["auc"][0] < 0.85 * (wide["auc"][1] - wide["auc"][0])


def test_the_weighted_roc_is_sklearns(rng):
    """weighted_roc (sorted once, for the bootstrap) traces sklearn's roc_curve through tied scores: the same
    AUC and the same signal efficiency at every background efficiency."""
    from sklearn.metrics import roc_curve

    labels = rng.integers(0, 2, 3000)
    scores = np.round(rng.normal(labels * 0.7, 1.0), 1)  # many ties
    weights = rng.exponential(1.0, 3000)
    fpr, tpr = m.weighted_roc(labels, scores, weights)
    reference_fpr, reference_tpr, _ = roc_curve(labels, scores, sample_weight=weights)
    grid = np.linspace(0, 1, 201)
    np.testing.assert_allclose(np.interp(grid, fpr, tpr), np.interp(grid, reference_fpr, reference_tpr), atol=1e-12)
    assert m.anomaly_metrics(labels, scores, weights)["auc"] == pytest.approx(
        roc_auc_score(labels, scores, sample_weight=weights), rel=1e-12)
    order = np.argsort(-scores, kind="stable")
    presorted = m.anomaly_metrics(labels, scores, weights, order=order)
    plain = m.anomaly_metrics(labels, scores, weights)
    np.testing.assert_array_equal(list(presorted.values()), list(plain.values()))  # NaN where unresolved, both

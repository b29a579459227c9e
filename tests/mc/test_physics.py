"""Pieces of the producer checked against closed forms and independent computations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from lit_vae.errors import ConfigError
from lit_vae.mc.analyses import four_vector, invariant_mass, met_trigger_efficiency, tag_configurations, thin_rows
from lit_vae.mc.detector import DETECTOR
from lit_vae.mc.processes import c1n2_wh, write_slha
from lit_vae.mc.reconstruction import delta_phi, hadron_quark_content


def test_truth_tag_configurations_sum_to_the_pass_probability():
    """Summed over the configurations with 1-3 b-tags, the probabilities give the closed-form probability
    that direct tagging passes (at least one tag among three jets; two-jet events padded with 0)."""
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, size=(500, 3))
    p[:100, 2] = 0.0
    configs, prob = tag_configurations(p)
    assert configs.shape == (7, 3) and configs.sum(axis=1).min() == 1
    np.testing.assert_allclose(prob.sum(axis=1), 1 - np.prod(1 - p, axis=1), rtol=1e-12)
    assert np.all(prob[:100][:, configs[:, 2]] == 0)  # a padded jet is never tagged


def test_truth_tag_configuration_probabilities_are_products():
    p = np.array([[0.77, 0.16, 0.01]])
    configs, prob = tag_configurations(p)
    for config, value in zip(configs, prob[0], strict=True):
        expected = np.prod([q if tagged else 1 - q for q, tagged in zip(p[0], config, strict=True)])
        assert value == pytest.approx(expected, rel=1e-12)
    assert {tuple(c) for c in configs.astype(int)} == {c for c in itertools.product([0, 1], repeat=3) if sum(c)}


def test_truth_tag_reproduces_direct_tagging_on_average():
    """Weighted truth-tagged rows per b-tag multiplicity equal the direct-tagging frequencies."""
    rng = np.random.default_rng(2)
    p = np.tile([0.77, 0.16, 0.01], (400_000, 1))
    configs, prob = tag_configurations(p[:1])
    direct = rng.random(p.shape) < p
    for n in (1, 2, 3):
        truth = prob[0, configs.sum(axis=1) == n].sum()
        plain = (direct.sum(axis=1) == n).mean()
        assert truth == pytest.approx(plain, abs=4e-3)
    assert stats.binomtest(int((direct.sum(axis=1) >= 1).sum()), len(p), prob.sum()).pvalue > 1e-3


def test_thinning_keeps_every_rows_expected_weight():
    """Russian roulette: rows at or above the floor are kept as they are; a row of weight f below it
    survives with probability f / floor (binomial test) at weight floor, so its expected weight is f."""
    rng = np.random.default_rng(3)
    factor = np.tile([0.5, 0.02, 0.01, 0.001], 100_000)
    keep, weight = thin_rows(factor, 0.02, rng.random(len(factor)))
    np.testing.assert_array_equal(weight, np.maximum(factor[keep], 0.02))
    for f in (0.5, 0.02):
        assert keep[factor == f].all()
    for f in (0.01, 0.001):
        rows = factor == f
        assert stats.binomtest(int(keep[rows].sum()), int(rows.sum()), f / 0.02).pvalue > 1e-3
        expected, kept_weight = f * rows.sum(), weight[factor[keep] == f].sum()
        assert kept_weight == pytest.approx(expected, rel=5 * np.sqrt((0.02 / f - 1) / rows.sum()))
    assert thin_rows(factor, 0.0, rng.random(len(factor)))[0].all()  # floor 0: every row


def test_trigger_turn_on():
    assert met_trigger_efficiency(np.array([DETECTOR.trigger_midpoint]), DETECTOR)[0] == pytest.approx(0.5)
    assert met_trigger_efficiency(np.array([200.0]), DETECTOR)[0] > 0.998
    assert met_trigger_efficiency(np.array([220.0]), DETECTOR)[0] > 0.9999
    assert met_trigger_efficiency(np.array([60.0]), DETECTOR)[0] < 1e-3


def test_invariant_mass_and_delta_phi_closed_forms():
    # Two massless back-to-back 45.594 GeV leptons: m = 2E.
    a = four_vector(np.array([45.594]), np.array([0.0]), np.array([0.3]), np.array([45.594]))
    b = four_vector(np.array([45.594]), np.array([0.0]), np.array([0.3 + np.pi]), np.array([45.594]))
    assert invariant_mass(a, b)[0] == pytest.approx(91.188)
    phi1, phi2 = np.array([3.0, -3.0, 0.1]), np.array([-3.0, 3.0, 0.2])
    np.testing.assert_allclose(delta_phi(phi1, phi2), np.angle(np.exp(1j * (phi1 - phi2))), atol=1e-12)


def test_hadron_flavour_from_pdg_id():
    import awkward as ak

    ids = ak.Array([[511, -521, 5122, 531, 421, 4122, 411, 211, 5, 5101, 1000005, 22]])
    assert ak.to_list(hadron_quark_content(ids, 5))[0] == [True, True, True, True] + [False] * 8
    assert ak.to_list(hadron_quark_content(ids, 4))[0] == [False] * 4 + [True, True, True] + [False] * 5


def test_slha_spectrum(tmp_path):
    path = tmp_path / "s.slha"
    write_slha(path, 300.0, 75.0)
    text = path.read_text()
    mass = {int(line.split()[0]): float(line.split()[1])
            for line in text.split("BLOCK MASS")[1].split("BLOCK NMIX")[0].strip().splitlines()}
    assert mass[1000024] == mass[1000023] == 300.0 and mass[1000022] == 75.0 and mass[1000021] == 5000.0
    assert "1.000000000e+00   2   1000022   24" in text and "1.000000000e+00   2   1000022   25" in text
    with pytest.raises(ConfigError, match="must exceed --mass-lsp"):
        c1n2_wh(200.0, 100.0, tmp_path / "bad.slha")

"""Derived features and bounds declared in the manifest: the expressions reproduce the shipped Monte Carlo,
flow gradients in torch, are invariant under a global rotation, and completion obeys every bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import uproot

from lit_vae.data.manifest import load_manifest
from lit_vae.data.physics import Physics, wrap_angle
from lit_vae.data.selection import evaluate
from lit_vae.errors import ConfigError

from ..paths import REPO

MANIFEST = load_manifest(REPO / "data_manifests" / "zgamma.yaml")


@pytest.fixture(scope="module")
def mc() -> dict[str, np.ndarray]:
    """The shipped Zgamma background with the auxiliary columns computed from the stored branches."""
    with uproot.open(REPO / "data" / "zgamma_bkg.root") as f:
        columns = {k: v.astype(np.float64) for k, v in f["events"].arrays(library="np").items()}
    for name, feature in MANIFEST.auxiliary.items():
        columns[name] = np.asarray(evaluate(feature.expression, columns, MANIFEST.objects), dtype=np.float64)
    return columns


def test_every_declared_relation_reproduces_the_stored_column(mc):
    """Every derived feature equals the column the ntuple stores, to 1e-4 relative (absolute 1e-4 x pi for
    angles, stored as float32 in [0, pi]); E uses the lepton mass of the channel."""
    assert set(MANIFEST.derived) >= {"l1_e", "l2_e", "ph_e", "m_llg", "dR_ll", "pt_ll_over_m_llg", "dphi_ll",
                                     "dphi_met_zg", "m_ll", "n_jets", "lep_flavour"}
    for name, feature in MANIFEST.derived.items():
        value = evaluate(feature.expression, mc, MANIFEST.objects)
        scale = math.pi if name.startswith("dphi") else 0.0
        np.testing.assert_allclose(value, mc[name], rtol=1e-4, atol=1e-4 * scale, err_msg=name)


def test_independent_four_vector_arithmetic(mc):
    """m_llg from the expression language against E, px, py, pz summed by hand from the stored E."""
    parts = [(mc[f"{p}_e"], mc[f"{p}_pt"] * np.cos(mc[f"{p}_phi"]), mc[f"{p}_pt"] * np.sin(mc[f"{p}_phi"]),
              mc[f"{p}_pt"] * np.sinh(mc[f"{p}_eta"])) for p in ("l1", "l2", "ph")]
    e, px, py, pz = (sum(p[i] for p in parts) for i in range(4))
    by_hand = np.sqrt(e**2 - px**2 - py**2 - pz**2)
    np.testing.assert_allclose(evaluate("mass(l1, l2, ph)", mc, MANIFEST.objects), by_hand, rtol=1e-5)
    np.testing.assert_allclose(evaluate("phi(l1, l2, ph)", mc, MANIFEST.objects), np.arctan2(py, px), atol=1e-9)


def test_torch_evaluator_matches_numpy_and_passes_gradients(mc):
    rows = slice(0, 500)
    numpy_columns = {k: v[rows] for k, v in mc.items()}
    tensors = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in numpy_columns.items()}
    for name, feature in MANIFEST.derived.items():
        value = evaluate(feature.expression, tensors, MANIFEST.objects)
        np.testing.assert_allclose(value.detach().numpy(), evaluate(feature.expression, numpy_columns,
                                                                      MANIFEST.objects), rtol=1e-12, err_msg=name)
    m_llg = evaluate("mass(l1, l2, ph)", tensors, MANIFEST.objects)
    m_llg.sum().backward()
    grad = tensors["ph_pt"].grad
    assert torch.isfinite(grad).all() and (grad.abs() > 0).all()
    # d m / d pT_gamma from a central finite difference of the numpy evaluator
    shifted = dict(numpy_columns, ph_pt=numpy_columns["ph_pt"] + 1e-5)
    lowered = dict(numpy_columns, ph_pt=numpy_columns["ph_pt"] - 1e-5)
    numeric = (evaluate("mass(l1, l2, ph)", shifted, MANIFEST.objects)
               - evaluate("mass(l1, l2, ph)", lowered, MANIFEST.objects)) / 2e-5
    np.testing.assert_allclose(grad.numpy(), numeric, rtol=1e-5)


def test_delta_phi_is_signed_and_wrapped():
    a, b = np.array([3.0, -3.0, 0.5]), np.array([-3.0, 3.0, 0.2])
    np.testing.assert_allclose(evaluate("delta_phi(a, b)", {"a": a, "b": b}), [6.0 - 2 * math.pi,
                                                                              2 * math.pi - 6.0, 0.3])
    value = evaluate("delta_phi(a, b)", {"a": np.array([math.pi]), "b": np.array([0.0])})
    assert -math.pi <= value[0] < math.pi


def physics(derived_features="exact", azimuth="relative") -> Physics:
    return Physics.from_manifest(MANIFEST, "window", list(MANIFEST.features), derived_features, azimuth)


def test_completion_of_the_mc_basis_gives_back_the_mc(mc):
    """Relative azimuth and exact derivation invert each other: basis of real events -> full events equal
    to the stored ones up to one global rotation, and every event obeys every declared bound."""
    p = physics()
    assert p.model_features == [n for n in MANIFEST.basis if n != "l1_phi"]
    modelled = p.to_model(mc)
    assert all(np.all((modelled[n] >= -math.pi) & (modelled[n] < math.pi)) for n in p.relative_angles)
    full = p.complete(modelled, np.random.default_rng(1))
    for name in ("m_llg", "dR_ll", "pt_ll_over_m_llg", "dphi_ll", "dphi_met_zg", "l1_e", "n_jets", "lep_flavour"):
        np.testing.assert_allclose(full[name], mc[name], rtol=1e-4, atol=2e-4, err_msg=name)
    rotation = wrap_angle(full["l1_phi"] - mc["l1_phi"])
    np.testing.assert_allclose(wrap_angle(full["met_phi"] - mc["met_phi"] - rotation), 0, atol=1e-9)
    assert p.passes(full).all()
    assert set(p.outputs) >= set(MANIFEST.features) | {"m_ll", "lep_flavour"}


def test_rotation_leaves_every_derived_feature_unchanged(mc):
    p = physics()
    rows = {k: v[:2000] for k, v in mc.items()}
    rotated = dict(rows)
    for name in ("l1_phi", "l2_phi", "ph_phi", "met_phi"):
        rotated[name] = wrap_angle(rows[name] + 1.234)
    for name, expression in p.derived.items():
        np.testing.assert_allclose(evaluate(expression, rotated, p.objects), evaluate(expression, rows, p.objects),
                                   rtol=1e-9, atol=1e-9, err_msg=name)


def test_bounds_catch_each_breach(mc):
    p = physics()
    rows = {k: v[:10].copy() for k, v in mc.items()}
    rows["l2_pt"][0] = rows["l1_pt"][0] * 1.1  # ordering
    rows["ph_eta"][1] = 2.5  # photon acceptance
    rows["ph_eta"][2], rows["ph_phi"][2] = rows["l1_eta"][2], rows["l1_phi"][2] + 0.1  # dR(l, gamma) < 0.4
    masks = p.bound_masks(rows)
    assert not masks["l2_pt <= l1_pt"][0] and not masks["abs(ph_eta) < 2.37"][1]
    assert not masks["delta_r(l1, ph) >= 0.4"][2]
    np.testing.assert_array_equal(p.passes(rows), [False, False, False] + [True] * 7)


@pytest.mark.parametrize("text, message", [
    ("mass(l1_pt)", "mass takes declared objects"),
    ("min(met)", "min takes 2 arguments, got 1"),
    ("abs()", "abs takes 1 arguments, got 0"),
    ("log(met, 2)", "log takes 1 arguments, got 2"),
    ("(" * 300 + "met" + ")" * 300, "nested"),
    ("-" * 3000 + "met", "nested too deeply"),
    ("met + " * 2000 + "met", "longer than"),
])
def test_bad_expressions_are_config_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        evaluate(text, {"met": np.ones(3), "l1_pt": np.ones(3)}, {"l1": {"pt": "l1_pt", "eta": "0", "phi": "0",
                                                                       "mass": "0"}})

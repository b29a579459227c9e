"""Event selections and the ntuple columns of the two analyses, computed from reconstructed objects.

`zgamma_columns`: two same-flavour opposite-sign leptons + a photon in 132 < m_llg < 168 GeV, the paper's
21 training features. `one_lepton_columns`: the Wh1Lbb preselection of the thesis (Table 1) and its
training features. Each returns (the batch index of each selected row, dict of numpy columns per row); the
one-lepton selection also a weight factor per row (truth-tagged events are several rows).
"""

from __future__ import annotations

import awkward as ak
import numpy as np
from scipy.special import erf

from lit_vae.data.io import CONFIGURATION as TAG_CONFIG  # the bitmask of the tagged jets of a row
from lit_vae.mc.detector import Detector
from lit_vae.mc.reconstruction import Objects, delta_phi, delta_r

ZGAMMA_FEATURES = (
    "m_llg", "l1_pt", "l1_eta", "l1_phi", "l1_e", "l2_pt", "l2_eta", "l2_phi", "l2_e",
    "ph_pt", "ph_eta", "ph_phi", "ph_e", "met", "met_phi", "n_jets", "n_cjets",
    "dR_ll", "pt_ll_over_m_llg", "dphi_ll", "dphi_met_zg",
)
ZGAMMA_EXTRA = ("m_ll", "lep_flavour")
ONE_LEPTON_FEATURES = ("met", "mt", "mbb", "mct2", "mlb1", "lep1Pt", "njet30", "nBjet30_MV2c10")
ONE_LEPTON_EXTRA = ("met_phi", "lep1Eta", "lep1Phi", "j1_pt", "j2_pt", "b1_pt", "b2_pt")
COUNT_COLUMNS = ("n_jets", "n_cjets", "njet30", "nBjet30_MV2c10", "lep_flavour", "tag_config")

# Selections (GeV): the Zgamma window of the paper and the thesis preselection (Table 1).
ZGAMMA_LEAD_PT_MIN = 20.0
ZGAMMA_MLLG_WINDOW = (132.0, 168.0)
ONE_LEPTON_PT_MIN = 27.0
JET30_PT_MIN = 30.0
NJET30_RANGE = (2, 3)
NBJET_RANGE = (1, 3)
# Truth-tag rows less probable than this are thinned by Russian roulette (`thin_rows`): light-jet mistags
# (~1e-2 each), 95 % of the W + jets rows; a quarter of them stay, and 99 % of the effective event count.
TAG_FLOOR = 0.02
MET_MIN = 220.0
MT_MIN = 50.0


def four_vector(pt, eta, phi, e):
    """(E, px, py, pz) of numpy arrays."""
    return e, pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)


def invariant_mass(*vectors) -> np.ndarray:
    """Invariant mass of the sum of (E, px, py, pz) four-vectors."""
    e, px, py, pz = (sum(v[i] for v in vectors) for i in range(4))
    return np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0.0))


def _field(records: ak.Array, index: int, name: str, fill: float = np.nan) -> np.ndarray:
    """records[:, index].name as a numpy array, fill where the event has too few objects."""
    padded = ak.pad_none(records[name], index + 1, axis=1)
    return ak.to_numpy(ak.fill_none(padded[:, index], fill)).astype(np.float64)


def zgamma_columns(obj: Objects, rng: np.random.Generator, det: Detector) -> tuple[np.ndarray, dict]:
    """Select l+l- gamma events in the m_llg window and compute the paper's features.

    The lepton pair is the two leading leptons of the leading lepton's flavour; the photon is the
    leading isolated photon.
    """
    leptons = obj.leptons
    lead_flavour = ak.fill_none(ak.firsts(leptons.flavour), 0)
    same = leptons[leptons.flavour == lead_flavour]
    has_pair = ak.to_numpy(ak.num(same) >= 2) & ak.to_numpy(ak.num(obj.photons) >= 1)
    l1 = {k: _field(same, 0, k, 0.0) for k in ("pt", "eta", "phi", "e", "charge")}
    l2 = {k: _field(same, 1, k, 0.0) for k in ("pt", "eta", "phi", "e", "charge")}
    ph = {k: _field(obj.photons, 0, k, 0.0) for k in ("pt", "eta", "phi", "e")}
    v1 = four_vector(l1["pt"], l1["eta"], l1["phi"], l1["e"])
    v2 = four_vector(l2["pt"], l2["eta"], l2["phi"], l2["e"])
    vg = four_vector(ph["pt"], ph["eta"], ph["phi"], ph["e"])
    m_llg = invariant_mass(v1, v2, vg)
    lo, hi = ZGAMMA_MLLG_WINDOW
    mask = (
        has_pair & (l1["charge"] * l2["charge"] < 0) & (l1["pt"] > ZGAMMA_LEAD_PT_MIN) & (m_llg > lo) & (m_llg < hi)
    )
    ll_px, ll_py = v1[1] + v2[1], v1[2] + v2[2]
    zg_phi = np.arctan2(ll_py + vg[2], ll_px + vg[1])
    jets = obj.jets
    cols = {
        "m_llg": m_llg,
        **{f"l1_{k}": l1[k] for k in ("pt", "eta", "phi", "e")},
        **{f"l2_{k}": l2[k] for k in ("pt", "eta", "phi", "e")},
        **{f"ph_{k}": ph[k] for k in ("pt", "eta", "phi", "e")},
        "met": obj.met,
        "met_phi": obj.met_phi,
        "n_jets": ak.to_numpy(ak.num(jets)),
        "n_cjets": ak.to_numpy(ak.sum(abs(jets.eta) < det.central_eta_max, axis=1)),
        "dR_ll": delta_r(l1["eta"], l1["phi"], l2["eta"], l2["phi"]),
        "pt_ll_over_m_llg": np.hypot(ll_px, ll_py) / np.maximum(m_llg, 1e-9),
        "dphi_ll": np.abs(delta_phi(l1["phi"], l2["phi"])),
        "dphi_met_zg": np.abs(delta_phi(obj.met_phi, zg_phi)),
        "m_ll": invariant_mass(v1, v2),
        "lep_flavour": ak.to_numpy(lead_flavour),
    }
    return mask, {k: np.asarray(v)[mask] for k, v in cols.items()}


def met_trigger_efficiency(met: np.ndarray, det: Detector) -> np.ndarray:
    """Error-function turn-on of the emulated MET trigger."""
    return 0.5 * (1.0 + erf((met - det.trigger_midpoint) / (np.sqrt(2.0) * det.trigger_width)))


def tag_configurations(tag_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every b-tag configuration of the (up to) three leading jets with 1-3 b-tags, and its probability per
    event: (configs[config, jet] as bool, prob[event, config]). tag_prob is (events, jets) with 0 for
    padding; summed over configurations, prob is the probability that direct tagging passes."""
    n_jets = tag_prob.shape[1]
    configs = ((np.arange(2**n_jets)[:, None] >> np.arange(n_jets)[None, :]) & 1).astype(bool)
    n_tags = configs.sum(axis=1)
    configs = configs[(n_tags >= NBJET_RANGE[0]) & (n_tags <= NBJET_RANGE[1])]
    prob = np.prod(np.where(configs[None], tag_prob[:, None, :], 1.0 - tag_prob[:, None, :]), axis=2)
    return configs, prob


def thin_rows(factor: np.ndarray, floor: float, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Russian roulette on small row weights: a row of weight factor < floor survives with probability
    factor / floor (u uniform in [0, 1)) and then weighs floor; others are kept as they are. Every row's
    expected weight is unchanged (unbiased), the rows are far fewer and the effective count barely moves.
    Returns (kept rows mask, their weights)."""
    keep = u * floor < factor
    return keep, np.maximum(factor[keep], floor)


def one_lepton_columns(
    obj: Objects, rng: np.random.Generator, det: Detector, *, truth_tagging: bool, tag_floor: float = 0.0
) -> tuple[np.ndarray, dict, np.ndarray]:
    """Thesis preselection and training features; returns (event index of each row, columns per row,
    weight factor per row).

    Directly tagged, an event is one row. Truth-tagged (W + jets: light jets are tagged at 1 %, so direct
    tagging throws away most events), an event is one row per b-tag configuration of its three leading
    jets with 1-3 b-tags and a non-zero probability, weighted by that probability: the rows of an event
    share its id, differ in `tag_config` (the bitmask of tagged jets) and their weights sum to the event's
    weight times its probability to pass the b-tag requirement, so every region (2-3b included) gets
    W + jets rows. With tag_floor > 0 the rows of probability below it are thinned (`thin_rows`; the
    sum is then that weight on average). mbb and mct2 use the two leading b-tagged jets; with exactly one
    b-tag, the leading b-jet and the leading untagged jet (b2_pt is then that jet's pT). mlb1 is the mass of
    the lepton and leading b-jet.
    """
    n = len(obj.met)
    leptons = obj.leptons
    n_lep = ak.to_numpy(ak.num(leptons))
    lep = {k: _field(leptons, 0, k, 0.0) for k in ("pt", "eta", "phi", "e")}
    jets30 = obj.jets[(obj.jets.pt > JET30_PT_MIN) & (abs(obj.jets.eta) < det.central_eta_max)]
    njet30 = ak.to_numpy(ak.num(jets30))
    padded = ak.pad_none(jets30[:, :3], 3, axis=1)
    jet = {k: ak.to_numpy(ak.fill_none(padded[k], 0.0)).astype(np.float64) for k in ("pt", "eta", "phi", "e", "m")}
    prob = ak.to_numpy(ak.fill_none(padded.tag_prob, 0.0)).astype(np.float64)
    if truth_tagging:
        configs, config_prob = tag_configurations(prob)
    else:  # drawn before the trigger: the random stream of the shipped samples
        direct = (rng.random(prob.shape) < prob) & (jet["pt"] > 0)
        configs, config_prob = direct[:, None, :], np.ones((n, 1))
    mt = np.sqrt(np.maximum(2 * lep["pt"] * obj.met * (1 - np.cos(delta_phi(lep["phi"], obj.met_phi))), 0.0))
    trigger = rng.random(n) < met_trigger_efficiency(obj.met, det)
    selected = (
        trigger
        & (n_lep == 1) & (lep["pt"] > ONE_LEPTON_PT_MIN)
        & (njet30 >= NJET30_RANGE[0]) & (njet30 <= NJET30_RANGE[1])
        & (obj.met > MET_MIN) & (mt > MT_MIN)
    )
    common = {"met": obj.met, "mt": mt, "lep1Pt": lep["pt"], "njet30": njet30, "met_phi": obj.met_phi,
              "lep1Eta": lep["eta"], "lep1Phi": lep["phi"], "j1_pt": jet["pt"][:, 0], "j2_pt": jet["pt"][:, 1]}
    rows, columns, factors = [], [], []
    for c in range(configs.shape[-2]):
        tags = np.broadcast_to(configs[..., c, :], prob.shape)
        n_b = tags.sum(axis=1)
        keep = selected & (n_b >= NBJET_RANGE[0]) & (n_b <= NBJET_RANGE[1]) & (config_prob[:, c] > 0)
        tagged = _tagged_columns(tags, jet, lep)
        rows.append(np.flatnonzero(keep))
        columns.append({**{k: np.asarray(v)[keep] for k, v in common.items()},
                        **{k: v[keep] for k, v in tagged.items()},
                        TAG_CONFIG: (tags[keep] * (1 << np.arange(3))).sum(axis=1)})
        factors.append(config_prob[keep, c])
    row_event = np.concatenate(rows)
    order = np.argsort(row_event, kind="stable")  # rows grouped by event, configurations in bitmask order
    columns = {k: np.concatenate([c[k] for c in columns])[order] for k in columns[0]}
    names = (*ONE_LEPTON_FEATURES, *ONE_LEPTON_EXTRA, *((TAG_CONFIG,) if truth_tagging else ()))
    row_event, columns, factor = row_event[order], {k: columns[k] for k in names}, np.concatenate(factors)[order]
    if truth_tagging and tag_floor > 0:  # drawn last: the streams of everything before stay as they were
        keep, factor = thin_rows(factor, tag_floor, rng.random(len(factor)))
        row_event, columns = row_event[keep], {k: v[keep] for k, v in columns.items()}
    return row_event, columns, factor


def _tagged_columns(tags: np.ndarray, jet: dict, lep: dict) -> dict[str, np.ndarray]:
    """The b-tag-dependent columns of one tag configuration (tags[event, jet])."""
    # Order: tagged jets first (by pT), then untagged; the first two form the bb pair.
    order = np.argsort(np.where(tags, -1e6, 0.0) - jet["pt"], axis=1, kind="stable")
    pick = {k: np.take_along_axis(v, order, axis=1) for k, v in jet.items()}
    b1, b2 = (four_vector(*(pick[k][:, i] for k in ("pt", "eta", "phi", "e"))) for i in (0, 1))
    vl = four_vector(lep["pt"], lep["eta"], lep["phi"], lep["e"])
    et1 = np.sqrt(pick["pt"][:, 0] ** 2 + pick["m"][:, 0] ** 2)
    et2 = np.sqrt(pick["pt"][:, 1] ** 2 + pick["m"][:, 1] ** 2)
    mct2_sq = (et1 + et2) ** 2 - (b1[1] - b2[1]) ** 2 - (b1[2] - b2[2]) ** 2
    return {"mbb": invariant_mass(b1, b2), "mct2": np.sqrt(np.maximum(mct2_sq, 0.0)), "mlb1": invariant_mass(vl, b1),
            "nBjet30_MV2c10": tags.sum(axis=1), "b1_pt": pick["pt"][:, 0], "b2_pt": pick["pt"][:, 1]}

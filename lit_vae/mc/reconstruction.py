"""Vectorised detector-level reconstruction of a batch of Pythia events (awkward arrays in, out).

Leptons, photons and jets are built from the final-state particles with the resolutions, acceptances,
efficiencies and isolation of `detector.Detector`; jets are anti-kt clusters from FastJet, labelled by
B/charm-hadron matching; the missing transverse momentum is the negative visible vector sum, with the
hard objects entering smeared and the soft term given its own resolution.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import awkward as ak
import numpy as np

from lit_vae.mc.detector import Detector

INVISIBLE_FINAL = (12, 14, 16, 1000022)


def pt_eta_phi(px, py, pz):
    """Transverse momentum, pseudorapidity and azimuth of (possibly jagged) momentum components."""
    pt = np.hypot(px, py)
    eta = np.arcsinh(pz / np.maximum(pt, 1e-9))
    return pt, eta, np.arctan2(py, px)


def delta_phi(phi1, phi2):
    """phi1 - phi2 wrapped into [-pi, pi)."""
    return (phi1 - phi2 + np.pi) % (2 * np.pi) - np.pi


def delta_r(eta1, phi1, eta2, phi2):
    """Angular distance sqrt(deta^2 + dphi^2)."""
    return np.hypot(eta1 - eta2, delta_phi(phi1, phi2))


def jagged_normal(rng: np.random.Generator, like: ak.Array) -> ak.Array:
    """Standard-normal numbers with the jagged structure of like (one per object)."""
    counts = ak.num(like)
    return ak.unflatten(rng.standard_normal(int(ak.sum(counts))), counts)


def jagged_uniform(rng: np.random.Generator, like: ak.Array) -> ak.Array:
    """Uniform [0, 1) numbers with the jagged structure of like."""
    counts = ak.num(like)
    return ak.unflatten(rng.random(int(ak.sum(counts))), counts)


def hadron_quark_content(pdg_id: ak.Array, quark: int) -> ak.Array:
    """True for hadrons containing the given heavy quark (5: B hadrons, 4: charm hadrons)."""
    n = abs(pdg_id)
    is_hadron = (n > 100) & (n < 10000) & ((n // 10) % 10 != 0)
    return is_hadron & (((n // 100) % 10 == quark) | ((n // 1000) % 10 == quark))


@contextlib.contextmanager
def silenced_stdout():
    """Silence C-level stdout (FastJet's banner) for the duration of the block."""
    fd = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(fd, 1)
            os.close(fd)


@dataclass
class Objects:
    """Reconstructed objects of a batch, each a jagged record sorted by decreasing pT."""

    leptons: ak.Array  # pt, eta, phi, e, flavour (11/13), charge
    photons: ak.Array  # pt, eta, phi, e
    jets: ak.Array  # pt, eta, phi, e, m, flavour (5/4/0), tag_prob
    met: np.ndarray
    met_phi: np.ndarray


def _sorted(records: ak.Array) -> ak.Array:
    return records[ak.argsort(records.pt, axis=1, ascending=False)]


def _isolation(cands: ak.Array, tracks: ak.Array, det: Detector) -> ak.Array:
    """Relative isolation: scalar pT of visible particles in the cone (self excluded) over the pT."""
    pairs = ak.cartesian({"c": cands, "t": tracks}, axis=1, nested=True)
    dr = delta_r(pairs.c.eta, pairs.c.phi, pairs.t.eta, pairs.t.phi)
    in_cone = (dr < det.isolation_cone) & (dr > 1e-6)
    return ak.sum(ak.where(in_cone, pairs.t.pt, 0.0), axis=2) / cands.pt


def _smear_scale(rng, objects: ak.Array, rel_sigma) -> ak.Array:
    """Multiplicative response 1 + sigma * N(0, 1), floored at a small positive value."""
    return np.maximum(1.0 + rel_sigma * jagged_normal(rng, objects), 0.05)


def _near_any(objects: ak.Array, others: ak.Array, dr_max: float) -> ak.Array:
    """For each object, whether any of others lies within dr_max."""
    pairs = ak.cartesian({"o": objects, "x": others}, axis=1, nested=True)
    dr = delta_r(pairs.o.eta, pairs.o.phi, pairs.x.eta, pairs.x.phi)
    return ak.any(dr < dr_max, axis=2)


def reconstruct(prt: ak.Array, rng: np.random.Generator, det: Detector) -> Objects:
    """Detector-level objects and MET for a batch of Pythia events (`nextBatch(...).prt`)."""
    import fastjet  # the [mc] extra; imported here so that the rest of lit_vae never needs it

    pt, eta, phi = pt_eta_phi(prt.p.px, prt.p.py, prt.p.pz)
    parts = ak.zip(
        {"id": prt.id, "status": prt.status, "pt": pt, "eta": eta, "phi": phi,
         "px": prt.p.px, "py": prt.p.py, "pz": prt.p.pz, "e": prt.p.e},
        depth_limit=2,
    )
    final = parts[parts.status > 0]
    abs_id = abs(final.id)
    invisible = (abs_id == 12) | (abs_id == 14) | (abs_id == 16) | (abs_id == 1000022)
    visible = final[~invisible & (abs(final.eta) < det.calorimeter_eta_max)]
    tracks = visible[(visible.pt > det.isolation_track_pt_min) & (abs(visible.eta) < det.lepton_eta_max)]

    # Leptons: acceptance, identification efficiency, isolation, then smearing and threshold.
    lep_id = abs(visible.id)
    lep = visible[((lep_id == 11) | (lep_id == 13)) & (abs(visible.eta) < det.lepton_eta_max)]
    lep = lep[lep.pt > 0.8 * det.lepton_pt_min]
    is_e = abs(lep.id) == 11
    eff = ak.where(is_e, det.electron_efficiency, det.muon_efficiency)
    keep = (jagged_uniform(rng, lep) < eff) & (_isolation(lep, tracks, det) < det.isolation_max)
    lep = lep[keep]
    is_e = abs(lep.id) == 11
    scale = _smear_scale(rng, lep, ak.where(is_e, det.electron_pt_resolution, det.muon_pt_resolution))
    leptons = ak.zip({
        "pt": lep.pt * scale, "eta": lep.eta, "phi": lep.phi, "e": lep.e * scale,
        "flavour": abs(lep.id), "charge": -np.sign(lep.id),
        "dpx": lep.px * (scale - 1), "dpy": lep.py * (scale - 1), "true_pt": lep.pt,
    })
    leptons = _sorted(leptons[leptons.pt > det.lepton_pt_min])

    # Photons: acceptance, efficiency, isolation, away from selected leptons (FSR), smeared.
    pho = visible[(visible.id == 22) & (abs(visible.eta) < det.photon_eta_max)]
    pho = pho[pho.pt > 0.8 * det.photon_pt_min]
    keep = (jagged_uniform(rng, pho) < det.photon_efficiency) & (_isolation(pho, tracks, det) < det.isolation_max)
    pho = pho[keep]
    pho = pho[~_near_any(pho, leptons, det.overlap_dr)]
    scale = _smear_scale(rng, pho, det.photon_pt_resolution)
    photons = ak.zip({
        "pt": pho.pt * scale, "eta": pho.eta, "phi": pho.phi, "e": pho.e * scale,
        "dpx": pho.px * (scale - 1), "dpy": pho.py * (scale - 1), "true_pt": pho.pt,
    })
    photons = _sorted(photons[photons.pt > det.photon_pt_min])

    # Jets: anti-kt on all visible particles, smeared, overlap-removed against leptons and photons.
    four = ak.zip({"px": visible.px, "py": visible.py, "pz": visible.pz, "E": visible.e})
    with silenced_stdout():
        sequence = fastjet.ClusterSequence(four, fastjet.JetDefinition(fastjet.antikt_algorithm, det.jet_radius))
        raw = sequence.inclusive_jets(min_pt=0.7 * det.jet_pt_min)
    jpt, jeta, jphi = pt_eta_phi(raw.px, raw.py, raw.pz)
    jm = np.sqrt(np.maximum(raw.E**2 - raw.px**2 - raw.py**2 - raw.pz**2, 0.0))
    jets = ak.zip({"pt": jpt, "eta": jeta, "phi": jphi, "e": raw.E, "m": jm, "px": raw.px, "py": raw.py})
    jets = jets[(abs(jets.eta) < det.jet_eta_max)]
    jets = jets[~_near_any(jets, leptons, det.overlap_dr) & ~_near_any(jets, photons, det.overlap_dr)]
    resolution = np.sqrt((det.jet_stochastic / np.sqrt(jets.pt)) ** 2 + det.jet_constant**2)
    scale = _smear_scale(rng, jets, resolution)
    hadrons = parts[(parts.pt > det.flavour_hadron_pt_min)]
    b_had = hadrons[hadron_quark_content(hadrons.id, 5)]
    c_had = hadrons[hadron_quark_content(hadrons.id, 4) & ~hadron_quark_content(hadrons.id, 5)]
    flavour = ak.where(
        _near_any(jets, b_had, det.flavour_match_dr), 5,
        ak.where(_near_any(jets, c_had, det.flavour_match_dr), 4, 0),
    )
    tag_prob = ak.where(flavour == 5, det.btag_eff_b, ak.where(flavour == 4, det.btag_eff_c, det.btag_eff_light))
    tag_prob = ak.where(abs(jets.eta) < det.central_eta_max, tag_prob, 0.0)
    jets = ak.zip({
        "pt": jets.pt * scale, "eta": jets.eta, "phi": jets.phi, "e": jets.e * scale, "m": jets.m * scale,
        "flavour": flavour, "tag_prob": tag_prob,
        "dpx": jets.px * (scale - 1), "dpy": jets.py * (scale - 1), "true_pt": jets.pt,
    })
    jets = _sorted(jets[jets.pt > det.jet_pt_min])

    # MET: -(visible sum) corrected by each hard object's smearing, plus a soft-term resolution.
    mpx, mpy = -ak.sum(visible.px, axis=1), -ak.sum(visible.py, axis=1)
    hard_sum = 0.0
    for hard in (leptons, photons, jets):
        mpx = mpx - ak.sum(hard.dpx, axis=1)
        mpy = mpy - ak.sum(hard.dpy, axis=1)
        hard_sum = hard_sum + ak.sum(hard.true_pt, axis=1)
    soft_sum = np.maximum(ak.to_numpy(ak.sum(visible.pt, axis=1) - hard_sum), 0.0)
    sigma = det.soft_resolution * np.sqrt(soft_sum)
    mpx = ak.to_numpy(mpx) + sigma * rng.standard_normal(len(sigma))
    mpy = ak.to_numpy(mpy) + sigma * rng.standard_normal(len(sigma))
    return Objects(leptons, photons, jets, np.hypot(mpx, mpy), np.arctan2(mpy, mpx))

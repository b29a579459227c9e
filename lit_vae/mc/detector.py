"""Parametric detector: every number the emulation uses, written down once, with where it comes from.

Momenta are smeared with Gaussian resolutions, objects are accepted in the ATLAS-like fiducial volume,
isolated, b-tagged by hadron matching and combined into the missing transverse momentum. The values
follow the published ATLAS Run-2 performance (Eur. Phys. J. C 79 (2019) 639 for e/γ, C 81 (2021) 578
for muons, C 81 (2021) 689 for jets, C 79 (2019) 970 for b-tagging) at the precision a fast simulation
needs; they are not a tune.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Detector:
    """Resolutions, acceptances and efficiencies of the emulated detector (GeV, radians)."""

    # Relative pT resolutions of the tracker/calorimeter for prompt objects near 20-100 GeV.
    electron_pt_resolution: float = 0.02
    muon_pt_resolution: float = 0.015
    photon_pt_resolution: float = 0.025
    # Jet energy resolution sigma/pT = a/sqrt(pT) (+) c, stochastic and constant terms in quadrature.
    jet_stochastic: float = 0.8
    jet_constant: float = 0.05

    # Fiducial volume: inner tracker |eta| < 2.5; photons stop at the EM barrel-endcap limit 2.37;
    # jets are reconstructed out to the forward calorimeters.
    lepton_eta_max: float = 2.5
    photon_eta_max: float = 2.37
    jet_eta_max: float = 4.5
    central_eta_max: float = 2.5
    calorimeter_eta_max: float = 4.9

    # Reconstruction thresholds and identification efficiencies (flat, medium working points).
    lepton_pt_min: float = 10.0
    photon_pt_min: float = 10.0
    electron_efficiency: float = 0.90
    muon_efficiency: float = 0.95
    photon_efficiency: float = 0.85

    # Isolation: scalar sum of visible pT (> 0.5 GeV) in a cone, relative to the object's pT.
    isolation_cone: float = 0.3
    isolation_max: float = 0.15
    isolation_track_pt_min: float = 0.5

    # Jets: anti-kt R = 0.5 on visible final-state particles, as in the Zgamma paper (FastJet).
    jet_radius: float = 0.5
    jet_pt_min: float = 20.0
    overlap_dr: float = 0.4  # jets within this of a selected lepton or photon are removed

    # b-tagging (MV2c10 77 % working point): efficiency for jets matched to a B hadron, a charm hadron,
    # or neither (light-flavour mistag); matching cone and hadron pT threshold as in ATLAS truth labels.
    btag_eff_b: float = 0.77
    btag_eff_c: float = 0.16
    btag_eff_light: float = 0.01
    flavour_match_dr: float = 0.3
    flavour_hadron_pt_min: float = 5.0

    # Missing transverse momentum: hard objects enter smeared; the soft term (everything else) gets a
    # Gaussian resolution per component of soft_resolution * sqrt(sum ET_soft).
    soft_resolution: float = 0.5

    # "MET trigger fired" (thesis Table 1): an error-function turn-on in reconstructed MET, 50 % at
    # trigger_midpoint with width trigger_width: 99.87 % efficient at 200 GeV and > 99.99 % at the
    # 220 GeV offline cut, i.e. on its plateau there (as the xe trigger is in the analysis).
    trigger_midpoint: float = 140.0
    trigger_width: float = 20.0

    def as_dict(self) -> dict[str, float]:
        """Plain dict for the output file's metadata."""
        return asdict(self)


DETECTOR = Detector()

"""Pythia 8 settings for each process lit-vae can produce, the SLHA spectrum of the signal, and the
process-level hook that pre-selects large invisible pT for the one-lepton samples."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lit_vae.errors import ConfigError

BEAM_SETTINGS = ["Beams:eCM = 13000.", "Print:quiet = on", "Next:numberCount = 0"]
FAST_SETTINGS = ["PartonLevel:MPI = off"]

# Invisible particles at process level: neutrinos, taus (their decay neutrinos are not yet there),
# and the lightest neutralino of the signal.
INVISIBLE_IDS = (12, 14, 16, 15, 1000022)

# Leptons and photons are reconstructed only within |eta| < 2.5 (2.37): hard-process ones beyond 3.0
# cannot be selected after the shower's recoil, so such events are vetoed before showering.
VISIBLE_ETA_MAX = 3.0
VISIBLE_IDS = (11, 13, 22)

Z_TO_LEPTONS = ["23:onMode = off", "23:onIfAny = 11 13"]
W_TO_LEPTONS = ["24:onMode = off", "24:onIfAny = 11 13 15"]


@dataclass(frozen=True)
class Process:
    """One physics process: its Pythia settings and what the producer does with it."""

    name: str
    description: str
    analysis: str  # "zgamma" or "one_lepton": which reconstruction and selection applies
    settings: list[str] = field(default_factory=list)
    invisible_pt_min: float | None = None  # process-level veto below this invisible vector-sum pT
    visible_eta_max: float | None = None  # process-level veto if a lepton or photon lies beyond this |eta|
    truth_tag_default: bool = False


def zgamma() -> Process:
    """f fbar -> Z gamma with the Z alone (gmZmode = 2), Z -> ee/mumu, mHat in 125-185 GeV."""
    return Process(
        "zgamma",
        "SM Z(->ll)gamma background",
        "zgamma",
        [
            "WeakBosonAndParton:ffbar2gmZgm = on",
            "WeakZ0:gmZmode = 2",
            *Z_TO_LEPTONS,
            "PhaseSpace:mHatMin = 125.",
            "PhaseSpace:mHatMax = 185.",
            "PhaseSpace:pTHatMin = 10.",
        ],
        visible_eta_max=VISIBLE_ETA_MAX,
    )


def hzg(mass: float) -> Process:
    """gg -> H -> Z gamma, Z -> ee/mumu, a narrow scalar of the given mass."""
    return Process(
        "hzg",
        f"gg -> H({mass:g}) -> Z(->ll)gamma signal",
        "zgamma",
        [
            "HiggsSM:gg2H = on",
            f"25:m0 = {mass}",
            "25:onMode = off",
            "25:onIfMatch = 23 22",
            *Z_TO_LEPTONS,
        ],
    )


def ttbar() -> Process:
    """Top pairs, W -> all (the veto keeps those with large invisible pT), pTHat > 150 GeV."""
    return Process(
        "ttbar",
        "SM ttbar background (one-lepton)",
        "one_lepton",
        ["Top:gg2ttbar = on", "Top:qqbar2ttbar = on", "PhaseSpace:pTHatMin = 150."],
        invisible_pt_min=180.0,
    )


def wjets() -> Process:
    """W + jet, W -> e/mu/tau nu, pTHat > 150 GeV; truth-tagged by default (b-tags are rare)."""
    return Process(
        "wjets",
        "SM W+jets background (one-lepton)",
        "one_lepton",
        [
            "WeakBosonAndParton:qqbar2Wg = on",
            "WeakBosonAndParton:qg2Wq = on",
            *W_TO_LEPTONS,
            "PhaseSpace:pTHatMin = 150.",
        ],
        invisible_pt_min=180.0,
        truth_tag_default=True,
    )


def c1n2_wh(mass_c1n2: float, mass_lsp: float, slha_path: Path) -> Process:
    """chi1+- chi20 -> W(->l nu) chi10 h(->bb) chi10 via an SLHA spectrum written to slha_path."""
    if not mass_c1n2 > mass_lsp + 125.0:
        raise ConfigError(
            f"--mass-c1n2 {mass_c1n2:g} must exceed --mass-lsp {mass_lsp:g} + 125 GeV for chi20 -> h chi10"
        )
    write_slha(slha_path, mass_c1n2, mass_lsp)
    return Process(
        "c1n2_wh",
        f"chi1+- chi20 -> Wh + MET signal, m(C1/N2) = {mass_c1n2:g}, m(N1) = {mass_lsp:g} GeV",
        "one_lepton",
        [
            "SUSY:all = off",
            "SUSY:qqbar2chi+-chi0 = on",
            "SUSY:idA = 1000024",
            "SUSY:idB = 1000023",
            f"SLHA:file = {slha_path}",
            "SLHA:verbose = 0",
            "SLHA:minMassSM = 1000.",  # keep Pythia's SM masses and decays; the spectrum sets SUSY only
            *W_TO_LEPTONS,
            "25:m0 = 125.",
            "25:onMode = off",
            "25:onIfAny = 5",
        ],
        # The LSPs make the MET: the same veto keeps only events that can reach MET > 220 GeV.
        invisible_pt_min=180.0,
    )


DECOUPLED_MASS = 5000.0
DECOUPLED_IDS = (
    [1000001, 1000002, 1000003, 1000004, 1000005, 1000006, 1000011, 1000012, 1000013, 1000014]
    + [1000015, 1000016, 1000021, 2000001, 2000002, 2000003, 2000004, 2000005, 2000006]
    + [2000011, 2000013, 2000015, 1000025, 1000035, 1000037]
)


def write_slha(path: Path, mass_c1n2: float, mass_lsp: float) -> None:
    """SLHA spectrum: wino-like chi1+-/chi20 at mass_c1n2, bino chi10 at mass_lsp, the rest at 5 TeV.

    The neutralino mixing makes N1 pure bino, N2 pure wino and N3/N4 higgsinos; the chargino mixing
    makes chi1+- pure wino. Decays are forced: chi1+- -> W chi10 and chi20 -> h chi10 (BR = 1).
    """
    masses = {1000022: mass_lsp, 1000023: mass_c1n2, 1000024: mass_c1n2, 25: 125.0}
    masses.update({pid: DECOUPLED_MASS for pid in DECOUPLED_IDS})
    r = 1.0 / np.sqrt(2.0)
    nmix = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, r, -r], [0, 0, r, r]]
    lines = [
        "# Simplified-model spectrum written by lit_vae.mc",
        "BLOCK MODSEL",
        "    1    0   # general MSSM",
        "BLOCK SMINPUTS",
        "    1   1.279340000e+02   # alpha_em^-1(MZ)",
        "    2   1.166370000e-05   # G_F",
        "    3   1.180000000e-01   # alpha_s(MZ)",
        "    4   9.118760000e+01   # MZ",
        "    5   4.180000000e+00   # mb(mb)",
        "    6   1.725000000e+02   # mt",
        "    7   1.776860000e+00   # mtau",
        "BLOCK MINPAR",
        "    3   1.000000000e+01   # tan(beta)",
        "BLOCK HMIX Q= 1.0e+03",
        f"    1   {DECOUPLED_MASS:.9e}   # mu",
        "    2   1.000000000e+01   # tan(beta)",
        "BLOCK ALPHA",
        "   -1.000000000e-01   # alpha",
        "BLOCK MASS",
        *(f" {pid:>9d}   {m:.9e}" for pid, m in masses.items()),
        "BLOCK NMIX",
        *(f"  {i + 1}  {j + 1}   {v: .9e}" for i, row in enumerate(nmix) for j, v in enumerate(row)),
        "BLOCK UMIX",
        "  1  1    1.000000000e+00",
        "  1  2    0.000000000e+00",
        "  2  1    0.000000000e+00",
        "  2  2    1.000000000e+00",
        "BLOCK VMIX",
        "  1  1    1.000000000e+00",
        "  1  2    0.000000000e+00",
        "  2  1    0.000000000e+00",
        "  2  2    1.000000000e+00",
        "DECAY   1000022   0.000000000e+00   # stable LSP",
        "DECAY   1000024   1.000000000e-02",
        "     1.000000000e+00   2   1000022   24",
        "DECAY   1000023   1.000000000e-02",
        "     1.000000000e+00   2   1000022   25",
    ]
    path.write_text("\n".join(lines) + "\n")


def make_process_veto(pythia_module, process: Process):
    """A Pythia UserHooks vetoing process-level events that cannot pass the selection, or None.

    It rejects events whose invisible vector-sum pT is below process.invisible_pt_min, or with a hard
    lepton or photon beyond |eta| = process.visible_eta_max. Vetoing at process level
    (doVetoProcessLevel) happens before the shower, so rejected events cost almost nothing, and
    Pythia's sigmaGen accounts for the rejected fraction. Keep the returned object referenced for as
    long as Pythia runs.
    """
    if process.invisible_pt_min is None and process.visible_eta_max is None:
        return None
    pt_min_sq = (process.invisible_pt_min or 0.0) ** 2
    eta_max = process.visible_eta_max

    class ProcessVeto(pythia_module.UserHooks):
        def canVetoProcessLevel(self) -> bool:  # noqa: N802 (Pythia's name)
            return True

        def doVetoProcessLevel(self, event) -> bool:  # noqa: N802
            px = py = 0.0
            for i in range(event.size()):
                particle = event[i]
                if not particle.isFinal():
                    continue
                pid = abs(particle.id())
                if pid in INVISIBLE_IDS:
                    px += particle.px()
                    py += particle.py()
                elif eta_max is not None and pid in VISIBLE_IDS and abs(particle.eta()) > eta_max:
                    return True
            return px * px + py * py < pt_min_sq

    return ProcessVeto()


def build_process(
    name: str, *, mass: float, mass_c1n2: float, mass_lsp: float, workdir: Path
) -> Process:
    """The Process called name, with its parameters filled in."""
    if name == "zgamma":
        return zgamma()
    if name == "hzg":
        return hzg(mass)
    if name == "ttbar":
        return ttbar()
    if name == "wjets":
        return wjets()
    if name == "c1n2_wh":
        return c1n2_wh(mass_c1n2, mass_lsp, workdir / f"c1n2_wh_{mass_c1n2:g}_{mass_lsp:g}.slha")
    raise KeyError(name)


PROCESS_NAMES = ("zgamma", "hzg", "ttbar", "wjets", "c1n2_wh")

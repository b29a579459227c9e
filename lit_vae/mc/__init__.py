"""Monte Carlo sample production: Pythia 8 + FastJet + a parametric detector -> ROOT ntuples.

`python -m lit_vae.mc PROCESS --events N --out FILE.root` (see `__main__`); needs the [mc] extra.
"""

"""The `lit-vae` command. Training, prediction and generation subcommands arrive with the models;
for now it tells the user what exists and how to make the Monte Carlo samples."""

from __future__ import annotations

import argparse
import sys

import lit_vae

DESCRIPTION = """lit-vae: variational autoencoders for LHC events (Zgamma generation, Wh1Lbb anomaly detection).

Available now:
  python -m lit_vae.mc PROCESS --events N --out FILE.root   produce a Monte Carlo ntuple
  make samples                                              regenerate the shipped sample in data/

Coming with the models: lit-vae fit | predict | generate | evaluate | sweep."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lit-vae", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"lit-vae {lit_vae.__version__}")
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())

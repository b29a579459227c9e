"""What a one-lepton sample gives each Wh1Lbb region: `python benchmarks/region_yields.py FILE.root [FILE.root ...]`.

Per region of data_manifests/wh1lbb.yaml (its cuts, read from the manifest): rows, events, sigma x efficiency
and the effective event count (Kish, (sum w)^2 / sum w^2, over events: the rows of a truth-tagged event summed
first, since they are one event's alternatives), and that count per generated event and per CPU-second of the
file's production. It compares directly tagged and truth-tagged samples (`python -m lit_vae.mc ttbar
--truth-tag`), and says what 10^6 effective events in a region would cost.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from lit_vae.data.io import read_root, read_root_metadata
from lit_vae.data.manifest import load_manifest
from lit_vae.data.selection import evaluate_cut

MANIFEST = Path(__file__).resolve().parents[1] / "data_manifests" / "wh1lbb.yaml"


def region_yields(path: str) -> list[dict]:
    """One row per region of the manifest for the sample file at path."""
    manifest = load_manifest(MANIFEST)
    columns, metadata = read_root(path), read_root_metadata(path)
    generated, cpu = metadata["events_generated"], metadata["cpu_seconds"]
    rows = []
    for region, cut in manifest.regions.items():
        passed = evaluate_cut(cut, columns)
        per_event = pd.Series(columns["weight"][passed]).groupby(columns["event_number"][passed]).sum()
        kish = per_event.sum() ** 2 / (per_event**2).sum() if len(per_event) else 0.0
        rows.append({"file": Path(path).name, "region": region, "rows": int(passed.sum()), "events": len(per_event),
                     "sigma_eff_pb": per_event.sum(), "effective": kish, "effective_per_generated": kish / generated,
                     "cpu_hours_per_1e6": 1e6 / kish * cpu / 3600 if kish else float("nan")})
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="one-lepton samples written by `python -m lit_vae.mc`")
    print("| file | region | rows | events | σ × ε (pb) | effective events | per generated event "
          "| CPU-hours for 10⁶ effective |\n|---|---|---|---|---|---|---|---|")
    for path in parser.parse_args().files:
        for r in region_yields(path):
            print(f"| {r['file']} | {r['region']} | {r['rows']:,} | {r['events']:,} | {r['sigma_eff_pb']:.5f} "
                  f"| {r['effective']:,.1f} | {r['effective_per_generated']:.3e} | {r['cpu_hours_per_1e6']:,.0f} |")

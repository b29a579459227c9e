"""The README's anomaly tables from `make demo`'s reports: `python benchmarks/anomaly_table.py [--full]`.

Compact: per region and signal, AUC and eps_S at eps_B = 10^-2 of the default score, the thesis's total
loss, the three unsupervised baselines, the best single cut (signal-informed) and the supervised ceiling,
and whether the default beats every baseline (and, in preselection, the cut) -- the issue's goal; then the
held-out background's -log p(x) of each likelihood model. A baseline's cell is its median over the report's
seeds (`evaluate anomaly --baseline-seeds`) with the range of eps_S in brackets, and the verdict is against
that median: a baseline is a fit with a random draw, and one draw can be lucky either way.
--full: every method with AUC, eps_S at 10^-1 and 10^-2 and max SIC, each with its 16-84 % interval.
No score is picked by its signal efficiency.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from lit_vae.evaluation.baselines import BASELINES
from lit_vae.evaluation.report import baseline_typical

REPORTS = ("zgamma_anomaly", "wh1lbb_anomaly")
COLUMNS = ("auc", "eff_s_at_eff_b_0.1", "eff_s_at_eff_b_0.01", "max_sic")
ORDER = ("default score", "score:", "baseline:", "best cut", "supervised")  # --full's rows per signal
SIGNALS = {"hzg150": "H(150) → Zγ", "c1n2_wh_500_100": "C1N2 500/100", "c1n2_wh_300_75": "C1N2 300/75"}


def number(block: dict, key: str, interval: bool = False) -> str:
    value = block[key]
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.3f} ({block[key + '_lo']:.3f}–{block[key + '_hi']:.3f})" if interval else f"{value:.3f}"


def pair(block: dict) -> str:
    return f"{number(block, 'auc')} / {number(block, 'eff_s_at_eff_b_0.01')}"


def baseline_cell(block: dict) -> str:
    """Median AUC / median eps_S at 10^-2 over the seeds, and the range of eps_S in brackets."""
    if "auc_seeds_median" not in block:
        return pair(block)
    low, high = block["eff_s_at_eff_b_0.01_seeds_min"], block["eff_s_at_eff_b_0.01_seeds_max"]
    spread = "" if math.isnan(low) else f" ({low:.3f}–{high:.3f})"
    return pair(baseline_typical(block)) + spread


def reports(demo: Path) -> list[dict]:
    """The anomaly reports the demo folder holds (a Wh1Lbb-only rerun has no Zgamma one); none is an error."""
    paths = [demo / report / "metrics.json" for report in REPORTS]
    found = [json.loads(path.read_text()) for path in paths if path.is_file()]
    if not found:
        raise SystemExit(f"{' and '.join(map(str, paths))}: no such files; run `make demo DEMO={demo}` first")
    return found


def rows(found: list[dict]):
    for report in found:
        for label, entry in report["scores"].items():
            for signal, methods in entry["signals"].items():
                yield label, entry, signal, methods


def compact(demo: Path) -> str:
    found = reports(demo)
    lines = ["| scores | signal | default score | total loss | isolation forest | Gaussian mixture | Gaussian NLL "
             "| best cut (signal-informed) | supervised | default beats every baseline? |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for label, entry, signal, methods in rows(found):
        beats = entry.get("verdict", {}).get(signal)  # the report's own verdict (`evaluate anomaly`)
        if beats is None:
            raise SystemExit(f"{demo}: the {label} report has no verdict (written by an older lit-vae or with "
                             "--no-references); run its `lit-vae evaluate anomaly` again")
        default = methods[entry["default"]]
        cut = next(m for m in methods if m.startswith("best cut"))
        total = methods.get("score: total", default if entry["default"].endswith("(total)") else None)
        verdict = "yes" if beats["every baseline"] else "no"
        if entry["region"] == "preselection":
            verdict += f"; beats the cut in AUC: {'yes' if beats['best cut in AUC'] else 'no'}"
        lines.append(f"| {label} | {SIGNALS.get(signal, signal)} | {pair(default)} ({entry['default'][15:-1]}) "
                     f"| {pair(total) if total else '–'} | {' | '.join(baseline_cell(methods[b]) for b in BASELINES)} "
                     f"| {pair(methods[cut])} ({cut[10:]}) | {pair(methods['supervised (ceiling)'])} | {verdict} |")
    quality = {label: entry["background_nll"] for report in found
               for label, entry in report["scores"].items() if "background_nll" in entry}
    if quality:
        lines += ["", "Held-out background −log p̂(x) (IWAE, weighted mean, nats per event; the background-only "
                  "yardstick): " + ", ".join(f"{label} {value:.3f}" for label, value in quality.items()) + "."]
    return "\n".join(lines)


def full(demo: Path) -> str:
    """Every method, the default first, then the other scores, the baselines (their first seed's fit), the
    signal-informed cut and the supervised ceiling."""
    lines = ["| scores | signal | method | AUC | ε_S at 10⁻¹ | ε_S at 10⁻² | max SIC |",
             "|---|---|---|---|---|---|---|"]
    for label, _, signal, methods in rows(reports(demo)):
        for method in sorted(methods, key=lambda name: next(i for i, p in enumerate(ORDER) if name.startswith(p))):
            cells = [number(methods[method], key, True) for key in COLUMNS]
            name = f"{method} (signal-informed)" if method.startswith("best cut") else method
            lines.append(f"| {label} | {SIGNALS.get(signal, signal)} | {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default="runs/demo", help="the demo's output folder (default runs/demo)")
    parser.add_argument("--full", action="store_true", help="every method with intervals")
    args = parser.parse_args()
    print(full(Path(args.demo)) if args.full else compact(Path(args.demo)))

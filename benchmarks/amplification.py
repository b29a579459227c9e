"""Statistical amplification (Butter et al., arXiv 2008.06545): is a histogram filled with 10x more generated
events than the generator's training sample closer to the truth than the training sample itself?

    python benchmarks/amplification.py [--train-events 4000] [--factor 10] [--out runs/amplification]

Trains configs/zgamma/best.yaml on a small seeded subset of the shipped Zgamma sample, generates factor x
N_train events and compares both with the independent test sample data/zgamma_test.root in quantile bins
of the truth. For bin fractions p the mean squared difference of a sample of N independent events is
S / N + S / N_truth with S = sum p (1 - p); the generated histogram's MSE, less the truth's own S / N_truth,
therefore corresponds to N_equiv = S / (MSE_gen - S / N_truth) independent events. Amplification =
N_equiv / N_train (> 1: the generator is worth more than its training sample). Writes OUT/amplification.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generation_table import config, train_and_generate  # noqa: E402

from lit_vae.data import ZGammaDataModule  # noqa: E402
from lit_vae.data.io import read_events, read_root  # noqa: E402

FEATURES = ("m_llg", "m_ll", "l1_pt", "met")


def training_sample(max_events: int) -> dict[str, np.ndarray]:
    """The physical modelled features of the training part the run saw (same seed, subset and split)."""
    dm = ZGammaDataModule(derived_features="exact", azimuth="relative", max_events=max_events, min_events=0)
    dm.setup()
    x = dm.transform.inverse(dm._parts["train"]["x"]).to(torch.float64).numpy()
    return {name: x[:, j] for j, name in enumerate(dm.features)}


def mse(sample: np.ndarray, truth: np.ndarray, edges: np.ndarray) -> tuple[float, float]:
    """Mean squared difference of the bin fractions, and S = sum p (1 - p) of the truth."""
    p = np.histogram(truth, edges)[0] / len(truth)
    q = np.histogram(sample, edges)[0] / len(sample)
    return float(np.sum((q - p) ** 2)), float(np.sum(p * (1 - p)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-events", type=int, default=4000, help="background subset (60 %% is trained on)")
    parser.add_argument("--factor", type=int, default=10, help="generated events per training event")
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--bins", type=int, default=20, help="quantile bins of the truth")
    parser.add_argument("--out", default="runs/amplification")
    parser.add_argument("--truth", default=str(Path(__file__).resolve().parents[1] / "data" / "zgamma_test.root"))
    args = parser.parse_args()
    out = Path(args.out).resolve()
    train = training_sample(args.train_events)
    n_train = len(train["m_llg"])
    run = train_and_generate("amplification", config("best") + [f"--data.init_args.max_events={args.train_events}"],
                             out / "run", args.epochs, args.factor * n_train)
    generated, _ = read_events(out / "run" / "gen.parquet")
    truth = read_root(args.truth)
    truth["m_ll"] = stored_m_ll(truth)
    window = (truth["m_llg"] > 132) & (truth["m_llg"] < 168)
    lines = [f"Training sample: {n_train} events ({args.train_events}-event subset, {run['epochs']} epochs); "
             f"generated: {len(generated['m_llg'])}; truth: {int(window.sum())} events of {Path(args.truth).name} "
             f"in the window; {args.bins} quantile bins of the truth.", "",
             "| feature | MSE training sample | MSE generated | expected MSE of N_train MC events | "
             "N_equiv of the generated | amplification N_equiv / N_train |", "|---|---|---|---|---|---|"]
    for name in FEATURES:
        t = truth[name][window]
        edges = np.quantile(t, np.linspace(0, 1, args.bins + 1))
        edges[0], edges[-1] = -np.inf, np.inf
        m_train, s = mse(train[name], t, edges)
        m_gen, _ = mse(generated[name], t, edges)
        excess = m_gen - s / len(t)
        n_equiv = s / excess if excess > 0 else np.inf
        lines.append(f"| {name} | {m_train:.3g} | {m_gen:.3g} | {s / n_train + s / len(t):.3g} | {n_equiv:.3g} | "
                     f"{n_equiv / n_train:.2f} |")
    (out / "amplification.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def stored_m_ll(columns: dict[str, np.ndarray]) -> np.ndarray:
    """m_ll of stored ntuple columns through the manifest's declared expression."""
    from lit_vae.data.manifest import load_manifest

    manifest = load_manifest(Path(__file__).resolve().parents[1] / "data_manifests" / "zgamma.yaml")
    return manifest.column("m_ll", {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()})


if __name__ == "__main__":
    main()

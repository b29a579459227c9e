"""Where the Gaussian-mixture baseline's tail comes from: `python benchmarks/mixture_counts.py [--demo runs/demo]`.

The `baseline: gaussian mixture` of `lit-vae evaluate anomaly` is fitted on the transformed features with the
integer counts (jets, b-jets) treated as continuous: its components shrink onto single count values, so it
becomes a separate sharp density of the continuous features for each count combination. This script refits
the mixture exactly as the report does (same training background, weights, resample and BIC choice) and twice
more: with the counts dequantised (a uniform unit of noise added to each count: a continuous density of the
same events; the scored events' density averaged over DRAWS noise draws) and with the counts left out. Each
cell: AUC / eps_S at eps_B = 10^-2, beside the model's default score. A second table says which events the
report's mixture puts in its tail, by b-jet count. A third compares the two as densities of the held-out
background (no signal read): the model's -log p(x) against the dequantised mixture's, both in physical units,
in all and by count combination.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy.special import logsumexp

from lit_vae.data.io import read_events
from lit_vae.data.transforms import FeatureTransform
from lit_vae.evaluation.baselines import gaussian_mixture, training_background, weighted_sample
from lit_vae.evaluation.metrics import anomaly_metrics
from lit_vae.evaluation.report import scored_rows

SIGNALS = {"c1n2_wh_500_100": "C1N2 500/100", "c1n2_wh_300_75": "C1N2 300/75"}
BACKGROUNDS = {"ttbar": "ttbar", "wjets": "W+jets"}
REGIONS = ("preselection", "mid", "2-3b")
DRAWS = 16
B_JETS, JETS = "nBjet30_MV2c10", "njet30"


def mixture_nll(train_x: np.ndarray, train_w: np.ndarray, x: np.ndarray, kinds: list[str], seed: int,
                noise: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(-log density of x's transformed values under the report's mixture fitted on the transformed training
    events, log |dy/dx| of that transform at x: their difference is -log density of the physical values); with
    noise (False/True per feature), those features dequantised: uniform noise of one unit on the training
    events, and the scored events' density averaged over DRAWS draws."""
    rng = np.random.default_rng(seed)
    draws = 1 if noise is None else DRAWS
    if noise is not None:
        train_x = train_x + noise * rng.uniform(-0.5, 0.5, size=train_x.shape)
        kinds = ["real" if n else k for n, k in zip(noise, kinds, strict=True)]
    transform = FeatureTransform.fit(train_x, kinds)

    def encode(a: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return transform(torch.as_tensor(a, dtype=torch.float32)).double().numpy()

    mixture = gaussian_mixture(weighted_sample(encode(train_x), train_w, seed), len(train_x), seed)
    log_p = [mixture.score_samples(encode(x if noise is None else x + noise * rng.uniform(-0.5, 0.5, size=x.shape)))
             for _ in range(draws)]
    return -(logsumexp(log_p, axis=0) - np.log(draws)), transform.log_abs_det_jacobian(torch.as_tensor(x)).numpy()


def region_rows(path: Path, seed: int) -> tuple[list[str], list[str], list[str]]:
    """The region's rows of the method table, of the tail table (the share of each sample's events, by b-jet
    count, that the report's mixture puts in its 1 % background tail) and of the density table (the held-out
    background's mean -log p(x) in physical units, the model's against the mixture's with dequantised
    counts, in all and by count combination)."""
    columns, metadata = read_events(path)
    samples = columns["sample"]
    if np.issubdtype(samples.dtype, np.integer):  # ROOT score files store the index into sample_names
        samples = np.array(metadata.get("sample_names", []))[samples]
    samples = samples.astype(str)
    configurations = columns.get("configuration", np.zeros(len(samples), np.int32))
    manifest, table, rows, features = scored_rows(samples, columns["event_number"], configurations, metadata,
                                                  str(path))
    train = training_background(table, metadata.get("data_split") or {}, str(path))
    kinds = [manifest.feature(f).kind for f in features]
    count = np.array([k == "count" for k in kinds])
    x, w_train = table[features].to_numpy(np.float64), table["weight"].to_numpy(np.float64)[train]
    dequantised, log_jacobian = mixture_nll(x[train], w_train, x[rows], kinds, seed, noise=count)
    variants = {
        "mixture (as in the report)": mixture_nll(x[train], w_train, x[rows], kinds, seed)[0],
        "mixture, counts dequantised": dequantised,
        "mixture, counts left out": mixture_nll(x[train][:, ~count], w_train, x[rows][:, ~count],
                                                [k for k in kinds if k != "count"], seed)[0],
        f"default score ({metadata.get('anomaly_score')})": columns["score"],
    }
    is_signal, weight = columns["label"] == 1, columns["weight"].astype(np.float64)
    methods = []
    for method, score in variants.items():
        cells = []
        for signal in SIGNALS:
            keep = ~is_signal | (samples == signal)
            block = anomaly_metrics(is_signal[keep].astype(int), score[keep], weight[keep])
            cells.append(f"{block['auc']:.3f} / {block['eff_s_at_eff_b_0.01']:.3f}")
        methods.append(f"| {metadata['region']} | {method} | {' | '.join(cells)} |")
    mixture = variants["mixture (as in the report)"]
    order = np.argsort(-mixture[~is_signal])
    tail_weight = np.cumsum(weight[~is_signal][order]) / weight[~is_signal].sum()
    threshold = mixture[~is_signal][order][np.searchsorted(tail_weight, 0.01)]  # eps_B = 10^-2
    b_jets = x[rows][:, features.index(B_JETS)]
    tails = []
    for n in np.unique(b_jets):
        cells = []
        for group in (~is_signal, *(samples == signal for signal in SIGNALS)):
            mine = group & (b_jets == n)
            share = np.average(mixture[mine] > threshold, weights=weight[mine]) if mine.any() else np.nan
            cells.append(f"{np.average(b_jets[group] == n, weights=weight[group]):.3f} / {share:.3f}")
        tails.append(f"| {metadata['region']} | {n:.0f} | {' | '.join(cells)} |")
    background, nll = ~is_signal, dequantised - log_jacobian  # the physical values' density

    def density_row(name: str, group: np.ndarray) -> str:
        """The row of a group of background rows: in all, then by process."""
        cells = [f"{np.average(columns['iwae'][mine], weights=weight[mine]):.3f} / "
                 f"{np.average(nll[mine], weights=weight[mine]):.3f} ({mine.sum()})" if mine.any() else "-"
                 for mine in (group, *(group & (samples == process) for process in BACKGROUNDS))]
        return f"| {metadata['region']} | {name} | {' | '.join(cells)} |"

    jets = x[rows][:, features.index(JETS)]
    density = [density_row("all", background)] + [
        density_row(f"{n_jets:.0f}, {n_b:.0f}", background & (jets == n_jets) & (b_jets == n_b))
        for n_jets, n_b in sorted(set(zip(jets[background], b_jets[background], strict=True)))]
    return methods, tails, density


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default="runs/demo", help="a `make demo` output folder")
    parser.add_argument("--seed", type=int, default=0, help="the report's seed (`evaluate anomaly --seed`)")
    args = parser.parse_args()
    methods = ["| region | method | " + " | ".join(SIGNALS.values()) + " |", "|---|---|---|---|"]
    tails = ["| region | b-jets | background | " + " | ".join(SIGNALS.values()) + " |", "|---|---|---|---|---|"]
    densities = ["| region | jets, b-jets | background | " + " | ".join(BACKGROUNDS.values()) + " |",
                 "|---|---|---|---|---|"]
    for region in REGIONS:
        path = Path(args.demo) / f"scores_{region}.parquet"
        if not path.is_file():
            raise SystemExit(f"{path}: no such file; run `make demo` first")
        more_methods, more_tails, density = region_rows(path, args.seed)
        methods, tails, densities = methods + more_methods, tails + more_tails, densities + density
    print("\n".join(methods))
    print("\nEach sample's events by b-jet count: their share of the sample / the share of them in the report's "
          "mixture's tail at eps_B = 10^-2 (weighted):\n")
    print("\n".join(tails))
    print("\nHeld-out background -log p(x) (physical units: GeV^-6 times the counts' probability; weighted mean, "
          "nats per event): the model's (iwae) / the mixture's with the counts dequantised (rows):\n")
    print("\n".join(densities))


if __name__ == "__main__":
    main()

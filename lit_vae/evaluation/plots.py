"""HEP-style figures (mplhep, ATLAS style) for the evaluation report; every function returns a Figure
that the caller saves (PNG and PDF) and closes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mplhep as hep  # noqa: E402
import numpy as np  # noqa: E402

from lit_vae.evaluation.metrics import common_edges, correlation, histogram  # noqa: E402

hep.style.use("ATLAS")
COLOURS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown")


def _label(ax, title: str = "") -> None:
    """The HEP-style label inside the axes' top left ('lit-vae' over 'Simulation, 13 TeV') and an optional
    title above. Plain text: mplhep's label draws the whole figure twice to position itself."""
    ax.text(0.04, 0.96, "lit-vae", transform=ax.transAxes, ha="left", va="top", fontsize=13, weight="bold",
            style="italic")
    ax.text(0.04, 0.89, "Simulation, 13 TeV", transform=ax.transAxes, ha="left", va="top",
            fontsize=11)
    if title:
        ax.set_title(title, fontsize=11, loc="left", pad=22)


def feature_overlay(name: str, kind: str, unit: str, reference: np.ndarray, others: Mapping[str, np.ndarray],
                    reference_label: str = "MC (validation)"):
    """Normalised distribution of one feature for the reference and each generator, with a ratio panel;
    bands are the statistical uncertainties (sqrt(n))."""
    fig, (ax, rax) = plt.subplots(2, 1, figsize=(6, 6), gridspec_kw={"height_ratios": (3, 1)}, sharex=True,
                                   layout="constrained")
    edges = common_edges(reference, np.concatenate(list(others.values())) if others else reference, kind)
    h_ref = histogram(reference, edges)
    norm_ref = h_ref.sum() * np.diff(edges)
    hep.histplot(h_ref / norm_ref, edges, yerr=np.sqrt(h_ref) / norm_ref, ax=ax, histtype="fill", alpha=0.3,
                 color="grey", label=reference_label)
    band = np.divide(np.sqrt(h_ref), h_ref, out=np.zeros_like(h_ref), where=h_ref > 0)
    rax.stairs(1 + band, edges, baseline=1 - band, fill=True, color="grey", alpha=0.3)
    for colour, (label, values) in zip(COLOURS, others.items(), strict=False):
        h = histogram(values, edges)
        norm = h.sum() * np.diff(edges)
        hep.histplot(h / norm, edges, yerr=np.sqrt(h) / norm, ax=ax, color=colour, label=label)
        ratio = np.divide(h / norm, h_ref / norm_ref, out=np.full_like(h, np.nan), where=h_ref > 0)
        err = np.divide(np.sqrt(h) / norm, h_ref / norm_ref, out=np.zeros_like(h), where=h_ref > 0)
        hep.histplot(ratio, edges, yerr=err, ax=rax, color=colour)
    ax.set_ylabel("normalised events")
    ax.legend(fontsize=10)
    _label(ax)
    rax.axhline(1, color="black", lw=0.8)
    rax.set_ylim(0.5, 1.5)
    rax.set_ylabel("gen / MC")
    rax.set_xlabel(f"{name} [{unit}]" if unit else name)
    return fig


def correlation_heatmaps(reference: np.ndarray, other: np.ndarray, names: Sequence[str], label: str):
    """Pearson matrices of the reference, of the generator and their difference."""
    rho_ref, rho = correlation(reference), correlation(other)
    fig, axes = plt.subplots(1, 3, figsize=(21, 7), layout="constrained")
    for ax, matrix, title, cmap, lim in ((axes[0], rho_ref, "MC", "RdBu_r", 1), (axes[1], rho, label, "RdBu_r", 1),
                                         (axes[2], rho - rho_ref, f"{label} - MC", "PuOr_r", 0.2)):
        image = ax.imshow(matrix, cmap=cmap, vmin=-lim, vmax=lim)
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_title(title, fontsize=12)
        fig.colorbar(image, ax=ax, fraction=0.046)
    return fig


def log_fractions(samples: Mapping[str, tuple[np.ndarray, np.ndarray | None]], edges: np.ndarray, xlabel: str,
                  colours: Sequence[str] = COLOURS):
    """Each sample's (weighted) distribution as fractions of its events, on a log axis."""
    fig, ax = plt.subplots(figsize=(7, 5.5), layout="constrained")
    for colour, (label, (values, weights)) in zip(colours, samples.items(), strict=False):
        h = histogram(values, edges, weights)
        hep.histplot(h / max(h.sum(), 1e-300), edges, ax=ax, color=colour, label=label)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of events")
    ax.legend(fontsize=10)
    _label(ax)
    return fig


def residuals(values: Mapping[str, np.ndarray], xlabel: str, limit: float = 0.2):
    """Distributions of a relative residual (recomputed / stored - 1) per sample (NaN counted as off)."""
    return log_fractions({k: (np.nan_to_num(r, nan=limit), None) for k, r in values.items()},
                         np.linspace(-limit, limit, 81), xlabel, ("grey", *COLOURS))


def roc_and_sic(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str):
    """Background efficiency against signal efficiency (log) and the significance improvement
    eps_S / sqrt(eps_B), one line per score (the anomaly scores and the references)."""
    fig, (ax, sax) = plt.subplots(1, 2, figsize=(12, 5.5), layout="constrained")
    styles = [(colour, line) for line in ("-", "--", ":") for colour in COLOURS]
    for (colour, line), (label, (eff_b, eff_s)) in zip(styles, curves.items(), strict=False):
        keep = eff_b > 0
        label = f"{label} (signal-informed)" if label.startswith("best cut") else label
        ax.plot(eff_s[keep], eff_b[keep], color=colour, ls=line, label=label)
        sax.plot(eff_b[keep], eff_s[keep] / np.sqrt(eff_b[keep]), color=colour, ls=line, label=label)
    ax.plot([0, 1], [0, 1], color="black", ls="-.", lw=0.8, label="random")
    ax.set_yscale("log")
    ax.set_xlabel(r"signal efficiency $\epsilon_S$")
    ax.set_ylabel(r"background efficiency $\epsilon_B$")
    sax.set_xscale("log")
    sax.set_xlabel(r"background efficiency $\epsilon_B$")
    sax.set_ylabel(r"$\epsilon_S / \epsilon_B^{1/2}$")
    for a in (ax, sax):
        a.legend(fontsize=7 if len(curves) > 6 else 9)
        _label(a, title)
    return fig


def score_distributions(scores: Mapping[str, tuple[np.ndarray, np.ndarray]], xlabel: str = "anomaly score"):
    """Weighted, unit-normalised score distribution per sample on a log axis (the tail is what matters)."""
    everything = np.concatenate([s for s, _ in scores.values()])
    edges = np.linspace(np.quantile(everything, 0.001), np.quantile(everything, 0.999), 61)
    return log_fractions(scores, edges, xlabel)


def training_curves(log: Path, metrics: Sequence[str] = ("train/loss_epoch", "val/loss", "val/elbo", "val/w1_mean")):
    """Per-epoch curves of the metrics a Lightning CSV log (metrics.csv) holds, one panel each."""
    import pandas as pd

    table = pd.read_csv(log)
    present = [m for m in metrics if m in table and table[m].notna().any()]
    n = max(len(present), 1)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4.5), squeeze=False, layout="constrained")
    for ax, metric in zip(axes[0], present, strict=False):
        rows = table[["epoch", metric]].dropna()
        ax.plot(rows["epoch"], rows[metric], marker="o", ms=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
    fig.suptitle(str(log.parent.name), fontsize=10)
    return fig

"""`lit-vae evaluate`: metrics.json, figures (PNG + PDF) and a self-contained report.html for generated
events (against held-out Monte Carlo) and for anomaly scores (against supervised and single-cut
references and unsupervised baselines), plus the summary page that joins several reports. Works on files;
imports no model."""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve
from tqdm import tqdm

from lit_vae.data.io import atomic_path, read_events, read_region
from lit_vae.data.manifest import Manifest, load_manifest
from lit_vae.data.physics import Physics
from lit_vae.data.selection import evaluate, expression_names
from lit_vae.data.split import background_train_mask
from lit_vae.errors import ConfigError, DataError
from lit_vae.evaluation import metrics as m
from lit_vae.evaluation import plots
from lit_vae.evaluation.baselines import BASELINES, baseline_scores, training_background

# --- files in, files out ------------------------------------------------------------------------------------


def held_out_mc(source: str | None, generated_metadata: dict, region: str | None, seed: int | None,
                features: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, str]], str]:
    """The reference events: the background validation part of a manifest region (never training
    events; manifest, region, seed and fraction default to those the generator was trained with), or
    every event of a .root/.parquet ntuple. Returns columns, {feature: (kind, unit)} and a description."""
    split = generated_metadata.get("data_split") or {}
    source = source or split.get("manifest")
    if source is None:
        raise DataError("--mc is needed: the generated file does not name the manifest its model was trained on")
    if Path(source).suffix in (".yaml", ".yml"):
        manifest = load_manifest(source)
        region = region or split.get("region") or next(iter(manifest.regions))
        seed = seed if seed is not None else split.get("split_seed", split.get("seed", 42))
        fraction = split.get("train_fraction", 0.6)
        names = [f for f in features if f in manifest.features or f in manifest.auxiliary]
        table = read_region(manifest, region, names)
        signal = table["is_signal"].to_numpy(dtype=bool)
        train = background_train_mask(table, seed, fraction)
        rows = ~signal & ~train
        columns = {f: table[f].to_numpy()[rows] for f in names}
        info = {f: (manifest.feature(f).kind, manifest.feature(f).unit or "") for f in names}
        return columns, info, f"{manifest.path.name} region '{region}', background validation part (seed {seed})"
    columns, _ = read_events(source, need_metadata=False)  # any ntuple with the feature branches
    manifest_path = split.get("manifest")
    if manifest_path and Path(manifest_path).is_file():  # auxiliary columns (e.g. the channel) from the manifest
        columns = with_auxiliary(load_manifest(manifest_path), columns)
    physics = generated_metadata.get("physics") or {}  # kinds and units as the generator was trained with
    kinds, units = physics.get("kinds", {}), physics.get("units", {})
    if not kinds:
        raise DataError(f"{generated_metadata.get('checkpoint', 'the generated file')} records no feature kinds: "
                        "generate the file again with this lit-vae (`lit-vae generate`)")
    info = {f: (kinds[f], units.get(f) or "") for f in features if f in columns and f in kinds}
    return {f: columns[f] for f in info}, info, f"every event of {source}"


def with_auxiliary(manifest, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """columns plus every auxiliary feature of the manifest that they lack and can be computed from
    (e.g. the channel is_muon from lep_flavour)."""
    stored = {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}
    extra = {name: manifest.column(name, stored) for name in manifest.auxiliary
             if name not in columns and manifest.stored(name) <= set(columns)}
    return {**columns, **extra}


def evaluation_physics(generated_metadata: dict, mc: str | None, region: str | None) -> Physics | None:
    """The declarations to check generated events against: the manifest's physics (every derived feature,
    every bound, the region's cut), when the manifest the generator was trained on declares a basis."""
    manifest_path = (generated_metadata.get("data_split") or {}).get("manifest")
    if mc and Path(mc).suffix in (".yaml", ".yml"):
        manifest_path = mc
    if not manifest_path or not Path(manifest_path).is_file():
        return None
    manifest = load_manifest(manifest_path)
    if not manifest.basis:
        return None
    region = region or (generated_metadata.get("data_split") or {}).get("region") or next(iter(manifest.regions))
    return Physics.from_manifest(manifest, region, list(manifest.features), "exact", "absolute")


def mass_peaks(physics: Physics | None, columns: dict) -> dict[str, tuple[float, float]]:
    """(median, 16-84 % half-width) of every declared mass (a derived feature `mass(...)`) computable from
    columns. A column read only by the objects' own masses (the channel, for the lepton mass) is taken as 0
    where a file lacks it: the particle masses are far below the peaks' widths (files of the paper's setup)."""
    if physics is None:
        return {}
    mass_only = set().union(*(expression_names(str(o["mass"]), {}) for o in physics.objects.values()))
    out = {}
    for name, expression in physics.derived.items():
        missing = expression_names(expression, physics.objects) - set(columns)
        if expression.replace(" ", "").startswith("mass(") and missing <= mass_only:
            zeros = {n: np.zeros(len(next(iter(columns.values())))) for n in missing}
            out[name] = m.peak(evaluate(expression, {**columns, **zeros}, physics.objects))
    return out


def save_figure(fig, out: Path, name: str) -> Path:
    """Save fig as out/figures/name.png and .pdf and close it; returns the PNG path."""
    import matplotlib.pyplot as plt

    folder = out / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    for suffix, dpi in ((".png", 80), (".pdf", None)):
        with atomic_path(folder / f"{name}{suffix}") as tmp:
            fig.savefig(tmp, dpi=dpi, format=suffix[1:])
        fig.set_layout_engine("none")  # the layout is fixed by the first save; do not solve it again
    plt.close(fig)
    return folder / f"{name}.png"


def _fmt(value, digits: int = 3) -> str:
    if isinstance(value, str):
        return html.escape(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    return f"{value:.{digits}g}"


def html_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A plain HTML table of dict rows (numbers to 3 significant digits, NaN as a dash)."""
    columns = list(columns or (rows[0].keys() if rows else []))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_figures(paths: Sequence[Path], per_row: int = 3) -> str:
    """PNG figures embedded as base64 (the page stands alone), per_row across."""
    width = 100 // per_row - 1
    return "".join(f'<img style="width:{width}%" alt="{html.escape(p.stem)}" '
                   f'src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">' for p in paths)


STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1400px} table{border-collapse:collapse;margin:1em 0}"
         "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right} th{background:#eee}"
         "td:first-child{text-align:left} p.note{color:#555;max-width:60em}")


def write_page(path: Path, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    """report.html: a title and (heading, HTML) sections, written atomically."""
    body = "".join(f"<h2>{html.escape(h)}</h2>{content}" for h, content in sections)
    with atomic_path(path) as tmp:
        tmp.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                       f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")
    return path


def write_json(path: Path, payload: dict) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1, sort_keys=True, default=float, allow_nan=True))
    return path


def log_to_wandb(payload: dict, tables: dict[str, list[dict]], images: Sequence[Path], out: Path, name: str) -> None:
    """Metrics (flattened), tables and images to the active W&B run, or to a new one (offline unless the
    user is logged in, files under runs/)."""
    import wandb

    # mode and directory from this process's environment now (wandb's settings singleton keeps those of its
    # first use in the process, e.g. an earlier run with WANDB_MODE=disabled)
    run = wandb.run or wandb.init(project="lit-vae", job_type="evaluate", name=name, config={"out": str(out)},
                                  mode=os.environ.get("WANDB_MODE", "offline"), dir=os.environ.get("WANDB_DIR"))
    flat = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}/{k}" if prefix else str(k), v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[prefix] = value

    walk("evaluate", payload)
    run.log(flat)
    for key, rows in tables.items():
        if rows:
            columns = list(rows[0])
            run.log({f"evaluate/{key}": wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])})
    run.log({f"evaluate/figures/{p.stem}": wandb.Image(str(p)) for p in images})


def _check_training_logs(logs: Sequence[str]) -> None:
    """Refuse a missing --training-log before any work (and any output) is done."""
    for log in logs:
        if not Path(log).is_file():
            raise DataError(f"{log}: no such training log; give the metrics.csv of a run (runs/lit-vae/version_N)")


def _training_figures(logs: Sequence[str], out: Path) -> list[Path]:
    return [save_figure(plots.training_curves(Path(log)), out, f"training_{i}_{Path(log).parent.name}")
            for i, log in enumerate(logs)]


# --- generation -----------------------------------------------------------------------------------------


def compare(reference: np.ndarray, other: np.ndarray, names: list[str], kinds: list[str], columns: dict,
            seed: int, physics: Physics | None = None, reference_peaks: dict | None = None) -> dict:
    """Every fidelity number of `other` against `reference` (both events x features, physical units)."""
    per_feature = m.feature_metrics(reference, other, kinds, names)
    classifier = m.classifier_test(reference, other, kinds, names, seed=seed)
    fpd, fpd_err = m.fpd(reference, other, seed=seed)
    kpd, kpd_err = m.kpd(reference, other, seed=seed)
    summary = {
        "classifier_auc": classifier["auc"], "classifier_auc_lo": classifier["auc_lo"],
        "classifier_auc_hi": classifier["auc_hi"], "fpd": fpd, "fpd_err": fpd_err, "kpd": kpd, "kpd_err": kpd_err,
        "w1_mean": float(np.mean([v["w1"] for v in per_feature.values()])),
        "ks_max": float(max(v["ks"] for v in per_feature.values())),
        "chi2_ndf_mean": float(np.mean([v["chi2_ndf"] for v in per_feature.values()])),
        "separation_mean": float(np.mean([v["separation"] for v in per_feature.values()])),
        **m.correlation_metrics(reference, other),
    }
    residuals = {}
    declared = m.physics_consistency(physics, columns) if physics is not None else None
    if declared is not None and "m_llg" in declared["residuals"]:  # the file holds the channel: full check
        summary.update(declared["metrics"])
        residuals = declared["residuals"]
        for name in ("m_llg", "pt_ll_over_m_llg"):
            summary[f"{name}_frac_beyond_5pct"] = float(np.mean(~(np.abs(residuals[name]) <= 0.05)))
    elif all(c in columns for c in m.ZGAMMA_CONSISTENCY_COLUMNS):  # files without the channel: massless check
        consistency = m.zgamma_consistency(columns)
        summary.update(consistency["metrics"])
        residuals = consistency["residuals"]
    for name, (median, width) in mass_peaks(physics, columns).items():
        summary[f"peak_{name}_median"], summary[f"peak_{name}_width"] = median, width
        if reference_peaks and name in reference_peaks:
            summary[f"peak_{name}_width_ratio"] = width / reference_peaks[name][1]
            summary[f"peak_{name}_shift"] = median - reference_peaks[name][0]
    for name in names:
        per_feature[name]["auc_1d"] = classifier["auc_1d"][name]
        per_feature[name]["permutation_importance"] = classifier["permutation_importance"][name]
    return {"summary": summary, "per_feature": per_feature, "_residuals": residuals}


GENERATION_COLUMNS = ("classifier_auc", "fpd", "kpd", "w1_mean", "ks_max", "chi2_ndf_mean", "separation_mean",
                      "max_abs_delta_rho", "mean_abs_delta_rho", "m_llg_frac_beyond_5pct",
                      "pt_ll_over_m_llg_frac_beyond_5pct", "inconsistent_frac", "impossible_frac",
                      "outside_region_frac", "peak_m_ll_median", "peak_m_ll_width_ratio", "peak_m_llg_width_ratio")


def evaluate_generation(generated: Sequence[str], out: str, mc: str | None = None, region: str | None = None,
                        seed: int | None = None, labels: Sequence[str] | None = None,
                        training_logs: Sequence[str] = (), wandb: bool = False, max_events: int | None = None) -> dict:
    """Generated events (one or more files) against held-out MC, with an MC-vs-MC reference: the MC is
    split into halves A and B (at most max_events each); B and each generator (subsampled to the same
    size) are compared with A."""
    _check_training_logs(training_logs)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = list(labels or [Path(g).stem.removeprefix("gen_") for g in generated])
    if len(labels) != len(generated):
        raise DataError(f"--labels gives {len(labels)} names for {len(generated)} --generated files")
    files = [read_events(g) for g in generated]
    names = [c for c in files[0][0] if all(c in f[0] for f in files)]
    split_manifest = (files[0][1].get("data_split") or {}).get("manifest")
    if split_manifest and Path(split_manifest).is_file():  # for the physics checks, not for the classifier
        files = [(with_auxiliary(load_manifest(split_manifest), c), md) for c, md in files]
    mc_columns, info, description = held_out_mc(mc, files[0][1], region, seed, names)
    names = [n for n in names if n in info]
    if not names:
        raise DataError(f"{generated[0]}: no column in common with the MC ({description})")
    kinds = [info[n][0] for n in names]
    rng = np.random.default_rng(0 if seed is None else seed)
    order = rng.permutation(len(mc_columns[names[0]]))
    half = min(len(order) // 2, max_events or len(order))
    if half < 100:
        raise DataError(f"only {len(order)} held-out MC events ({description}); at least 200 are needed")
    x_mc = np.column_stack([mc_columns[n] for n in names]).astype(np.float64)
    a, b = x_mc[order[:half]], x_mc[order[half:2 * half]]
    samples = {"mc_vs_mc": (b, {n: mc_columns[n][order[half:2 * half]] for n in mc_columns})}
    for label, (columns, _) in zip(labels, files, strict=True):
        x = np.column_stack([columns[n] for n in names]).astype(np.float64)
        if not np.isfinite(x).all():
            raise DataError(f"generated file for '{label}' holds NaN or inf values")
        pick = rng.choice(len(x), min(half, len(x)), replace=False)
        samples[label] = (x[pick], {n: columns[n][pick] for n in columns})
    physics = evaluation_physics(files[0][1], mc, region)
    reference_peaks = mass_peaks(physics, {n: mc_columns[n][order[:half]] for n in mc_columns})
    results = {}
    for label, (x, columns) in tqdm(samples.items(), desc="evaluating generators", unit="sample"):
        results[label] = compare(a, x, names, kinds, columns, seed=0 if seed is None else seed, physics=physics,
                                 reference_peaks=reference_peaks)

    figures = [save_figure(plots.feature_overlay(n, info[n][0], info[n][1], a[:, j],
                                                 {lab: samples[lab][0][:, j] for lab in labels}),
                           out_dir, f"feature_{n}")
               for j, n in enumerate(tqdm(names, desc="plotting features", unit="feature"))]
    correlations = [save_figure(plots.correlation_heatmaps(a, samples[lab][0], names, lab), out_dir,
                                f"correlation_{lab}") for lab in labels]
    residual_figs = [save_figure(plots.residuals({("MC" if k == "mc_vs_mc" else k): results[k]["_residuals"][r]
                                                  for k in results if r in results[k]["_residuals"]},
                                                 f"{r}: recomputed / stored - 1"), out_dir,
                                 f"consistency_{r}") for r in results["mc_vs_mc"]["_residuals"]]
    training = _training_figures(training_logs, out_dir)
    for result in results.values():
        result.pop("_residuals")
    payload = {"kind": "generation", "reference": description, "n_reference": half, "features": names,
               "generated": dict(zip(labels, map(str, generated), strict=True)), "comparisons": results}
    write_json(out_dir / "metrics.json", payload)

    summary_rows = [{"sample": "MC vs MC (reference)" if k == "mc_vs_mc" else k, **r["summary"]}
                    for k, r in results.items()]
    feature_rows = [{"feature": n, **{f"{lab}: {key}": results[lab]["per_feature"][n][key] for lab in results
                                      for key in ("w1", "ks", "chi2_ndf", "separation", "auc_1d",
                                                  "permutation_importance")}} for n in names]
    note = ("<p class='note'>Each generator is compared with half A of the held-out MC; the MC-vs-MC row "
            "compares half B with half A and shows what 'as good as MC' looks like. Classifier AUC: 0.5 is "
            "indistinguishable (interval 16-84 %). FPD/KPD: features divided by the MC's max |x|. W1 on values "
            "standardised by the MC's spread; chi2/ndf and separation on a common binning. Consistency: every "
            "derived feature the manifest declares, recomputed from the others (inconsistent: off by more than "
            "1e-4); impossible: breaks a declared bound (the manifest's preselection); outside region: fails the "
            "region's cut. Files without the channel columns get the massless Zgamma check instead. Peaks: "
            "median and 16-84 % half-width of each declared mass, width ratio to the MC's. No single number is "
            "trusted alone.</p>")
    sections = [("Summary", f"<p>Reference: {html.escape(description)}, {half} events per half.</p>"
                 + html_table(summary_rows, ["sample", *GENERATION_COLUMNS, "classifier_auc_lo",
                                             "classifier_auc_hi", "fpd_err", "kpd_err"]) + note),
                ("Declared bounds (fraction of events breaking each)",
                 html_table([{"sample": k, **{c: v for c, v in r["summary"].items() if c.startswith("breach: ")}}
                             for k, r in results.items()])),
                ("Per feature (1-D AUC and permutation importance show what the classifier uses)",
                 html_table(feature_rows)),
                ("Distributions", html_figures(figures)), ("Correlations", html_figures(correlations, 1)),
                ("Physics consistency", html_figures(residual_figs, 3))]
    if training:
        sections.append(("Training", html_figures(training, 1)))
    write_page(out_dir / "report.html", "lit-vae: generation fidelity", sections)
    if wandb or _wandb_active():
        log_to_wandb(payload, {"generation_summary": summary_rows}, [*correlations, *residual_figs, *training],
                     out_dir, "evaluate-generation")
    return payload


def _wandb_active() -> bool:
    wandb = sys.modules.get("wandb")
    return wandb is not None and wandb.run is not None


# --- anomaly detection -----------------------------------------------------------------------------------------

ANOMALY_COLUMNS = ("auc", "eff_s_at_eff_b_0.1", "eff_s_at_eff_b_0.01", "eff_s_at_eff_b_0.001", "max_sic")


def scored_rows(samples: np.ndarray, event_numbers: np.ndarray, configurations: np.ndarray, metadata: dict,
                path: str) -> tuple[Manifest, pd.DataFrame, np.ndarray, list[str]]:
    """(manifest, region table, the table row of every scored row, the model's features): the score file's
    rows joined to the region's events on (sample, event_number, configuration)."""
    if "manifest" not in metadata or "region" not in metadata:
        raise DataError(f"{path}: no manifest/region in its metadata; was it written by `lit-vae predict`?")
    manifest = load_manifest(metadata["manifest"])
    names = list(manifest.features)
    features = list((metadata.get("data_split") or {}).get("features") or names)  # what the model saw
    table = read_region(manifest, metadata["region"], list(dict.fromkeys([*names, *features])))
    key = dict(zip(zip(table["sample"].astype(str), table["event_id"].to_numpy(np.uint64),
                       table["configuration"].to_numpy(np.int64), strict=True), range(len(table)), strict=True))
    try:
        rows = np.array([key[(s, int(e), int(c))]
                         for s, e, c in zip(samples, event_numbers, configurations, strict=True)])
    except KeyError as err:
        raise DataError(f"{path}: event {err.args[0]} is not in {manifest.path} region '{metadata['region']}'; "
                        "score and evaluate with the same manifest") from None
    return manifest, table, rows, features


def _with_features(samples: np.ndarray, event_numbers: np.ndarray, configurations: np.ndarray, metadata: dict,
                   path: str, baselines: bool, seeds: Sequence[int], cache: dict | None = None
                   ) -> tuple[np.ndarray, list[str], list[dict[str, np.ndarray]], dict]:
    """The manifest features of every scored row; with baselines, their scores of those rows for each seed
    (the resample and initialisation), fitted on the training background of the file's recorded split."""
    manifest, table, rows, features = scored_rows(samples, event_numbers, configurations, metadata, path)
    names = list(manifest.features)
    x = table[names].to_numpy(dtype=np.float64)
    if not baselines:
        return x[rows], names, [], {}
    train = training_background(table, metadata.get("data_split") or {}, path)
    if train[rows].any():
        raise DataError(f"{path}: {int(train[rows].sum())} scored events are training events of its recorded split")
    model_x = table[features].to_numpy(dtype=np.float64)
    kinds = [manifest.feature(f).kind for f in features]
    fits = _fit_baselines(model_x[train], table["weight"].to_numpy(np.float64)[train], model_x[rows], kinds, seeds,
                          {} if cache is None else cache)
    return x[rows], names, fits, {"features": features, "training_events": int(train.sum()), "seeds": list(seeds)}


def _fit_baselines(train_x: np.ndarray, train_w: np.ndarray, x: np.ndarray, kinds: list[str], seeds: Sequence[int],
                   cache: dict) -> list[dict[str, np.ndarray]]:
    """Each seed's baseline scores of x, the seeds fitted side by side on the CPU's cores (every fit is seeded:
    the numbers one after another would give). Kept in cache: a second score file with the same training
    background and scored rows (the VAE and VAE+D of one split) reuses them instead of fitting them again."""
    key = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in (train_x, train_w, x))
                         + repr((kinds, list(seeds))).encode()).hexdigest()
    if key not in cache:
        from joblib import Parallel, delayed

        jobs = Parallel(n_jobs=min(len(seeds), os.cpu_count() or 1), return_as="generator")(
            delayed(baseline_scores)(train_x, train_w, x, kinds, s) for s in seeds)
        cache[key] = list(tqdm(jobs, total=len(seeds), desc="fitting baselines", unit="seed", leave=False))
    return cache[key]


def seed_spread(labels: np.ndarray, fits: Sequence[np.ndarray], weights: np.ndarray) -> dict[str, float]:
    """Median, minimum and maximum over a baseline's refits (one per seed) of each anomaly metric: how much
    of a baseline's number is the draw of its fit rather than the method."""
    per_seed = [m.anomaly_metrics(labels, scores, weights) for scores in fits]
    out = {}
    for key in ANOMALY_COLUMNS:
        values = np.array([p[key] for p in per_seed])
        for name, reduce in (("median", np.median), ("min", np.min), ("max", np.max)):
            out[f"{key}_seeds_{name}"] = float(reduce(values))
    return out


def verdict(block: dict, default: str) -> dict[str, bool]:
    """Whether the default score beats each unsupervised baseline (higher AUC and eps_S at 10^-2 than its median
    over seeds, where fitted more than once; an unresolved eps_S never beats) and the best single cut in AUC."""
    mine = block[default]
    out = {}
    for baseline in BASELINES:
        other = baseline_typical(block[baseline])
        eff, other_eff = mine["eff_s_at_eff_b_0.01"], other["eff_s_at_eff_b_0.01"]
        out[baseline] = bool(mine["auc"] > other["auc"] and not math.isnan(eff)
                             and (math.isnan(other_eff) or eff > other_eff))
    out["every baseline"] = all(out[b] for b in BASELINES)
    cut = next(name for name in block if name.startswith("best cut"))
    out["best cut in AUC"] = bool(mine["auc"] > block[cut]["auc"])
    return out


def baseline_typical(block: dict) -> dict[str, float]:
    """A baseline's AUC and eps_S at 10^-2: the median over its seeds where it has them, else its one fit."""
    return {key: block.get(f"{key}_seeds_median", block[key]) for key in ("auc", "eff_s_at_eff_b_0.01")}


def _verdict_cells(block: dict, default: str, beats: dict[str, bool]) -> dict[str, str]:
    """The page's row of the verdict: 'yes/no (default vs other)' per baseline, and the cut in AUC."""
    mine = block[default]
    cells = {}
    for baseline in BASELINES:
        other = baseline_typical(block[baseline])
        eff = [_number(mine["eff_s_at_eff_b_0.01"]), _number(other["eff_s_at_eff_b_0.01"])]
        cells[baseline] = "{} (AUC {:.4f} vs {:.4f}, eps_S {} vs {})".format(
            "yes" if beats[baseline] else "no", mine["auc"], other["auc"], *eff)
    cut = next(name for name in block if name.startswith("best cut"))
    cells["best cut in AUC (signal-informed)"] = "{} ({}: AUC {:.4f} vs {:.4f})".format(
        "yes" if beats["best cut in AUC"] else "no", cut[len("best cut: "):], mine["auc"], block[cut]["auc"])
    return cells


def _number(value: float) -> str:
    """Three decimals, or a dash where the background cannot resolve the number (NaN)."""
    return "\u2013" if math.isnan(value) else f"{value:.3f}"


def _event_index(samples: np.ndarray, event_numbers: np.ndarray) -> np.ndarray:
    """One index per (sample, event_number): the rows of a truth-tagged event share it."""
    pairs = np.rec.fromarrays([samples.astype(str), event_numbers.astype(np.uint64)])
    return np.unique(pairs, return_inverse=True)[1].ravel()


def _seed_range(block: dict, key: str) -> str:
    """'median (min-max)' over a baseline's seeds for the report page; a dash where it cannot be resolved."""
    values = [block[f"{key}_seeds_{name}"] for name in ("median", "min", "max")]
    return "\u2013" if any(math.isnan(v) for v in values) else "{:.3g} ({:.3g}\u2013{:.3g})".format(*values)


def _with_interval(block: dict, key: str) -> str:
    """'value (lo-hi)' for the report page; a dash where the number cannot be resolved."""
    value, lo, hi = block[key], block[f"{key}_lo"], block[f"{key}_hi"]
    return "\u2013" if math.isnan(value) else f"{value:.3g} ({lo:.3g}\u2013{hi:.3g})"


# the score columns of `lit-vae predict` shown beside the default score (each larger = more anomalous)
SCORE_SUITE = ("total", "recon", "kl", "latent_radius", "latent_mahalanobis", "prior_nll", "iwae")


def score_block(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray, n_boot: int, seed: int,
                groups: np.ndarray | None = None) -> dict:
    """Anomaly metrics and their bootstrap intervals (resampling events: rows of one group together)."""
    metrics = functools.partial(m.anomaly_metrics, order=np.argsort(-scores, kind="stable"),  # sorted once
                                n_eff_background=m.effective_count(weights[labels == 0]))  # same cuts in replicas
    values = metrics(labels, scores, weights)
    intervals = m.bootstrap_intervals(metrics, labels, scores, weights, n_boot=n_boot, seed=seed, groups=groups)
    return {**values, **{f"{k}_lo": lo for k, (lo, _) in intervals.items()},
            **{f"{k}_hi": hi for k, (_, hi) in intervals.items()}}


def evaluate_anomaly(scores: Sequence[str], out: str, labels: Sequence[str] | None = None,
                     base_region: str = "preselection", references: bool = True, n_boot: int = 100, seed: int = 0,
                     training_logs: Sequence[str] = (), wandb: bool = False, baseline_seeds: int = 5) -> dict:
    """Anomaly-detection metrics of each score file per signal sample (background: every background
    sample of the file, weighted in pb), beside a supervised classifier and the best single-variable cut,
    and each region's signal and background efficiency relative to base_region when that is scored too.
    The baselines are fitted with baseline_seeds seeds (seed, seed + 1, ...): the first gives their curves and
    intervals, all give their spread (`<metric>_seeds_median/min/max`, only with two seeds or more)."""
    if baseline_seeds < 1:
        raise ConfigError(f"--baseline-seeds must be at least 1, got {baseline_seeds}")
    _check_training_logs(training_logs)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = list(labels or [Path(s).stem.removeprefix("scores_") for s in scores])
    if len(labels) != len(scores):
        raise DataError(f"--labels gives {len(labels)} names for {len(scores)} --scores files")
    results, curves_figs, score_figs, rows, page_rows, spread_rows, verdict_rows = {}, [], [], [], [], [], []
    fitted_baselines: dict = {}  # baseline fits by their inputs: score files of one training background share them
    for label, path in zip(labels, scores, strict=True):
        columns, metadata = read_events(path)
        for needed in ("score", "label", "weight", "sample", "event_number"):
            if needed not in columns:
                raise DataError(f"{path}: no '{needed}' column; give a file written by `lit-vae predict`")
        samples = columns["sample"]
        if np.issubdtype(samples.dtype, np.integer):  # ROOT outputs store the index into sample_names
            samples = np.array(metadata.get("sample_names", []))[samples]
        samples = samples.astype(str)
        is_signal, weight, score = columns["label"] == 1, columns["weight"].astype(np.float64), columns["score"]
        if not is_signal.any() or is_signal.all():
            raise DataError(f"{path}: needs both background and signal events to evaluate")
        configurations = columns.get("configuration", np.zeros(len(score), np.int32))
        events = _event_index(samples, columns["event_number"])  # the rows of one event resample together
        x, feature_names, fits, fitted = (
            _with_features(samples, columns["event_number"], configurations, metadata, path, baselines=True,
                           seeds=range(seed, seed + baseline_seeds), cache=fitted_baselines)
            if references else (None, [], [], {}))
        baselines = fits[0] if fits else {}
        yields = {s: float(weight[samples == s].sum()) for s in dict.fromkeys(samples)}
        default = f"default score ({metadata.get('anomaly_score', 'total')})"
        suite = {f"score: {name}": columns[name] for name in SCORE_SUITE
                 if name in columns and not np.array_equal(columns[name], score)}
        entry = {"region": metadata.get("region"), "model": metadata.get("model"),
                 "checkpoint": metadata.get("checkpoint"), "n_background": int((~is_signal).sum()),
                 "yields_pb": yields, "default": default, "baselines": fitted, "signals": {}}
        if "iwae" in columns:  # the model's quality on held-out background, read without any signal
            entry["background_nll"] = float(np.average(columns["iwae"][~is_signal], weights=weight[~is_signal]))
        background = ~is_signal  # which process fills each background-only score's 1 % tail, beside its share
        entry["tail_composition"] = {
            "all background": m.tail_composition(score[background], weight[background], samples[background], 1.0),
            **{name: m.tail_composition(values[background], weight[background], samples[background])
               for name, values in {default: score, **suite, **baselines}.items()}}
        distributions = {s: (score[samples == s], weight[samples == s]) for s in yields}
        score_figs.append(save_figure(plots.score_distributions(distributions), out_dir, f"scores_{label}"))
        for signal in tqdm(sorted(set(samples[is_signal])), desc=f"evaluating {label}", unit="signal"):
            rows_ = ~is_signal | (samples == signal)
            y, w, groups = is_signal[rows_].astype(int), weight[rows_], np.unique(events[rows_], return_inverse=True)[1]
            methods = {default: score[rows_], **{name: values[rows_] for name, values in suite.items()},
                       **{name: values[rows_] for name, values in baselines.items()}}
            if references:
                methods["supervised (ceiling)"] = m.supervised_scores(x[rows_], y, w, seed=seed, groups=groups)
                cut_name, cut_scores = m.best_single_cut(x[rows_], feature_names, y, w)
                methods[f"best cut: {cut_name}"] = cut_scores
            block = {}
            curves = {}
            for method, values in methods.items():
                block[method] = score_block(y, values, w, n_boot, seed, groups)
                if method in baselines and len(fits) > 1:
                    block[method] |= seed_spread(y, [fit[method][rows_] for fit in fits], w)
                    spread_rows.append({"scores": label, "region": entry["region"], "signal": signal, "method": method,
                                        **{k: _seed_range(block[method], k) for k in ANOMALY_COLUMNS}})
                eff_b, eff_s, _ = roc_curve(y, values, sample_weight=w)
                curves[method] = (eff_b, eff_s)
                rows.append({"scores": label, "region": entry["region"], "signal": signal, "method": method,
                             **{k: block[method][k] for k in ANOMALY_COLUMNS}})
                page_rows.append({**{k: rows[-1][k] for k in ("scores", "region", "signal", "method")},
                                  **{k: _with_interval(block[method], k) for k in ANOMALY_COLUMNS}})
            entry["signals"][signal] = block
            if references:
                entry.setdefault("verdict", {})[signal] = verdict(block, default)
                verdict_rows.append({"scores": label, "region": entry["region"], "signal": signal,
                                     **_verdict_cells(block, default, entry["verdict"][signal])})
            curves_figs.append(save_figure(plots.roc_and_sic(curves, f"{entry['region']}, {signal}"), out_dir,
                                           f"roc_{label}_{signal}"))
        results[label] = entry
    efficiency_rows = _region_efficiencies(results, base_region)
    training = _training_figures(training_logs, out_dir)
    payload = {"kind": "anomaly", "base_region": base_region, "scores": results,
               "region_efficiency": efficiency_rows}
    write_json(out_dir / "metrics.json", payload)
    note = ("<p class='note'>Background: every background sample of the file (the validation part, never "
            "trained on), weighted by cross-section (pb). eps_S at eps_B: signal efficiency where the "
            "background efficiency is 10^-1, 10^-2, 10^-3 (a dash where the background sample is too small to "
            "resolve it); max SIC: the largest eps_S/sqrt(eps_B) keeping at least 10 effective background "
            "events. In brackets: the 16-84 % interval of a Poisson bootstrap. The default score is the "
            "model's configured anomaly_score (chosen before looking at signals); 'score: NAME' are the other "
            "columns of the score file; the baselines (isolation forest, Gaussian mixture, one Gaussian) are "
            "fitted on the model's training background only. The supervised classifier (trained on this signal, "
            "out-of-fold) is the ceiling; the best single cut (chosen by looking at the signal) is the floor an "
            "anomaly score must beat. This page never picks a score by its signal efficiency.</p>")
    sections = [("Anomaly detection", html_table(page_rows) + note)]
    if verdict_rows:
        sections.append(("Does the default score beat the baselines?", html_table(verdict_rows) + "<p class='note'>"
                         "Beats: a higher AUC and a higher eps_S at eps_B = 10^-2 than the unsupervised baseline "
                         "(its median over the seeds where it was fitted more than once: one fit can be lucky "
                         "either way), and a higher AUC than the best single cut, which was chosen by looking at "
                         "the signal. In brackets: the default's number, then the other's (a dash: the background "
                         "sample cannot resolve eps_S at 10^-2, and the verdict is no). Where it says no, the "
                         "default score does not beat that method on this signal.</p>"))
    if spread_rows:
        sections.append(("Baselines over seeds", html_table(spread_rows) + f"<p class='note'>Each baseline fitted "
                         f"{baseline_seeds} times (seeds {seed}-{seed + baseline_seeds - 1}: the weighted resample "
                         "it is fitted on and its initialisation), on the same training background: the median "
                         "and, in brackets, the range of each number. The table above shows the first seed's. A "
                         "score that beats a baseline only at some seeds does not beat the method.</p>"))
    quality = [{"scores": label, "region": e["region"], "model": e["model"],
                "background -log p(x)": e["background_nll"]} for label, e in results.items() if "background_nll" in e]
    if quality:
        sections.append(("Held-out background density", html_table(quality) + "<p class='note'>-log p(x) of the "
                         "held-out background (IWAE, weighted mean, nats per event; lower: the model describes the "
                         "background better). The background-only yardstick by which models are chosen.</p>"))
    tails = [{"scores": label, "region": e["region"], "method": method, **shares}
             for label, e in results.items() for method, shares in e["tail_composition"].items()]
    sections.append(("What fills the background's 1 % tail", html_table(tails) + "<p class='note'>Each background "
                     "sample's share of the weight among the highest-scored held-out background events that hold "
                     "1 % of it, per background-only score ('all background': its share of the whole). A process "
                     "far above its share is the one a score finds least typical: read without signals.</p>"))
    if efficiency_rows:
        sections.append((f"Regions relative to {base_region}",
                         html_table(efficiency_rows) + "<p class='note'>eff: the region's yield over the base "
                         "region's, per sample; max_sic_vs_base: METHOD: the best eps_S/sqrt(eps_B) of that score "
                         "in the region times the region's own eps_S/sqrt(eps_B) relative to the base region: "
                         "does training on a tighter region buy sensitivity?</p>"))
    sections += [("ROC and significance improvement", html_figures(curves_figs, 2)),
                 ("Score distributions", html_figures(score_figs, 3))]
    if training:
        sections.append(("Training", html_figures(training, 1)))
    write_page(out_dir / "report.html", "lit-vae: anomaly detection", sections)
    if wandb or _wandb_active():
        log_to_wandb(payload, {"anomaly": rows, "regions": efficiency_rows}, [*curves_figs, *score_figs, *training],
                     out_dir, "evaluate-anomaly")
    return payload


def _region_efficiencies(results: dict, base_region: str) -> list[dict]:
    """Per scored region and signal: efficiency of signal and background relative to the base region, and
    the max SIC of every score (the default first, then the suite, baselines and references) expressed
    relative to the base region: the region's own eps_S/sqrt(eps_B) times the score's best one inside it."""
    base = next((r for r in results.values() if r["region"] == base_region), None)
    if base is None:
        return []
    rows = []
    background = [s for s in base["yields_pb"] if s not in base["signals"]]
    for label, entry in results.items():
        eff_b = (sum(entry["yields_pb"].get(s, 0.0) for s in background)
                 / sum(base["yields_pb"][s] for s in background))
        for signal, block in entry["signals"].items():
            eff_s = entry["yields_pb"][signal] / base["yields_pb"].get(signal, float("nan"))
            region_sic = eff_s / math.sqrt(eff_b) if eff_b > 0 else float("nan")
            rows.append({"scores": label, "region": entry["region"], "signal": signal, "eff_signal": eff_s,
                         "eff_background": eff_b, "region_sic": region_sic,
                         "max_sic_in_region": block[entry["default"]]["max_sic"],
                         **{f"max_sic_vs_base: {method}": values["max_sic"] * region_sic
                            for method, values in block.items()}})
    return rows


# --- the page that joins reports ----------------------------------------------------------------------------------


def evaluate_summary(reports: Sequence[str], out: str, title: str = "lit-vae report") -> Path:
    """One page over several evaluation folders: the generators side by side (with their anomaly AUCs
    when the same labels were scored), every anomaly table, and links to the full reports."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = {}
    for folder in reports:
        path = Path(folder) / "metrics.json"
        if not path.is_file():
            raise DataError(f"{path}: no such file; run `lit-vae evaluate generation|anomaly --out {folder}` first")
        loaded[folder] = json.loads(path.read_text())
    anomaly_auc = {}
    for payload in loaded.values():
        for label, entry in payload.get("scores", {}).items():
            for signal, block in entry["signals"].items():
                anomaly_auc[(label, signal)] = block[entry["default"]]
    sections, combined = [], {}
    for folder, payload in loaded.items():
        target = os.path.relpath(Path(folder) / "report.html", out_dir)
        link = f"<p><a href='{html.escape(target)}'>full report: {html.escape(target)}</a></p>"
        combined[Path(folder).name] = payload
        if payload["kind"] == "generation":
            rows = []
            for label, result in payload["comparisons"].items():
                row = {"generator": "MC vs MC (reference)" if label == "mc_vs_mc" else label,
                       **{k: result["summary"].get(k) for k in GENERATION_COLUMNS}}
                for (scored, signal), block in anomaly_auc.items():
                    if scored == label:
                        row[f"anomaly AUC ({signal})"] = block["auc"]
                        row[f"max SIC ({signal})"] = block["max_sic"]
                rows.append(row)
            sections.append((f"Generation: {Path(folder).name}", f"<p>{html.escape(payload['reference'])}</p>"
                             + html_table(rows) + link))
        else:
            rows = [{"scores": label, "region": entry["region"], "signal": signal, "method": method,
                     **{k: block[k] for k in ANOMALY_COLUMNS}}
                    for label, entry in payload["scores"].items() for signal, methods in entry["signals"].items()
                    for method, block in methods.items()]
            sections.append((f"Anomaly detection: {Path(folder).name}", html_table(rows)
                             + (html_table(payload["region_efficiency"]) if payload["region_efficiency"] else "")
                             + link))
    write_json(out_dir / "metrics.json", combined)
    return write_page(out_dir / "report.html", title, sections)

"""The README's generation table: every Zgamma generator (VAE, VAE+D, likelihood VAE) in the paper's setup
and in the physics setup, with a normal (learnable for the likelihood VAE) and a flow prior, plus
configs/zgamma/best.yaml, each trained here, sampled and compared with the independent test sample
data/zgamma_test.root in one `lit-vae evaluate generation` (MC vs MC beside them).

    python benchmarks/generation_table.py [--epochs 20] [--out runs/generation_table] [--only LABEL ...]

Each run lives in OUT/<slug>/ and is skipped when its generated file exists, so an interrupted table
resumes. Writes OUT/table.md (and OUT/eval/ with every figure). CPU time is the training process's user +
system time; events/s is `generate`'s own sampling rate (model load and start-up excluded).
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from lit_vae.data.io import read_events

REPO = Path(__file__).resolve().parents[1]
LITVAE = str(Path(sys.executable).with_name("lit-vae"))
PHYSICS = ["--data.init_args.derived_features=exact", "--data.init_args.azimuth=relative"]
FLOW = ["--model.init_args.prior=flow"]
CHANNEL = ["--model.init_args.heads={is_muon: bernoulli}"]  # the channel as a Bernoulli head
SAMPLED = ["--model.init_args.decoder=likelihood", *CHANNEL]  # sampled per-feature density heads


def config(name: str) -> list[str]:
    return ["--config", str(REPO / "configs" / "zgamma" / f"{name}.yaml")]


# label -> fit arguments; "paper" = all 21 features modelled, absolute angles; "physics" = basis + exact
# derived features + relative azimuth (+ sampled per-feature heads where the model takes them).
RUNS = {
    "VAE, paper, normal": config("vae"),
    "VAE, paper, flow": config("vae") + FLOW,
    "VAE+D, paper, normal": config("vae_d"),
    "VAE+D, paper, flow": config("vae_d") + FLOW,
    "likelihood VAE, paper, learnable": config("likelihood_vae"),
    "likelihood VAE, paper, flow": config("likelihood_vae") + FLOW,
    "VAE, physics, normal": config("physics_vae"),
    "VAE, physics, flow": config("physics_vae") + FLOW,
    "VAE+D, physics (MSE head), normal": config("vae_d") + PHYSICS,
    "VAE+D, physics (MSE head), flow": config("vae_d") + PHYSICS + FLOW,
    "VAE+D, physics, normal": config("vae_d") + PHYSICS + SAMPLED,
    "VAE+D, physics, flow": config("vae_d") + PHYSICS + SAMPLED + FLOW,
    "likelihood VAE, physics, learnable": config("likelihood_vae") + PHYSICS + CHANNEL,
    "likelihood VAE, physics, flow": config("likelihood_vae") + PHYSICS + CHANNEL + FLOW,
    "best.yaml: VAE, physics, coupling-flow decoder, normal": config("best") + ["--trainer.max_epochs=30"],
    "best.yaml with an autoregressive flow decoder": config("best") + ["--trainer.max_epochs=30",
                                                                       "--model.init_args.flow_passes=null"],
}
COLUMNS = [("classifier AUC (16–84 %)", None), ("FPD", "fpd"), ("KPD", "kpd"), ("mean W1", "w1_mean"),
           ("max \\|Δρ\\|", "max_abs_delta_rho"), ("m_ℓℓγ inconsistent", "m_llg_frac_beyond_5pct"),
           ("impossible", "impossible_frac"), ("outside region", "outside_region_frac"),
           ("m_ℓℓ peak − MC [GeV]", "peak_m_ll_shift"), ("m_ℓℓ width / MC", "peak_m_ll_width_ratio")]


def slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def train_and_generate(label: str, args: list[str], run_dir: Path, epochs: int, n_events: int) -> dict:
    """Fit one configuration and generate n_events from its best checkpoint; returns the timings."""
    gen = run_dir / "gen.parquet"
    timing = run_dir / "timing.json"
    if gen.is_file() and timing.is_file():
        return json.loads(timing.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    if any(a.startswith("--trainer.max_epochs") for a in args):  # a run that names its own epochs
        epochs = int(next(a for a in args if a.startswith("--trainer.max_epochs")).split("=")[1])
    fit = [LITVAE, "fit", *args, f"--trainer.max_epochs={epochs}", "--trainer.enable_progress_bar=false"]
    with open(run_dir / "fit.log", "w") as log:
        code = subprocess.run(fit, cwd=run_dir, stdout=log, stderr=subprocess.STDOUT).returncode
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    checkpoints = sorted((run_dir / "runs" / "lit-vae" / "version_0" / "checkpoints").glob("best-*.ckpt"))
    stopped = "non-finite training loss" in (run_dir / "fit.log").read_text()
    if code and not (stopped and checkpoints):  # a run stopped by a NaN keeps its best checkpoint: use it
        raise subprocess.CalledProcessError(code, fit)
    best = checkpoints[0]
    subprocess.run([LITVAE, "generate", "--ckpt_path", str(best), "--n_events", str(n_events),
                    "--output", str(gen)], cwd=run_dir, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    _, metadata = read_events(gen)
    result = {"label": label, "fit_wall_s": time.perf_counter() - start, "fit_cpu_s": cpu,
              "epochs": epochs, "events_per_second": metadata["events_per_second"], "stopped_by_nan": bool(code)}
    timing.write_text(json.dumps(result, indent=1))
    return result


def table(metrics: dict, timings: dict[str, dict]) -> str:
    """A markdown table: one row per generator, MC vs MC first."""
    header = ["sample", *(c for c, _ in COLUMNS), "training CPU-min (epochs)", "generated events/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    comparisons = metrics["comparisons"]
    for label in ["mc_vs_mc", *(k for k in timings if k in comparisons)]:  # MC first, then RUNS' order
        s = comparisons[label]["summary"]
        auc = f"{s['classifier_auc']:.3f} ({s['classifier_auc_lo']:.3f}–{s['classifier_auc_hi']:.3f})"
        cells = [auc] + [_fmt(s.get(key)) for _, key in COLUMNS[1:]]
        t = timings.get(label)
        cells += [f"{t['fit_cpu_s'] / 60:.1f} ({t['epochs']})", f"{t['events_per_second']:.3g}"] if t else ["", ""]
        mark = " †" if t and t.get("stopped_by_nan") else ""
        name = "MC vs MC (reference)" if label == "mc_vs_mc" else label + mark
        lines.append("| " + " | ".join([name, *cells]) + " |")
    if any(t.get("stopped_by_nan") for t in timings.values()):
        lines.append("\n† stopped by a non-finite training loss before its last epoch; its best checkpoint is used.")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if value is None:
        return "–"
    return "0" if value == 0 else f"{value:.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20, help="epochs per run (best.yaml: its 30; default 20)")
    parser.add_argument("--events", type=int, default=40_000, help="generated events per run (default 40,000)")
    parser.add_argument("--out", default="runs/generation_table")
    parser.add_argument("--mc", default=str(REPO / "data" / "zgamma_test.root"))
    parser.add_argument("--only", nargs="*", help="labels to run (default: all)")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    runs = {k: v for k, v in RUNS.items() if not args.only or k in args.only}
    timings = {}
    for label, fit_args in runs.items():
        print(f"[{time.strftime('%H:%M:%S')}] {label}", flush=True)
        try:
            timings[label] = train_and_generate(label, fit_args, out / slug(label), args.epochs, args.events)
        except subprocess.CalledProcessError as error:
            print(f"  failed ({error}; see {out / slug(label) / 'fit.log'}); left out of the table", flush=True)
    labels = list(timings)  # evaluated under their slugs (file names of figures), tabulated under their labels
    subprocess.run([LITVAE, "evaluate", "generation", "--generated",
                    *(str(out / slug(k) / "gen.parquet") for k in labels), "--labels", *map(slug, labels),
                    "--mc", args.mc, "--out", str(out / "eval")], check=True)
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    metrics["comparisons"] = {({slug(k): k for k in labels}).get(k, k): v for k, v in metrics["comparisons"].items()}
    (out / "table.md").write_text(table(metrics, timings))
    print((out / "table.md").read_text())


if __name__ == "__main__":
    main()

"""Arguments of `lit-vae evaluate generation|anomaly|summary` (argparse: these work on files, not on a
Trainer, so they are not LightningCLI subcommands)."""

from __future__ import annotations

import argparse

from lit_vae.evaluation.report import evaluate_anomaly, evaluate_generation, evaluate_summary


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="lit-vae evaluate", description="Metrics, figures and report.html.")
    sub = main.add_subparsers(dest="what", required=True)
    gen = sub.add_parser("generation", help="generated events against held-out Monte Carlo")
    gen.add_argument("--generated", nargs="+", required=True, help="files from `lit-vae generate`")
    gen.add_argument("--mc", help="manifest YAML (its background validation part is used) or a .root/.parquet "
                                  "ntuple (every event); default: the manifest the generator was trained on")
    gen.add_argument("--region", help="region of the manifest (default: the generator's)")
    gen.add_argument("--seed", type=int, help="split seed of the manifest (default: the generator's)")
    gen.add_argument("--max-events", type=int, help="at most this many held-out MC events per half (default: all)")
    anomaly = sub.add_parser("anomaly", help="anomaly scores of background and signals")
    anomaly.add_argument("--scores", nargs="+", required=True, help="files from `lit-vae predict`")
    anomaly.add_argument("--base-region", default="preselection",
                         help="region the others' efficiencies are relative to (default: preselection)")
    anomaly.add_argument("--no-references", action="store_true",
                         help="skip the supervised classifier and best-cut references")
    anomaly.add_argument("--bootstrap", type=int, default=100, help="bootstrap resamples (default 100)")
    anomaly.add_argument("--baseline-seeds", type=int, default=5,
                         help="fit each baseline with this many seeds and report their spread (default 5)")
    for p in (gen, anomaly):
        p.add_argument("--out", required=True, help="folder for metrics.json, figures/ and report.html")
        p.add_argument("--labels", nargs="+", help="one name per input file (default: from the file names)")
        p.add_argument("--training-log", nargs="*", default=[], help="metrics.csv of the runs, for training curves")
        p.add_argument("--wandb", action="store_true", help="also log to W&B (always when a run is active)")
    summary = sub.add_parser("summary", help="one page joining several evaluation folders")
    summary.add_argument("--reports", nargs="+", required=True, help="folders written by evaluate")
    summary.add_argument("--out", required=True)
    summary.add_argument("--title", default="lit-vae report")
    return main


def run(argv: list[str]) -> None:
    """Parse and run one evaluate command; prints where the report is."""
    args = parser().parse_args(argv)
    if args.what == "generation":
        evaluate_generation(args.generated, args.out, mc=args.mc, region=args.region, seed=args.seed,
                            labels=args.labels, training_logs=args.training_log, wandb=args.wandb,
                            max_events=args.max_events)
        page = f"{args.out}/report.html"
    elif args.what == "anomaly":
        evaluate_anomaly(args.scores, args.out, labels=args.labels, base_region=args.base_region,
                         references=not args.no_references, n_boot=args.bootstrap,
                         training_logs=args.training_log, wandb=args.wandb, baseline_seeds=args.baseline_seeds)
        page = f"{args.out}/report.html"
    else:
        page = evaluate_summary(args.reports, args.out, args.title)
    print(f"report: {page}")

"""Arguments of `lit-vae sweep FILE [options] [-- extra fit args]`."""

from __future__ import annotations

import argparse

from lit_vae.errors import ConfigError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lit-vae sweep", description="Run a W&B sweep file with Optuna (offline, "
                                "local workers, many machines) or with W&B agents. Arguments after -- go to "
                                "every trial's `lit-vae fit`.")
    p.add_argument("file", help="sweep file in W&B format (configs/sweeps/*.yaml)")
    p.add_argument("--backend", choices=("optuna", "wandb"), default="optuna")
    p.add_argument("--trials", type=int, help="trials in the whole study (default: the grid, or 20)")
    p.add_argument("--storage", help="journal file path or RDB URL (postgresql://...) shared by workers and "
                                     "machines (default: sweeps/STUDY/journal.log)")
    p.add_argument("--study-name", help="default: the sweep file's name")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (single-threaded each)")
    p.add_argument("--sampler-seed", type=int, default=0,
                   help="sampler seed: random/bayes workers get seed, seed+1, ... (give each machine its own); "
                        "grid workers all use it (it fixes the grid order, which must agree everywhere)")
    p.add_argument("--summary", action="store_true", help="only write the ranking table and best.yaml")
    p.add_argument("--no-summary", action="store_true", help=argparse.SUPPRESS)
    return p


def run(argv: list[str]) -> None:
    """Split off the extra fit arguments after `--`, parse, run, print where the ranking is."""
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser().parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.workers < 1 or (args.trials is not None and args.trials < 1):
        raise SystemExit("lit-vae sweep: error: --workers and --trials must be positive")
    try:
        from lit_vae.sweep.runner import run_sweep
    except ImportError as err:
        raise ConfigError(f"lit-vae sweep needs Optuna ({err.name} is missing): pip install 'lit-vae[sweep]'") from None
    ranking = run_sweep(args.file, backend=args.backend, trials=args.trials, storage=args.storage,
                        study_name=args.study_name, workers=args.workers, extra=extra,
                        summary_only=args.summary, summarise=not args.no_summary, sampler_seed=args.sampler_seed)
    if ranking is not None and not args.no_summary:
        print(f"ranking: {ranking}\nbest config: {ranking.parent / 'best.yaml'}")

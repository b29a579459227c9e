"""`lit-vae sweep FILE`: the W&B sweep file run by Optuna (offline, local workers or many machines sharing
one storage) or handed to `wandb sweep` + `wandb agent`.

Each Optuna trial runs what `lit-vae fit` runs: the same parser, base config, sweep command arguments,
the trial's `--key=value` arguments (formatted as a W&B agent formats `${args}`) and the extra arguments
after `--`, in its own folder sweeps/STUDY/trial_NNNN/. It reports the sweep metric every epoch (Hyperband
prunes on it) and returns the best epoch's value. An implausible architecture is recorded as pruned with
the reason; a crash or a NaN metric as failed with the error; the study goes on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
from lightning.pytorch.callbacks import Callback
from optuna.trial import TrialState

from lit_vae.errors import ConfigError, ImplausibleArchitecture
from lit_vae.sweep.spec import Sweep, load_sweep, suggest, wandb_arg

SWEEPS = Path("sweeps")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class MetricReporter(Callback):
    """Reports the sweep metric to the Optuna trial after every validation epoch; prunes when told to."""

    def __init__(self, trial: optuna.Trial, metric: str):
        self.trial, self.metric, self.values = trial, metric, []

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.metric not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.metric])
        self.values.append(value)
        self.trial.report(value, step=trainer.current_epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"Hyperband at epoch {trainer.current_epoch}: {self.metric} = {value:.4g}")


def storage_for(url: str | None, sweep_dir: Path):
    """An RDB URL (sqlite:///, postgresql://: many machines share it) or a journal file (default:
    sweeps/STUDY/journal.log; a shared filesystem lets several machines join)."""
    if url and "://" in url:
        return optuna.storages.RDBStorage(url)
    from optuna.storages.journal import JournalFileBackend

    path = (Path(url) if url else sweep_dir / "journal.log").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def make_study(sweep: Sweep, storage, study_name: str, seed: int) -> optuna.Study:
    """Sampler, pruner and direction from the sweep file."""
    if sweep.method == "grid":
        sampler = optuna.samplers.GridSampler(sweep.grid(), seed=seed)
    elif sweep.method == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed)
    pruner = optuna.pruners.NopPruner()
    if sweep.early_terminate:
        early = sweep.early_terminate
        pruner = optuna.pruners.HyperbandPruner(min_resource=int(early.get("min_iter", 1)),
                                                max_resource=int(early.get("max_iter", 0)) or "auto",
                                                reduction_factor=int(early.get("eta", 3)))
    return optuna.create_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner,
                               direction=sweep.direction, load_if_exists=True)


def _absolute_configs(args: list[str]) -> list[str]:
    """--config paths resolved against the launch directory (trials run in their own folders)."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            out[i + 1] = str(Path(out[i + 1]).resolve())
        elif arg.startswith("--config="):
            out[i] = "--config=" + str(Path(arg.split("=", 1)[1]).resolve())
    return out


def _duplicate_of(trial: optuna.Trial) -> int | None:
    """An earlier trial on the same grid point still running or done (concurrent grid workers can draw the
    same point); the later one is pruned, so every point completes once."""
    grid_id = trial.study._storage.get_trial_system_attrs(trial._trial_id).get("grid_id")
    if grid_id is None:
        return None
    for other in trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE)):
        if other.number < trial.number and (other.system_attrs.get("grid_id") == grid_id
                                            or other.params == trial.params):
            return other.number
    return None


@contextlib.contextmanager
def _inside(folder: Path, environment: dict[str, str]):
    """Run in folder with extra environment variables; both restored afterwards."""
    previous_dir, previous_env = Path.cwd(), {k: os.environ.get(k) for k in environment}
    folder.mkdir(parents=True, exist_ok=True)
    os.chdir(folder)
    os.environ.update(environment)
    try:
        yield
    finally:
        os.chdir(previous_dir)
        for key, value in previous_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def classifier_auc(cli) -> float:
    """The final generator's classifier two-sample AUC against the validation events (lit-vae evaluate's
    test, on up to 5,000 events), for the ranking table."""
    import torch

    from lit_vae.evaluation.metrics import classifier_test
    from lit_vae.models.base import load_model

    best = cli.trainer.checkpoint_callback.best_model_path if cli.trainer.checkpoint_callback else ""
    model = load_model(best) if best else cli.model
    reference = model.transform.inverse(cli.datamodule.part("val")["x"][:5000]).numpy()
    generated = model.sample(len(reference), torch.Generator().manual_seed(0)).cpu().numpy()
    return classifier_test(reference, generated, model.feature_kinds, model.feature_names, n_boot=20,
                           importance_events=500)["auc"]


def objective(sweep: Sweep, study_name: str, sweep_dir: Path, extra: list[str]):
    """The Optuna objective: one `lit-vae fit` with the trial's arguments."""
    from lit_vae.cli import build_cli

    cache = f"--data.init_args.cache_dir={Path('.cache/lit-vae').resolve()}"  # one cache for every trial
    def run(trial: optuna.Trial) -> float:
        started = time.time()
        params = suggest(trial, sweep)
        trial.set_user_attr("args", [wandb_arg(k, v) for k, v in params.items()])
        duplicate = _duplicate_of(trial)
        if duplicate is not None:
            trial.set_user_attr("reason", f"duplicate of trial {duplicate}")
            raise optuna.TrialPruned(f"duplicate of trial {duplicate}")
        args = [*_absolute_configs(sweep.fit_args), cache, *trial.user_attrs["args"], *_absolute_configs(extra)]
        folder = sweep_dir / f"trial_{trial.number:04d}"
        environment = {"WANDB_RUN_GROUP": study_name, "WANDB_NAME": f"{study_name}-trial-{trial.number}",
                       "WANDB_TAGS": f"sweep:{study_name},trial:{trial.number}", "WANDB_JOB_TYPE": "sweep-trial"}
        with _inside(folder, environment):
            try:
                cli = build_cli(args, run=False, exit_on_error=False)
                (folder / "config.yaml").write_text(cli.parser.dump(cli.config, skip_none=False))
                reporter = MetricReporter(trial, sweep.metric)
                cli.trainer.callbacks.append(reporter)
                cli.trainer.fit(cli.model, datamodule=cli.datamodule)
                if not reporter.values:
                    raise ConfigError(f"the run logged no '{sweep.metric}'; is it the right metric for this model?")
                if not np.all(np.isfinite(reporter.values)):
                    raise FloatingPointError(f"{sweep.metric} became {reporter.values[-1]}: the training diverged")
                if getattr(cli.model, "is_generator", False):
                    trial.set_user_attr("classifier_auc", classifier_auc(cli))
            except ImplausibleArchitecture as err:
                trial.set_user_attr("reason", str(err))
                raise optuna.TrialPruned(str(err)) from None
            except optuna.TrialPruned as err:
                trial.set_user_attr("reason", str(err))
                raise
            except Exception as err:
                trial.set_user_attr("reason", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
                raise
            finally:
                trial.set_user_attr("duration_s", round(time.time() - started, 1))
                wandb = sys.modules.get("wandb")
                if wandb is not None and wandb.run is not None:
                    wandb.finish()
        values = reporter.values
        return float(min(values) if sweep.direction == "minimize" else max(values))

    return run


def _log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    value = f"{trial.value:.5g}" if trial.value is not None else "-"
    reason = trial.user_attrs.get("reason", "")
    print(f"trial {trial.number}: {trial.state.name.lower()} {value} {' '.join(trial.user_attrs.get('args', []))}"
          + (f" ({reason})" if reason else ""), file=sys.stderr, flush=True)


def run_worker(sweep: Sweep, study_name: str, storage_url: str | None, trials: int | None, seed: int,
               extra: list[str]) -> optuna.Study:
    """One worker process: trials until the grid is done or the study holds `trials` finished trials."""
    sweep_dir = (SWEEPS / study_name).resolve()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = make_study(sweep, storage_for(storage_url, sweep_dir), study_name, seed)
    callbacks = [_log_trial]
    if trials is None and sweep.method != "grid":
        trials = 20
    if trials is not None:  # a total over every worker of the study
        callbacks.append(optuna.study.MaxTrialsCallback(trials, states=FINISHED))
        if len(study.get_trials(deepcopy=False, states=FINISHED)) >= trials:
            return study
    study.optimize(objective(sweep, study_name, sweep_dir, extra), callbacks=callbacks, catch=(Exception,))
    return study


def write_summary(study: optuna.Study, sweep: Sweep, sweep_dir: Path) -> Path:
    """ranking.csv and ranking.md (trial, parameters, metric, classifier AUC, state, duration, reason),
    completed trials first, best first; best.yaml, the best trial's full config (`lit-vae fit --config`)."""
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"trial": t.number, "state": t.state.name.lower(), sweep.metric: t.value,
                     "classifier_auc": t.user_attrs.get("classifier_auc"), "duration_s": t.user_attrs.get("duration_s"),
                     **t.params, "reason": t.user_attrs.get("reason", "")})
    if not rows:
        raise ConfigError(f"study '{study.study_name}' has no trials yet")
    table = pd.DataFrame(rows)
    table["_done"] = table["state"] != "complete"
    table = table.sort_values(["_done", sweep.metric], ascending=[True, sweep.direction == "minimize"],
                              na_position="last").drop(columns="_done")
    table.to_csv(sweep_dir / "ranking.csv", index=False)
    header = "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns) + "\n"
    lines = ["| " + " | ".join("" if pd.isna(v) else (f"{v:.5g}" if isinstance(v, float) else str(v))
                               for v in row) + " |" for row in table.itertuples(index=False)]
    (sweep_dir / "ranking.md").write_text(f"# {study.study_name}: ranked by {sweep.metric} ({sweep.goal})\n\n"
                                          + header + "\n".join(lines) + "\n")
    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        best = study.best_trial
        shutil.copy(sweep_dir / f"trial_{best.number:04d}" / "config.yaml", sweep_dir / "best.yaml")
    return sweep_dir / "ranking.md"


def run_sweep(path: str, backend: str = "optuna", trials: int | None = None, storage: str | None = None,
              study_name: str | None = None, workers: int = 1, extra: list[str] | None = None,
              summary_only: bool = False, summarise: bool = True, sampler_seed: int = 0) -> Path | None:
    """Run (or only summarise) the sweep in `path`; returns the ranking table's path (None for a worker
    started with summarise=False, or for the wandb backend)."""
    sweep = load_sweep(path)
    extra = list(extra or [])
    if backend == "wandb":
        return run_wandb(sweep, trials)
    study_name = study_name or sweep.path.stem
    sweep_dir = (SWEEPS / study_name).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if not summary_only:
        if workers > 1:
            command = [sys.executable, "-m", "lit_vae.cli", "sweep", str(sweep.path), "--study-name", study_name,
                       "--workers", "1", *(["--trials", str(trials)] if trials else []),
                       *(["--storage", storage] if storage else []), "--no-summary"]
            environment = {**os.environ, "OMP_NUM_THREADS": "1"}
            # Grid workers share one seed (it fixes the grid's order, which must be the same everywhere);
            # random and TPE workers each get their own (one seed everywhere would repeat the same trials).
            seeds = [sampler_seed if sweep.method == "grid" else sampler_seed + i for i in range(workers)]
            processes = [subprocess.Popen([*command, "--sampler-seed", str(seed), "--", *extra], env=environment)
                         for seed in seeds]
            codes = [p.wait() for p in processes]
            if any(codes):
                raise ConfigError(f"{sum(c != 0 for c in codes)} of {workers} sweep workers failed; see their output")
        else:
            run_worker(sweep, study_name, storage, trials, sampler_seed, extra)
    if not summarise:
        return None
    study = optuna.load_study(study_name=study_name, storage=storage_for(storage, sweep_dir))
    return write_summary(study, sweep, sweep_dir)


def run_wandb(sweep: Sweep, trials: int | None) -> None:
    """`wandb sweep FILE` then `wandb agent ID` on the same file (needs a W&B login and a server)."""
    from lit_vae.cli import wandb_logged_in

    if not wandb_logged_in():
        raise ConfigError("the wandb backend needs a W&B login: run `wandb login` (or set WANDB_API_KEY), "
                          "or use --backend optuna, which runs the same file offline")
    created = subprocess.run(["wandb", "sweep", str(sweep.path)], capture_output=True, text=True)
    sweep_id = next((line.split("wandb agent", 1)[1].strip() for line in (created.stdout + created.stderr).splitlines()
                     if "wandb agent" in line), None)
    if created.returncode or not sweep_id:
        raise ConfigError(f"`wandb sweep {sweep.path}` failed: {(created.stderr or created.stdout).strip()[-200:]}")
    subprocess.run(["wandb", "agent", *(["--count", str(trials)] if trials else []), sweep_id], check=True)
    return None

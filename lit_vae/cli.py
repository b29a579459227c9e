"""LightningCLI with fit, validate, test, predict and generate: the Lightning half of the `lit-vae` command,
whose entry point (lit_vae.command.main, re-exported here) handles --help, `evaluate` and `sweep` without
importing Lightning.

`configs/base.yaml` (trainer, loggers, callbacks, default model and data) is read first; a model config
adds what differs: `lit-vae fit --config configs/zgamma/vae.yaml`. The DataModule's feature count, kinds
and names are linked into the model, and seed_everything into the DataModule's split seed.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from jsonargparse import ArgumentError
from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar
from lightning.pytorch.cli import LightningCLI
from tqdm import tqdm

from lit_vae.callbacks import Preemption, ScoreWriter
from lit_vae.command import confine_wandb, main, wandb_logged_in  # noqa: F401 (re-exported)
from lit_vae.data.datamodule import EventDataModule
from lit_vae.data.io import EventWriter, check_writable
from lit_vae.errors import ConfigError, LitVAEError
from lit_vae.generation import Tally, generate_columns, physics_of
from lit_vae.models.base import BaseVAE, load_model, read_checkpoint

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASE_CONFIG = CONFIGS / "base.yaml"


class LitVAETrainer(L.Trainer):
    """The Lightning Trainer plus `generate`, a `predict` that writes scores, and a CPU thread setting."""

    def __init__(self, num_threads: int | None = 1, **kwargs):
        """num_threads: torch intra-op threads (1 trains these small MLPs fastest on a 2-core CPU;
        None keeps torch's default)."""
        if num_threads:
            torch.set_num_threads(num_threads)
        # base.yaml's learning-rate monitor and progress bar give way to --trainer.logger=false and
        # --trainer.enable_progress_bar=false (Lightning refuses the combinations).
        unwanted = (LearningRateMonitor,) * (kwargs.get("logger") is False) \
            + (ProgressBar,) * (kwargs.get("enable_progress_bar") is False)
        kwargs["callbacks"] = [c for c in kwargs.get("callbacks") or [] if not isinstance(c, unwanted)] \
            + [Preemption()]
        super().__init__(**kwargs)

    def fit(self, model, train_dataloaders=None, val_dataloaders=None, datamodule=None, ckpt_path: str | None = None,
            weights_only: bool = True):
        """Lightning's fit; a resumed checkpoint (--ckpt_path) is unpickled as tensors and plain data only;
        `--ckpt_path last` is the newest last.ckpt of this run directory (an interrupted or preempted run)."""
        if ckpt_path == "last":
            ckpt_path = self._newest_last_checkpoint()
        return super().fit(model, train_dataloaders, val_dataloaders, datamodule, ckpt_path, weights_only)

    def _newest_last_checkpoint(self) -> str:
        roots = {Path(getattr(logger, "root_dir", None) or self.default_root_dir) for logger in self.loggers}
        found = [p for root in roots or {Path(self.default_root_dir)} for p in root.glob("**/last.ckpt")]
        if not found:
            raise ConfigError(f"--ckpt_path last: no last.ckpt under {', '.join(map(str, sorted(roots)))}; give "
                              "the checkpoint's path")
        newest = max(found, key=lambda p: p.stat().st_mtime_ns)
        print(f"lit-vae: resuming from {newest}", file=sys.stderr)
        return str(newest)

    def predict(self, model=None, dataloaders=None, datamodule=None, return_predictions=None,
                ckpt_path: str | None = None, output: str = "scores.parquet"):
        """Score every event of the predict set (validation background + all signals) and write one row
        per event to output (.parquet or .root), with the data split it used."""
        check_writable(output)  # before any work
        model = self._trained(model, datamodule, ckpt_path)
        metadata = {"checkpoint": str(ckpt_path), "seed": datamodule.seed if datamodule is not None else None,
                    "data_split": ({**datamodule.split(), "max_events": model.data_split.get("max_events")}
                                   if datamodule is not None else model.data_split),  # the training's subset
                    "anomaly_score": model.anomaly_score}
        self.callbacks.append(ScoreWriter(output, metadata))
        return super().predict(model, dataloaders, datamodule, return_predictions=False, ckpt_path=None)

    def test(self, model=None, dataloaders=None, ckpt_path: str | None = None, verbose: bool = True,
             datamodule=None, weights_only: bool | None = None):
        """Test losses of the held-out background and the signals (with a checkpoint: its transform and split)."""
        model = self._trained(model, datamodule, ckpt_path)
        return super().test(model, dataloaders, None, verbose, datamodule, weights_only)

    def validate(self, model=None, dataloaders=None, ckpt_path: str | None = None, verbose: bool = True,
                 datamodule=None, weights_only: bool | None = None):
        """Validation metrics (with a checkpoint: its transform and its held-out part)."""
        model = self._trained(model, datamodule, ckpt_path)
        return super().validate(model, dataloaders, None, verbose, datamodule, weights_only)

    @staticmethod
    def _trained(model, datamodule, ckpt_path: str | None):
        """With a checkpoint: the model as it was trained (its class and transform), and the DataModule set
        to feed it the checkpoint's held-out events, encoded with the checkpoint's transform."""
        if not ckpt_path:
            return model
        if not Path(ckpt_path).is_file():
            raise ConfigError(f"--ckpt_path {ckpt_path}: no such checkpoint; give a .ckpt written by `lit-vae fit`")
        chosen = getattr(model, "anomaly_score", None)  # the checkpoint's unless this command sets another
        model = load_model(ckpt_path)
        model.anomaly_score = chosen or model.anomaly_score
        if datamodule is not None:
            datamodule.use_transform(model.transform)
            datamodule.adopt_split(model.data_split, ckpt_path)
            if model.manifest_hash and model.manifest_hash != datamodule.manifest.content_hash:
                warnings.warn(f"{ckpt_path} was trained with another version of {datamodule.manifest.path}",
                              stacklevel=2)
        return model

    def generate(self, model=None, datamodule=None, ckpt_path: str | None = None, n_events: int = 100_000,
                 output: str = "generated.parquet", seed: int = 0, batch_size: int = 100_000,
                 compression: str = "zstd") -> Path:
        """Generate events in physical units from a trained model and write them (.parquet or .root; compression
        zstd, lz4, snappy (parquet), gzip or none); a writer thread writes one batch while the next is sampled."""
        if not ckpt_path:
            raise ConfigError("generate needs --ckpt_path CKPT, a checkpoint written by `lit-vae fit`")
        if n_events < 1 or batch_size < 1:
            raise ConfigError(f"--n_events and --batch_size must be positive, got {n_events} and {batch_size}")
        device = self.strategy.root_device
        model = load_model(ckpt_path, map_location=str(device)).eval()
        physics = physics_of(model)
        metadata = {"checkpoint": str(ckpt_path), "seed": seed, "model": type(model).__name__,
                    "manifest_hash": model.manifest_hash, "n_events": n_events, "units": "GeV, rad",
                    "data_split": model.data_split, "physics": physics.state()}
        tally = Tally()
        start = time.perf_counter()
        weight = np.float32(physics.cross_section_pb / n_events) if physics.cross_section_pb else np.float32(1.0)
        bar = tqdm(total=n_events, unit="evt", desc="generating", file=sys.stderr)
        with EventWriter(output, metadata, compression, background=True) as writer, bar:
            for columns in generate_columns(model, n_events, batch_size, seed, device, tally):
                writer.append({**columns, "weight": np.full(len(next(iter(columns.values()))), weight)})
                bar.update(len(columns[physics.outputs[0]]))
                bar.set_postfix(acceptance=f"{tally.acceptance:.3f}", refresh=False)
            seconds = time.perf_counter() - start
            writer.metadata.update({"sampled": tally.sampled, "acceptance": tally.acceptance,
                                    "seconds": seconds, "events_per_second": n_events / seconds,
                                    "weight": "pb per event: the training region's sigma x efficiency "
                                              f"({physics.cross_section_pb:.6g} pb) / n_events"})
        print(f"generated {n_events} events: {tally.accepted} of {tally.sampled} sampled pass the region's cut and "
              f"the declared bounds (acceptance {tally.acceptance:.4f}) in {seconds:.1f} s "
              f"({n_events / seconds:.3g} events/s) -> {output}", file=sys.stderr)
        return Path(output)


class LitVAECLI(LightningCLI):
    """LightningCLI with the generate subcommand and the data -> model links."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "generate": {"model", "datamodule"}}

    def instantiate_classes(self) -> None:
        """As LightningCLI's, but a LitVAEError raised by a model or DataModule constructor surfaces as
        itself (jsonargparse wraps it in a ValueError listing every union subtype)."""
        try:
            super().instantiate_classes()
        except Exception as err:
            cause = err
            while cause is not None and not isinstance(cause, LitVAEError):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            raise cause from None

    def _parse_ckpt_path(self) -> None:
        """LightningCLI reads a --ckpt_path's hyperparameters before anything else: check the file first, so
        that a crafted, truncated or foreign checkpoint is refused in one line, not a traceback."""
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path and Path(path).is_file():
            read_checkpoint(path)
        if subcommand != "generate":  # generate builds everything from the checkpoint itself (load_model):
            super()._parse_ckpt_path()  # its hyper-parameters must not meet a config's default data

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.n_features", "model.init_args.n_features", apply_on="instantiate")
        parser.link_arguments("data.feature_kinds", "model.init_args.feature_kinds", apply_on="instantiate")
        parser.link_arguments("data.features", "model.init_args.feature_names", apply_on="instantiate")
        parser.link_arguments("seed_everything", "data.init_args.seed")


def close_process_group() -> None:
    """Destroy a DDP run's process group once its command has succeeded: left to interpreter exit, gloo's
    worker threads can abort a finished run (SIGABRT, 'terminate called without an active exception')."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def build_cli(args: list[str] | None = None, run: bool = True, exit_on_error: bool = True) -> LitVAECLI:
    """The lit-vae LightningCLI, configs/base.yaml read first; run=False builds the objects of a fit
    without running a subcommand (benchmarks and sweep trials use it); exit_on_error=False raises a
    ConfigError for a bad argument instead of exiting."""
    defaults = {"default_config_files": [str(BASE_CONFIG)], "exit_on_error": exit_on_error}
    try:
        with warnings.catch_warnings():  # args are passed on purpose (tests, sweeps), not mixed up with sys.argv
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            return LitVAECLI(
                BaseVAE, EventDataModule, trainer_class=LitVAETrainer, subclass_mode_model=True,
                subclass_mode_data=True, auto_configure_optimizers=False, save_config_kwargs={"overwrite": True},
                parser_kwargs={name: defaults for name in LitVAECLI.subcommands()} if run else defaults,
                args=args, run=run,
            )
    except ArgumentError as err:  # only reached with exit_on_error=False
        raise ConfigError(f"bad argument: {str(err).splitlines()[0]}") from None


if __name__ == "__main__":
    sys.exit(main())

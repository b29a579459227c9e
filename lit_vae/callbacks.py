"""Lightning callbacks of lit-vae: the score writer behind `lit-vae predict`, and the checkpoint a
preempted fit leaves behind."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_vae.data.io import EventWriter
from lit_vae.errors import NumericalError


class ScoreWriter(BasePredictionWriter):
    """Writes one row per predicted row: event_number, configuration, sample, label, weight (pb), region and
    the score columns (score = total loss, and its parts), to .parquet or .root, atomically. In ROOT, `sample` is
    the index into the metadata's sample_names and the region is in the metadata. Under DDP the ranks'
    rows are gathered and rank 0 writes."""

    def __init__(self, output: str, metadata: dict | None = None):
        super().__init__(write_interval="epoch")
        self.output, self.metadata = output, dict(metadata or {})

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        local = {k: torch.cat([b[k] for b in batches]).cpu() for k in batches[0]} if batches else {}
        if trainer.world_size > 1:
            gathered = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, local)
            local = {k: torch.cat([g[k] for g in gathered if g]) for k in local}
        if trainer.global_rank != 0:
            return
        datamodule = trainer.datamodule
        names = np.array(datamodule.sample_names)
        columns = {
            "event_number": local["event_id"].numpy().view(np.uint64),
            "configuration": local["configuration"].numpy().astype(np.int32),  # the row of a truth-tagged event
            "sample": names[local["sample"].numpy()],
            "label": local["label"].numpy().astype(np.int32),
            "weight": local["weight_pb"].numpy().astype(np.float64),
            "region": np.full(len(local["label"]), datamodule.region),
        }
        for name, values in local.items():
            if name not in ("event_id", "configuration", "sample", "label", "weight", "weight_pb"):
                columns[name] = values.numpy().astype(np.float32)
        # stable whatever the sharding
        order = np.lexsort((columns["configuration"], columns["event_number"], columns["sample"]))
        metadata = {**self.metadata, "region": datamodule.region, "manifest": str(datamodule.manifest.path),
                    "model": type(pl_module).__name__, "events": len(order)}
        if self.output.endswith(".root"):  # ROOT branches are numeric: sample as its index, region in metadata
            columns["sample"] = local["sample"].numpy().astype(np.int32)
            del columns["region"]
            metadata["sample_names"] = list(names)
        with EventWriter(self.output, metadata) as writer:
            writer.append({k: v[order] for k, v in columns.items()})


class Preemption(Callback):
    """On SIGTERM (what Slurm and most batch systems send before killing a job) Lightning stops after the
    current batch; this saves `last.ckpt` there, mid-epoch, so that `fit --ckpt_path` resumes exactly
    (batch order, optimisers, schedulers and the noise stream continue where they stopped)."""

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        folders = [c.dirpath for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.dirpath]
        path = Path(folders[0] if folders else trainer.default_root_dir) / "last.ckpt"
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        where = f"lit-vae: preempted (SIGTERM) in epoch {trainer.current_epoch} after {done} batches"
        try:
            trainer.save_checkpoint(path)  # Lightning writes checkpoints to a temporary file and renames it
        except NumericalError as err:  # raised here, it would skip Lightning's own shutdown
            print(f"{where}; {path} not saved: {err}", file=sys.stderr)
            return
        if trainer.is_global_zero:
            print(f"{where}: saved {path}; resume with `lit-vae fit ... --ckpt_path {path}`", file=sys.stderr)

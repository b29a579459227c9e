"""A callback that sends its own process a signal at a chosen training batch: a real `kill -9` or a Slurm-style
SIGTERM, at a reproducible point (used by the resume tests through the real `lit-vae fit`)."""

from __future__ import annotations

import os
import signal

from lightning.pytorch.callbacks import Callback


class Interrupt(Callback):
    """Send `signal_name` to this process before training batch `batch` of epoch `epoch`."""

    def __init__(self, signal_name: str = "SIGKILL", epoch: int = 1, batch: int = 2):
        self.signal_name, self.epoch, self.batch = signal_name, epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), getattr(signal, self.signal_name))

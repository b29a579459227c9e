"""The DataModule under real DDP (two CPU processes, gloo): equal batch counts, disjoint shards.

The run is a script in a subprocess: strategy='ddp' relaunches the command line for the second rank,
which under pytest would be pytest itself.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from lit_vae.data import EventDataModule

SCRIPT = '''
import sys
import lightning as L
import torch
from lit_vae.data import EventDataModule


class RecordingModel(L.LightningModule):
    """A one-parameter model whose steps all-reduce gradients and record the events each rank saw."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.seen = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["x"].detach().clone())
        return (self.scale * batch["x"]).pow(2).mean()

    def on_train_epoch_end(self):
        torch.save(torch.cat(self.seen), f"{sys.argv[2]}/rank{self.global_rank}_epoch{self.current_epoch}.pt")
        self.seen = []

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


dm = EventDataModule(sys.argv[1], "preselection", batch_size=4, cache_dir=sys.argv[2] + "/cache", min_events=0)
trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, use_distributed_sampler=False,
                    enable_model_summary=False)
trainer.fit(RecordingModel(), datamodule=dm)
torch.distributed.destroy_process_group()  # as lit-vae does: gloo's threads can otherwise abort the exit
'''


@pytest.mark.slow
def test_two_rank_ddp_gets_equal_disjoint_shards(wh1lbb_manifest, tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT)
    result = subprocess.run([sys.executable, str(script), str(wh1lbb_manifest), str(tmp_path)], capture_output=True,
                            text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    dm = EventDataModule(str(wh1lbb_manifest), "preselection", min_events=0, cache_dir=str(tmp_path / "cache"))
    dm.setup()
    train = dm.part("train")["x"]
    for epoch in (0, 1):
        seen = [torch.load(tmp_path / f"rank{r}_epoch{epoch}.pt") for r in (0, 1)]
        assert len(seen[0]) == len(seen[1]) == len(train) // 2
        rows = [set(map(tuple, s.tolist())) for s in seen]
        assert not rows[0] & rows[1]
        assert rows[0] | rows[1] <= set(map(tuple, train.tolist()))

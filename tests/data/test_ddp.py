"""The DataModule under real DDP (two CPU processes, gloo): equal batch counts, disjoint shards."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lit_vae.data import EventDataModule


class RecordingModel(L.LightningModule):
    """A one-parameter model whose steps all-reduce gradients and record the events each rank saw."""

    def __init__(self, out_dir: str):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.out_dir = out_dir
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["x"].detach().clone())
        return (self.scale * batch["x"]).pow(2).mean()

    def on_train_epoch_end(self):
        torch.save(torch.cat(self.seen), f"{self.out_dir}/rank{self.global_rank}_epoch{self.current_epoch}.pt")
        self.seen = []

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.slow
def test_two_rank_ddp_gets_equal_disjoint_shards(wh1lbb_manifest, tmp_path):
    dm = EventDataModule(str(wh1lbb_manifest), "preselection", batch_size=4, cache_dir=str(tmp_path / "cache"),
                         min_events=0)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, use_distributed_sampler=False,
                        enable_model_summary=False)
    trainer.fit(RecordingModel(str(tmp_path)), datamodule=dm)
    dm.setup()
    train = dm.part("train")["x"]
    for epoch in (0, 1):
        seen = [torch.load(tmp_path / f"rank{r}_epoch{epoch}.pt") for r in (0, 1)]
        assert len(seen[0]) == len(seen[1]) == len(train) // 2
        rows = [set(map(tuple, s.tolist())) for s in seen]
        assert not rows[0] & rows[1]
        assert rows[0] | rows[1] <= set(map(tuple, train.tolist()))

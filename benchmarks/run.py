"""`make bench`: measures what lit-vae promises on speed and writes BENCHMARKS.md.

Every speed is a ratio against a reference measured in the same run (the machines are shared and noisy):
- Monte Carlo: selected events per CPU-second of each shipped sample, from the files' own metadata (the
  reference that generation speed-ups will be quoted against).
- Data path: ROOT -> training tensors vs a bare `uproot ... arrays(library="np")` of the same branches;
  the parquet-cache hit vs the cold read; a training epoch through `train_dataloader()` vs randperm
  slicing of the same tensors.
- Training: rows/s of each model's training epochs through `lit-vae fit`'s own objects (loggers,
  progress bar, defaults) vs a hand-written PyTorch loop over the same tensors, model and batch size.
- Generation: `lit-vae generate` events/s end to end (each compression) vs the same model sampling into
  memory, and vs Pythia's selected events/s.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import uproot

from lit_vae.cli import CONFIGS, build_cli, confine_wandb
from lit_vae.cli import main as lit_vae
from lit_vae.data import ZGammaDataModule
from lit_vae.data.io import read_root_metadata
from lit_vae.mc.summary import table
from lit_vae.models import VAED
from lit_vae.models.base import BaseVAE

REPO = Path(__file__).resolve().parents[1]
REPEAT = 3


def best_of(function, repeat: int = REPEAT) -> float:
    """Fastest wall time of repeat calls (the least disturbed by other load)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def data_path() -> list[str]:
    cache = Path(tempfile.mkdtemp(prefix="lit_vae_bench_"))
    try:
        dm = ZGammaDataModule(cache_dir=None, min_events=0)
        files = [(f, s.tree, dm.manifest.branches(dm.region, dm.features, s))
                 for s in dm.manifest.samples.values() for f in s.files]
        n_events = sum(uproot.open(f)[t].num_entries for f, t, _ in files)

        def bare():
            for file, tree, branches in files:
                with uproot.open(file) as f:
                    f[tree].arrays(branches, library="np")

        def cold():
            ZGammaDataModule(cache_dir=None, min_events=0).setup()

        def cached():
            ZGammaDataModule(cache_dir=str(cache), min_events=0).setup()

        t_bare, t_cold = best_of(bare), best_of(cold)
        cached()  # fill the cache
        t_hit = best_of(cached)

        torch.set_num_threads(1)
        dm = ZGammaDataModule(cache_dir=str(cache), min_events=0, batch_size=256)
        dm.setup()
        tensors = dm.part("train")
        loader = dm.train_dataloader()
        n_train = len(tensors["x"])

        def through_loader():
            for batch in loader:
                batch["x"].sum()

        def raw_slicing():
            order = torch.randperm(n_train)
            for start in range(0, n_train, 256):
                index = order[start:start + 256]
                batch = {name: values[index] for name, values in tensors.items()}
                batch["x"].sum()

        t_loader, t_raw = best_of(through_loader, 10), best_of(raw_slicing, 10)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return [
        "| measurement | lit-vae | reference | ratio (goal) |",
        "|---|---|---|---|",
        f"| ROOT -> training tensors, {n_events:,} events (Zγ manifest, cold, no cache) "
        f"| {n_events / t_cold:,.0f} evt/s | bare uproot arrays: {n_events / t_bare:,.0f} evt/s "
        f"| {t_bare / t_cold:.2f} (≥ 0.8) |",
        f"| parquet cache hit -> training tensors | {n_events / t_hit:,.0f} evt/s | cold read: "
        f"{n_events / t_cold:,.0f} evt/s | {t_cold / t_hit:.2f}× faster |",
        f"| one training epoch through `train_dataloader()`, {n_train:,} events, batch 256 "
        f"| {n_train / t_loader:,.0f} evt/s | randperm slicing: {n_train / t_raw:,.0f} evt/s "
        f"| {t_raw / t_loader:.2f} (≥ 0.95) |",
    ]


class EpochTimer(L.Callback):
    """Wall time from the start of each training epoch to the end of its last batch (Lightning runs the
    validation loop before on_train_epoch_end, so that hook would count validation too)."""

    def __init__(self):
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == trainer.num_training_batches - 1:
            self.times.append(time.perf_counter() - self._start)


def hand_loop_seconds(model: BaseVAE, tensors: dict, batch_size: int, epochs: int) -> float:
    """Fastest epoch of a plain PyTorch loop (randperm slicing, Adam) training model on tensors."""
    torch.manual_seed(0)
    n = len(tensors["x"])
    if isinstance(model, VAED):  # the same three steps, written out without Lightning
        nets = (model.encoder, model.decoder, model.discriminator)
        optimisers = [torch.optim.Adam(net.parameters(), lr=model.learning_rate) for net in nets]
    else:
        optimisers = [torch.optim.Adam(model.parameters(), lr=model.learning_rate)]
    best = float("inf")
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(n)
        for begin in range(0, n, batch_size):
            batch = {k: v[order[begin:begin + batch_size]] for k, v in tensors.items()}
            if isinstance(model, VAED):  # discriminator, decoder, encoder; each optimiser steps its own net
                encoder_opt, decoder_opt, discriminator_opt = optimisers
                x = batch["x"]
                with torch.no_grad():
                    z = model.encode(x)[0]
                    prior = torch.randn_like(z)
                    rec, gen = model.decoder(z), model.decoder(prior)
                discriminator_opt.zero_grad()
                model.discriminator_loss(x, rec, gen, batch).backward()
                discriminator_opt.step()
                decoder_opt.zero_grad()
                rec, gen = model.decoder(z), model.decoder(prior)
                (model.gamma * model.weighted_mean(model.mse(rec, x), batch)
                 - model.discriminator_loss(x, rec, gen, batch)).backward()
                decoder_opt.step()
                encoder_opt.zero_grad()
                model.weighted_mean(model.losses(batch)["loss"], batch).backward()
                encoder_opt.step()
            else:
                optimisers[0].zero_grad()
                model.weighted_mean(model.losses(batch)["loss"], batch).backward()
                optimisers[0].step()
        best = min(best, time.perf_counter() - start)
    return best


def training(workdir: Path, epochs: int = 3) -> list[str]:
    rows = ["| model (config) | `lit-vae fit` rows/s | hand-written loop rows/s | ratio (goal ≥ 0.90) |",
            "|---|---|---|---|"]
    torch.set_num_threads(1)
    for config in ("zgamma/vae.yaml", "zgamma/vae_d.yaml", "wh1lbb/preselection.yaml"):
        timer = EpochTimer()
        cli = build_cli(["--config", str(CONFIGS / config), f"--trainer.max_epochs={epochs}",
                         "--data.init_args.min_events=0", f"--data.init_args.cache_dir={workdir / 'cache'}",
                         f"--trainer.default_root_dir={workdir}"], run=False)
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, cli.datamodule)
        tensors = cli.datamodule.part("train")
        n = len(tensors["x"])
        fresh = type(cli.model)(**{k: v for k, v in cli.model.hparams.items() if not k.startswith("_")})
        t_hand = hand_loop_seconds(fresh, tensors, cli.datamodule.batch_size, epochs)
        t_fit = min(timer.times)
        rows.append(f"| {type(cli.model).__name__} (`configs/{config}`, {n:,} rows, batch "
                    f"{cli.datamodule.batch_size}) | {n / t_fit:,.0f} | {n / t_hand:,.0f} | {t_hand / t_fit:.2f} |")
        import wandb

        wandb.finish()
    return rows


def generation(workdir: Path, n_events: int = 1_000_000) -> list[str]:
    """`lit-vae generate` end to end (each compression) against the same model sampling into memory
    (`lit_vae.generate_events`, no file) and against Pythia's selected events per CPU-second."""
    from lit_vae import generate_events

    ckpt = next((workdir / "runs").rglob("last.ckpt"))
    start = time.perf_counter()
    sum(len(b["met"]) for b in generate_events(str(ckpt), n_events, 100_000))
    in_memory = n_events / (time.perf_counter() - start)
    pythia = read_root_metadata(REPO / "data" / "zgamma_bkg.root")["selected_per_cpu_second"]
    rows = ["| measurement | lit-vae | reference | ratio |", "|---|---|---|---|",
            f"| `lit_vae.generate_events` {n_events:,} Zγ events into memory (model load + sampling, no file) "
            f"| {in_memory:,.0f} evt/s | Pythia + detector, selected Zγ events: {pythia:,.1f} evt/s per core "
            f"| {in_memory / pythia:,.0f}× |"]
    for output, compression in (("generated.parquet", "zstd"), ("generated.parquet", "lz4"),
                                ("generated.parquet", "none"), ("generated.root", "zstd")):
        start = time.perf_counter()
        lit_vae(["generate", "--ckpt_path", str(ckpt), "--n_events", str(n_events), "--output",
                 str(workdir / output), "--compression", compression])
        rate = n_events / (time.perf_counter() - start)
        size = (workdir / output).stat().st_size / 2**20
        rows.append(f"| `lit-vae generate --output {output} --compression {compression}` ({size:.0f} MB; a writer "
                    f"thread writes while the next batch is sampled) | {rate:,.0f} evt/s | the same model into "
                    f"memory: {in_memory:,.0f} evt/s | {rate / in_memory:.2f} |")
    return rows


def main() -> None:
    samples = sorted(str(p) for p in (REPO / "data").glob("*.root"))
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` ({time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{torch.get_num_threads()} torch threads available, Python {platform.python_version()}). "
        "Speeds are ratios against a reference measured in the same run; absolute numbers are for scale only.",
        "",
        "## Monte Carlo reference (the shipped sample)",
        "",
        "Selected events per CPU-second and CPU-hours per 10⁶ selected events, from each file's metadata "
        "(`python -m lit_vae.mc.summary data/*.root`; the commands are in the Makefile's `samples` target). "
        "These are what a generative model's events/s are compared with.",
        "",
        table(samples),
        "",
        "## Data path",
        "",
        *data_path(),
        "",
    ]
    workdir = Path(tempfile.mkdtemp(prefix="lit_vae_bench_"))
    cwd = os.getcwd()
    try:
        os.chdir(workdir)
        confine_wandb(str(workdir / "runs"))
        lines += ["## Training throughput", "",
                  "Rows/s of the fastest training epoch (validation excluded) through the objects `lit-vae fit` "
                  "builds from `configs/base.yaml` + the model config (CSV + W&B offline loggers, progress bar, "
                  "checkpointing), against a plain PyTorch loop over the same training tensors with the same model "
                  "class, hyper-parameters and batch size, on one CPU thread.", "",
                  *training(workdir), "", "## Generation", "", *generation(workdir), "",
                  "## Notes", "",
                  "- Ratios move by several percent between runs on this shared 2-core machine (e.g. VAE+D "
                  "0.84-0.93, the loader 0.92-1.05): compare numbers from one run.",
                  "- Below goal, training: the VAE and the likelihood VAE pay ~0.5 ms per step in Lightning's "
                  "loop against a ~2 ms model step at batch 256 (the ratio rises with the batch size). Measured "
                  "while looking for it: Lightning with no callbacks, no logger and no progress bar reaches only "
                  "0.80 for the VAE; manual optimisation gains 0.02; logging the step value every "
                  "log_every_n_steps instead of every step and MeanMetric without its per-step NaN sync gained "
                  "0.08. The rest is Lightning's per-step hook dispatch, which a framework built on Lightning "
                  "keeps.",
                  "- Below goal, data: ROOT -> tensors (cold) spends ~45 ms of ~105 ms for 120k events in "
                  "chunked uproot reading and the region table (the reference reads the same branches in one call "
                  "in ~30 ms), ~25 ms fitting the transform (medians, means, spreads on the training part) and "
                  "~20 ms applying it; 0.8 would leave ~8 ms for everything after the read. Taking the split "
                  "from category codes, stacking features column by column and building the sample column as a "
                  "categorical cut ~60 ms (0.21 -> 0.29). The cache does not help at this file size.",
                  "- No GPU numbers yet: this session had no accelerator machine.", ""]
    finally:
        os.chdir(cwd)
        shutil.rmtree(workdir, ignore_errors=True)
    target = REPO / "BENCHMARKS.md"
    kept = re.search(r"<!-- sweeps -->.*<!-- /sweeps -->", target.read_text(), re.S) if target.exists() else None
    target.write_text("\n".join(lines) + (f"\n{kept.group(0)}\n" if kept else ""))  # make bench-sweeps' section
    print("\n".join(lines))


if __name__ == "__main__":
    main()

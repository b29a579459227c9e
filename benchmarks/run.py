"""`make bench`: measures what lit-vae promises on speed, writes BENCHMARKS.md and benchmarks/results.json.

Every speed is a ratio against a reference measured in the same run (the machines are shared and noisy):
- mc: selected events per CPU-second of each shipped sample, from the files' own metadata.
- data: ROOT -> training tensors vs a bare `uproot ... arrays(library="np")` of the same branches, on the
  shipped Zgamma sample replicated to >= 10^6 events; time to the first training batch; the parquet-cache hit
  vs the cold read; a training epoch through `train_dataloader()` vs randperm slicing of the same tensors.
- training: rows/s of each model's training epochs through `lit-vae fit`'s own objects vs a bare Lightning
  Trainer (no callbacks, loggers or progress bar) and vs a hand-written PyTorch loop, CPU, batch 256.
- generation: `lit-vae generate` end to end vs pyarrow writing the same table from memory (same compression)
  and vs the in-memory API; time to the first event; Pythia's selected events/s.
- startup: `lit-vae --help` and `generate` start-up, with `python -X importtime`'s heaviest imports.
- gpu (only where CUDA is available): fit vs a hand-written loop with device-resident data at batch >= 4,096
  on >= 10^7 rows, GPU vs CPU rows/s at batch 65,536, configs/gpu.yaml's speed and validation metrics, the
  in-memory generation rate.

    python benchmarks/run.py [--quick] [--sections data,training,...]

--quick (`make bench QUICK=1`, under 3 minutes) measures every figure on smaller inputs; --sections runs some
sections and keeps the others' text and numbers from the last run. Each section is one block of BENCHMARKS.md
and one group of keys ("<section>.<figure>") in benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import torch
import uproot
import yaml

from lit_vae.cli import CONFIGS, build_cli, confine_wandb
from lit_vae.cli import main as lit_vae
from lit_vae.data.datamodule import MANIFESTS, EventDataModule
from lit_vae.data.io import EventWriter, read_root, read_root_metadata
from lit_vae.mc.summary import table
from lit_vae.models import VAED
from lit_vae.models.base import BaseVAE
from lit_vae.models.components import reparameterise

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results.json"
SECTIONS = ("mc", "data", "training", "generation", "startup", "gpu")
MODELS = ("zgamma/vae.yaml", "zgamma/vae_d.yaml", "wh1lbb/preselection.yaml")
FULL = {"copies": 9, "repeat": 3, "epochs": 3, "generate": 1_000_000, "gpu_rows": 10_000_000, "gpu_epochs": 2,
        "gpu_generate": 50_000_000, "gpu_config_epochs": 30}
QUICK = {"copies": 2, "repeat": 1, "epochs": 2, "generate": 200_000, "gpu_rows": 1_000_000, "gpu_epochs": 2,
         "gpu_generate": 5_000_000, "gpu_config_epochs": 3}


def best_of(function: Callable[[], object], repeat: int) -> float:
    """Fastest wall time of repeat calls (the least disturbed by other load)."""
    return best_of_each([function], repeat)[0]


def best_of_each(functions: list[Callable[[], object]], repeat: int) -> list[float]:
    """Fastest wall time of each function over repeat rounds, the functions taking turns within a round: a
    ratio of two is not skewed by load that comes and goes between their measurements."""
    times = [float("inf")] * len(functions)
    for _ in range(repeat):
        for i, function in enumerate(functions):
            start = time.perf_counter()
            function()
            times[i] = min(times[i], time.perf_counter() - start)
    return times


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- data ----------------------------------------------------------------------------------------------------

def replicated_manifest(workdir: Path, copies: int) -> Path:
    """The Zgamma manifest with each sample's file replicated `copies` times into one ROOT file (event ids
    offset per copy, so that every row stays a distinct event): a >= 10^6-event input from the shipped sample."""
    manifest = yaml.safe_load((MANIFESTS / "zgamma.yaml").read_text())
    for name, sample in manifest["samples"].items():
        source = (MANIFESTS / sample["files"][0]).resolve()
        columns = read_root(source)
        ids = columns[manifest["event_id"]]
        target = workdir / f"{name}_x{copies}.root"
        with EventWriter(target, read_root_metadata(source)) as writer:
            for copy in range(copies):
                writer.append({**columns, manifest["event_id"]: ids + np.uint64(copy * 10**12)})
        sample["files"] = [str(target)]
    path = workdir / "zgamma_replicated.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def data(workdir: Path, size: dict) -> tuple[list[str], dict]:
    manifest = replicated_manifest(workdir, size["copies"])
    cache = workdir / "cache"

    def module(**kwargs) -> EventDataModule:
        return EventDataModule(manifest=str(manifest), region="window", min_events=0, **kwargs)

    dm = module(cache_dir=None)
    files = [(f, s.tree, dm.manifest.branches(dm.region, dm.features, s))
             for s in dm.manifest.samples.values() for f in s.files]
    n_events = sum(uproot.open(f)[t].num_entries for f, t, _ in files)

    def bare():
        for file, tree, branches in files:
            with uproot.open(file) as f:
                f[tree].arrays(branches, library="np")

    start = time.perf_counter()
    first = module(cache_dir=None, batch_size=256)
    next(iter(first.train_dataloader()))
    t_first = time.perf_counter() - start
    module(cache_dir=str(cache)).setup()  # fill the cache
    t_cold, t_bare, t_hit = best_of_each([lambda: module(cache_dir=None).setup(), bare,
                                          lambda: module(cache_dir=str(cache)).setup()], size["repeat"])

    torch.set_num_threads(1)
    tensors = first.part("train")
    loader = first.train_dataloader()
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

    t_loader, t_raw = best_of_each([through_loader, raw_slicing], 3 * size["repeat"])  # ~0.2 s each
    results = {"events": n_events, "ingest_evt_s": n_events / t_cold, "uproot_evt_s": n_events / t_bare,
               "ingest_ratio": t_bare / t_cold, "first_batch_s": t_first, "cache_hit_speedup": t_cold / t_hit,
               "loader_evt_s": n_train / t_loader, "randperm_evt_s": n_train / t_raw, "loader_ratio": t_raw / t_loader}
    rows = [
        f"The shipped Zγ sample (signal and background files) replicated {size['copies']}× into one ROOT file per "
        f"sample ({n_events:,} events; event ids offset per copy), read through `EventDataModule` on its "
        "`window` region.", "",
        "| measurement | lit-vae | reference | ratio (goal) |",
        "|---|---|---|---|",
        f"| ROOT -> training tensors, {n_events:,} events (cold, no cache) | {n_events / t_cold:,.0f} evt/s | bare "
        f"uproot arrays of the same branches: {n_events / t_bare:,.0f} evt/s | {t_bare / t_cold:.2f} (≥ 0.6) |",
        f"| time to the first training batch (DataModule built, files read, split, transform fitted, first batch "
        f"sliced) | {t_first:.2f} s | bare uproot read: {t_bare:.2f} s | {t_first / t_bare:.1f}× the read |",
        f"| parquet cache hit -> training tensors | {n_events / t_hit:,.0f} evt/s | cold read: "
        f"{n_events / t_cold:,.0f} evt/s | {t_cold / t_hit:.2f}× faster |",
        f"| one training epoch through `train_dataloader()`, {n_train:,} events, batch 256 "
        f"| {n_train / t_loader:,.0f} evt/s | randperm slicing: {n_train / t_raw:,.0f} evt/s "
        f"| {t_raw / t_loader:.2f} (≥ 0.95) |",
    ]
    return rows, results


# --- training ------------------------------------------------------------------------------------------------

class EpochTimer(L.Callback):
    """Wall time from the start of each training epoch to the end of its last batch (Lightning runs the
    validation loop before on_train_epoch_end, so that hook would count validation too)."""

    def __init__(self):
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        sync(pl_module.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == trainer.num_training_batches - 1:
            sync(pl_module.device)
            self.times.append(time.perf_counter() - self._start)


def fresh(model: BaseVAE) -> BaseVAE:
    """A new, untrained model with model's hyper-parameters."""
    return type(model)(**{k: v for k, v in model.hparams.items() if not k.startswith("_")})


def hand_loop_seconds(model: BaseVAE, tensors: dict, batch_size: int, epochs: int) -> float:
    """Fastest epoch of a plain PyTorch loop (randperm slicing, Adam) training model on tensors, on the
    tensors' device."""
    torch.manual_seed(0)
    device = tensors["x"].device
    model = model.to(device)
    n = len(tensors["x"])
    if isinstance(model, VAED):  # the same three steps, written out without Lightning
        groups = ([*model.encoder.parameters(), *model.prior.parameters()], model.decoder.parameters(),
                  model.discriminator.parameters())
        optimisers = [torch.optim.Adam(group, lr=model.learning_rate) for group in groups]
    else:
        optimisers = [torch.optim.Adam(model.parameters(), lr=model.learning_rate)]
    best = float("inf")
    for _ in range(epochs):
        sync(device)
        start = time.perf_counter()
        order = torch.randperm(n, device=device)
        for begin in range(0, n, batch_size):
            batch = {k: v[order[begin:begin + batch_size]] for k, v in tensors.items()}
            if isinstance(model, VAED):  # discriminator, decoder, encoder; each optimiser steps its own net
                encoder_opt, decoder_opt, discriminator_opt = optimisers
                x = batch["x"]
                with torch.no_grad():
                    z = reparameterise(*model.encoder(x))
                    prior = model.prior.sample(len(x))
                    rec, gen = model.decoded(z), model.decoded(prior)
                discriminator_opt.zero_grad()
                model.discriminator_loss(x, rec, gen, batch).backward()
                discriminator_opt.step()
                decoder_opt.zero_grad()
                rec, gen = model.decoded(z), model.decoded(prior)
                recon = model.weighted_mean(model.decoder.terms(z, batch, model.transform)["recon"], batch)
                (model.gamma * recon + model.adversarial_term(x, rec, gen, batch)).backward()
                decoder_opt.step()
                encoder_opt.zero_grad()
                model.weighted_mean(model.losses(batch)["loss"], batch).backward()
                encoder_opt.step()
            else:
                optimisers[0].zero_grad()
                model.weighted_mean(model.losses(batch)["loss"], batch).backward()
                optimisers[0].step()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def lit_vae_fit(workdir: Path, config: str, epochs: int, *extra: str, rows: int | None = None):
    """`lit-vae fit`'s own objects (loggers, progress bar, checkpointing) for config, fitted with an epoch
    timer (the training part replicated to >= rows when given): (cli, fastest training epoch in seconds)."""
    timer = EpochTimer()
    cli = build_cli(["--config", str(CONFIGS / config), f"--trainer.max_epochs={epochs}",
                     "--data.init_args.min_events=0", f"--data.init_args.cache_dir={workdir / 'cache'}",
                     f"--trainer.default_root_dir={workdir}", *extra], run=False)
    if rows:
        replicate_training(cli.datamodule, rows)
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, cli.datamodule)
    import wandb

    wandb.finish()
    return cli, min(timer.times)


def bare_lightning_seconds(model: BaseVAE, datamodule, epochs: int, accelerator: str = "cpu") -> float:
    """Fastest training epoch of a Trainer with no callbacks, loggers, checkpointing or progress bar."""
    timer = EpochTimer()
    trainer = L.Trainer(max_epochs=epochs, accelerator=accelerator, devices=1, logger=False, callbacks=[timer],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, use_distributed_sampler=False)
    trainer.fit(model, datamodule)
    return min(timer.times)


def training(workdir: Path, size: dict) -> tuple[list[str], dict]:
    rows = ["Rows/s of the fastest training epoch (validation excluded), one CPU thread, batch 256: through the "
            "objects `lit-vae fit` builds from `configs/base.yaml` + the model config (CSV + W&B offline loggers, "
            "progress bar, checkpointing, early stopping); through a bare Lightning Trainer (the same model and "
            "DataModule; no callbacks, loggers, checkpointing or progress bar): lit-vae's own overhead; and "
            "through a plain PyTorch loop over the same training tensors: Lightning's and lit-vae's together.", "",
            "| model (config) | `lit-vae fit` rows/s | bare Lightning rows/s | hand-written loop rows/s "
            "| fit ÷ bare Lightning (goal ≥ 0.95) | fit ÷ hand-written |", "|---|---|---|---|---|---|"]
    results = {}
    torch.set_num_threads(1)
    for config in MODELS:
        cli, t_fit = lit_vae_fit(workdir, config, size["epochs"])
        t_bare = bare_lightning_seconds(fresh(cli.model), cli.datamodule, size["epochs"])
        tensors = cli.datamodule.part("train")
        t_hand = hand_loop_seconds(fresh(cli.model), tensors, cli.datamodule.batch_size, size["epochs"])
        n, name = len(tensors["x"]), type(cli.model).__name__
        results[name] = {"rows": n, "fit_rows_s": n / t_fit, "lightning_rows_s": n / t_bare, "hand_rows_s": n / t_hand,
                         "fit_over_lightning": t_bare / t_fit, "fit_over_hand": t_hand / t_fit}
        rows.append(f"| {name} (`configs/{config}`, {n:,} rows) | {n / t_fit:,.0f} | {n / t_bare:,.0f} | "
                    f"{n / t_hand:,.0f} | {t_bare / t_fit:.2f} | {t_hand / t_fit:.2f} |")
    return rows, results


# --- generation ----------------------------------------------------------------------------------------------

def checkpoint(workdir: Path) -> Path:
    """A Zgamma VAE checkpoint: the training section's, or one epoch trained here."""
    found = sorted((workdir / "runs").rglob("last.ckpt")) if (workdir / "runs").exists() else []
    if not found:
        lit_vae_fit(workdir, MODELS[0], 1)
        found = sorted((workdir / "runs").rglob("last.ckpt"))
    return found[0]


def lit_vae_command() -> list[str]:
    script = Path(sys.executable).parent / "lit-vae"
    return [str(script)] if script.exists() else [sys.executable, "-m", "lit_vae.command"]


def generation(workdir: Path, size: dict) -> tuple[list[str], dict]:
    import pyarrow.parquet as pq

    from lit_vae import generate_events

    ckpt, n = checkpoint(workdir), size["generate"]
    torch.set_num_threads(1)
    start = time.perf_counter()
    batches = generate_events(str(ckpt), n, 100_000)
    first = len(next(batches)["m_llg"])
    t_first = time.perf_counter() - start
    sum((len(b["m_llg"]) for b in batches), first)
    in_memory = n / (time.perf_counter() - start)
    command = time.perf_counter()
    subprocess.run([*lit_vae_command(), "generate", "--ckpt_path", str(ckpt), "--n_events", "1000", "--output",
                    str(workdir / "first.parquet")], check=True, capture_output=True)
    t_command = time.perf_counter() - command
    pythia = read_root_metadata(REPO / "data" / "zgamma_bkg.root")["selected_per_cpu_second"]
    results = {"in_memory_evt_s": in_memory, "first_event_s": t_first, "command_1000_events_s": t_command,
               "pythia_evt_s": pythia, "over_pythia": in_memory / pythia}
    rows = [f"{n:,} Zγ events from a Zγ VAE checkpoint, one CPU thread. The pyarrow reference writes the same "
            "events (read back from lit-vae's file) from memory with the same compression; on a CPU the model's "
            "sampling, not the writing, sets the pace (see the ratio to the in-memory API).", "",
            "| measurement | lit-vae | reference | ratio (goal) |", "|---|---|---|---|",
            f"| `lit_vae.generate_events` into memory (model load + sampling, no file) | {in_memory:,.0f} evt/s | "
            f"Pythia + detector, selected Zγ events: {pythia:,.1f} evt/s per core | {in_memory / pythia:,.0f}× |",
            f"| time to the first event: `generate_events` (in a running Python) / `lit-vae generate --n_events "
            f"1000` (process start to file closed) | {t_first:.2f} s / {t_command:.2f} s | | |"]
    for output, compression in (("generated.parquet", "zstd"), ("generated.parquet", "lz4"),
                                ("generated.parquet", "none"), ("generated.root", "zstd")):
        path = workdir / output
        start = time.perf_counter()
        lit_vae(["generate", "--ckpt_path", str(ckpt), "--n_events", str(n), "--output", str(path),
                 "--compression", compression])
        rate = n / (time.perf_counter() - start)
        key = f"{path.suffix[1:]}_{compression}"
        results[key] = {"evt_s": rate, "over_in_memory": rate / in_memory, "mb": path.stat().st_size / 2**20}
        reference, ratio = "the in-memory API", f"{rate / in_memory:.2f}"
        if path.suffix == ".parquet":
            events, codec = pq.read_table(path), None if compression == "none" else compression
            writing = best_of(partial(pq.write_table, events, workdir / "pyarrow.parquet", use_dictionary=False,
                                      compression=codec), 3)
            results[key].update(pyarrow_evt_s=n / writing, over_pyarrow=writing * rate / n)
            reference = f"pyarrow writing the same events from memory: {n / writing:,.0f} evt/s"
            ratio = f"{writing * rate / n:.2f} (≥ 0.7); {rate / in_memory:.2f} of the in-memory API"
        rows.append(f"| `lit-vae generate --output {output} --compression {compression}` "
                    f"({results[key]['mb']:.0f} MB) | {rate:,.0f} evt/s | {reference} | {ratio} |")
    return rows, results


# --- start-up ------------------------------------------------------------------------------------------------

def import_profile(arguments: list[str]) -> tuple[float, list[tuple[str, float]]]:
    """`python -X importtime -m lit_vae.command ...`: total import milliseconds and the five heaviest
    top-level packages (cumulative ms)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "lit_vae.command", *arguments],
                          capture_output=True, text=True, check=True)
    total, top = 0.0, {}
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if match:
            total += int(match.group(1)) / 1000
            if len(match.group(3)) == 1:  # a top-level import
                package = match.group(4).split(".")[0]
                top[package] = top.get(package, 0.0) + int(match.group(2)) / 1000
    return total, sorted(top.items(), key=lambda item: -item[1])[:5]


def startup(workdir: Path, size: dict) -> tuple[list[str], dict]:
    command = lit_vae_command()
    t_help = best_of(lambda: subprocess.run([*command, "--help"], check=True, capture_output=True), 3)
    t_python = best_of(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), 3)
    ckpt = checkpoint(workdir)
    profiles = {"help": ["--help"], "generate": ["generate", "--ckpt_path", str(ckpt), "--n_events", "1000",
                                                 "--output", str(workdir / "startup.parquet")]}
    results = {"help_s": t_help, "python_s": t_python}
    rows = ["Wall time of `lit-vae --help` (a bare `python -c pass`: the interpreter alone), and the imports of "
            "`python -X importtime -m lit_vae.command ARGS` (total, and the heaviest top-level packages, "
            "cumulative).", "",
            f"`lit-vae --help`: **{t_help:.2f} s** (python alone: {t_python:.2f} s).", "",
            "| command | imports (ms) | heaviest top-level imports (ms) |", "|---|---|---|"]
    for name, arguments in profiles.items():
        total, top = import_profile(arguments)
        results[f"import_{name}_ms"] = total
        rows.append(f"| `lit-vae {' '.join(arguments[:1])}` | {total:,.0f} | "
                    + ", ".join(f"{package} {ms:,.0f}" for package, ms in top) + " |")
    return rows, results


# --- GPU -----------------------------------------------------------------------------------------------------

def replicate_training(datamodule: EventDataModule, rows: int) -> None:
    """Repeat the training part's tensors until it holds >= rows (an epoch of hundreds of steps at a large
    batch from the shipped sample; the benchmark says so). Validation keeps the held-out events."""
    tensors = datamodule.part("train")
    copies = -(-rows // len(tensors["x"]))
    datamodule._parts["train"] = {name: t.repeat(copies, *[1] * (t.dim() - 1)) for name, t in tensors.items()}
    datamodule._resident.clear()


def gpu(workdir: Path, size: dict, device: str = "cuda", time_limit: float | None = None) -> tuple[list[str], dict]:
    """The GPU section, most wanted first (training ratios at batch 4,096, in-memory generation, batch 65,536
    against the CPU, configs/gpu.yaml against the plain config); each row is printed as it is measured, and
    what would start after time_limit seconds is listed as not measured (a lent machine's time is short)."""
    from lit_vae import generate_events

    accelerator = "gpu" if device == "cuda" else "cpu"
    if device != "cuda":  # a dry run of the code on the CPU: small sizes
        size = {**size, "gpu_rows": 50_000, "gpu_generate": 1_000_000, "gpu_config_epochs": 1}
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (a dry run of the GPU section)"
    start_section = time.perf_counter()
    skipped: list[str] = []

    def in_time(what: str) -> bool:
        if time_limit is None or time.perf_counter() - start_section < time_limit:
            print(f"[gpu {time.perf_counter() - start_section:.0f} s] {what}", file=sys.stderr, flush=True)
            return True
        skipped.append(what)
        return False

    def measured(row: str) -> str:
        print(row, file=sys.stderr, flush=True)  # in the log even if the run is cut short
        return row

    results: dict = {"device": name}
    training_rows, config_rows, generation_rows = [], [], []
    for batch in (4096, 65536):
        for config in MODELS:
            if not in_time(f"{config} at batch {batch}"):
                continue
            extra = [f"--trainer.accelerator={accelerator}", f"--data.init_args.batch_size={batch}",
                     "--data.init_args.device_resident=true", "--trainer.limit_val_batches=1"]
            cli, t_fit = lit_vae_fit(workdir, config, size["gpu_epochs"], *extra, rows=size["gpu_rows"])
            tensors = {k: v.to(device) for k, v in cli.datamodule.part("train").items()}
            n, model = len(tensors["x"]), type(cli.model).__name__
            t_hand = hand_loop_seconds(fresh(cli.model), tensors, batch, size["gpu_epochs"])
            results[f"{model}.b{batch}"] = {"rows": n, "fit_rows_s": n / t_fit, "hand_rows_s": n / t_hand,
                                            "ratio": t_hand / t_fit}
            versus_cpu = "–"
            if batch == 65536:  # the same fit on this machine's CPU cores, one epoch of a tenth of the rows
                cpu, t_cpu = lit_vae_fit(workdir, config, 1, "--trainer.accelerator=cpu",
                                         f"--data.init_args.batch_size={batch}", "--trainer.limit_val_batches=1",
                                         f"--trainer.num_threads={os.cpu_count()}", rows=size["gpu_rows"] // 10)
                cpu_rate = len(cpu.datamodule.part("train")["x"]) / t_cpu
                results[f"{model}.b{batch}"].update(cpu_rows_s=cpu_rate, over_cpu=n / t_fit / cpu_rate)
                versus_cpu = f"{n / t_fit / cpu_rate:.1f}× (CPU: {cpu_rate:,.0f} rows/s)"
            training_rows.append(measured(f"| {model} | {batch:,} | {n / t_fit:,.0f} | {n / t_hand:,.0f} | "
                                          f"{t_hand / t_fit:.2f} | {versus_cpu} |"))
        if batch == 4096 and in_time("in-memory generation"):  # wanted before the larger batch
            ckpt, n = checkpoint(workdir), size["gpu_generate"]
            list(generate_events(str(ckpt), 1_000_000, 1_000_000, device=device))  # warm-up
            sync(torch.device(device))
            start = time.perf_counter()
            sum(len(b["m_llg"]) for b in generate_events(str(ckpt), n, 10_000_000, device=device))
            rate = n / (time.perf_counter() - start)
            results["generate_in_memory_evt_s"] = rate
            generation_rows.append(measured(
                f"`lit_vae.generate_events(..., device='{device}')`, {n:,} Zγ events into host memory in batches "
                f"of 10⁷ (model load included): **{rate:,.0f} evt/s** (goal ≥ 10⁸)."))
    for config in ("wh1lbb/preselection.yaml", "zgamma/vae.yaml"):
        for overlay in ([], ["--config", str(CONFIGS / "gpu.yaml")]):
            label = f"`configs/{config}`" + (" + `configs/gpu.yaml`" if overlay else "")
            if (device != "cuda" and overlay) or not in_time(f"{label}, {size['gpu_config_epochs']} epochs"):
                continue
            start = time.perf_counter()
            cli, _ = lit_vae_fit(workdir, config, size["gpu_config_epochs"], *overlay,
                                 f"--trainer.accelerator={accelerator}")
            seconds = time.perf_counter() - start
            metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k in ("val/loss", "val/elbo")}
            results[f"config.{config}{'+gpu' if overlay else ''}"] = {"seconds": seconds, **metrics}
            config_rows.append(measured(f"| {label} | {seconds:.0f} | {metrics.get('val/loss', float('nan')):.4f} | "
                                        f"{metrics.get('val/elbo', float('nan')):.4f} |"))
    rows = [f"On **{name}** (with {os.cpu_count()} CPU cores). Training: the training part replicated to "
            f"≥ {size['gpu_rows']:,} rows (the shipped sample repeated; validation keeps the held-out events), data "
            "resident on the device; fastest epoch of the `lit-vae fit` objects against a hand-written loop over "
            "the same device-resident tensors.", "",
            "| model | batch | `lit-vae fit` rows/s | hand-written loop rows/s | ratio (goal ≥ 0.9) "
            f"| GPU ÷ CPU ({os.cpu_count()} threads, the same fit) |", "|---|---|---|---|---|---|", *training_rows,
            "", f"configs/gpu.yaml against the plain config, {size['gpu_config_epochs']} epochs each on this "
            "device (validation metrics of the last epoch; same seed):", "",
            "| config | seconds | val/loss | val/elbo |", "|---|---|---|---|", *config_rows, "", *generation_rows]
    if skipped:
        rows += ["", f"Not measured (past the {time_limit:.0f} s time limit of this run): {'; '.join(skipped)}."]
    results["not_measured"] = skipped
    return rows, results


# --- the report ----------------------------------------------------------------------------------------------

TITLES = {"mc": "Monte Carlo reference (the shipped sample)", "data": "Data path", "training": "Training throughput",
          "generation": "Generation", "startup": "Start-up", "gpu": "GPU"}


def mc(workdir: Path, size: dict) -> tuple[list[str], dict]:
    samples = sorted(str(p) for p in (REPO / "data").glob("*.root"))
    results = {Path(p).stem: read_root_metadata(p)["selected_per_cpu_second"] for p in samples}
    return ["Selected events per CPU-second and CPU-hours per 10⁶ selected events, from each file's metadata "
            "(`python -m lit_vae.mc.summary data/*.root`; the commands are in the Makefile's `samples` target). "
            "These are what a generative model's events/s are compared with.", "", table(samples)], results


def block(text: str, section: str) -> str | None:
    found = re.search(rf"<!-- {section} -->.*?<!-- /{section} -->", text, re.S)
    return found.group(0) if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", default=os.environ.get("QUICK") == "1")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, of {', '.join(SECTIONS)} (gpu runs only where CUDA is available)")
    parser.add_argument("--gpu-device", default="cuda", help="cpu: a dry run of the GPU section")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds after which the GPU section starts nothing new (and lists what it left)")
    args = parser.parse_args()
    wanted = args.sections.split(",")
    if unknown := set(wanted) - set(SECTIONS):
        parser.error(f"unknown sections {sorted(unknown)}: choose from {', '.join(SECTIONS)}")
    size = QUICK if args.quick else FULL
    target = REPO / "BENCHMARKS.md"
    old = target.read_text() if target.exists() else ""
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    workdir = Path(tempfile.mkdtemp(prefix="lit_vae_bench_"))
    cwd = os.getcwd()
    blocks = {}
    try:
        os.chdir(workdir)
        confine_wandb(str(workdir / "runs"))
        for section in SECTIONS:
            if section not in wanted:
                continue
            if section == "gpu" and args.gpu_device == "cuda" and not torch.cuda.is_available():
                print("no CUDA device: the GPU section keeps its last numbers", file=sys.stderr)
                continue
            print(f"--- {section}", file=sys.stderr)
            function = {"mc": mc, "data": data, "training": training, "generation": generation, "startup": startup,
                        "gpu": lambda w, s: gpu(w, s, args.gpu_device, args.time_limit)}[section]
            rows, numbers = function(workdir, size)
            stamp = f"Measured {time.strftime('%Y-%m-%d')}{' (QUICK: small inputs)' if args.quick else ''}."
            blocks[section] = "\n".join([f"<!-- {section} -->", f"## {TITLES[section]}", "", stamp, "", *rows, "",
                                         f"<!-- /{section} -->"])
            results[section] = {**numbers, "measured": time.strftime("%Y-%m-%d"), "quick": args.quick}
    finally:
        os.chdir(cwd)
        shutil.rmtree(workdir, ignore_errors=True)
    header = ("# Benchmarks\n\nWritten by `make bench` (`benchmarks/run.py`; numbers in `benchmarks/results.json`) on "
              f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, torch "
              f"{torch.__version__}. Speeds are ratios against a reference measured in the same run; absolute numbers "
              "are for scale only. Ratios move by several percent between runs on a shared machine.\n")
    parts = [header]
    for section in (*SECTIONS[:-1], "notes", "gpu", "sweeps"):  # notes: written by hand, kept
        kept = blocks.get(section) or block(old, section)
        if kept:
            parts.append(kept)
        elif section == "gpu":
            parts.append("<!-- gpu -->\n## GPU\n\nNot measured yet: no session with a CUDA device has run "
                         "`python benchmarks/run.py --sections gpu`.\n<!-- /gpu -->")
    print("\n\n".join(blocks.values()))
    if args.gpu_device != "cuda" and "gpu" in blocks:
        print("a dry run of the GPU section: BENCHMARKS.md and results.json left as they were", file=sys.stderr)
        return
    target.write_text("\n\n".join(parts) + "\n")
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()

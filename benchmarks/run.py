"""`make bench`: measures what lit-vae promises on speed and writes BENCHMARKS.md.

Every speed is a ratio against a reference measured in the same run (the machines are shared and noisy):
- Monte Carlo: selected events per CPU-second of each shipped sample, from the files' own metadata (the
  reference that generation speed-ups will be quoted against).
- Data path: ROOT -> training tensors vs a bare `uproot ... arrays(library="np")` of the same branches;
  the parquet-cache hit vs the cold read; a training epoch through `train_dataloader()` vs randperm
  slicing of the same tensors.
"""

from __future__ import annotations

import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch
import uproot

from lit_vae.data import ZGammaDataModule
from lit_vae.mc.summary import table

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
    (REPO / "BENCHMARKS.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

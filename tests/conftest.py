"""Shared test fixtures: small real Monte Carlo samples, produced once per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def produce_sample(tmp_path_factory):
    """Produce a small sample with the real generator, cached per (process, options)."""
    from lit_vae.data.io import read_root, read_root_metadata
    from lit_vae.mc.production import Request, produce

    cache: dict = {}

    def _produce(process: str, events: int, seed: int = 7, **options):
        key = (process, events, seed, tuple(sorted(options.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(process) / f"{process}.root"
            produce(Request(process=process, events=events, out=str(out), seed=seed, **options))
            cache[key] = (read_root(out), read_root_metadata(out), out)
        return cache[key]

    return _produce


@pytest.fixture(scope="session")
def wh1lbb_inputs(produce_sample):
    """Small real one-lepton samples (the ones the producer tests make) for data-layer tests."""
    return {
        "ttbar": produce_sample("ttbar", 40, fast=True)[2],
        "wjets": produce_sample("wjets", 40, fast=True, tag_floor=0.0)[2],  # every tag configuration
        "c1n2_wh": produce_sample("c1n2_wh", 40, mass_c1n2=500.0, mass_lsp=100.0)[2],
    }


def write_wh1lbb_manifest(inputs: dict, folder):
    """A manifest in folder over copies of the small samples, with the real Wh1Lbb features and regions."""
    import shutil

    import yaml

    from tests.paths import REPO

    real = yaml.safe_load((REPO / "data_manifests" / "wh1lbb.yaml").read_text())
    samples = {}
    for name, path in inputs.items():
        shutil.copy(path, folder / f"{name}.root")
        samples[name] = {"files": [f"{name}.root"], "role": "signal" if name == "c1n2_wh" else "background",
                         "weight": "weight"}
    manifest = {"tree": "events", "event_id": "event_number", "samples": samples,
                "features": real["features"], "regions": real["regions"]}
    path = folder / "wh1lbb.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


@pytest.fixture
def wh1lbb_manifest(wh1lbb_inputs, tmp_path):
    """A manifest in tmp_path over copies of the small samples, with the real Wh1Lbb features and regions."""
    return write_wh1lbb_manifest(wh1lbb_inputs, tmp_path)


@pytest.fixture
def wh1lbb_datamodule(wh1lbb_manifest, tmp_path):
    """An EventDataModule over the small real one-lepton samples."""
    from lit_vae.data import EventDataModule

    dm = EventDataModule(str(wh1lbb_manifest), "preselection", batch_size=16, cache_dir=str(tmp_path / "cache"),
                         min_events=0, seed=1)
    dm.setup("fit")
    return dm

"""Shared test fixtures: small real Monte Carlo samples, produced once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"


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

"""On a CUDA device (`make test-gpu`; skipped without one): every model fits, its data stay on the device, and
the checkpoint scores and decodes fixed inputs as it does on the CPU (to float tolerance; training itself
differs between devices because their random streams do). The overlay configs/gpu.yaml is checked here too,
on any machine."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from lit_vae.cli import main
from lit_vae.data.datamodule import EventBatches
from lit_vae.models import load_model

from .paths import REPO

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def shipped_data(cache) -> list[str]:
    """The config's own DataModule on the shipped sample, 2,000 background events: no Monte Carlo production
    (the GPU machine has no Pythia)."""
    return ["--data.init_args.max_events", "2000", "--data.init_args.min_events", "0",
            "--data.init_args.batch_size", "64", "--data.init_args.cache_dir", str(cache)]

MODELS = [("zgamma/vae.yaml", []), ("zgamma/vae_d.yaml", ["--model.init_args.n_nodes", "16"]),
          ("wh1lbb/preselection.yaml", [])]


@pytest.mark.parametrize("config, extra", MODELS)
@pytest.mark.gpu
@needs_cuda
def test_a_model_fitted_on_cuda_predicts_and_decodes_as_on_the_cpu(tmp_path, monkeypatch, config, extra):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    fit = ["fit", "--config", str(REPO / "configs" / config), *shipped_data(tmp_path / "cache"), *extra,
           "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false"]
    assert main([*fit, "--trainer.accelerator", "gpu", "--data.init_args.device_resident", "true"]) == 0
    ckpt = next((tmp_path / "runs").rglob("last.ckpt"))
    scores = {}
    for accelerator in ("cpu", "gpu"):
        out = tmp_path / f"scores_{accelerator}.parquet"
        assert main(["predict", "--config", str(REPO / "configs" / config), *shipped_data(tmp_path / "cache"), *extra,
                     "--ckpt_path", str(ckpt), "--trainer.accelerator", accelerator, "--output", str(out)]) == 0
        scores[accelerator] = pd.read_parquet(out)
    numbers = [c for c in scores["cpu"] if scores["cpu"][c].dtype.kind == "f"]
    pd.testing.assert_frame_equal(scores["gpu"][numbers], scores["cpu"][numbers], rtol=1e-4, atol=1e-4)

    model = load_model(str(ckpt)).eval()
    z = torch.randn(4096, model.latent_dim, generator=torch.Generator().manual_seed(0))  # fixed noise, on the CPU
    with torch.no_grad():  # the decoder's outputs (features, or the heads' parameters) from the same noise
        on_cpu = model.decoder(z)
        on_gpu = model.cuda().decoder(z.cuda()).cpu()
    torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@needs_cuda
def test_device_resident_batches_are_sliced_on_the_device():
    from lit_vae.data import Wh1LbbDataModule

    dm = Wh1LbbDataModule(batch_size=16, max_events=2000, cache_dir=None, min_events=0, device_resident=True)
    dm.setup("fit")
    on_gpu = list(EventBatches(dm.on_device("train", torch.device("cuda")), 16, shuffle=True, seed=3))
    on_cpu = list(EventBatches(dm.on_device("train", torch.device("cpu")), 16, shuffle=True, seed=3))
    assert all(b["x"].device.type == "cuda" for b in on_gpu) and on_cpu[0]["x"].device.type == "cpu"
    for a, b in zip(on_gpu, on_cpu, strict=True):  # the same batches, in the same order
        torch.testing.assert_close(a["x"].cpu(), b["x"])


@pytest.mark.parametrize("config", ["zgamma/vae.yaml", "zgamma/vae_d.yaml", "wh1lbb/preselection.yaml"])
def test_the_gpu_overlay_composes_with_every_model_config(config):
    from lit_vae.cli import build_cli

    cli = build_cli(["--config", str(REPO / "configs" / config), "--config", str(REPO / "configs" / "gpu.yaml"),
                     "--trainer.accelerator", "cpu"], run=False)
    assert cli.datamodule.batch_size == 8192 and cli.datamodule.device_resident is True
    assert cli.model.learning_rate == pytest.approx(0.0057)


@pytest.mark.gpu
@needs_cuda
def test_generation_on_cuda_completes_and_cuts_on_the_device(tmp_path):
    """The physics setup generated on CUDA (completion, reference angle and cuts on the device, pinned copies):
    every event obeys the declared bounds when checked again on the host, columns are float32 / int32, and a
    seed gives the same events twice."""
    import lightning as L
    import numpy as np

    from lit_vae.data import ZGammaDataModule
    from lit_vae.generation import generate_columns, physics_of
    from lit_vae.models import VAE

    dm = ZGammaDataModule(derived_features="exact", azimuth="relative", max_events=3000, batch_size=256,
                          cache_dir=str(tmp_path / "cache"), min_events=0)
    dm.setup()
    L.seed_everything(0)
    model = VAE(n_features=dm.n_features, feature_kinds=dm.feature_kinds, feature_names=dm.features, latent_dim=4,
                n_nodes=32, w1_events=0, decoder="likelihood", heads={"is_muon": "bernoulli"})
    L.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_checkpointing=False,
              accelerator="gpu", devices=1).fit(model, datamodule=dm)
    model = model.cuda().eval()
    runs = [list(generate_columns(model, 5000, 2000, seed=4, device="cuda")) for _ in range(2)]
    events = {k: np.concatenate([b[k] for b in runs[0]]) for k in runs[0][0]}
    physics = physics_of(model)
    assert len(events["m_llg"]) == 5000
    assert physics.passes({k: v.astype(np.float64) for k, v in events.items()}).all()
    for name, values in events.items():
        assert values.dtype == (np.int32 if physics.kinds[name] == "count" else np.float32), name
        np.testing.assert_array_equal(np.concatenate([b[name] for b in runs[1]]), values)

"""On a CUDA device (`make test-gpu`; skipped without one): every model fits, its data stay on the device, and
the checkpoint scores and decodes fixed inputs as it does on the CPU (to float tolerance; training itself
differs between devices because their random streams do). The overlay configs/gpu.yaml is checked here too,
on any machine. LIT_VAE_TEST_DEVICE=cpu runs the gpu-marked tests' own code on a CPU (a dry run of what a
session lent a GPU will run: it finds a broken test, not a device bug)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch

from lit_vae.cli import build_cli, main
from lit_vae.data.datamodule import EventBatches
from lit_vae.models import load_model
from lit_vae.models.components import MSEHead

from .paths import REPO

DEVICE = os.environ.get("LIT_VAE_TEST_DEVICE", "cuda")
ACCELERATOR = "gpu" if DEVICE == "cuda" else DEVICE
needs_cuda = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                reason="needs a CUDA device (LIT_VAE_TEST_DEVICE=cpu dry-runs the tests' code)")


def shipped_data(cache) -> list[str]:
    """The config's own DataModule on the shipped sample, 2,000 background events: no Monte Carlo production
    (the GPU machine has no Pythia)."""
    return ["--data.init_args.max_events", "2000", "--data.init_args.min_events", "0",
            "--data.init_args.batch_size", "64", "--data.init_args.cache_dir", str(cache)]

# the paper's two generators, the flagship flow-decoder generator and the anomaly model (joint decoder, flow prior)
MODELS = [("zgamma/vae.yaml", []), ("zgamma/vae_d.yaml", ["--model.init_args.n_nodes", "16"]),
          ("zgamma/best.yaml", ["--model.init_args.w1_events", "500"]), ("wh1lbb/preselection.yaml", [])]


@pytest.mark.parametrize("config, extra", MODELS)
@pytest.mark.gpu
@needs_cuda
def test_a_model_fitted_on_cuda_predicts_and_decodes_as_on_the_cpu(tmp_path, monkeypatch, config, extra):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    data = [*shipped_data(tmp_path / "cache"), *extra]
    fit = ["fit", "--config", str(REPO / "configs" / config), *data, "--trainer.max_epochs", "2",
           "--trainer.enable_progress_bar", "false"]
    assert main([*fit, "--trainer.accelerator", ACCELERATOR, "--data.init_args.device_resident", "true"]) == 0
    ckpt = next((tmp_path / "runs").rglob("last.ckpt"))
    scores = {}
    for accelerator in ("cpu", ACCELERATOR):
        out = tmp_path / f"scores_{accelerator}.parquet"
        assert main(["predict", "--config", str(REPO / "configs" / config), *data, "--ckpt_path", str(ckpt),
                     "--trainer.accelerator", accelerator, "--output", str(out)]) == 0
        scores[accelerator] = pd.read_parquet(out)
    numbers = [c for c in scores["cpu"] if scores["cpu"][c].dtype.kind == "f"]
    pd.testing.assert_frame_equal(scores[ACCELERATOR][numbers], scores["cpu"][numbers], rtol=1e-4, atol=1e-4)

    model = load_model(str(ckpt)).eval()
    dm = build_cli(["--config", str(REPO / "configs" / config), *data], run=False).datamodule
    dm.use_transform(model.transform)
    dm.setup()
    batch = {k: v[:1024] for k, v in dm.part("val").items() if k in ("x", "target")}
    z = torch.randn(len(batch["x"]), model.latent_dim, generator=torch.Generator().manual_seed(0))  # on the CPU
    with torch.no_grad():  # every decoder's per-event terms (densities, or MSE) of the same events at the same z
        on_cpu = model.decoder.terms(z, batch, model.transform)
        decoded_cpu = model.decoder(z) if isinstance(model.decoder, MSEHead) else None
        model.to(DEVICE)
        on_device = model.decoder.terms(z.to(DEVICE), {k: v.to(DEVICE) for k, v in batch.items()}, model.transform)
        for name in ("recon", "nll"):
            torch.testing.assert_close(on_device[name].cpu(), on_cpu[name], rtol=1e-4, atol=1e-4)
        if decoded_cpu is not None:  # the MSE decoder's generated events themselves
            torch.testing.assert_close(model.decoder(z.to(DEVICE)).cpu(), decoded_cpu, rtol=1e-4, atol=1e-4)
        # sampling on the device: a device generator, physical events, the same events from the same seed
        draws = [model.sample(2000, torch.Generator(DEVICE).manual_seed(7)) for _ in range(2)]
    assert draws[0].shape == (2000, model.n_features) and draws[0].device.type == DEVICE
    assert torch.isfinite(draws[0]).all()
    torch.testing.assert_close(draws[1], draws[0], rtol=0, atol=0)


@pytest.mark.gpu
@needs_cuda
def test_device_resident_batches_are_sliced_on_the_device():
    from lit_vae.data import Wh1LbbDataModule

    dm = Wh1LbbDataModule(batch_size=16, max_events=2000, cache_dir=None, min_events=0, device_resident=True)
    dm.setup("fit")
    tensors = dm.on_device("train", torch.device(DEVICE))
    assert tensors["x"].device.type == DEVICE
    batches = EventBatches(tensors, 16, shuffle=True, seed=3)
    epochs = [list(batches), list(batches), list(EventBatches(tensors, 16, shuffle=True, seed=3))]
    assert all(b["x"].device.type == DEVICE for b in epochs[0])
    assert not torch.equal(epochs[0][0]["x"], epochs[1][0]["x"])  # each epoch its own order
    for a, b in zip(epochs[0], epochs[2], strict=True):  # a seed gives the same batches again (drawn on the device)
        assert torch.equal(a["x"], b["x"])
    seen = torch.cat([b["x"] for b in epochs[0]]).cpu().numpy()  # every training row once
    train = dm.part("train")["x"].numpy()
    assert len(seen) == len(train)
    np.testing.assert_array_equal(seen[np.lexsort(seen.T)], train[np.lexsort(train.T)])


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
              accelerator=ACCELERATOR, devices=1).fit(model, datamodule=dm)
    model = model.to(DEVICE).eval()
    runs = [list(generate_columns(model, 5000, 2000, seed=4, device=DEVICE)) for _ in range(2)]
    events = {k: np.concatenate([b[k] for b in runs[0]]) for k in runs[0][0]}
    physics = physics_of(model)
    assert len(events["m_llg"]) == 5000
    assert physics.passes({k: v.astype(np.float64) for k, v in events.items()}).all()
    for name, values in events.items():
        assert values.dtype == (np.int32 if physics.kinds[name] == "count" else np.float32), name
        np.testing.assert_array_equal(np.concatenate([b[name] for b in runs[1]]), values)

"""`lit-vae export`: ONNX graphs of tiny trained checkpoints of every model, run with onnxruntime against
PyTorch: scores on held-out and far-tail events, any batch size, generated events for fixed noise."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from lit_vae.cli import main
from lit_vae.export import TOLERANCE, GeneratorGraph, held_out_events
from lit_vae.models import load_model

from .conftest import write_wh1lbb_manifest
from .paths import REPO
from .test_cli import data_args

ort = pytest.importorskip("onnxruntime")

WH1LBB = "wh1lbb"  # the small Wh1Lbb samples (tests/conftest.py); else the shipped Zgamma sample
MODELS = {
    "VAE": ("zgamma/vae.yaml", WH1LBB, []),
    "VAE+D, learnable prior": ("zgamma/vae_d.yaml", WH1LBB, ["--model.init_args.n_nodes", "16",
                                                             "--model.init_args.prior", "learnable"]),
    # the shipped config: a flow prior (zuko splines; ~25 s a graph to export), anomaly_score iwae (the flow's
    # density of the importance samples, noise as an input), a joint decoder with log-normal mixtures; a Poisson
    # head (lgamma) beside the discrete Gaussian
    "likelihood VAE, flow prior": ("wh1lbb/preselection.yaml", WH1LBB, ["--model.init_args.heads", "{njet30: poisson, "
                                   + ", ".join(f"{n}: clipped_lognormal_mixture" for n in ("met", "mt", "mbb", "mct2",
                                                                                          "mlb1", "lep1Pt")) + "}"]),
    # derived features computed exactly and angles relative to a reference drawn at generation
    "VAE, physics setup": ("zgamma/vae.yaml", "zgamma", [
        "--data.init_args.derived_features", "exact", "--data.init_args.azimuth", "relative",
        "--data.init_args.max_events", "3000", "--data.init_args.min_events", "0"]),
}


@pytest.fixture(scope="module")
def exported(wh1lbb_inputs, tmp_path_factory):
    """Each model fitted for one epoch on the small samples and exported (score and generator)."""
    folder = tmp_path_factory.mktemp("export")
    wh1lbb_manifest = write_wh1lbb_manifest(wh1lbb_inputs, folder)
    here, out = os.getcwd(), {}
    os.chdir(folder)
    os.environ.setdefault("WANDB_MODE", "disabled")
    try:
        for name, (config, data, extra) in MODELS.items():
            root = folder / name.replace(" ", "_").replace(",", "")
            data = data_args(wh1lbb_manifest) if data == WH1LBB else ["--data.init_args.cache_dir", str(folder)]
            assert main(["fit", "--config", str(REPO / "configs" / config), *data, *extra,
                         "--trainer.max_epochs", "1", "--trainer.logger", "false",
                         "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root)]) == 0
            ckpt = next(root.rglob("last.ckpt"))
            assert main(["export", "--ckpt_path", str(ckpt), "--output", str(root / "onnx"), "--events", "500"]) == 0
            out[name] = (ckpt, root / "onnx")
    finally:
        os.chdir(here)
    return out


def close(got: np.ndarray, want: np.ndarray) -> bool:
    return bool(np.all(np.abs(got - want) <= TOLERANCE[0] + TOLERANCE[1] * np.abs(want)))


@pytest.mark.parametrize("name", list(MODELS))
def test_the_exported_score_reproduces_pytorch_at_any_batch_size_and_in_the_tail(exported, name):
    ckpt, folder = exported[name]
    model = load_model(str(ckpt)).eval()
    info = json.loads((folder / "model.json").read_text())
    assert [f["name"] for f in info["features"]] == model.feature_names
    assert info["model_class"] == type(model).__name__ and info["data_split"] == model.data_split
    session = ort.InferenceSession(str(folder / "score.onnx"), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    assert outputs[0] == "score" and {"total", "kl", "latent_radius", "prior_nll"} <= set(outputs)
    x = held_out_events(model, str(ckpt))
    tail = x[:3].copy()
    tail[:, :] = np.where(np.array(model.feature_kinds) == "count", 40.0, 5e4)  # far beyond any training event
    for events in (x[:1], np.resize(x, (4097, x.shape[1])), tail):  # dynamic batch sizes; far-tail events
        batch = {"x": model.transform(torch.from_numpy(events)), "target": model.transform.targets(
            torch.from_numpy(events))}
        inputs = {"features": events}
        if "iwae_noise" in [i.name for i in session.get_inputs()]:
            noise = torch.randn(model.iwae_samples, len(events), model.latent_dim,
                                generator=torch.Generator().manual_seed(5))
            batch["iwae_noise"], inputs["iwae_noise"] = noise, noise.numpy()
        with torch.no_grad():
            want = model.score(batch)
        got = dict(zip(outputs, session.run(None, inputs), strict=True))
        for output in outputs:
            assert np.isfinite(got[output]).all(), output  # the tail scores finite, as in PyTorch
            assert close(got[output], want[output].numpy()), (output, got[output][:3], want[output][:3])


@pytest.mark.parametrize("name", ["VAE", "VAE+D, learnable prior", "VAE, physics setup"])
def test_the_exported_generator_gives_generates_events_for_the_same_noise(exported, name):
    ckpt, folder = exported[name]
    model = load_model(str(ckpt)).eval()
    session = ort.InferenceSession(str(folder / "generator.onnx"), providers=["CPUExecutionProvider"])
    noise = torch.randn(4097, model.latent_dim, generator=torch.Generator().manual_seed(3))
    graph = GeneratorGraph(model)
    inputs, reference = {"noise": noise.numpy()}, None
    if graph.physics.azimuth:  # the reference angle, uniform in [-pi, pi)
        reference = np.random.default_rng(4).uniform(-np.pi, np.pi, len(noise))
        inputs["reference_angle"] = reference
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, inputs), strict=True))
    # what `lit-vae generate` computes from this noise: decode, complete (numpy), keep what passes
    events = model.decoder.sample(model.prior.from_noise(noise), model.transform).detach().numpy()
    columns = graph.physics.complete(dict(zip(model.feature_names, events.T, strict=True)),
                                     np.random.default_rng(0), reference=reference)
    accepted = graph.physics.passes(columns)
    assert np.mean(got["accepted"] != accepted) <= 1e-3
    # the events `generate` writes; a one-epoch model accepts few, so all events are compared, sparing 0.1 %
    # whose kinematics are so degenerate (a photon along the Z) that the last bit of exp or cos moves them
    kept = accepted & got["accepted"] if accepted.sum() > 100 else np.ones_like(accepted)
    for column in graph.names:
        want = columns[column].astype(np.int32 if graph.physics.kinds[column] == "count" else np.float32)
        if want.dtype == np.int32:
            assert np.mean(got[column][kept] != want[kept]) <= 1e-3
        else:
            within = np.abs(got[column] - want) <= TOLERANCE[0] + TOLERANCE[1] * np.abs(want)
            assert np.mean(~within[kept]) <= 1e-3, (column, np.mean(~within[kept]))


def test_a_generator_that_samples_inside_the_network_is_not_exported_and_says_why(exported, capsys):
    ckpt, folder = exported["likelihood VAE, flow prior"]
    info = json.loads((folder / "model.json").read_text())
    assert info["generator"]["exported"] is False and "DensityHead" in info["generator"]["why"]
    assert not (folder / "generator.onnx").exists()
    assert main(["export", "--ckpt_path", str(ckpt), "--output", str(folder.parent / "gen"), "--what",
                 "generator"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "the generator cannot be exported" in error


def test_a_checkpoint_of_an_unknown_class_is_refused_in_one_line(tmp_path, capsys):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"lit_vae": {"class_path": "os.system"}, "state_dict": {}}, foreign)
    assert main(["export", "--ckpt_path", str(foreign), "--output", str(tmp_path / "onnx")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "is not a lit-vae checkpoint" in error
    assert not (tmp_path / "onnx").exists()

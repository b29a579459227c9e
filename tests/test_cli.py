"""`lit-vae` end to end on small real samples: fit, predict, generate, bad input, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import uproot

from lit_vae.cli import close_process_group, main
from lit_vae.data.io import read_events
from lit_vae.errors import ConfigError

from .paths import REPO


def data_args(manifest) -> list[str]:
    return ["--data.class_path", "lit_vae.data.EventDataModule", "--data.init_args.manifest", str(manifest),
            "--data.init_args.region", "preselection", "--data.init_args.min_events", "0",
            "--data.init_args.batch_size", "16"]


@pytest.fixture
def trained(wh1lbb_manifest, tmp_path, monkeypatch):
    """A likelihood VAE fitted for two epochs by `lit-vae fit`, run in tmp_path."""
    monkeypatch.chdir(tmp_path)
    for variable in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "WANDB_MODE"):
        monkeypatch.delenv(variable, raising=False)
    config = str(REPO / "configs" / "wh1lbb" / "preselection.yaml")
    assert main(["fit", "--config", config, *data_args(wh1lbb_manifest), "--trainer.max_epochs", "2"]) == 0
    run = tmp_path / "runs" / "lit-vae" / "version_0"
    return {"config": config, "run": run, "ckpt": run / "checkpoints" / "last.ckpt", "manifest": wh1lbb_manifest}


def test_fit_writes_checkpoints_metrics_config_and_an_offline_wandb_run(trained, tmp_path):
    run = trained["run"]
    assert trained["ckpt"].exists() and list((run / "checkpoints").glob("best-*.ckpt"))
    metrics = pd.read_csv(run / "metrics.csv")
    for name in ("train/loss_epoch", "val/loss", "val/elbo", "val/recon", "val/kl"):
        assert metrics[name].notna().sum() == 2, name
    assert "LikelihoodVAE" in (run / "config.yaml").read_text()
    assert list((tmp_path / "runs").rglob("offline-run-*"))  # W&B ran, offline, inside the run directory
    # A second run in the same place does not clash with the first.
    assert main(["fit", "--config", trained["config"], *data_args(trained["manifest"]),
                 "--trainer.max_epochs", "1"]) == 0
    assert (tmp_path / "runs" / "lit-vae" / "version_1" / "config.yaml").exists()


@pytest.mark.parametrize("suffix", [".parquet", ".root"])
def test_predict_writes_one_row_per_event(trained, tmp_path, suffix):
    output = tmp_path / f"scores{suffix}"
    assert main(["predict", "--config", trained["config"], *data_args(trained["manifest"]),
                 "--ckpt_path", str(trained["ckpt"]), "--output", str(output)]) == 0
    if suffix == ".parquet":
        scores = pd.read_parquet(output)
        assert (scores["region"] == "preselection").all()
    else:
        with uproot.open(output) as f:
            scores = f["events"].arrays(library="pd")
            metadata = json.loads(str(f["metadata"]))
        assert metadata["region"] == "preselection" and metadata["sample_names"] == ["ttbar", "wjets", "c1n2_wh"]
    from lit_vae.data import EventDataModule

    dm = EventDataModule(str(trained["manifest"]), "preselection", min_events=0, cache_dir=None)
    dm.setup()
    assert len(scores) == len(dm.part("test")["x"]) == len(dm.part("val")["x"]) + 40
    assert scores.groupby("label").size().to_dict() == {0: len(dm.part("val")["x"]), 1: 40}
    keys = set(zip(scores["sample"], scores["event_number"], scores["configuration"], strict=True))
    assert len(keys) == len(scores)  # exactly one row per event (per tag configuration of a truth-tagged one)
    assert np.allclose(scores["total"], scores["recon"] + scores["kl"], rtol=1e-5)
    np.testing.assert_array_equal(scores["score"], scores["iwae"])  # preselection.yaml's anomaly_score
    assert np.corrcoef(scores["iwae"], scores["total"])[0, 1] > 0.9  # -log p(x) and the loss rank alike
    suite = scores[["latent_radius", "latent_mahalanobis", "prior_nll", "iwae"]]  # the score suite
    assert np.isfinite(suite.to_numpy()).all() and (scores["latent_radius"] >= 0).all()
    assert (scores["weight"] > 0).all()


def test_test_subcommand_logs_background_and_signal_losses(trained, tmp_path):
    assert main(["test", "--config", trained["config"], *data_args(trained["manifest"]),
                 "--ckpt_path", str(trained["ckpt"])]) == 0
    metrics = pd.read_csv(sorted((tmp_path / "runs" / "lit-vae").glob("version_*/metrics.csv"))[-1])
    assert metrics["test/loss_background"].notna().sum() == 1 and metrics["test/loss_signal"].notna().sum() == 1


def test_predict_scores_the_checkpoints_held_out_part_whatever_the_run_says(trained, tmp_path, capsys):
    """Another seed_everything, or a moved and commented copy of the data, scores the same held-out events
    (the checkpoint's split, recorded in the score file); a split request that contradicts it is refused."""
    import shutil

    def scored(manifest, output, *extra) -> set:
        assert main(["predict", "--config", trained["config"], *data_args(manifest), "--ckpt_path",
                     str(trained["ckpt"]), "--output", str(output), *extra]) == 0
        return set(zip(*(pd.read_parquet(output)[c] for c in ("sample", "event_number")), strict=True))

    reference = scored(trained["manifest"], tmp_path / "a.parquet")
    assert read_events(tmp_path / "a.parquet")[1]["data_split"]["split_seed"] == 42
    # scoring a subset records the training's max_events (none: every event), which the baselines rebuild
    assert scored(trained["manifest"], tmp_path / "subset.parquet", "--data.init_args.max_events", "30") < reference
    assert read_events(tmp_path / "subset.parquet")[1]["data_split"]["max_events"] is None
    assert scored(trained["manifest"], tmp_path / "b.parquet", "--seed_everything", "7") == reference
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in trained["manifest"].parent.glob("*.root"):
        shutil.copy(f, moved / f.name)
    (moved / "wh1lbb.yaml").write_text("# a comment\n" + trained["manifest"].read_text())
    assert scored(moved / "wh1lbb.yaml", tmp_path / "c.parquet") == reference
    capsys.readouterr()
    for option, value in (("split_seed", "7"), ("train_fraction", "0.5")):
        assert main(["predict", "--config", trained["config"], *data_args(trained["manifest"]), "--ckpt_path",
                     str(trained["ckpt"]), "--output", str(tmp_path / "d.parquet"),
                     f"--data.init_args.{option}", value]) == 2
        error = capsys.readouterr().err
        assert f"trained with {option} = " in error and f"--data.init_args.{option} = {value}" in error
        assert not (tmp_path / "d.parquet").exists()


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    shown = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", "generate", "evaluate", "sweep", "export"):
        assert f"\n  {command} " in shown, command
    assert main([]) == 2 and "usage: lit-vae COMMAND" in capsys.readouterr().err


def test_fit_without_a_logger_or_progress_bar_runs(wh1lbb_manifest, tmp_path, monkeypatch):
    """--trainer.logger=false and --trainer.enable_progress_bar=false drop the learning-rate monitor and the
    progress bar of base.yaml instead of failing on them."""
    monkeypatch.chdir(tmp_path)
    config = str(REPO / "configs" / "wh1lbb" / "preselection.yaml")
    assert main(["fit", "--config", config, *data_args(wh1lbb_manifest), "--trainer.max_epochs", "1",
                 "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                 "--trainer.default_root_dir", str(tmp_path / "plain")]) == 0
    assert list((tmp_path / "plain").rglob("last.ckpt"))


@pytest.mark.parametrize("config, extra", [
    ("zgamma/vae.yaml", []),
    ("zgamma/vae_d.yaml", ["--model.init_args.n_nodes", "16"]),  # three optimisers, stepped by hand
    ("wh1lbb/preselection.yaml", ["--model.init_args.prior", "flow"]),
])
def test_a_killed_or_preempted_fit_resumes_exactly_where_an_uninterrupted_one_ends(wh1lbb_manifest, tmp_path,
                                                                                   monkeypatch, config, extra):
    """Three epochs straight; then the same fit killed (kill -9) in epoch 1, after its first checkpoint, and
    resumed with `--ckpt_path last`; then preempted by SIGTERM in the middle of epoch 1 (a mid-epoch
    checkpoint, exit 143) and resumed from it: the same validation losses (batch order, optimisers,
    schedulers and noise stream all resume)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    args = ["fit", "--config", str(REPO / "configs" / config), *data_args(wh1lbb_manifest), *extra,
            "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "3"]
    runs = tmp_path / "runs" / "lit-vae"

    def interrupted(signal_name: str, batch: int) -> subprocess.CompletedProcess:
        callback = json.dumps({"class_path": "tests.interrupt.Interrupt",
                               "init_args": {"signal_name": signal_name, "epoch": 1, "batch": batch}})
        return subprocess.run([sys.executable, "-m", "lit_vae.cli", *args, f"--trainer.callbacks+={callback}"],
                              capture_output=True, text=True, timeout=600, cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(REPO)})

    assert main(args) == 0  # version_0
    killed = interrupted("SIGKILL", batch=1)  # version_1: last.ckpt is epoch 0's
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert main([*args, "--ckpt_path", "last"]) == 0  # version_2
    preempted = interrupted("SIGTERM", batch=1)  # version_3: stops after 2 of the 3 batches of epoch 1
    last = Path("runs", "lit-vae", "version_3", "checkpoints", "last.ckpt")
    assert preempted.returncode == 143, preempted.stderr[-2000:]
    assert f"preempted (SIGTERM) in epoch 1 after 2 batches: saved {last}" in preempted.stderr
    assert main([*args, "--ckpt_path", str(last)]) == 0  # version_4
    straight, after_kill, after_term = (pd.read_csv(runs / v / "metrics.csv")["val/loss"].dropna().to_numpy()
                                        for v in ("version_0", "version_2", "version_4"))
    assert len(straight) == 3 and len(after_kill) == 2 and len(after_term) == 2
    np.testing.assert_allclose(after_kill, straight[1:], rtol=1e-6, atol=0)
    np.testing.assert_allclose(after_term, straight[1:], rtol=1e-6, atol=0)


def test_generate_needs_nothing_but_the_checkpoint(wh1lbb_manifest, tmp_path, monkeypatch):
    """A model with per-feature head overrides generates from --ckpt_path alone (its hyper-parameters are not
    merged into the default config, whose data have other features)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert main(["fit", "--config", str(REPO / "configs" / "wh1lbb" / "preselection.yaml"), *data_args(wh1lbb_manifest),
                 "--model.init_args.heads", "{njet30: poisson}", "--trainer.max_epochs", "1"]) == 0
    ckpt = tmp_path / "runs" / "lit-vae" / "version_0" / "checkpoints" / "last.ckpt"
    assert main(["generate", "--ckpt_path", str(ckpt), "--n_events", "500", "--output", "gen.parquet"]) == 0
    events = pd.read_parquet(tmp_path / "gen.parquet")
    assert len(events) == 500 and (events["njet30"] >= 2).all() and (events["njet30"] <= 3).all()


class _Payload:
    """Unpickling this creates a file: what a checkpoint crafted to run code would do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_untrusted_corrupt_and_foreign_checkpoints_are_refused_in_one_line(wh1lbb_manifest, tmp_path, capsys):
    import torch

    marker = tmp_path / "pwned"
    evil, truncated, foreign = tmp_path / "evil.ckpt", tmp_path / "truncated.ckpt", tmp_path / "foreign.ckpt"
    torch.save({"lit_vae": {"class_path": "lit_vae.models.VAE"}, "payload": _Payload(marker)}, evil)
    torch.save({"state_dict": {"w": torch.zeros(10_000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:20_000])
    torch.save({"lit_vae": {"class_path": "os.system"}, "state_dict": {}}, foreign)
    for path, message in ((evil, "refused, it holds more than tensors and plain data"),
                          (truncated, "not a readable checkpoint"),
                          (foreign, "is not a lit-vae checkpoint (model class os.system)"),
                          (tmp_path / "missing.ckpt", "no such checkpoint")):
        assert main(["generate", *data_args(wh1lbb_manifest), "--ckpt_path", str(path),
                     "--output", str(tmp_path / "gen.parquet")]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and f"{path}" in error and message in error, error
    assert not marker.exists() and not (tmp_path / "gen.parquet").exists()


def test_generate_writes_physical_events(trained, tmp_path):
    output = tmp_path / "gen.parquet"
    assert main(["generate", *data_args(trained["manifest"]), "--ckpt_path", str(trained["ckpt"]),
                 "--n_events", "3000", "--batch_size", "1000", "--seed", "5", "--output", str(output)]) == 0
    events = pd.read_parquet(output)
    assert list(events.columns) == ["met", "mt", "mbb", "mct2", "mlb1", "lep1Pt", "njet30", "nBjet30_MV2c10",
                                    "weight"]
    assert len(events) == 3000 and events["njet30"].dtype == np.int32
    assert (events[["met", "mt", "mbb"]] >= 0).all().all() and (events["nBjet30_MV2c10"] >= 0).all()
    metadata = read_events(output)[1]
    assert metadata["seed"] == 5 and metadata["checkpoint"] == str(trained["ckpt"])
    again = tmp_path / "again.parquet"
    main(["generate", *data_args(trained["manifest"]), "--ckpt_path", str(trained["ckpt"]),
          "--n_events", "3000", "--batch_size", "1000", "--seed", "5", "--output", str(again)])
    pd.testing.assert_frame_equal(events, pd.read_parquet(again))  # the seed fixes the sample
    import lit_vae

    in_memory = pd.concat([pd.DataFrame(b) for b in lit_vae.generate_events(str(trained["ckpt"]), 3000, 1000,
                                                                             "cpu", seed=5)], ignore_index=True)
    pd.testing.assert_frame_equal(in_memory, events.drop(columns="weight"))  # the Python API, no file


def run_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lit_vae.cli", *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


def test_unknown_config_key_is_named(wh1lbb_manifest, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  class_path: lit_vae.models.LikelihoodVAE\n  init_args:\n    latnt_dim: 4\n")
    result = run_cli("fit", "--config", str(bad), *data_args(wh1lbb_manifest), cwd=tmp_path)
    assert result.returncode != 0 and "latnt_dim" in result.stderr
    assert not (tmp_path / "runs" / "lit-vae").exists()


def test_lit_vae_errors_are_one_line(wh1lbb_manifest, tmp_path):
    result = run_cli("generate", *data_args(wh1lbb_manifest), "--output", "x.parquet", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "lit-vae: error: generate needs --ckpt_path CKPT, a checkpoint written by `lit-vae fit` "
        "(--debug or LIT_VAE_DEBUG=1 shows the traceback)")
    assert "Traceback" not in result.stderr and not (tmp_path / "x.parquet").exists()
    with pytest.raises(ConfigError, match="generate needs --ckpt_path"):  # --debug: the error itself
        main(["generate", *data_args(wh1lbb_manifest), "--output", str(tmp_path / "x.parquet"), "--debug"])


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_gives_a_usable_checkpoint(wh1lbb_manifest, tmp_path):
    result = run_cli("fit", "--config", str(REPO / "configs" / "wh1lbb" / "preselection.yaml"),
                     *data_args(wh1lbb_manifest), "--trainer.max_epochs", "2", "--trainer.accelerator", "cpu",
                     "--trainer.devices", "2", "--trainer.strategy", "ddp", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = tmp_path / "runs" / "lit-vae" / "version_0" / "checkpoints" / "last.ckpt"
    from lit_vae.models import load_model

    model = load_model(str(ckpt))
    assert type(model).__name__ == "LikelihoodVAE" and model.sample(10).shape == (10, 8)


def test_a_finished_command_destroys_its_process_group(tmp_path, monkeypatch):
    """Left alive to interpreter exit, a gloo group's threads can abort a finished DDP run (SIGABRT): `main`
    destroys the group a command started (here a stand-in for Lightning's DDP set-up)."""
    import torch.distributed as dist

    import lit_vae.cli

    def command_that_starts_a_group(words):
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)

    monkeypatch.setattr(lit_vae.cli, "build_cli", command_that_starts_a_group)
    try:
        assert main(["fit"]) == 0
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    close_process_group()  # a command without DDP has no group to destroy


@pytest.mark.slow
def test_vae_d_under_plain_ddp_says_which_strategy_to_use(wh1lbb_manifest, tmp_path):
    result = run_cli("fit", "--config", str(REPO / "configs" / "zgamma" / "vae_d.yaml"), *data_args(wh1lbb_manifest),
                     "--model.init_args.n_nodes", "16", "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu",
                     "--trainer.devices", "2", "--trainer.strategy", "ddp", cwd=tmp_path)
    assert result.returncode == 2
    assert "use --trainer.strategy=ddp_find_unused_parameters_true" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr

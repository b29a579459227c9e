"""`lit-vae sweep` end to end on a slice of the shipped Zgamma sample: grids complete every point exactly
once (also with two workers sharing a journal), failures and implausible architectures are recorded and
the study goes on, best.yaml re-runs with `lit-vae fit`, and W&B-formatted arguments reach the model."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from lit_vae.cli import build_cli, main
from tests.paths import REPO

FAST = ["--", "--trainer.max_epochs=2", "--data.init_args.max_events=2000", "--data.init_args.min_events=0",
        f"--data.init_args.cache_dir={REPO / '.cache' / 'lit-vae'}"]


def grid(tmp_path, parameters: dict, name: str = "grid") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "method": "grid", "metric": {"name": "val/w1_mean", "goal": "minimize"}, "parameters": parameters,
        "command": ["${env}", "lit-vae", "fit", "--config", str(REPO / "configs" / "zgamma" / "vae.yaml"), "${args}"],
    }, sort_keys=False))
    return str(path)


def ranking(tmp_path, name: str = "grid") -> pd.DataFrame:
    return pd.read_csv(tmp_path / "sweeps" / name / "ranking.csv")


GRID4 = {"model.init_args.latent_dim": {"values": [2, 4]}, "model.init_args.learning_rate": {"values": [0.001, 0.01]}}


def test_a_grid_of_four_completes_exactly_those_four_and_best_yaml_reruns(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", grid(tmp_path, GRID4), *FAST]) == 0
    table = ranking(tmp_path)
    assert len(table) == 4 and set(table["state"]) == {"complete"}
    points = set(zip(table["model.init_args.latent_dim"], table["model.init_args.learning_rate"], strict=True))
    assert points == {(2, 0.001), (2, 0.01), (4, 0.001), (4, 0.01)}
    assert table["val/w1_mean"].is_monotonic_increasing  # ranked, best first
    assert table["classifier_auc"].between(0.5, 1.0).all()  # the final generator's two-sample test
    best = yaml.safe_load((tmp_path / "sweeps" / "grid" / "best.yaml").read_text())
    assert best["model"]["init_args"]["latent_dim"] == table["model.init_args.latent_dim"][0]
    assert best["model"]["init_args"]["learning_rate"] == table["model.init_args.learning_rate"][0]
    assert "ranking:" in capsys.readouterr().out
    # the winner's config is a ready-to-run fit config
    rerun = tmp_path / "rerun"
    rerun.mkdir()
    monkeypatch.chdir(rerun)
    assert main(["fit", "--config", str(tmp_path / "sweeps" / "grid" / "best.yaml"), "--trainer.max_epochs=1"]) == 0
    assert list((rerun / "runs").rglob("last.ckpt"))
    # Hyperband is fed every epoch: the journal holds one intermediate value per epoch
    import optuna

    from lit_vae.sweep.runner import storage_for

    monkeypatch.chdir(tmp_path)
    study = optuna.load_study(study_name="grid", storage=storage_for(None, tmp_path / "sweeps" / "grid"))
    assert all(sorted(t.intermediate_values) == [0, 1] for t in study.trials)


def test_two_workers_sharing_a_journal_complete_every_grid_point_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parameters = {**GRID4, "model.init_args.n_nodes": {"values": [16, 32]}}  # 8 points
    assert main(["sweep", grid(tmp_path, parameters), "--workers", "2", *FAST]) == 0
    table = ranking(tmp_path)
    complete = table[table["state"] == "complete"]
    keys = ["model.init_args.latent_dim", "model.init_args.learning_rate", "model.init_args.n_nodes"]
    assert len(complete) == 8 and not complete.duplicated(keys).any()
    others = table[table["state"] != "complete"]
    assert (others["state"] == "pruned").all() and others["reason"].str.startswith("duplicate of trial").all()


def test_failed_and_implausible_trials_are_recorded_and_the_study_goes_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parameters = {"model.init_args.latent_dim": {"values": [2, 64]},
                  "model.init_args.learning_rate": {"values": [0.001, -1.0]},
                  "model.init_args.n_nodes": {"value": 16}}
    assert main(["sweep", grid(tmp_path, parameters), *FAST]) == 0
    table = ranking(tmp_path).set_index(["model.init_args.latent_dim", "model.init_args.learning_rate"])
    assert table.loc[(2, 0.001), "state"] == "complete"
    assert table.loc[(64, 0.001), "state"] == "pruned"
    assert table.loc[(64, 0.001), "reason"].startswith("implausible architecture: hidden layers [16, 16]")
    for latent in (2, 64):
        assert table.loc[(latent, -1.0), "state"] == "fail"
        assert "learning_rate must be > 0" in table.loc[(latent, -1.0), "reason"]
    assert (tmp_path / "sweeps" / "grid" / "best.yaml").exists()


def test_wandb_agent_arguments_reach_the_model():
    """What a W&B agent's ${args} expands to, dicts in Python's str form included."""
    cli = build_cli(["--config", str(REPO / "configs" / "wh1lbb" / "preselection.yaml"),
                     "--model.init_args.feature_weights={'met': 2.0, 'mt': 0.5}", "--model.init_args.activation=tanh",
                     "--model.init_args.learning_rate=0.0003", "--data.init_args.batch_size=64",
                     "--model.init_args.latent_dim=3", "--data.init_args.min_events=0"], run=False)
    model = cli.model
    assert type(model.decoder).__name__ == "AutoregressiveDensityHead"  # the config's decoder, not the preset's
    assert type(model.prior).__name__ == "FlowPrior"  # the config's choice over the preset's learnable Gaussian
    assert model.decoder.head_names == ["clipped_lognormal_mixture"] * 6 + ["discrete_gaussian"] * 2  # its heads
    weights = dict(zip(model.feature_names, model.decoder.feature_weight.tolist(), strict=True))
    assert weights["met"] == 2.0 and weights["mt"] == 0.5 and weights["mbb"] == 1.0
    assert model.activation == "tanh" and model.learning_rate == pytest.approx(3e-4) and model.latent_dim == 3
    assert cli.datamodule.batch_size == 64


def test_wandb_backend_without_a_login_says_how_to_log_in(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", grid(tmp_path, GRID4), "--backend", "wandb"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "wandb login" in err and "--backend optuna" in err

"""Sweep files: every supported parameter form translated as W&B defines it; bad files are one-line errors."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
import yaml
from scipy import stats

from lit_vae.errors import ConfigError
from lit_vae.sweep.spec import load_sweep, suggest, wandb_arg
from tests.paths import REPO

COMMAND = ["${env}", "lit-vae", "fit", "--config", "configs/zgamma/vae.yaml", "${args}"]


def sweep_file(tmp_path, parameters: dict, method: str = "random", **extra):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"method": method, "metric": {"name": "val/w1_mean", "goal": "minimize"},
                                    "parameters": parameters, "command": COMMAND, **extra}))
    return path


PARAMETERS = {
    "model.init_args.activation": {"values": ["relu", "tanh"]},
    "model.init_args.feature_weights": {"values": [{}, {"met": 2.0}]},
    "model.init_args.beta": {"value": 0.5},
    "model.init_args.latent_dim": {"distribution": "int_uniform", "min": 2, "max": 9},
    "model.init_args.n_nodes": {"min": 16, "max": 64},  # ints: W&B infers int_uniform
    "model.init_args.gamma": {"distribution": "uniform", "min": 1.0, "max": 3.0},
    "data.init_args.train_fraction": {"distribution": "q_uniform", "min": 0.5, "max": 0.7, "q": 0.05},
    "model.init_args.learning_rate": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
    "trainer.gradient_clip_val": {"distribution": "log_uniform", "min": -2.0, "max": 1.0},  # exponents
}


def test_every_supported_form_draws_inside_the_files_values(tmp_path):
    sweep = load_sweep(sweep_file(tmp_path, PARAMETERS))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    draws = []
    for _ in range(400):
        trial = study.ask()
        draws.append(suggest(trial, sweep))
        study.tell(trial, 0.0)
    for d in draws:
        assert d["model.init_args.activation"] in ("relu", "tanh")
        assert d["model.init_args.feature_weights"] in ({}, {"met": 2.0})  # dicts survive the JSON round trip
        assert d["model.init_args.beta"] == 0.5
        assert isinstance(d["model.init_args.latent_dim"], int) and 2 <= d["model.init_args.latent_dim"] <= 9
        assert isinstance(d["model.init_args.n_nodes"], int) and 16 <= d["model.init_args.n_nodes"] <= 64
        q = d["data.init_args.train_fraction"]
        assert 0.5 <= q <= 0.7 and abs(q / 0.05 - round(q / 0.05)) < 1e-9
        assert 1e-4 <= d["model.init_args.learning_rate"] <= 1e-2
        assert math.exp(-2) <= d["trainer.gradient_clip_val"] <= math.exp(1)
    assert {d["model.init_args.feature_weights"] == {} for d in draws} == {True, False}
    # the continuous forms follow the W&B distributions (KS against scipy; a log/linear mix-up fails these)
    gamma = [d["model.init_args.gamma"] for d in draws]
    assert stats.kstest(gamma, stats.uniform(1.0, 2.0).cdf).pvalue > 1e-3
    assert stats.kstest(gamma, stats.loguniform(1.0, 3.0).cdf).pvalue < 1e-3
    lr = [d["model.init_args.learning_rate"] for d in draws]
    assert stats.kstest(lr, stats.loguniform(1e-4, 1e-2).cdf).pvalue > 1e-3
    clip = [d["trainer.gradient_clip_val"] for d in draws]  # log_uniform: bounds are natural-log exponents
    assert stats.kstest(np.log(clip), stats.uniform(-2.0, 3.0).cdf).pvalue > 1e-3


def test_args_are_formatted_as_a_wandb_agent_does():
    assert wandb_arg("model.init_args.latent_dim", 16) == "--model.init_args.latent_dim=16"
    weights = wandb_arg("model.init_args.feature_weights", {"met": 2.0})
    assert weights == "--model.init_args.feature_weights={'met': 2.0}"
    assert wandb_arg("model.init_args.learning_rate", 0.0001) == "--model.init_args.learning_rate=0.0001"


def test_shipped_sweep_files_hold_table_1_exactly():
    table1 = {"model.init_args.learning_rate": [0.01, 0.001, 0.0001],
              "data.init_args.batch_size": [1, 16, 64, 256, 512],
              "model.init_args.latent_dim": [8, 16, 32, 64], "model.init_args.n_hidden_layers": [1, 2, 3],
              "model.init_args.n_nodes": [16, 32, 64, 128, 256, 512]}
    betas = [1, 10, 100, 500, 1000, 5000]
    for name, beta_key in (("zgamma_vae_table1", "model.init_args.beta"),
                           ("zgamma_vae_d_table1", "model.init_args.gamma")):
        for suffix, method in (("", "grid"), ("_bayes", "bayes")):
            sweep = load_sweep(REPO / "configs" / "sweeps" / f"{name}{suffix}.yaml")
            assert sweep.method == method and sweep.metric == "val/w1_mean" and sweep.goal == "minimize"
            assert sweep.early_terminate["type"] == "hyperband"
            assert {k: v["values"] for k, v in sweep.parameters.items()} == {**table1, beta_key: betas}
            assert sweep.grid_size() == 3 * 5 * 4 * 3 * 6 * 6
    wh = load_sweep(REPO / "configs" / "sweeps" / "wh1lbb_likelihood.yaml")
    assert wh.metric == "val/elbo" and wh.fit_args == ["--config", "configs/wh1lbb/preselection.yaml"]
    assert {k.split(".")[-1] for k in wh.parameters} == {"learning_rate", "n_nodes", "latent_dim", "batch_size",
                                                          "beta", "prior", "decoder", "activation",
                                                          "feature_weights"}
    density = load_sweep(REPO / "configs" / "sweeps" / "wh1lbb_density.yaml")  # the Wh1Lbb configs' choice
    assert density.metric == "val/elbo" and density.grid_size() == 4
    fit_args = ["--config", "configs/wh1lbb/preselection.yaml", "--trainer.max_epochs=100"]
    assert density.fit_args == [*fit_args, "--model.init_args.decoder=likelihood", "--model.init_args.n_nodes=64"]
    capacity = load_sweep(REPO / "configs" / "sweeps" / "wh1lbb_capacity.yaml")  # and its second stage
    assert capacity.metric == "val/elbo" and capacity.grid_size() == 6 and capacity.fit_args == fit_args


@pytest.mark.parametrize(("change", "message"), [
    ({"method": "hyperopt"}, "method must be one of grid, random, bayes"),
    ({"metrik": {}}, "unknown key 'metrik' (did you mean 'metric'?)"),
    ({"parameters": {"model.init_args.beta": {"distribution": "normal", "mu": 0, "sigma": 1}}}, "unknown key 'mu'"),
    ({"parameters": {"model.init_args.beta": {"distribution": "q_log_uniform_values", "min": 1, "max": 9}}},
     "distribution 'q_log_uniform_values' has no Optuna equivalent"),
    ({"parameters": {"model.init_args.beta": {"distribution": "unifrom", "min": 1, "max": 9}}},
     "unknown distribution 'unifrom' (did you mean 'uniform'?)"),
    ({"parameters": {"latent_dim": {"values": [1]}}}, "parameter names are lit-vae fit keys"),
    ({"command": ["python", "train.py", "${args}"]}, "command must be a list"),
])
def test_bad_sweep_files_name_the_file_and_the_key(tmp_path, change, message):
    raw = {"method": "random", "metric": {"name": "val/loss"}, "parameters": {"model.init_args.beta": {"values": [1]}},
           "command": COMMAND, **change}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_grid_needs_listed_values(tmp_path):
    sweep = load_sweep(sweep_file(tmp_path, {"model.init_args.beta": {"min": 1.0, "max": 2.0}}, method="grid"))
    with pytest.raises(ConfigError, match="method 'grid' needs `values`"):
        sweep.grid()

"""W&B sweep files (the single source of a sweep) read, checked and translated for Optuna.

The same file runs unchanged under `wandb sweep` + `wandb agent`; here it becomes an Optuna sampler,
pruner, direction and search space, and each trial's `--key=value` arguments are formatted exactly as a
W&B agent's `${args}` (`--{name}={value}`, Python's str of the value), so both backends hand `lit-vae fit`
the same strings.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lit_vae.data.manifest import nearest
from lit_vae.errors import ConfigError

METHODS = ("grid", "random", "bayes")
DISTRIBUTIONS = ("categorical", "constant", "int_uniform", "uniform", "q_uniform", "log_uniform_values",
                 "log_uniform")
W_AND_B_ONLY = ("q_log_uniform", "q_log_uniform_values", "inv_log_uniform", "inv_log_uniform_values", "normal",
                "q_normal", "log_normal", "q_log_normal", "beta", "q_beta")
TOP_KEYS = ("name", "description", "method", "metric", "parameters", "early_terminate", "command", "program",
            "run_cap", "project", "entity")
PARAMETER_KEYS = ("value", "values", "distribution", "min", "max", "q", "probabilities")
MACROS = ("${env}", "${interpreter}", "${program}")


@dataclass
class Sweep:
    """A checked sweep file: method, metric and goal, parameters, Hyperband settings, fit arguments."""

    path: Path
    method: str
    metric: str
    goal: str
    parameters: dict[str, dict[str, Any]]
    fit_args: list[str]  # the command's arguments between `fit` and `${args}`
    early_terminate: dict[str, Any] = field(default_factory=dict)

    @property
    def direction(self) -> str:
        return "minimize" if self.goal == "minimize" else "maximize"

    def grid(self) -> dict[str, list]:
        """The grid sampler's search space (every parameter must list its values)."""
        space = {}
        for name, spec in self.parameters.items():
            if "values" not in spec and "value" not in spec:
                raise ConfigError(f"{self.path}: parameters.{name}: method 'grid' needs `values` (or `value`) for "
                                  "every parameter; use method 'random' or 'bayes' for ranges")
            space[name] = [encode(v) for v in spec.get("values", [spec.get("value")])]
        return space

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid().values())


def encode(value: Any) -> Any:
    """Optuna stores only scalars: lists and dicts (e.g. per-feature weights) travel as JSON text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else "json:" + json.dumps(value)


def decode(value: Any) -> Any:
    return json.loads(value[5:]) if isinstance(value, str) and value.startswith("json:") else value


def wandb_arg(name: str, value: Any) -> str:
    """One argument as a W&B agent writes it into `${args}`."""
    return f"--{name}={value}"


def _distribution(where: str, spec: dict) -> str:
    if "values" in spec:
        return "categorical"
    if "value" in spec:
        return "constant"
    name = spec.get("distribution")
    if name is None:  # W&B infers it from the bounds' types
        if "min" not in spec or "max" not in spec:
            raise ConfigError(f"{where}: give `values`, `value`, or `min` and `max`")
        return "int_uniform" if all(isinstance(spec[k], int) for k in ("min", "max")) else "uniform"
    if name in W_AND_B_ONLY:
        raise ConfigError(f"{where}: distribution '{name}' has no Optuna equivalent; use one of "
                          f"{', '.join(DISTRIBUTIONS)} or --backend wandb")
    if name not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: unknown distribution '{name}'{nearest(name, DISTRIBUTIONS)}")
    return name


def suggest(trial, sweep: Sweep) -> dict[str, Any]:
    """The trial's value of every parameter, drawn by Optuna as the W&B distribution says."""
    values = {}
    for name, spec in sweep.parameters.items():
        kind = spec["distribution"]
        if kind == "categorical":
            values[name] = decode(trial.suggest_categorical(name, [encode(v) for v in spec["values"]]))
        elif kind == "constant":
            values[name] = decode(trial.suggest_categorical(name, [encode(spec["value"])]))
        elif kind == "int_uniform":
            values[name] = trial.suggest_int(name, int(spec["min"]), int(spec["max"]))
        elif kind == "uniform":
            values[name] = trial.suggest_float(name, float(spec["min"]), float(spec["max"]))
        elif kind == "q_uniform":
            step = float(spec.get("q", 1))
            values[name] = trial.suggest_float(name, float(spec["min"]), float(spec["max"]), step=step)
        elif kind == "log_uniform_values":
            values[name] = trial.suggest_float(name, float(spec["min"]), float(spec["max"]), log=True)
        else:  # log_uniform: W&B's bounds are natural-log exponents
            values[name] = trial.suggest_float(name, math.exp(spec["min"]), math.exp(spec["max"]), log=True)
    return values


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a W&B sweep file; every problem is one line naming the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such sweep file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a sweep file is a mapping with method, metric, parameters and command")
    for key in raw:
        if key not in TOP_KEYS:
            raise ConfigError(f"{path}: unknown key '{key}'{nearest(key, TOP_KEYS)}")
    method = raw.get("method")
    if method not in METHODS:
        raise ConfigError(f"{path}: method must be one of {', '.join(METHODS)}, got {method!r}")
    metric = raw.get("metric") or {}
    if not isinstance(metric, dict) or "name" not in metric or metric.get("goal", "minimize") not in (
            "minimize", "maximize"):
        raise ConfigError(f"{path}: metric needs a name and goal minimize|maximize, e.g. "
                          "{name: val/w1_mean, goal: minimize}")
    parameters = raw.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise ConfigError(f"{path}: parameters must map dotted CLI keys (model.init_args.latent_dim) to specs")
    checked = {}
    for name, spec in parameters.items():
        where = f"{path}: parameters.{name}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected a mapping such as {{values: [1, 2]}}")
        for key in spec:
            if key not in PARAMETER_KEYS:
                raise ConfigError(f"{where}: unknown key '{key}'{nearest(key, PARAMETER_KEYS)}")
        if not name.startswith(("model.", "data.", "trainer.", "seed_everything")):
            raise ConfigError(f"{where}: parameter names are lit-vae fit keys (model.init_args.X, data.init_args.X, "
                              "trainer.X)")
        if "values" in spec and (not isinstance(spec["values"], list) or not spec["values"]):
            raise ConfigError(f"{where}: values must be a non-empty list")
        checked[name] = {**spec, "distribution": _distribution(where, spec)}
        if "min" in spec and "max" in spec and not spec["min"] < spec["max"]:
            raise ConfigError(f"{where}: min must be below max")
    command = raw.get("command")
    if not isinstance(command, list) or "${args}" not in command or "lit-vae" not in command:
        raise ConfigError(f"{path}: command must be a list such as [${{env}}, lit-vae, fit, --config, "
                          "configs/zgamma/vae.yaml, ${args}]")
    after = command[command.index("lit-vae") + 1:]
    if after[:1] != ["fit"] or after[-1] != "${args}" or any(m in after for m in MACROS):
        raise ConfigError(f"{path}: command must run `lit-vae fit ... ${{args}}` with ${{args}} last")
    early = raw.get("early_terminate") or {}
    if early and early.get("type") != "hyperband":
        raise ConfigError(f"{path}: early_terminate.type must be 'hyperband', got {early.get('type')!r}")
    return Sweep(path=path, method=method, metric=metric["name"], goal=metric.get("goal", "minimize"),
                 parameters=checked, fit_args=[str(a) for a in after[1:-1]], early_terminate=early)

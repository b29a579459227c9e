"""The physics of a manifest as generation and evaluation use it: which columns a model sees, how the
other features follow exactly, the azimuthal reference, and the bounds every event obeys.

A `Physics` is plain data (saved in checkpoints and in generated files' metadata), built once from the
manifest by the DataModule: with `derived_features: exact` the model sees the manifest's basis, with
`model` the training features; with `azimuth: relative` every modelled angle is measured from the
reference angle, which is not modelled but drawn uniformly at generation (the physics is invariant
under a global rotation in phi).
"""

from __future__ import annotations

import ast
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from lit_vae.data.manifest import Manifest
from lit_vae.data.selection import evaluate, evaluate_cut, expression_names, parse_cut, to_python_syntax
from lit_vae.errors import ConfigError


def wrap_angle(x):
    """Angles wrapped into [-pi, pi) (numpy arrays or torch tensors: % is the floored modulo of both)."""
    return (x + math.pi) % (2 * math.pi) - math.pi


def split_clauses(cut: str | None, objects: dict) -> list[str]:
    """The top-level && clauses of a cut, each a cut of its own (so that bounds can be counted one by one)."""
    if not cut:
        return []
    tree = parse_cut(cut, set(objects)).body
    source = to_python_syntax(cut)
    if isinstance(tree, ast.BoolOp) and isinstance(tree.op, ast.And):
        return [ast.get_source_segment(source, v) for v in tree.values]
    return [source]


@dataclass
class Physics:
    """What a generator models and how a full event follows from it; see the module docstring."""

    model_features: list[str]  # the columns the network models, in its order
    outputs: list[str]  # the columns `generate` writes, in order
    kinds: dict[str, str]  # kind of every output and model column
    units: dict[str, str]
    derived: dict[str, str] = field(default_factory=dict)  # name -> expression, in evaluation order
    objects: dict[str, dict[str, str]] = field(default_factory=dict)
    azimuth: str | None = None  # the reference angle, when angles are relative
    bounds: list[str] = field(default_factory=list)  # preselection clauses
    region_cut: str = ""
    cross_section_pb: float = 0.0  # sigma x efficiency of the training background in the region

    @classmethod
    def from_manifest(cls, manifest: Manifest, region: str, features: list[str], derived_features: str,
                      azimuth: str) -> Physics:
        """features: the training features of the `model` setup (the manifest's default ones if empty)."""
        if derived_features not in ("model", "exact") or azimuth not in ("absolute", "relative"):
            raise ConfigError(f"derived_features must be 'model' or 'exact' and azimuth 'absolute' or 'relative', "
                              f"got '{derived_features}' and '{azimuth}'")
        if (derived_features == "exact" or azimuth == "relative") and not manifest.basis:
            raise ConfigError(f"{manifest.path}: derived_features: exact and azimuth: relative need the manifest "
                              "to declare a 'basis' (and 'azimuth')")
        if azimuth == "relative" and not manifest.azimuth:
            raise ConfigError(f"{manifest.path}: azimuth: relative needs the manifest key 'azimuth' "
                              "(the reference angle, e.g. azimuth: l1_phi)")
        modelled = list(manifest.basis) if derived_features == "exact" else list(features)
        reference = manifest.azimuth if azimuth == "relative" else None
        if reference and reference not in modelled:
            raise ConfigError(f"azimuth: relative measures angles from '{reference}', which is not a training "
                              "feature; add it to the features")
        derived = {n: f.expression for n, f in manifest.derived.items()
                   if n not in modelled or derived_features == "exact"}
        outputs = [*features, *[n for n in modelled if n not in features],
                   *[n for n in manifest.derived if n not in features and n not in modelled]]
        names = {*modelled, *outputs}
        return cls(
            model_features=[n for n in modelled if n != reference],
            outputs=outputs,
            kinds={n: manifest.feature(n).kind for n in names},
            units={n: manifest.feature(n).unit or "" for n in names},
            derived=derived, objects=manifest.objects, azimuth=reference,
            bounds=split_clauses(manifest.preselection, manifest.objects), region_cut=manifest.region_cut(region),
        )

    @classmethod
    def from_state(cls, state: dict) -> Physics:
        return cls(**state)

    def state(self) -> dict:
        return asdict(self)

    @property
    def relative_angles(self) -> list[str]:
        """The modelled angles measured from the reference (none when azimuth is absolute)."""
        if not self.azimuth:
            return []
        return [n for n in self.model_features if self.kinds[n] == "angle"]

    def to_model(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Physical columns -> the modelled columns (angles relative to the reference when azimuth is relative)."""
        out = {n: np.asarray(columns[n]) for n in self.model_features}
        for name in self.relative_angles:
            out[name] = wrap_angle(out[name] - columns[self.azimuth])
        return out

    def complete(self, modelled: dict, rng: np.random.Generator | None = None, reference=None) -> dict:
        """Modelled columns -> every output column: the reference angle (drawn uniformly from rng, or given)
        added back, angles wrapped, then each derived feature computed exactly (those whose inputs exist).
        Numpy arrays or torch tensors (float64 either way: the exported generator runs this too)."""
        columns = {n: v.double() if isinstance(v, torch.Tensor) else np.asarray(v, dtype=np.float64)
                   for n, v in modelled.items()}
        if self.azimuth:
            columns[self.azimuth] = reference if reference is not None else \
                rng.uniform(-math.pi, math.pi, len(next(iter(columns.values()))))
            for name in self.relative_angles:
                columns[name] = columns[name] + columns[self.azimuth]
        for name, kind in self.kinds.items():
            if kind == "angle" and name in columns:
                columns[name] = wrap_angle(columns[name])
        for name, expression in self.derived.items():
            if expression_names(expression, self.objects) <= set(columns):
                value = evaluate(expression, columns, self.objects)
                columns[name] = value if isinstance(value, torch.Tensor) else np.asarray(value, dtype=np.float64)
        return columns

    def checks(self, columns: dict) -> dict[str, str]:
        """Every declared bound (a preselection clause, and the region's cut) that reads only these columns."""
        checks = {**{c: c for c in self.bounds}, "region: " + self.region_cut: self.region_cut}
        return {label: cut for label, cut in checks.items()
                if cut and expression_names(cut, self.objects) <= set(columns)}

    def bound_masks(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per declared bound whether each event obeys it."""
        return {label: evaluate_cut(cut, columns, self.objects) for label, cut in self.checks(columns).items()}

    def passes(self, columns: dict):
        """Events that obey every declared bound and the region's cut (numpy, or torch tensors: then a bool
        tensor, as the exported generator computes it)."""
        first = next(iter(columns.values()))
        if not isinstance(first, torch.Tensor):
            return np.logical_and.reduce([np.ones(len(first), dtype=bool), *self.bound_masks(columns).values()])
        accepted = torch.ones_like(first, dtype=torch.bool)
        for cut in self.checks(columns).values():
            accepted = accepted & evaluate(cut, columns, self.objects).to(torch.bool)
        return accepted

    def consistency(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """For every derived feature present in columns: its value recomputed from the others, relative to
        the stored one (recomputed / stored - 1; absolute difference for angles and counts)."""
        out = {}
        for name, expression in self.derived.items():
            if name in columns and expression_names(expression, self.objects) <= set(columns):
                stored = np.asarray(columns[name], dtype=np.float64)
                recomputed = np.asarray(evaluate(expression, columns, self.objects), dtype=np.float64)
                with np.errstate(divide="ignore", invalid="ignore"):
                    out[name] = recomputed - stored if self.kinds.get(name) in ("angle", "count", "real") \
                        else recomputed / stored - 1
        return out

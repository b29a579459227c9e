"""Invertible per-feature preprocessing, fitted on the training part, kept as tensors in checkpoints.

What the encoder sees (and what MSE models reconstruct), by feature kind:
- positive: log1p(x / s), s the training median, then standardised; inverse clamps at 0.
- real: standardised.
- angle: x / pi, in [-1, 1); the inverse wraps back into [-pi, pi).
- count: standardised; the inverse rounds to the nearest non-negative integer.
The likelihood model's targets stay physical (`targets`: x divided by a fixed positive scale).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from lit_vae.data.manifest import KINDS
from lit_vae.errors import DataError

KIND_CODE = {kind: i for i, kind in enumerate(KINDS)}


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation (1 where it is 0) of a float64 column, summed in event order (running sums,
    as numpy sums the columns of a row-major table): the fitted bits do not depend on the table's layout."""
    mean = np.cumsum(values)[-1] / len(values)
    deviation = values - mean
    std = math.sqrt(np.cumsum(deviation * deviation)[-1] / len(values))
    return mean, std if std > 0 else 1.0


class FeatureTransform(nn.Module):
    """Per-feature forward/inverse maps; state in buffers (log scale, mean, std, target scale, kinds)."""

    def __init__(self, kinds: list[str], log_scale=None, mean=None, std=None, target_scale=None):
        super().__init__()
        n = len(kinds)
        for kind in kinds:
            if kind not in KIND_CODE:
                raise DataError(f"unknown feature kind '{kind}'; one of {', '.join(KINDS)}")
        self.register_buffer("kind", torch.tensor([KIND_CODE[k] for k in kinds], dtype=torch.long))
        self.register_buffer("log_scale", torch.as_tensor(log_scale if log_scale is not None else [1.0] * n,
                                                          dtype=torch.float64))
        self.register_buffer("mean", torch.as_tensor(mean if mean is not None else [0.0] * n, dtype=torch.float64))
        self.register_buffer("std", torch.as_tensor(std if std is not None else [1.0] * n, dtype=torch.float64))
        self.register_buffer("target_scale", torch.as_tensor(
            target_scale if target_scale is not None else [1.0] * n, dtype=torch.float64))

    @property
    def kinds(self) -> list[str]:
        return [KINDS[int(c)] for c in self.kind]

    def _is(self, kind: str) -> torch.Tensor:
        return self.kind == KIND_CODE[kind]

    @classmethod
    def fit(cls, x: np.ndarray, kinds: list[str], target_scale: list[float] | None = None) -> FeatureTransform:
        """Fit on the training events x (events, features) in physical units."""
        return cls.fit_encode(x, kinds, target_scale=target_scale)[0]

    @classmethod
    def fit_encode(cls, x: np.ndarray, kinds: list[str], rows: np.ndarray | None = None,
                   target_scale: list[float] | None = None) -> tuple[FeatureTransform, torch.Tensor]:
        """Fit on the training rows of x (events, features; physical units; all rows when rows is None) and
        encode every row: (transform, exactly transform(x)). Works feature by feature on contiguous columns
        (pass x in Fortran order to avoid a copy), staging each value once and skipping maps a kind lacks."""
        transform = cls(kinds, target_scale=target_scale)
        x = np.asfortranarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(kinds):
            raise DataError(f"a table of shape {x.shape} for {len(kinds)} feature kinds: give (events, features)")
        if rows is not None and (np.asarray(rows).dtype != bool or len(rows) != len(x)):
            raise DataError(f"rows must be a boolean mask over the {len(x)} events")
        columns = torch.from_numpy(x).t()  # (features, events), each feature contiguous
        train = torch.arange(len(x)) if rows is None else torch.from_numpy(np.flatnonzero(rows))
        if len(train) == 0:
            raise DataError("no training events to fit the feature transform on")
        staged, negative = torch.empty_like(columns), []
        for j, kind in enumerate(kinds):
            if kind == "positive":
                fit_on = columns[j][train].numpy()
                negative += [j] if (fit_on < 0).any() else []
                transform.log_scale[j] = max(float(np.median(fit_on)), 1e-6)
                torch.clamp(columns[j], min=0, out=staged[j]).div_(transform.log_scale[j]).log1p_()
            elif kind == "angle":
                torch.div(columns[j], math.pi, out=staged[j])
            else:
                staged[j] = columns[j]
            if kind != "angle":
                transform.mean[j], transform.std[j] = _mean_std(staged[j][train].numpy())
                staged[j].sub_(transform.mean[j]).div_(transform.std[j])
        if negative:
            raise DataError(f"features {negative} are declared positive but have negative values; declare them 'real'")
        encoded = torch.empty(columns.shape[::-1], dtype=torch.float32)  # (events, features), row-major
        encoded.t().copy_(staged)
        return transform, encoded

    def _stage(self, x: torch.Tensor) -> torch.Tensor:
        """The kind-specific map before standardisation (elementwise selections: exportable to ONNX)."""
        out = x.to(torch.float64)
        out = torch.where(self._is("positive"), torch.log1p(out.clamp(min=0) / self.log_scale), out)
        return torch.where(self._is("angle"), out / math.pi, out)

    def _normalise(self, staged: torch.Tensor) -> torch.Tensor:
        return ((staged - self.mean) / self.std).to(torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Physical values (events, features) -> network inputs (float32)."""
        return self._normalise(self._stage(x))

    def log_abs_det_jacobian(self, x: torch.Tensor) -> torch.Tensor:
        """log |det dy/dx| of `forward` at the physical values x, per event (the map is elementwise): a density
        of the network inputs times exp of this is a density of the physical values (counts as continuous)."""
        x = x.to(torch.float64)
        positive = torch.where(self._is("positive"), -torch.log(self.log_scale + x.clamp(min=0)), torch.zeros_like(x))
        return (positive - torch.log(self.std) - self._is("angle") * math.log(math.pi)).sum(dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Network outputs -> physical values: positives >= 0, angles in [-pi, pi), counts integers >= 0."""
        s = y.to(torch.float64) * self.std + self.mean
        positive = self.log_scale * torch.expm1(s.clamp(max=50.0))
        angle = torch.remainder(s * math.pi + math.pi, 2 * math.pi) - math.pi
        count = torch.round(s).clamp(min=0)
        out = torch.where(self._is("positive"), positive.clamp(min=0), s)
        out = torch.where(self._is("angle"), angle, out)
        return torch.where(self._is("count"), count, out).to(torch.float32)

    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """Physical targets for likelihood models: x / target_scale, counts untouched; row-major float32 whatever
        x's layout (batches gather rows), divided in float64 and rounded once."""
        scale = torch.where(self._is("count"), torch.ones_like(self.target_scale), self.target_scale)
        divided = x.to(torch.float64) / scale  # in x's layout: contiguous passes, then one layout-changing copy
        return torch.empty(x.shape, dtype=torch.float32, device=x.device).copy_(divided)

    def physical(self, targets: torch.Tensor) -> torch.Tensor:
        """The inverse of `targets`: x = target * target_scale, counts untouched."""
        scale = torch.where(self._is("count"), torch.ones_like(self.target_scale), self.target_scale)
        return (targets.to(torch.float64) * scale).to(torch.float32)

    def state(self) -> dict:
        """Plain-data state (lists of numbers and kind names), e.g. for metadata."""
        return {"kinds": self.kinds, **{k: getattr(self, k).tolist() for k in
                                        ("log_scale", "mean", "std", "target_scale")}}

    @classmethod
    def from_state(cls, state: dict) -> FeatureTransform:
        return cls(state["kinds"], state["log_scale"], state["mean"], state["std"], state["target_scale"])

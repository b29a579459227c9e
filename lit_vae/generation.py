"""Generation, physics first: sample the model (its decoder heads sampled, not averaged), complete every
event from the checkpoint's physics (reference angle drawn uniformly, derived features computed exactly),
keep the events that obey every declared bound and the region's cut (rejection), and weight them so that
the generated sample carries the training region's cross-section.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from lit_vae.data.physics import Physics
from lit_vae.errors import DataError

MIN_ACCEPTANCE = 1e-3  # below this the model does not describe the region: refuse rather than loop


@dataclass
class Tally:
    """Sampled and accepted counts of a generation run."""

    sampled: int = 0
    accepted: int = 0

    @property
    def acceptance(self) -> float:
        return self.accepted / self.sampled if self.sampled else float("nan")


def physics_of(model) -> Physics:
    """The checkpoint's physics, or (for a model trained without a DataModule) the identity on its features."""
    if model.physics:
        return Physics.from_state(model.physics)
    return Physics(model_features=list(model.feature_names), outputs=list(model.feature_names),
                   kinds=dict(zip(model.feature_names, model.feature_kinds, strict=True)),
                   units={n: "" for n in model.feature_names})


@torch.no_grad()
def generate_columns(model, n_events: int, batch_size: int, seed: int, device: str | torch.device = "cpu",
                     tally: Tally | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Batches of accepted events in physical units (dicts of output columns, counts as int32, the rest
    float32), n_events in all; one seed fixes them. Sampling, completion and the cuts run on the model's
    device; each batch crosses to the host once, as two blocks (floats, counts) whose rows are the columns.
    tally, if given, counts sampled and accepted events."""
    physics = physics_of(model)
    tally = tally if tally is not None else Tally()
    generator = torch.Generator(device=device).manual_seed(seed)
    counts = [n for n in physics.outputs if physics.kinds[n] == "count"]
    while tally.accepted < n_events:
        events = model.sample(_next_size(n_events - tally.accepted, batch_size, tally), generator)
        reference = None
        if physics.azimuth:  # uniform in [-pi, pi), from the same generator
            reference = (torch.rand(len(events), generator=generator, device=events.device, dtype=torch.float64)
                         * 2 - 1) * math.pi
        columns = physics.complete(dict(zip(model.feature_names, events.T, strict=True)), reference=reference)
        keep = physics.passes(columns)
        tally.sampled += len(keep)
        if tally.sampled >= 100 * batch_size and tally.acceptance < MIN_ACCEPTANCE:
            raise DataError(f"only {tally.accepted} of {tally.sampled} generated events pass the region's cut and "
                            "the declared bounds: the model does not describe the region; train it longer")
        take = keep.nonzero().flatten()[: n_events - tally.accepted]
        tally.accepted += len(take)
        if len(take):
            yield _to_host(columns, take, [n for n in physics.outputs if n in columns], counts)


def _to_host(columns: dict[str, torch.Tensor], take: torch.Tensor, names: list[str],
             counts: list[str]) -> dict[str, np.ndarray]:
    """The taken events of each named column as numpy, in the names' order: the float32 columns and the
    int32 counts each stacked into one block (rows are columns) that is copied to the host once."""
    out = {}
    for dtype, group in ((torch.float32, [n for n in names if n not in counts]),
                         (torch.int32, [n for n in names if n in counts])):
        if group:
            block = torch.stack([columns[n][take].to(dtype) for n in group])
            if block.is_cuda:  # through page-locked memory (cached by torch): ~50x a pageable copy's pace
                block = torch.empty(block.shape, dtype=dtype, pin_memory=True).copy_(block)
            block = block.cpu().numpy()
            out.update(zip(group, block, strict=True))
    return {n: out[n] for n in names}


def generate_events(checkpoint: str, n: int, batch_size: int = 100_000, device: str = "cpu",
                    seed: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Events from a checkpoint in physical units, batch by batch, without a file (for analyses that use
    them in memory): the same events as `lit-vae generate --ckpt_path checkpoint --seed seed` on that device."""
    from lit_vae.models.base import load_model

    model = load_model(checkpoint, map_location=device).eval()
    yield from generate_columns(model, n, batch_size, seed, torch.device(device))


def _next_size(missing: int, batch_size: int, tally: Tally) -> int:
    """Events to sample next: enough for the missing ones at the acceptance seen so far (+10 %, at least
    1,024), at most batch_size, so that a small request does not sample (and hold) a whole batch."""
    acceptance = max(tally.acceptance if tally.sampled else 1.0, MIN_ACCEPTANCE)
    return min(batch_size, max(1024, int(1.1 * missing / acceptance) + 1))

"""`lit-vae export`: a checkpoint's anomaly score and generator as ONNX graphs that C++ analyses load (ONNX
Runtime, ROOT's TMVA SOFIE), checked against PyTorch with onnxruntime before the command succeeds.

- score.onnx: `features` (events, features; float32, physical units, columns in model.json's order) and,
  for an importance-weighted default score, `iwae_noise` (K, events, latent; standard normal) -> `score` (the
  model's anomaly_score) and every other score of the suite, the input transform inside the graph.
- generator.onnx: `noise` (events, latent; standard normal) and, with relative azimuth, `reference_angle`
  (events; uniform in [-pi, pi)) -> every output column in physical units (counts int32, angles wrapped,
  derived features computed) and `accepted` (the event passes the region's cut and the declared bounds:
  `lit-vae generate` keeps only those). Decoders that sample inside the network (likelihood heads, flow
  decoders) draw their noise with PyTorch's generators, which ONNX has no counterpart for: their generator is
  not exported (model.json says why), their score is. Flow priors export in both graphs.
- model.json: names, kinds and units of the features, input and output names, the model class, manifest
  hash, data split, opset, lit-vae version, and the verification's numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import lit_vae
from lit_vae.data.io import atomic_path
from lit_vae.errors import ConfigError, DataError
from lit_vae.generation import physics_of
from lit_vae.models.base import load_model
from lit_vae.models.components import MSEHead

TOLERANCE = (1e-5, 1e-5)  # |onnx - torch| <= atol + rtol * |torch|, per value
VERIFY_EVENTS = 10_000
MAX_COUNT_FLIPS = 1e-3  # counts may differ by one at a rounding edge in this fraction of events


class ScoreGraph(nn.Module):
    """Physical features (and importance-sampling noise) -> the score suite, transform included."""

    def __init__(self, model, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, features: torch.Tensor, iwae_noise: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        batch = {"x": self.model.transform(features), "target": self.model.transform.targets(features)}
        if iwae_noise is not None:
            batch["iwae_noise"] = iwae_noise
        scores = self.model.score(batch)
        return tuple(scores[name].clone() for name in self.names)  # distinct values: `score` is also `total`


class GeneratorGraph(nn.Module):
    """Standard-normal noise (and the reference angle) -> complete physical events and their acceptance."""

    def __init__(self, model):
        super().__init__()
        self.model, self.physics = model, physics_of(model)
        with torch.no_grad():  # the output columns `generate` writes: those the completion can compute
            columns = self._columns(torch.zeros(2, model.latent_dim), torch.zeros(2, dtype=torch.float64)
                                    if self.physics.azimuth else None)
        self.names = [name for name in self.physics.outputs if name in columns]

    def _columns(self, noise: torch.Tensor, reference_angle: torch.Tensor | None) -> dict[str, torch.Tensor]:
        events = self.model.decoder.sample(self.model.prior.from_noise(noise), self.model.transform)
        modelled = dict(zip(self.model.feature_names, events.unbind(dim=-1), strict=True))
        return self.physics.complete(modelled, reference=reference_angle)

    def forward(self, noise: torch.Tensor, reference_angle: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        columns = self._columns(noise, reference_angle)
        outputs = [columns[name].to(torch.int32 if self.physics.kinds[name] == "count" else torch.float32)
                   for name in self.names]
        return (*outputs, self.physics.passes(columns))


def generator_problem(model) -> str | None:
    """Why a model's generator cannot be exported, or None."""
    if not isinstance(model.decoder, MSEHead):
        return (f"its decoder ({type(model.decoder).__name__}) samples with PyTorch's random generators inside "
                "the network (inverse CDFs, rejection, flows), which ONNX cannot take as inputs; export the score, "
                "or generate with `lit-vae generate` / lit_vae.generate_events")
    return None


def held_out_events(model, checkpoint: str) -> np.ndarray:
    """Physical features of the checkpoint's held-out events (validation background and signals), from its
    recorded manifest, region and split."""
    from lit_vae.data.io import read_region
    from lit_vae.data.manifest import load_manifest
    from lit_vae.data.split import background_train_mask

    split = model.data_split or {}
    if not split.get("manifest") or not Path(split["manifest"]).is_file():
        raise ConfigError(f"{checkpoint}: its manifest {split.get('manifest')!r} is not here; the verification "
                          "scores the checkpoint's held-out events: run export where the data are")
    physics = physics_of(model)
    manifest = load_manifest(split["manifest"])
    names = [*physics.model_features, *([physics.azimuth] if physics.azimuth else [])]
    table = read_region(manifest, split["region"], names)
    train = background_train_mask(table, int(split["split_seed"]), float(split["train_fraction"]))
    modelled = physics.to_model({n: table[n].to_numpy(np.float64) for n in names})
    x = np.column_stack([modelled[n] for n in model.feature_names])[~train]
    return x.astype(np.float32)


def export(checkpoint: str, output: str, what: str = "both", opset: int = 18, events: int = VERIFY_EVENTS) -> dict:
    """Write the graphs and model.json into output and verify them; returns model.json's content."""
    import onnxruntime  # noqa: F401 - the export extra, checked before any work

    model = load_model(checkpoint).eval()
    out = Path(output)
    if not out.parent.is_dir():
        raise ConfigError(f"--output {output}: directory {out.parent} does not exist; create it first")
    problem = generator_problem(model)
    if what == "generator" and problem:
        raise ConfigError(f"{checkpoint}: the generator cannot be exported: {problem}")
    physics = physics_of(model)
    info = {"model_class": type(model).__name__, "lit_vae_version": lit_vae.__version__, "opset": opset,
            "checkpoint": str(checkpoint), "manifest_hash": model.manifest_hash, "data_split": model.data_split,
            "features": [{"name": n, "kind": k, "unit": physics.units.get(n, "")}
                         for n, k in zip(model.feature_names, model.feature_kinds, strict=True)],
            "tolerance": {"atol": TOLERANCE[0], "rtol": TOLERANCE[1]}}
    out.mkdir(exist_ok=True)
    if what in ("score", "both"):
        info["score"] = export_score(model, checkpoint, out / "score.onnx", opset, events)
    if what in ("generator", "both"):
        info["generator"] = ({"exported": False, "why": problem} if problem
                             else export_generator(model, out / "generator.onnx", opset, events))
    with atomic_path(out / "model.json") as tmp:
        tmp.write_text(json.dumps(info, indent=1, default=str))
    return info


def export_score(model, checkpoint: str, path: Path, opset: int, events: int) -> dict:
    x = torch.from_numpy(held_out_events(model, checkpoint))
    with torch.no_grad():
        names = list(model.score(_batch(model, x[:2])))  # `score` first, then the suite
    iwae = "iwae" in names
    noise = torch.randn(model.iwae_samples, len(x), model.latent_dim, generator=torch.Generator().manual_seed(1)) \
        if iwae else None
    with torch.no_grad():
        graph = ScoreGraph(model, names)
        reference = [t.numpy() for t in graph(x, noise)]
    # the events to compare: the 1 % most anomalous by PyTorch's score, and a random rest
    order = np.argsort(-reference[0])
    rng = np.random.default_rng(0)
    rest = rng.choice(order[len(order) // 100:], size=max(0, min(events, len(order)) - len(order) // 100),
                      replace=False)
    rows = np.sort(np.concatenate([order[: min(events, len(order) // 100)], rest]))
    inputs = {"features": x[rows].numpy()}
    args = (torch.from_numpy(inputs["features"][:8]),)
    batch = torch.export.Dim("events")
    shapes = {"features": {0: batch}}
    if iwae:
        inputs["iwae_noise"] = noise[:, rows].contiguous().numpy()
        args += (torch.from_numpy(inputs["iwae_noise"][:, :8]),)
        shapes["iwae_noise"] = {1: batch}
    _onnx_export(graph, args, path, list(inputs), names, shapes, opset)
    results = _compare(path, inputs, {n: r[rows] for n, r in zip(names, reference, strict=True)}, set())
    return {"file": path.name, "inputs": _describe(inputs), "outputs": names, "verified": results,
            "default": model.anomaly_score}


def export_generator(model, path: Path, opset: int, events: int) -> dict:
    graph = GeneratorGraph(model)
    physics = graph.physics
    generator = torch.Generator().manual_seed(2)
    inputs = {"noise": torch.randn(events, model.latent_dim, generator=generator).numpy()}
    if physics.azimuth:
        inputs["reference_angle"] = (torch.rand(events, generator=generator, dtype=torch.float64) * 2 * np.pi
                                     - np.pi).numpy()
    names = [*graph.names, "accepted"]
    with torch.no_grad():
        reference = {n: t.numpy() for n, t in zip(names, graph(*map(torch.from_numpy, inputs.values())),
                                                   strict=True)}
    batch = torch.export.Dim("events")
    args = tuple(torch.from_numpy(v[:8]) for v in inputs.values())
    _onnx_export(graph, args, path, list(inputs), names, {k: {0: batch} for k in inputs}, opset)
    counts = {n for n in graph.names if physics.kinds[n] == "count"} | {"accepted"}
    results = _compare(path, inputs, reference, counts)
    return {"file": path.name, "inputs": _describe(inputs), "outputs": names, "verified": results,
            "note": "keep the events with accepted = 1 (what `lit-vae generate` writes)"}


def _batch(model, x: torch.Tensor, noise: torch.Tensor | None = None) -> dict:
    batch = {"x": model.transform(x), "target": model.transform.targets(x)}
    return {**batch, "iwae_noise": noise} if noise is not None else batch


def _describe(inputs: dict) -> dict:
    """Each input's dtype and shape, the event axis named (iwae_noise: axis 1, the others: axis 0)."""
    return {name: {"dtype": str(v.dtype), "shape": ["events" if i == (1 if name == "iwae_noise" else 0) else s
                                                   for i, s in enumerate(v.shape)]} for name, v in inputs.items()}


def _onnx_export(graph: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
                 shapes: dict, opset: int) -> None:
    import logging
    import warnings

    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)  # torchvision absent
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(graph, args, input_names=inputs, output_names=outputs,  # optimising:
                                        dynamic_shapes=shapes, opset_version=opset, dynamo=True, verbose=False,
                                        optimize=False)  # 4x the export time of a flow, no gain here
        except Exception as err:  # the exporter raises many types
            raise ConfigError(f"{path.name}: PyTorch cannot export this model to ONNX ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200]})") from None
        program.save(str(tmp))


def _compare(path: Path, inputs: dict, reference: dict, exact: set[str]) -> dict:
    """Run the graph with onnxruntime on inputs; refuse (deleting the file) unless every output agrees with
    PyTorch within TOLERANCE (counts and flags: equal, except MAX_COUNT_FLIPS of events off by one). A
    generator's columns are compared on the events both accept (those `generate` writes): the rejected ones
    include kinematics so degenerate that the last bit of exp or cos moves them."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, inputs), strict=True))
    kept = reference["accepted"] & got["accepted"] if "accepted" in reference else slice(None)
    spared = 0.0  # the fraction of events allowed outside the tolerance
    if "accepted" in reference and not kept.any():  # an untrained model may accept nothing: compare all,
        kept, spared = slice(None), MAX_COUNT_FLIPS  # sparing the degenerate events
    report, failures = {}, []
    for name, want in reference.items():
        value = got[name]
        if name not in exact:
            value, want = value[kept], want[kept]
        if name in exact:
            flipped = np.mean(value.astype(np.int64) != want.astype(np.int64))
            far = np.any(np.abs(value.astype(np.int64) - want.astype(np.int64)) > 1)
            report[name] = {"flipped_fraction": float(flipped)}
            if flipped > MAX_COUNT_FLIPS or far:
                failures.append(f"{name}: {flipped:.2%} of events differ")
            continue
        diff = np.abs(value.astype(np.float64) - want.astype(np.float64))
        allowed = TOLERANCE[0] + TOLERANCE[1] * np.abs(want.astype(np.float64))
        outside = float(np.mean(~(diff <= allowed)))
        report[name] = {"max_abs_diff": float(np.max(diff)), "worst_over_tolerance": float(np.max(diff / allowed)),
                        "outside_tolerance": outside}
        if outside > spared or not np.all(np.isfinite(value) == np.isfinite(want)):
            failures.append(f"{name}: max |onnx - torch| = {np.max(diff):.3g} (worst {np.max(diff / allowed):.2f}x "
                            "the tolerance)")
    if failures:
        path.unlink(missing_ok=True)
        raise DataError(f"{path.name} does not reproduce PyTorch on {len(next(iter(inputs.values())))} events: "
                        f"{'; '.join(failures)}; nothing written")
    compared = int(np.sum(kept)) if isinstance(kept, np.ndarray) else len(next(iter(reference.values())))
    return {"events": int(len(next(iter(reference.values())))), "compared_events": compared, "outputs": report}


def run(argv: list[str]) -> None:
    """`lit-vae export ...` (called by lit_vae.command)."""
    parser = argparse.ArgumentParser(prog="lit-vae export", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by `lit-vae fit`")
    parser.add_argument("--output", required=True, help="a directory for score.onnx, generator.onnx, model.json")
    parser.add_argument("--what", choices=("score", "generator", "both"), default="both")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    parser.add_argument("--events", type=int, default=VERIFY_EVENTS, help="events the verification compares")
    args = parser.parse_args(argv)
    try:
        info = export(args.ckpt_path, args.output, args.what, args.opset, args.events)
    except ModuleNotFoundError as err:
        raise ConfigError(f"lit-vae export needs {err.name}: pip install 'lit-vae[export]' (make install does)") \
            from None
    for part in ("score", "generator"):
        if part in info:
            entry = info[part]
            print(f"{part}: " + (f"{args.output}/{entry['file']} verified on {entry['verified']['events']} events"
                                 if entry.get("file") else f"not exported ({entry['why']})"), file=sys.stderr)

"""LightningDataModules: a manifest region -> seeded 60/40 split -> fitted transform -> in-memory batches.

Batches are whole slices of in-memory tensors (no per-row collation), reshuffled every epoch from the
seed. Under DDP (the Trainer runs with `use_distributed_sampler=False`) every rank gets its own training
shard with the same number of batches (unequal counts would hang the gradient all-reduce; up to
world_size - 1 events sit out each epoch, different ones every epoch); validation, test and predict
shards stride over every event, so each is seen exactly once. A batch is a dict:
  x        transformed features (float32), what the encoder sees and MSE models reconstruct
  target   physical values for likelihood models (x / target_scale; counts stay integers)
  weight   event weight normalised to mean 1 over the training set (ones if use_weights is False)
  event_id, sample (index into `sample_names`), label (1 = signal), weight_pb (the file's weight, pb)
                                                                      in test/predict batches
event_id is the uint64 id stored bit for bit in an int64 tensor: `.numpy().view(np.uint64)` recovers it.
Ids are unique within a sample; an event is identified by (sample, event_id), a row by (sample, event_id,
configuration): a truth-tagged event is one row per b-tag configuration, all in the same split part.
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info

from lit_vae.data.io import read_region
from lit_vae.data.manifest import load_manifest
from lit_vae.data.physics import Physics
from lit_vae.data.selection import parse_cut
from lit_vae.data.split import background_subset_mask, background_train_mask
from lit_vae.data.transforms import FeatureTransform
from lit_vae.errors import ConfigError, DataError

MANIFESTS = Path(__file__).resolve().parents[2] / "data_manifests"
DEFAULT_TRAIN_FRACTION = 0.6


class EventBatches:
    """An iterable of dict batches sliced from tensors; shuffled from seed + epoch when shuffle is set. The
    epoch is the trainer's when one is given (a resumed run continues the same batch order), else counted.
    Training batches are resumable mid-epoch: a checkpoint records the batches done (Lightning's stateful
    loader protocol) and the resumed epoch skips them."""

    def __init__(self, tensors: dict[str, torch.Tensor], batch_size: int, *, shuffle: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1, trainer=None):
        self.tensors, self.batch_size, self.shuffle, self.seed = tensors, batch_size, shuffle, seed
        self.rank, self.world_size, self.trainer = rank, world_size, trainer
        self.n = len(next(iter(tensors.values())))
        # Training shards are equal (n // world_size); evaluation shards stride over every event.
        self.per_rank = self.n // world_size if shuffle else len(range(rank, self.n, world_size))
        self.epoch = 0
        self._resume: dict[str, int] = {}

    def __len__(self) -> int:
        return -(-self.per_rank // self.batch_size)

    def state_dict(self) -> dict[str, int]:
        """Where training stands: the trainer's epoch and the batches of it already trained on."""
        if not self.shuffle or self.trainer is None:
            return {}
        return {"epoch": self.trainer.current_epoch,
                "batches_done": self.trainer.fit_loop.epoch_loop.batch_progress.current.completed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = dict(state)

    def __iter__(self):
        skip = 0
        device = next(iter(self.tensors.values())).device  # batches are sliced where the tensors live
        if self.shuffle:
            epoch = self.trainer.current_epoch if self.trainer is not None else self.epoch
            # One process: drawn where the tensors live, no host permutation (0.5 s for 10^7 rows on one core)
            # nor copy per epoch; a seed gives the same order on a given kind of device (a GPU's differs from the
            # CPU's, so a mid-epoch resume continues exactly on the kind it stopped on). Several (DDP): on the
            # CPU, the one permutation every rank shards, wherever each rank keeps its tensors.
            draw_on = device if self.world_size == 1 else torch.device("cpu")
            generator = torch.Generator(draw_on).manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.n, generator=generator, device=draw_on)
            order = order[self.rank * self.per_rank:(self.rank + 1) * self.per_rank].to(device)
            self.epoch += 1
            if self._resume.get("epoch") == epoch:  # a mid-epoch checkpoint: continue after its batches
                skip = self._resume["batches_done"] * self.batch_size
            self._resume = {}
        else:
            order = torch.arange(self.rank, self.n, self.world_size, device=device)
        for start in range(skip, self.per_rank, self.batch_size):
            index = order[start:start + self.batch_size]
            yield {name: values[index] for name, values in self.tensors.items()}


class EventDataModule(L.LightningDataModule):
    """Events of one region of a manifest, split, transformed and batched for training and evaluation.

    Args:
        manifest: path of the manifest YAML.
        region: region name in the manifest.
        features: training features (default: every feature of the manifest, in its order).
        batch_size: events per batch.
        train_fraction: fraction of background events used for training; the rest validates (default 0.6;
            with a checkpoint, the checkpoint's).
        seed: fixes the shuffling, and the split unless split_seed is given (linked to seed_everything).
        split_seed: seed of the train/validation split and of the max_events subset (default: seed; with
            a checkpoint, the checkpoint's).
        max_events: keep at most this many background events (a seeded, order-independent subset; the
            validation part of any subset is never trained on, whatever the subset).
        cache_dir: where the selected tables are cached as parquet (None: no cache).
        use_weights: carry the normalised event weights (else ones).
        nan_policy: 'drop' (and warn) or 'raise' on NaN/inf in a feature.
        min_events: warn when train + validation background has fewer events (the thesis's 10^6).
        target_scale: fixed positive scales dividing the likelihood model's physical targets, by feature.
        derived_features: 'model' (the sources' setup: every training feature is modelled) or 'exact' (the
            model sees the manifest's basis; derived features are computed exactly at generation).
        azimuth: 'absolute' (the sources' setup) or 'relative' (angles measured from the manifest's
            reference angle, which generation draws uniformly).
        device_resident: keep each part's tensors on the accelerator and slice batches there (no host-to-
            device copy per step): 'auto' when the part takes less than a quarter of the free accelerator
            memory, True always, False never. Nothing changes on a CPU.
    """

    def __init__(self, manifest: str, region: str, features: list[str] | None = None, batch_size: int = 256,
                 train_fraction: float | None = None, seed: int = 42, split_seed: int | None = None,
                 max_events: int | None = None,
                 cache_dir: str | None = ".cache/lit-vae", use_weights: bool = True,
                 nan_policy: Literal["drop", "raise"] = "drop", min_events: int = 1_000_000,
                 target_scale: dict[str, float] | None = None,
                 derived_features: Literal["model", "exact"] = "model",
                 azimuth: Literal["absolute", "relative"] = "absolute",
                 device_resident: bool | Literal["auto"] = "auto"):
        super().__init__()
        self.manifest = load_manifest(manifest)
        self.region = region
        self.manifest.region_cut(region)
        requested = list(features) if features else list(self.manifest.features)
        for name in requested:
            self.manifest.feature(name)
        self.physics = Physics.from_manifest(self.manifest, region, requested, derived_features, azimuth)
        self.features = list(self.physics.model_features)  # what the model sees
        reference = [self.physics.azimuth] if self.physics.azimuth else []
        self.read_features = [*self.features, *reference]
        if train_fraction is not None and not 0 < train_fraction < 1:
            raise ConfigError(f"train_fraction must lie in (0, 1), got {train_fraction}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        scales = target_scale or {}
        for name, value in scales.items():
            if name not in self.features or value <= 0:
                raise ConfigError(f"target_scale.{name}: needs a training feature and a positive scale")
        self.target_scales = [float(scales.get(name, 1.0)) for name in self.features]
        self.requested_split = {"split_seed": split_seed, "train_fraction": train_fraction}  # None: not given
        self.batch_size, self.seed = batch_size, seed
        self.split_seed = seed if split_seed is None else split_seed
        self.train_fraction = DEFAULT_TRAIN_FRACTION if train_fraction is None else train_fraction
        self.max_events, self.cache_dir, self.use_weights = max_events, cache_dir, use_weights
        self.nan_policy, self.min_events = nan_policy, min_events
        self.transform: FeatureTransform | None = None
        self.fixed_transform: FeatureTransform | None = None
        self.summary = None
        self._parts: dict[str, dict[str, torch.Tensor]] = {}
        self.device_resident = device_resident
        self._resident: dict[tuple[str, str], dict[str, torch.Tensor]] = {}  # (part, device) -> tensors there

    # What models need, so that the CLI can link it instead of the user repeating it.
    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def feature_kinds(self) -> list[str]:
        return [self.physics.kinds[name] for name in self.features]

    @property
    def sample_names(self) -> list[str]:
        return list(self.manifest.samples)

    def prepare_data(self) -> None:
        """Read (or find cached) the region once, on one process."""
        read_region(self.manifest, self.region, self.read_features, nan_policy=self.nan_policy,
                    cache_dir=self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        if self._parts:
            return
        table = read_region(self.manifest, self.region, self.read_features, nan_policy=self.nan_policy,
                            cache_dir=self.cache_dir)
        sample_index = table["sample"].cat.codes.to_numpy().astype(np.int64)  # categories in manifest order
        ids = table["event_id"].to_numpy(dtype=np.uint64)
        signal = table["is_signal"].to_numpy(dtype=bool)
        train = background_train_mask(table, self.split_seed, self.train_fraction)
        keep = background_subset_mask(table, self.split_seed, self.max_events)
        modelled = self.physics.to_model({name: table[name].to_numpy(dtype=np.float64) for name in self.read_features})
        x = np.empty((len(table), len(self.features)), order="F")  # a new array, feature by feature
        for j, name in enumerate(self.features):
            x[:, j] = modelled[name]
        weight = table["weight"].to_numpy(dtype=np.float64)
        parts = {"train": keep & ~signal & train, "val": keep & ~signal & ~train}
        parts["test"] = parts["val"] | signal
        self.physics.cross_section_pb = float(weight[~signal].sum())
        if not parts["train"].any() or not parts["val"].any():
            raise DataError(f"{self.manifest.path}: region '{self.region}' leaves an empty training or validation "
                            f"part ({int(parts['train'].sum())} / {int(parts['val'].sum())} background events)")
        norm = weight[parts["train"]].mean() if self.use_weights else 1.0
        x_t = torch.from_numpy(x)
        if self.fixed_transform is not None:  # every row encoded once, then sliced per part
            self.transform, encoded = self.fixed_transform, self.fixed_transform(x_t)
        else:
            self.transform, encoded = FeatureTransform.fit_encode(x, self.feature_kinds, parts["train"],
                                                                  self.target_scales)
        targets = self.transform.targets(x_t)
        for part, rows in parts.items():
            index = torch.from_numpy(np.flatnonzero(rows))  # an index gathers faster than a mask
            tensors = {
                "x": encoded.index_select(0, index),
                "target": targets.index_select(0, index),
                "weight": torch.from_numpy(weight[rows] / norm if self.use_weights else np.ones(rows.sum()))
                .to(torch.float32),
            }
            if part == "test":
                tensors["event_id"] = torch.from_numpy(ids[rows].view(np.int64).copy())
                tensors["configuration"] = torch.from_numpy(table["configuration"].to_numpy(np.int64)[rows])
                tensors["sample"] = torch.from_numpy(sample_index[rows])
                tensors["label"] = torch.from_numpy(signal[rows].astype(np.int64))
                tensors["weight_pb"] = torch.from_numpy(weight[rows])
            self._parts[part] = tensors
        self._report(table, sample_index, parts, signal)

    def split(self) -> dict:
        """What defines which events are trained on: the region's cut, the background samples and their
        files, the features and the split's seed and fraction (file names, not paths: a moved checkout
        holds the same split), and the max_events subset (recorded for the evaluation's baselines, not
        compared by adopt_split). The manifest's path is kept for the record, not compared."""
        cut = self.manifest.region_cut(self.region)
        return {"manifest": str(self.manifest.path), "region": self.region,
                "region_cut": ast.unparse(parse_cut(cut, frozenset(self.manifest.objects))) if cut.strip() else "",
                "backgrounds": {name: sorted(Path(f).name for f in sample.files)
                                for name, sample in self.manifest.samples.items() if not sample.is_signal},
                "features": list(self.features), "split_seed": self.split_seed,
                "train_fraction": self.train_fraction, "max_events": self.max_events}

    def adopt_split(self, recorded: dict, checkpoint: str) -> None:
        """Score the held-out part of the checkpoint's split: take its seed and fraction unless they were
        given, refuse a request or a data set that contradicts it (before setup)."""
        recorded = {**recorded, "split_seed": recorded.get("split_seed", recorded.get("seed"))}
        for key, requested in self.requested_split.items():
            if recorded.get(key) is None:
                continue
            if requested is not None and requested != recorded[key]:
                raise ConfigError(f"{checkpoint} was trained with {key} = {recorded[key]}; "
                                  f"--data.init_args.{key} = {requested} would score training events: drop it")
            setattr(self, key, recorded[key])
        mine = self.split()
        for key in ("region_cut", "backgrounds", "features"):
            if key in recorded and recorded[key] != mine[key]:
                raise ConfigError(f"{checkpoint} was trained on another {key.replace('_', ' ')} "
                                  f"({recorded[key]!r}) than {self.manifest.path} region '{self.region}' gives "
                                  f"({mine[key]!r}): use the manifest and region the model was trained with")
        self._parts = {}
        rank_zero_info(f"scoring the held-out part of {checkpoint}'s split: region '{self.region}', "
                       f"split_seed {self.split_seed}, train_fraction {self.train_fraction}")

    def use_transform(self, transform: FeatureTransform) -> None:
        """Transform with a given (e.g. a checkpoint's) transform instead of fitting one; before setup."""
        if [k for k in transform.kinds] != self.feature_kinds:
            raise ConfigError(f"the checkpoint's feature kinds {transform.kinds} do not match the data's "
                              f"{self.feature_kinds}: use the config the model was trained with")
        self.fixed_transform = transform
        self._parts = {}

    def _report(self, table, sample_index, parts, signal) -> None:
        rows = []
        for i, name in enumerate(self.sample_names):
            mine = sample_index == i
            rows.append({"sample": name, "role": "signal" if signal[mine].any() else "background",
                         "events": int(mine.sum()), "train": int((mine & parts["train"]).sum()),
                         "val": int((mine & parts["val"]).sum()),
                         "sigma_x_eff_pb": float(table["weight"][mine].sum())})
        self.summary = rows
        lines = [f"{self.manifest.path.name} region '{self.region}':",
                 f"  {'sample':<22}{'role':<12}{'events':>9}{'train':>9}{'val':>9}{'sigma x eff (pb)':>18}"]
        lines += [f"  {r['sample']:<22}{r['role']:<12}{r['events']:>9}{r['train']:>9}{r['val']:>9}"
                  f"{r['sigma_x_eff_pb']:>18.4g}" for r in rows]
        rank_zero_info("\n".join(lines))
        n_background = int((parts["train"] | parts["val"]).sum())
        if n_background < self.min_events:
            warnings.warn(f"region '{self.region}' has {n_background} background events for training + validation, "
                          f"below min_events = {self.min_events} (the thesis's lower limit); "
                          "`make samples SCALE=k` produces more", stacklevel=2)
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.logger is not None:
            trainer.logger.log_hyperparams({f"data/{r['sample']}/{k}": r[k] for r in rows
                                            for k in ("events", "train", "val")})

    def _loader(self, part: str, shuffle: bool) -> EventBatches:
        if not self._parts:
            self.setup()
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        return EventBatches(self.on_device(part, device), self.batch_size, shuffle=shuffle, seed=self.seed,
                            rank=rank, world_size=world, trainer=trainer)

    def on_device(self, part: str, device: torch.device) -> dict[str, torch.Tensor]:
        """A part's tensors on device when device_resident says so (moved once and kept), else on the CPU."""
        tensors = self._parts[part]
        if device.type == "cpu" or self.device_resident is False:
            return tensors
        if self.device_resident == "auto":
            size = sum(t.numel() * t.element_size() for t in tensors.values())
            free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0
            if size > free // 4:
                return tensors
        key = (part, str(device))
        if key not in self._resident:
            self._resident[key] = {name: t.to(device, non_blocking=True) for name, t in tensors.items()}
        return self._resident[key]

    def train_dataloader(self) -> EventBatches:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> EventBatches:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> EventBatches:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> EventBatches:
        return self._loader("test", shuffle=False)

    def part(self, name: Literal["train", "val", "test"]) -> dict[str, torch.Tensor]:
        """The tensors of one part (after setup)."""
        if not self._parts:
            self.setup()
        return self._parts[name]


class ZGammaDataModule(EventDataModule):
    """The Zgamma window with the paper's 21 features (data_manifests/zgamma.yaml)."""

    def __init__(self, region: str = "window", **kwargs):
        super().__init__(manifest=str(MANIFESTS / "zgamma.yaml"), region=region, **kwargs)


class Wh1LbbDataModule(EventDataModule):
    """One Wh1Lbb region of the thesis (data_manifests/wh1lbb.yaml): preselection, mid or 2-3b."""

    def __init__(self, region: Literal["preselection", "mid", "2-3b"] = "preselection", **kwargs):
        super().__init__(manifest=str(MANIFESTS / "wh1lbb.yaml"), region=region, **kwargs)

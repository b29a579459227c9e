"""EventDataModule and friends: batches, epochs, shards, weights, the test set, the shipped regions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_vae.data import EventDataModule, Wh1LbbDataModule, ZGammaDataModule
from lit_vae.data.datamodule import EventBatches
from lit_vae.errors import ConfigError


@pytest.fixture
def datamodule(wh1lbb_manifest, tmp_path):
    dm = EventDataModule(str(wh1lbb_manifest), "preselection", batch_size=16, cache_dir=str(tmp_path / "cache"),
                         min_events=0, seed=3)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def rows(tensor: torch.Tensor) -> list[tuple]:
    return sorted(map(tuple, tensor.tolist()))


def test_batches_have_the_size_and_cover_every_event_once_per_epoch(datamodule):
    train = datamodule.part("train")
    loader = datamodule.train_dataloader()
    n = len(train["x"])
    epochs = []
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == len(loader) == -(-n // 16)
        assert all(len(b["x"]) == 16 for b in batches[:-1]) and 0 < len(batches[-1]["x"]) <= 16
        seen = torch.cat([b["x"] for b in batches])
        assert rows(seen) == rows(train["x"])  # every training event exactly once
        epochs.append(seen)
    assert not torch.equal(epochs[0], epochs[1])  # reshuffled each epoch


def test_shuffling_is_fixed_by_the_seed():
    tensors = {"x": torch.arange(100.0)[:, None]}
    a = [b["x"] for b in EventBatches(tensors, 10, shuffle=True, seed=5)]
    b = [b["x"] for b in EventBatches(tensors, 10, shuffle=True, seed=5)]
    c = [b["x"] for b in EventBatches(tensors, 10, shuffle=True, seed=6)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_evaluation_shards_cover_every_event_once():
    tensors = {"x": torch.arange(103.0)[:, None]}
    ranks = [EventBatches(tensors, 8, shuffle=False, rank=r, world_size=2) for r in (0, 1)]
    seen = sorted(torch.cat([b["x"] for loader in ranks for b in loader]).flatten().tolist())
    assert seen == list(range(103)) and (len(ranks[0]), len(ranks[1])) == (7, 7)


def test_ddp_shards_are_disjoint_with_equal_batch_counts():
    tensors = {"x": torch.arange(103.0)[:, None]}
    ranks = [EventBatches(tensors, 8, shuffle=True, seed=1, rank=r, world_size=2) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 7  # 51 events each in batches of 8
    seen = [torch.cat([b["x"] for b in loader]).flatten().tolist() for loader in ranks]
    assert len(seen[0]) == len(seen[1]) == 51 and not set(seen[0]) & set(seen[1])


def test_weights_are_normalised_to_mean_one_on_training(datamodule):
    assert datamodule.part("train")["weight"].mean().item() == pytest.approx(1.0, rel=1e-6)
    off = EventDataModule(str(datamodule.manifest.path), "preselection", use_weights=False, cache_dir=None,
                          min_events=0)
    off.setup()
    assert torch.all(off.part("train")["weight"] == 1)


def test_test_set_is_validation_background_plus_all_signal(datamodule):
    test, val = datamodule.part("test"), datamodule.part("val")
    labels = test["label"].numpy()
    names = datamodule.sample_names
    assert (labels == 1).sum() == 40 and (labels == 0).sum() == len(val["x"])
    assert set(test["sample"][labels == 1].tolist()) == {names.index("c1n2_wh")}
    # A row is identified by (sample, event_id, configuration): truth-tagged events are several rows.
    keys = set(zip(test["sample"].tolist(), test["event_id"].numpy().view(np.uint64).tolist(),
                   test["configuration"].tolist(), strict=True))
    assert len(keys) == len(labels)
    batch = next(iter(datamodule.predict_dataloader()))
    assert set(batch) == {"x", "target", "weight", "event_id", "configuration", "sample", "label", "weight_pb"}


def test_transform_is_fitted_on_training_only(datamodule):
    x = datamodule.part("train")["x"]
    torch.testing.assert_close(x[:, 0].mean(), torch.tensor(0.0), atol=1e-5, rtol=0)
    assert abs(datamodule.part("val")["x"][:, 0].mean().item()) > 1e-4
    assert datamodule.n_features == 8 and datamodule.feature_kinds[-2:] == ["count", "count"]
    # physical targets: counts are integers, positives as read
    target = datamodule.part("train")["target"]
    assert torch.equal(target[:, 6], target[:, 6].round()) and torch.all(target[:, 0] > 220)


def test_bad_datamodule_arguments(wh1lbb_manifest):
    with pytest.raises(ConfigError, match="feature 'mett' is not in the manifest \\(did you mean 'met'\\?\\)"):
        EventDataModule(str(wh1lbb_manifest), "preselection", features=["mett"])
    with pytest.raises(ConfigError, match="region '2b' does not exist"):
        EventDataModule(str(wh1lbb_manifest), "2b")
    with pytest.raises(ConfigError, match="train_fraction must lie in"):
        EventDataModule(str(wh1lbb_manifest), "preselection", train_fraction=1.5)


def test_few_events_warn_with_both_numbers(wh1lbb_manifest):
    dm = EventDataModule(str(wh1lbb_manifest), "preselection", cache_dir=None)
    with pytest.warns(UserWarning, match=r"has \d+ background events for training \+ validation, below "
                                         r"min_events = 1000000"):
        dm.setup()


def test_max_events_keeps_a_seeded_subset(wh1lbb_manifest):
    full = EventDataModule(str(wh1lbb_manifest), "preselection", cache_dir=None, min_events=0)
    part = EventDataModule(str(wh1lbb_manifest), "preselection", cache_dir=None, min_events=0, max_events=30)
    full.setup(), part.setup()
    n_bkg = lambda dm: len(dm.part("train")["x"]) + len(dm.part("val")["x"])  # noqa: E731
    assert n_bkg(part) == 30 < n_bkg(full)
    assert (part.part("test")["label"] == 1).sum() == 40  # signals are never subsetted


def test_shipped_zgamma_split_is_60_40(tmp_path):
    dm = ZGammaDataModule(cache_dir=str(tmp_path), min_events=0, seed=42)
    dm.setup()
    n_train, n_val = len(dm.part("train")["x"]), len(dm.part("val")["x"])
    assert n_train / (n_train + n_val) == pytest.approx(0.6, abs=0.01)
    assert dm.n_features == 21
    assert {r["sample"]: r["role"] for r in dm.summary} == {"zgamma": "background", "hzg150": "signal"}


def test_shipped_wh1lbb_regions_nest(tmp_path):
    counts = {}
    for region in ("preselection", "mid", "2-3b"):
        dm = Wh1LbbDataModule(region=region, cache_dir=str(tmp_path), min_events=0)
        dm.setup()
        counts[region] = {r["sample"]: r["events"] for r in dm.summary}
    for sample in counts["preselection"]:
        assert counts["preselection"][sample] >= counts["mid"][sample] >= counts["2-3b"][sample] > 0


def test_the_rows_of_a_truth_tagged_event_stay_in_one_part(datamodule, wh1lbb_manifest):
    """W + jets is truth-tagged: several rows (tag configurations) per event. Every row is read, with its
    configuration, and all rows of an event fall in the same part (the split hashes the event id)."""
    from lit_vae.data.io import read_region
    from lit_vae.data.split import background_train_mask

    table = read_region(datamodule.manifest, "preselection", list(datamodule.features), cache_dir=None)
    wjets = table[table["sample"] == "wjets"]
    assert wjets.duplicated("event_id").any() and not wjets.duplicated(["event_id", "configuration"]).any()
    assert (table.loc[table["sample"] != "wjets", "configuration"] == 0).all()
    train = background_train_mask(table, datamodule.split_seed, datamodule.train_fraction)
    parts = table.assign(train=train).groupby(["sample", "event_id"], observed=True)["train"].nunique()
    assert (parts == 1).all()

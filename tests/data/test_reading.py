"""Reading a manifest region: counts against plain numpy, chunk independence, the cache, and bad input."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import yaml

from lit_vae.data.io import read_region, read_root, read_root_metadata, write_root
from lit_vae.data.manifest import load_manifest
from lit_vae.errors import ConfigError, DataError

FEATURES = ["met", "mt", "mbb", "mct2", "mlb1", "lep1Pt", "njet30", "nBjet30_MV2c10"]


def numpy_region(ev: dict, region: str) -> np.ndarray:
    """The thesis regions written by hand in numpy, independent of the cut parser."""
    pre = ((ev["lep1Pt"] > 27) & (ev["njet30"] >= 2) & (ev["njet30"] <= 3) & (ev["met"] > 220) & (ev["mt"] > 50)
           & (ev["nBjet30_MV2c10"] <= 3))
    mid = (ev["mbb"] > 100) & (ev["mbb"] < 140) & (ev["mct2"] > 100)
    return {"preselection": pre & (ev["nBjet30_MV2c10"] >= 1), "mid": pre & mid & (ev["nBjet30_MV2c10"] >= 1),
            "2-3b": pre & mid & (ev["nBjet30_MV2c10"] >= 2)}[region]


@pytest.mark.parametrize("region", ["preselection", "mid", "2-3b"])
def test_region_counts_equal_plain_numpy(wh1lbb_manifest, region):
    manifest = load_manifest(wh1lbb_manifest)
    try:
        table = read_region(manifest, region, FEATURES, cache_dir=None)
    except DataError as err:  # a small sample may have no event in the tightest region: then numpy agrees
        assert "selects no events" in str(err)
        sample = str(err).split("sample '")[1].split("'")[0]
        assert numpy_region(read_root(manifest.samples[sample].files[0]), region).sum() == 0
        return
    for name, sample in manifest.samples.items():
        ev = read_root(sample.files[0])
        mask = numpy_region(ev, region)
        mine = table[table["sample"] == name]
        assert len(mine) == mask.sum()
        np.testing.assert_array_equal(mine["event_id"].to_numpy(), ev["event_number"][mask])
        np.testing.assert_allclose(mine["weight"].to_numpy(), ev["weight"][mask])
        assert mine["is_signal"].all() == sample.is_signal


def test_reading_is_independent_of_chunking(wh1lbb_manifest):
    manifest = load_manifest(wh1lbb_manifest)
    one = read_region(manifest, "preselection", FEATURES, cache_dir=None, step_size=7)
    two = read_region(manifest, "preselection", FEATURES, cache_dir=None)
    pd.testing.assert_frame_equal(one, two)


def test_cache_hit_skips_root_and_a_changed_manifest_misses(wh1lbb_manifest, tmp_path):
    cache = tmp_path / "cache"
    first = read_region(load_manifest(wh1lbb_manifest), "preselection", FEATURES, cache_dir=cache)
    assert len(list(cache.glob("*.parquet"))) == 1
    manifest = load_manifest(wh1lbb_manifest)
    for sample in manifest.samples.values():  # zero the ROOT files, same size and mtime: only a hit can read
        for file in sample.files:
            stat = file.stat()
            file.write_bytes(bytes(stat.st_size))
            os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    pd.testing.assert_frame_equal(read_region(manifest, "preselection", FEATURES, cache_dir=cache), first)
    wh1lbb_manifest.write_text(wh1lbb_manifest.read_text() + "# a changed manifest\n")
    with pytest.raises(DataError, match="cannot be .*truncated"):  # a miss reads the (now zeroed) files
        read_region(load_manifest(wh1lbb_manifest), "preselection", FEATURES, cache_dir=cache)
    assert len(list(cache.glob("*.parquet"))) == 1


def _read_into(manifest_path, cache, queue) -> None:
    table = read_region(load_manifest(manifest_path), "preselection", FEATURES, cache_dir=cache)
    queue.put(table.to_json())


def test_processes_sharing_a_cache_never_see_a_half_written_entry(wh1lbb_manifest, tmp_path):
    """Four processes read one region into one empty cache at once: each gets the full table, one entry
    remains and no temporary file is left behind."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    cache, queue = tmp_path / "cache", context.Queue()
    workers = [context.Process(target=_read_into, args=(wh1lbb_manifest, cache, queue)) for _ in range(4)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    expected = read_region(load_manifest(wh1lbb_manifest), "preselection", FEATURES, cache_dir=None).to_json()
    assert results == [expected] * 4
    assert [p.name for p in cache.iterdir()] == [next(cache.glob("*.parquet")).name]
    assert read_region(load_manifest(wh1lbb_manifest), "preselection", FEATURES, cache_dir=cache).to_json() == expected


def edit(path, change) -> None:
    manifest = yaml.safe_load(path.read_text())
    change(manifest)
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))


@pytest.mark.parametrize("change, error, message", [
    (lambda m: m.update(sampels={}), ConfigError, "unknown key 'sampels' (did you mean 'samples'?)"),
    (lambda m: m["samples"]["ttbar"].update(wieght="weight"), ConfigError,
     "samples.ttbar: unknown key 'wieght' (did you mean 'weight'?)"),
    (lambda m: m["samples"]["ttbar"].update(role="bkg"), ConfigError, "role: 'bkg' is not one of background, signal"),
    (lambda m: m["features"].update(met={"kind": "positiv"}), ConfigError,
     "features.met.kind: 'positiv' is not one of positive, real, angle, count (did you mean 'positive'?)"),
    (lambda m: m["samples"]["ttbar"].update(files="ttbar.root"), ConfigError, "key 'files' must be a list"),
    (lambda m: m["regions"].update(bad="met > 220 && __import__('os').system('touch pwned')"), ConfigError,
     "regions.bad: expression"),
])
def test_bad_manifests_name_the_key(wh1lbb_manifest, change, error, message):
    edit(wh1lbb_manifest, change)
    with pytest.raises(error) as err:
        load_manifest(wh1lbb_manifest)
    assert message in str(err.value) and str(wh1lbb_manifest) in str(err.value)
    assert not (wh1lbb_manifest.parent / "pwned").exists()


def test_missing_data_file_is_reported_when_data_are_read(wh1lbb_manifest, tmp_path):
    edit(wh1lbb_manifest, lambda m: m["samples"]["ttbar"].update(files=["nope_*.root"]))
    manifest = load_manifest(wh1lbb_manifest)  # a model can still be built from it
    with pytest.raises(DataError, match="samples.ttbar.files: no file matches 'nope_\\*.root'"):
        read_region(manifest, "preselection", FEATURES, cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_missing_manifest_and_unknown_region(wh1lbb_manifest, tmp_path):
    with pytest.raises(ConfigError, match="manifest .*nope.yaml does not exist"):
        load_manifest(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="region 'midd' does not exist \\(did you mean 'mid'\\?\\); "
                                          "valid regions: preselection, mid, 2-3b"):
        read_region(load_manifest(wh1lbb_manifest), "midd", FEATURES, cache_dir=None)


def test_missing_branch_names_the_nearest(wh1lbb_manifest, tmp_path):
    edit(wh1lbb_manifest, lambda m: m["features"].update(lep1pt={"kind": "positive"}))
    with pytest.raises(DataError, match="ttbar.root: no branch 'lep1pt' \\(did you mean 'lep1Pt'\\?\\)"):
        read_region(load_manifest(wh1lbb_manifest), "preselection", [*FEATURES, "lep1pt"], cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_missing_tree(wh1lbb_manifest):
    edit(wh1lbb_manifest, lambda m: m["samples"]["ttbar"].update(tree="nominal"))
    with pytest.raises(DataError, match="ttbar.root: no tree 'nominal'"):
        read_region(load_manifest(wh1lbb_manifest), "preselection", FEATURES, cache_dir=None)


def test_truncated_root_file(wh1lbb_manifest, tmp_path):
    target = tmp_path / "ttbar.root"
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="ttbar.root: cannot be .*truncated"):
        read_region(load_manifest(wh1lbb_manifest), "preselection", FEATURES, cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_a_region_selecting_nothing_names_region_and_sample(wh1lbb_manifest, tmp_path):
    edit(wh1lbb_manifest, lambda m: m["regions"].update(empty="met > 1e9"))
    with pytest.raises(DataError, match="region 'empty' selects no events of sample 'ttbar'"):
        read_region(load_manifest(wh1lbb_manifest), "empty", FEATURES, cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_non_finite_features_are_dropped_with_a_warning_or_refused(wh1lbb_manifest, tmp_path):
    path = tmp_path / "ttbar.root"
    ev, meta = read_root(path), read_root_metadata(path)
    ev["mbb"][:3] = np.nan
    ev["mct2"][5] = np.inf
    write_root(path, ev, meta)
    manifest = load_manifest(wh1lbb_manifest)
    with pytest.warns(UserWarning, match=r"sample 'ttbar': non-finite values in \{'mbb': 3, 'mct2': 1\}.*dropped 4"):
        table = read_region(manifest, "preselection", FEATURES, cache_dir=None)
    assert (table["sample"] == "ttbar").sum() == numpy_region(ev, "preselection").sum() - 4
    with pytest.raises(DataError, match="non-finite values in .*nan_policy='drop'"):
        read_region(manifest, "preselection", FEATURES, cache_dir=None, nan_policy="raise")


def test_a_non_finite_weight_is_refused_naming_file_sample_and_branch(wh1lbb_manifest, tmp_path):
    path = tmp_path / "wjets.root"
    ev, meta = read_root(path), read_root_metadata(path)
    ev["weight"][np.flatnonzero(numpy_region(ev, "preselection"))[0]] = np.inf
    write_root(path, ev, meta)
    with pytest.raises(DataError, match=r"wjets.root: 1 selected events of sample 'wjets' have a non-finite "
                                        r"weight \(branch 'weight'\)"):
        read_region(load_manifest(wh1lbb_manifest), "preselection", FEATURES, cache_dir=None)


def test_synthesised_event_ids_are_unique_across_the_files_of_a_sample(wh1lbb_manifest, tmp_path):
    import shutil

    shutil.copy(tmp_path / "ttbar.root", tmp_path / "ttbar_more.root")
    edit(wh1lbb_manifest, lambda m: [m.pop("event_id"),
                                     m["samples"]["ttbar"].update(files=["ttbar.root", "ttbar_more.root"])])
    table = read_region(load_manifest(wh1lbb_manifest), "preselection", FEATURES, cache_dir=None)
    ids = table.loc[table["sample"] == "ttbar", "event_id"]
    assert len(ids) == 2 * numpy_region(read_root(tmp_path / "ttbar.root"), "preselection").sum()
    assert ids.is_unique


def test_parquet_inputs_read_like_root(wh1lbb_manifest, tmp_path):
    from lit_vae.data.io import write_parquet

    root_table = read_region(load_manifest(wh1lbb_manifest), "preselection", FEATURES, cache_dir=None)
    for name in ("ttbar", "wjets", "c1n2_wh"):
        write_parquet(tmp_path / f"{name}.parquet", read_root(tmp_path / f"{name}.root"), {})
    edit(wh1lbb_manifest, lambda m: [s.update(files=[s["files"][0].replace(".root", ".parquet")])
                                     for s in m["samples"].values()])
    parquet_table = read_region(load_manifest(wh1lbb_manifest), "preselection", FEATURES, cache_dir=None)
    pd.testing.assert_frame_equal(root_table, parquet_table)


def test_real_manifests_load():
    from tests.paths import REPO

    for name in ("zgamma.yaml", "wh1lbb.yaml"):
        manifest = load_manifest(REPO / "data_manifests" / name)
        assert manifest.samples and manifest.features and manifest.regions

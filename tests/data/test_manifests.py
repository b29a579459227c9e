"""data_manifests/*.yaml parse, reference existing files and branches, and declare kinds the data obey.

The full schema and cut evaluation come with the data layer; here the manifests are checked against the
shipped files so that they stay true to them.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import uproot
import yaml

from lit_vae.data.io import read_root_metadata
from lit_vae.mc.analyses import ONE_LEPTON_FEATURES, ZGAMMA_FEATURES

from ..paths import REPO

MANIFESTS = {"zgamma.yaml": ZGAMMA_FEATURES, "wh1lbb.yaml": ONE_LEPTON_FEATURES}
KINDS = {"positive", "real", "angle", "count"}
CUT_WORDS = {"and", "or", "not"}


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "data_manifests" / name).read_text())


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_manifest_matches_the_files(name):
    manifest = load(name)
    physics = {"auxiliary", "objects", "basis", "derived", "azimuth", "preselection"}
    assert set(manifest) - physics == {"tree", "event_id", "samples", "features", "regions"}
    assert tuple(manifest["features"]) == MANIFESTS[name]
    assert {f["kind"] for f in manifest["features"].values()} <= KINDS
    cut_branches = {w for cut in manifest["regions"].values()
                    for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", cut)} - CUT_WORDS
    roles = set()
    for sample, spec in manifest["samples"].items():
        assert set(spec) == {"files", "role", "weight", "cross_section_pb"}, sample
        roles.add(spec["role"])
        for file in spec["files"]:
            path = (REPO / "data_manifests" / file).resolve()
            assert path.exists(), path
            with uproot.open(path) as f:
                branches = set(f[manifest["tree"]].keys())
            needed = {*manifest["features"], *cut_branches, spec["weight"], manifest["event_id"]}
            assert needed <= branches, needed - branches
            # The cross-section written in the manifest is the one the file was produced with.
            assert spec["cross_section_pb"] == pytest.approx(read_root_metadata(path)["sigma_pb"], rel=1e-3)
    assert roles == {"background", "signal"}


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_declared_kinds_hold_on_the_data(name):
    manifest = load(name)
    for spec in manifest["samples"].values():
        path = REPO / "data_manifests" / spec["files"][0]
        with uproot.open(path) as f:
            data = f[manifest["tree"]].arrays(list(manifest["features"]), library="np")
        for feature, info in manifest["features"].items():
            values = data[feature]
            if info["kind"] == "positive":
                assert np.all(values >= 0), feature
            elif info["kind"] == "angle":
                assert np.all(np.abs(values) <= np.pi + 1e-6), feature
            elif info["kind"] == "count":
                assert values.dtype.kind == "i" and np.all(values >= 0), feature


def test_wh1lbb_regions_follow_the_thesis_tables():
    regions = load("wh1lbb.yaml")["regions"]
    assert list(regions) == ["preselection", "mid", "2-3b"]
    assert "100 < mbb < 140" in regions["mid"] and "mct2 > 100" in regions["mid"]
    assert "nBjet30_MV2c10 >= 2" in regions["2-3b"] and "nBjet30_MV2c10 >= 1" in regions["mid"]
    for cut in regions.values():
        assert "met > 220" in cut and "mt > 50" in cut and "njet30 >= 2 && njet30 <= 3" in cut
    assert load("zgamma.yaml")["regions"] == {"window": "132 < m_llg < 168"}

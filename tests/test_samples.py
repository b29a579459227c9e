"""The shipped sample in data/: schema, sizes, selections, no NaN, made by the Makefile's commands."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from lit_vae.data.io import read_root, read_root_metadata
from lit_vae.mc.__main__ import parse_args
from lit_vae.mc.analyses import ONE_LEPTON_EXTRA, ONE_LEPTON_FEATURES, ZGAMMA_EXTRA, ZGAMMA_FEATURES

from .paths import DATA, REPO

MINIMUM_EVENTS = {
    "zgamma_bkg.root": 100_000,
    "zgamma_test.root": 25_000,
    "hzg150_sig.root": 20_000,
    "ttbar_1l.root": 80_000,
    "wjets_1l.root": 80_000,
    "c1n2_wh_500_100.root": 10_000,
    "c1n2_wh_300_75.root": 10_000,
}
ZGAMMA_FILES = ("zgamma_bkg.root", "zgamma_test.root", "hzg150_sig.root")


def makefile_commands() -> dict[str, list[str]]:
    """The `make samples` command line of each file it writes (file name -> arguments), with SCALE = 1."""
    commands = {}
    for line in (REPO / "Makefile").read_text().splitlines():
        if line.startswith("\t$(MC) "):
            args = shlex.split(re.sub(r"\$\(call N,(\d+)\)", r"\1", line.removeprefix("\t$(MC) ")))
            args = [a.replace("$(JOBS)", "2") for a in args]
            commands[Path(args[args.index("--out") + 1]).name] = args
    return commands


def runs_of(name: str) -> list[str]:
    """The runs a file is made of: itself, or the samples its `merge` line joins."""
    args = makefile_commands()[name]
    return [Path(a).name for a in args[1:args.index("--out")]] if args[0] == "merge" else [name]


def test_makefile_makes_every_shipped_file():
    merged = {run for name in makefile_commands() for run in runs_of(name) if run != name}
    assert set(makefile_commands()) - merged == set(MINIMUM_EVENTS)
    assert sorted(p.name for p in DATA.glob("*.root")) == sorted(MINIMUM_EVENTS)


def test_shipped_sample_is_small():
    assert sum(p.stat().st_size for p in DATA.glob("*.root")) < 30 * 2**20


@pytest.mark.parametrize("name", sorted(MINIMUM_EVENTS))
def test_file_was_made_by_its_makefile_commands(name):
    metadata = read_root_metadata(DATA / name)
    runs = {s["file"]: s["request"] for s in metadata["samples"]} if "samples" in metadata \
        else {name: metadata["request"]}
    assert sorted(runs) == sorted(runs_of(name))
    for run, request in runs.items():
        args = parse_args(makefile_commands()[run])
        for key in ("process", "events", "seed", "fast", "truth_tag", "mass", "mass_c1n2", "mass_lsp", "batch_size"):
            assert request[key] == getattr(args, key), (run, key)
        if metadata["truth_tagging"]:  # the thinning of its truth-tag rows
            assert request["tag_floor"] == args.tag_floor
        assert request.get("veto", True) is True and not request["extra_settings"]  # files older than the option


@pytest.mark.parametrize("name", sorted(MINIMUM_EVENTS))
def test_schema_size_and_finite_features(name):
    ev = read_root(DATA / name)
    meta = read_root_metadata(DATA / name)
    zgamma = name in ZGAMMA_FILES
    features = ZGAMMA_FEATURES if zgamma else ONE_LEPTON_FEATURES
    extra = ZGAMMA_EXTRA if zgamma else ONE_LEPTON_EXTRA
    truth_tagged = ("tag_config",) if meta["truth_tagging"] else ()
    assert set(ev) == {*features, *extra, *truth_tagged, "event_number", "weight"}
    assert len(np.unique(ev["event_number"])) == meta["events_selected"] >= MINIMUM_EVENTS[name]
    assert len(ev["weight"]) == meta.get("rows", meta["events_selected"])
    for feature in features:
        assert np.all(np.isfinite(ev[feature])), feature
    assert np.all(ev["weight"] > 0)
    rows = np.stack([ev["event_number"], ev.get("tag_config", np.zeros(len(ev["weight"]))).astype(np.uint64)], axis=1)
    assert ev["event_number"].dtype == np.uint64 and len(np.unique(rows, axis=0)) == len(rows)  # rows unique
    assert float(ev["weight"].sum()) == pytest.approx(meta["sum_weights_pb"], rel=1e-9)


@pytest.mark.parametrize("name", ZGAMMA_FILES)
def test_zgamma_selection(name):
    ev = read_root(DATA / name)
    assert np.all((ev["m_llg"] > 132) & (ev["m_llg"] < 168) & (ev["l1_pt"] > 20))
    assert np.all(ev["l1_pt"] >= ev["l2_pt"]) and np.all(ev["n_cjets"] <= ev["n_jets"])
    assert np.all((np.abs(ev["l1_eta"]) < 2.5) & (np.abs(ev["l2_eta"]) < 2.5) & (np.abs(ev["ph_eta"]) < 2.37))
    assert 88 <= np.median(ev["m_ll"]) <= 94


@pytest.mark.parametrize("name", sorted(set(MINIMUM_EVENTS) - set(ZGAMMA_FILES)))
def test_one_lepton_preselection(name):
    ev = read_root(DATA / name)
    assert np.all((ev["met"] > 220) & (ev["mt"] > 50) & (ev["lep1Pt"] > 27))
    assert np.all((ev["njet30"] >= 2) & (ev["njet30"] <= 3))
    assert np.all((ev["nBjet30_MV2c10"] >= 1) & (ev["nBjet30_MV2c10"] <= 3))
    assert ev["njet30"].dtype.kind == "i" and ev["nBjet30_MV2c10"].dtype.kind == "i"

"""The Monte Carlo producer end to end: reproducibility, physics sanity, selections, metadata, files."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import stats

from lit_vae.mc.analyses import ONE_LEPTON_EXTRA, ONE_LEPTON_FEATURES, ZGAMMA_EXTRA, ZGAMMA_FEATURES

ZGAMMA_COLUMNS = {*ZGAMMA_FEATURES, *ZGAMMA_EXTRA, "event_number", "weight"}
ONE_LEPTON_COLUMNS = {*ONE_LEPTON_FEATURES, *ONE_LEPTON_EXTRA, "event_number", "weight"}


def test_same_seed_gives_identical_arrays_whatever_the_jobs(produce_sample):
    one, _, _ = produce_sample("zgamma", 120, seed=11, chunk_events=60, jobs=1)
    two, _, _ = produce_sample("zgamma", 120, seed=11, chunk_events=60, jobs=2)
    assert one.keys() == two.keys()
    for name in one:
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)


def test_parts_of_an_array_job_merge_into_the_single_process_file(produce_sample, tmp_path):
    """`--chunk 0/2` and `--chunk 1/2` (chunks 0, 2 and chunk 1 of three), merged: the same columns and
    weights as one process; parts of another request, a part twice or a missing part are refused."""
    from lit_vae.data.io import read_root, read_root_metadata
    from lit_vae.mc.__main__ import main as mc

    single, metadata, _ = produce_sample("zgamma", 120, seed=11, chunk_events=40)
    parts = [str(tmp_path / f"part{i}.root") for i in range(2)]
    for i, part in enumerate(parts):
        assert mc(["zgamma", "--events", "120", "--seed", "11", "--chunk-events", "40", "--chunk", f"{i}/2",
                   "--out", part]) == 0
    merged = tmp_path / "merged.root"
    assert mc(["merge", *parts, "--out", str(merged)]) == 0
    columns = read_root(merged)
    assert columns.keys() == single.keys()
    for name in single:
        np.testing.assert_array_equal(columns[name], single[name], err_msg=name)
    merged_metadata = read_root_metadata(merged)
    for key in ("sigma_pb", "sigma_err_pb", "events_generated", "events_selected", "sum_weights_pb", "chunks"):
        assert merged_metadata[key] == metadata[key], key
    assert mc(["merge", parts[0], parts[0], "--out", str(tmp_path / "twice.root")]) == 2
    assert mc(["merge", parts[0], "--out", str(tmp_path / "half.root")]) == 2
    assert mc(["merge", parts[0], parts[1], str(produce_sample("zgamma", 120, seed=11, chunk_events=40)[2]),
               "--out", str(tmp_path / "mixed.root")]) == 2
    assert not any((tmp_path / f"{name}.root").exists() for name in ("twice", "half", "mixed"))


def test_samples_of_different_seeds_merge_into_one_weighted_sample(produce_sample, tmp_path, capsys):
    """Finished samples with seeds 11 and 12, merged in either order: every event once, sigma the mean of
    theirs weighted by generated events, each file's weights scaled by (sigma / sigma_i)(generated_i /
    generated); one sample merges into itself, and a merged sample merges again as its runs would; the same
    seed twice or another process is refused."""
    from lit_vae.data.io import read_root, read_root_metadata
    from lit_vae.mc.__main__ import main as mc

    samples = [produce_sample("zgamma", 120, seed=seed, chunk_events=60, jobs=1) for seed in (11, 12)]
    (a, meta_a, path_a), (b, meta_b, path_b) = samples
    merged = [tmp_path / "ab.root", tmp_path / "ba.root"]
    assert mc(["merge", str(path_a), str(path_b), "--out", str(merged[0])]) == 0
    assert mc(["merge", str(path_b), str(path_a), "--out", str(merged[1])]) == 0
    generated = meta_a["events_generated"] + meta_b["events_generated"]
    sigma = (meta_a["sigma_pb"] * meta_a["events_generated"] + meta_b["sigma_pb"] * meta_b["events_generated"]) \
        / generated
    columns, metadata = read_root(merged[0]), read_root_metadata(merged[0])
    for name, values in read_root(merged[1]).items():
        np.testing.assert_array_equal(values, columns[name], err_msg=name)
    np.testing.assert_array_equal(columns["event_number"], np.concatenate([a["event_number"], b["event_number"]]))
    np.testing.assert_allclose(columns["weight"], np.concatenate([
        part["weight"] * sigma / meta["sigma_pb"] * meta["events_generated"] / generated
        for part, meta in ((a, meta_a), (b, meta_b))]), rtol=1e-12)
    assert metadata["sigma_pb"] == pytest.approx(sigma, rel=1e-12)
    assert metadata["events_generated"] == generated and metadata["events_selected"] == 240
    assert metadata["sum_weights_pb"] == pytest.approx(columns["weight"].sum(), rel=1e-12)
    assert [s["request"]["seed"] for s in metadata["samples"]] == [11, 12]
    capsys.readouterr()
    assert mc(["merge", str(path_a), "--out", str(tmp_path / "one.root")]) == 0
    np.testing.assert_allclose(read_root(tmp_path / "one.root")["weight"], a["weight"], rtol=1e-12)
    assert mc(["merge", str(tmp_path / "one.root"), str(path_b), "--out", str(tmp_path / "again.root")]) == 0
    np.testing.assert_allclose(read_root(tmp_path / "again.root")["weight"], columns["weight"], rtol=1e-12)
    assert read_root_metadata(tmp_path / "again.root")["samples"] == metadata["samples"]

    copy = tmp_path / "copy.root"
    copy.write_bytes(path_a.read_bytes())
    hzg = produce_sample("hzg", 200, mass=150.0)[2]
    for inputs, message in (([path_a, copy], "the same event ids occur in two samples"),
                            ([path_a, path_a], "a sample is given twice"),
                            ([path_a, hzg], "differ in process"),
                            ([path_a, tmp_path / "nowhere.root"], "nowhere.root: no such file")):
        assert mc(["merge", *map(str, inputs), "--out", str(tmp_path / "bad.root")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad.root").exists()


def test_event_ids_tell_apart_ten_thousand_chunks_and_keep_the_old_ids():
    """The chunk field holds 2^16 chunks (an array job of 10^4 tasks); ids of chunks below 4,096 are the ones
    the 12-bit field gave (seed << 44 | chunk << 32 | index), so shipped samples keep theirs; overflow is refused."""
    from lit_vae.errors import ConfigError
    from lit_vae.mc.production import event_numbers

    index = np.array([0, 1, 12345, (1 << 28) - 1])
    for seed, chunk in ((103, 0), (103, 7), (109, 4095)):
        old = np.array([(seed << 44) | (chunk << 32) | int(i) for i in index], dtype=np.uint64)
        np.testing.assert_array_equal(event_numbers(seed, chunk, index), old)
    ids = np.concatenate([event_numbers(5, chunk, index) for chunk in range(0, 1 << 16, 97)] +
                         [event_numbers(5, chunk, index) for chunk in (4095, 4096, 10_000, (1 << 16) - 1)])
    assert len(np.unique(ids)) == len(ids)
    with pytest.raises(ConfigError, match="at most 65536 chunks; raise --chunk-events"):
        event_numbers(5, 1 << 16, index)
    with pytest.raises(ConfigError, match="more than 2\\^28 events.*lower --chunk-events"):
        event_numbers(5, 0, np.array([1 << 28]))


def test_different_seeds_differ(produce_sample):
    a, _, _ = produce_sample("zgamma", 120, seed=11, chunk_events=60, jobs=1)
    b, _, _ = produce_sample("zgamma", 120, seed=12, chunk_events=60, jobs=1)
    assert not np.array_equal(a["m_llg"], b["m_llg"])
    assert not set(a["event_number"]) & set(b["event_number"])


def test_zgamma_physics_and_schema(produce_sample):
    ev, meta, _ = produce_sample("zgamma", 300)
    assert set(ev) == ZGAMMA_COLUMNS
    assert 88.0 <= np.median(ev["m_ll"]) <= 94.0
    assert np.all((ev["m_llg"] > 132) & (ev["m_llg"] < 168))
    assert np.all(ev["l1_pt"] > 20) and np.all(ev["l1_pt"] >= ev["l2_pt"])
    assert set(np.unique(ev["lep_flavour"])) <= {11, 13}
    assert np.all(ev["n_cjets"] <= ev["n_jets"])
    assert len(np.unique(ev["event_number"])) == len(ev["event_number"])
    for name in ZGAMMA_FEATURES:
        assert np.all(np.isfinite(ev[name])), name
    # The columns agree with an independent four-vector computation (scikit-hep vector).
    import vector

    leptons = [vector.array({"pt": ev[f"{p}_pt"], "eta": ev[f"{p}_eta"], "phi": ev[f"{p}_phi"], "E": ev[f"{p}_e"]})
               for p in ("l1", "l2", "ph")]
    np.testing.assert_allclose((leptons[0] + leptons[1] + leptons[2]).mass, ev["m_llg"], rtol=1e-4)
    np.testing.assert_allclose(leptons[0].deltaR(leptons[1]), ev["dR_ll"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.abs(leptons[0].deltaphi(leptons[1])), ev["dphi_ll"], atol=1e-5)
    np.testing.assert_allclose((leptons[0] + leptons[1]).pt / ev["m_llg"], ev["pt_ll_over_m_llg"], rtol=1e-4)
    # Weights: sigma x efficiency / selected, in pb.
    np.testing.assert_allclose(ev["weight"], meta["sigma_pb"] / meta["events_generated"], rtol=1e-9)


def test_hzg_mass_peak(produce_sample):
    ev, meta, _ = produce_sample("hzg", 200, mass=150.0)
    assert 148.0 <= np.median(ev["m_llg"]) <= 152.0
    assert meta["request"]["mass"] == 150.0


@pytest.mark.parametrize("process, options", [
    ("ttbar", {"fast": True}),
    ("wjets", {"fast": True}),
    ("c1n2_wh", {"mass_c1n2": 500.0, "mass_lsp": 100.0}),
])
def test_one_lepton_preselection_holds_on_every_event(produce_sample, process, options):
    ev, meta, _ = produce_sample(process, 40, **options)
    assert set(ev) == ONE_LEPTON_COLUMNS | ({"tag_config"} if meta["truth_tagging"] else set())
    assert len(np.unique(ev["event_number"])) == 40 == meta["events_selected"] and len(ev["met"]) == meta["rows"]
    if meta["truth_tagging"]:
        tags = (ev["tag_config"][:, None] >> np.arange(3)) & 1
        np.testing.assert_array_equal(tags.sum(axis=1), ev["nBjet30_MV2c10"])  # the bitmask of the tagged jets
    assert np.all(ev["met"] > 220) and np.all(ev["mt"] > 50) and np.all(ev["lep1Pt"] > 27)
    assert np.all((ev["njet30"] >= 2) & (ev["njet30"] <= 3))
    assert np.all((ev["nBjet30_MV2c10"] >= 1) & (ev["nBjet30_MV2c10"] <= 3))
    assert np.all(ev["nBjet30_MV2c10"] <= ev["njet30"])
    assert ev["njet30"].dtype.kind == "i" and ev["nBjet30_MV2c10"].dtype.kind == "i"
    assert np.all(ev["j1_pt"] >= ev["j2_pt"]) and np.all(ev["b1_pt"] > 30) and np.all(ev["b2_pt"] > 30)
    # mT recomputed from the stored lepton and MET.
    mt = np.sqrt(2 * ev["lep1Pt"] * ev["met"] * (1 - np.cos(ev["lep1Phi"] - ev["met_phi"])))
    np.testing.assert_allclose(mt, ev["mt"], rtol=1e-3)
    for name in ONE_LEPTON_FEATURES:
        assert np.all(np.isfinite(ev[name])), name
    assert meta["fast"] == options.get("fast", False) and meta["mpi"] == (not options.get("fast", False))
    assert meta["veto_invisible_pt_min_gev"] == 180.0
    assert meta["sigma_pb"] > 0 and meta["sigma_err_pb"] < meta["sigma_pb"]


def test_wjets_truth_tagging_reweights(produce_sample):
    ev, meta, _ = produce_sample("wjets", 40, fast=True, tag_floor=0.0)
    assert meta["truth_tagging"] is True
    base = meta["sigma_pb"] / meta["events_generated"]
    factor = ev["weight"] / base
    # An event is one row per passing tag configuration (distinct bitmasks, one id), weighted by its
    # probability; an event's rows sum to its pass probability: < 1, and mostly small (light jets).
    import pandas as pd

    rows = pd.DataFrame({"id": ev["event_number"], "config": ev["tag_config"], "factor": factor})
    assert not rows.duplicated(["id", "config"]).any() and len(rows) > 40
    per_event = rows.groupby("id")["factor"].sum()
    assert len(per_event) == 40 and np.all((per_event > 0) & (per_event <= 1.0 + 1e-6))
    assert np.median(per_event) < 0.5
    assert (ev["nBjet30_MV2c10"] >= 2).sum() > 40  # 2-3b rows from most events: the point of truth-tagging


def test_truth_tagged_rows_sum_to_the_event_weight_times_its_pass_probability(produce_sample):
    """In the written file, each event's rows are every configuration of its jets with 1-3 tags, each weighing
    the event weight times the product of its jets' tag probabilities: a jet's probability, read off two rows
    that differ by that jet's tag (ratio p / (1 - p)), is one of the detector's efficiencies, and the rows sum to
    the event weight times 1 - prod(1 - p), the closed-form probability that direct tagging passes."""
    from lit_vae.mc.detector import DETECTOR

    ev, meta, _ = produce_sample("wjets", 40, fast=True, tag_floor=0.0)
    event_weight = meta["sigma_pb"] / meta["events_generated"]
    efficiencies = np.array([DETECTOR.btag_eff_b, DETECTOR.btag_eff_c, DETECTOR.btag_eff_light])
    for event in np.unique(ev["event_number"]):
        rows = ev["event_number"] == event
        weight = dict(zip(ev["tag_config"][rows].tolist(), ev["weight"][rows].tolist(), strict=True))
        n_jets = int(max(weight)).bit_length()
        assert sorted(weight) == list(range(1, 2**n_jets)), event  # every configuration with 1-3 tags
        p = []
        for jet in range(n_jets):
            other = next(c for c in weight if c != 1 << jet and not c >> jet & 1)  # a row without this jet's tag
            ratio = weight[other | 1 << jet] / weight[other]
            p.append(ratio / (1 + ratio))
        assert np.abs(np.subtract.outer(p, efficiencies)).min(axis=1).max() < 1e-9, (event, p)
        for config, w in weight.items():
            tags = np.array([config >> jet & 1 for jet in range(n_jets)], dtype=bool)
            assert w == pytest.approx(event_weight * np.prod(np.where(tags, p, 1 - np.array(p))), rel=1e-9)
        assert sum(weight.values()) == pytest.approx(event_weight * (1 - np.prod(1 - np.array(p))), rel=1e-9)


def test_region_yields_count_truth_tagged_events_once(produce_sample):
    """benchmarks/region_yields.py on a truth-tagged file: sigma x efficiency is the region's row weights, the
    effective count is Kish's over events (an event's rows summed first), never more than the events."""
    import importlib.util

    import pandas as pd

    from tests.paths import REPO

    spec = importlib.util.spec_from_file_location("region_yields", REPO / "benchmarks" / "region_yields.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ev, meta, path = produce_sample("wjets", 40, fast=True, tag_floor=0.0)
    rows = {r["region"]: r for r in module.region_yields(str(path))}
    preselection = ((ev["lep1Pt"] > 27) & (ev["njet30"] >= 2) & (ev["njet30"] <= 3) & (ev["met"] > 220)
                    & (ev["mt"] > 50) & (ev["nBjet30_MV2c10"] >= 1) & (ev["nBjet30_MV2c10"] <= 3))
    per_event = pd.Series(ev["weight"][preselection]).groupby(ev["event_number"][preselection]).sum()
    row = rows["preselection"]
    assert row["rows"] == preselection.sum() > row["events"] == len(per_event)
    assert row["sigma_eff_pb"] == pytest.approx(ev["weight"][preselection].sum())
    assert row["effective"] == pytest.approx(per_event.sum() ** 2 / (per_event**2).sum())
    assert row["effective_per_generated"] == pytest.approx(row["effective"] / meta["events_generated"])
    assert all(r["effective"] <= r["events"] * (1 + 1e-9) for r in rows.values()) and set(rows) == {
        "preselection", "mid", "2-3b"}


def test_wjets_thinned_rows_weigh_at_least_the_floor(produce_sample):
    """With the default floor, no truth-tag row weighs less than it, and the floor is recorded."""
    ev, meta, _ = produce_sample("wjets", 40, fast=True)
    assert meta["truth_tag_floor"] == meta["request"]["tag_floor"] == 0.02
    factor = ev["weight"] / (meta["sigma_pb"] / meta["events_generated"])
    assert factor.min() >= 0.02 * (1 - 1e-6) and len(np.unique(ev["event_number"])) == 40


def test_metadata_is_complete(produce_sample):
    _, meta, _ = produce_sample("zgamma", 300)
    for key in ("process", "pythia_settings", "pythia_version", "sigma_pb", "sigma_err_pb", "events_generated",
                "events_selected", "detector", "fast", "mpi", "request", "lit_vae_version"):
        assert key in meta, key
    assert meta["pythia_version"] == "8.317.2"
    assert meta["events_selected"] == 300 and meta["events_generated"] > 300
    assert meta["detector"]["btag_eff_b"] == 0.77
    assert any(s.startswith("Random:seed") for s in meta["pythia_settings"][0])
    np.testing.assert_allclose(meta["sum_weights_pb"],
                               meta["sigma_pb"] * meta["events_selected"] / meta["events_generated"], rtol=1e-9)


def _run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lit_vae.mc", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("args, expected", [
    (["zprime", "--events", "10", "--out", "x.root"], "invalid choice: 'zprime'"),
    (["zgamma", "--events", "0", "--out", "x.root"], "--events must be a positive"),
    (["wjets", "--events", "10", "--out", "x.root", "--tag-floor", "1"], "--tag-floor must be a probability"),
    (["zgamma", "--events", "10", "--out", "x.root", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["zgamma", "--events", "10", "--out", "/nonexistent/dir/x.root"], "/nonexistent/dir does not exist"),
    (["zgamma", "--events", "10", "--out", "x.parquet"], "must be a .root file"),
    (["c1n2_wh", "--events", "10", "--out", "x.root", "--mass-c1n2", "200", "--mass-lsp", "100"],
     "must exceed --mass-lsp"),
])
def test_cli_bad_input_is_one_clear_line(tmp_path, args, expected):
    result = _run_cli(*[a.replace("x.", f"{tmp_path}/x.") if a.startswith("x.") else a for a in args])
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert not list(tmp_path.iterdir())


def test_interrupted_run_leaves_no_file(tmp_path):
    out = tmp_path / "big.root"
    proc = subprocess.Popen([sys.executable, "-m", "lit_vae.mc", "zgamma", "--events", "100000", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8)  # Pythia is initialised and generating by now; 100k events take minutes
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "nothing written" in stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_zgamma_acceptance_veto_changes_nothing_selected(produce_sample):
    """The |eta| < 3 process-level veto only removes events the selection would reject anyway."""
    vetoed, meta_v, _ = produce_sample("zgamma", 500, seed=21)
    plain, meta_p, _ = produce_sample("zgamma", 500, seed=22, veto=False)
    assert meta_v["veto_visible_eta_max"] == 3.0 and meta_p["veto_visible_eta_max"] is None
    # Selected cross-sections agree within their statistical errors (binomial on the selection).
    xs = [m["sum_weights_pb"] for m in (meta_v, meta_p)]
    err = [m["sum_weights_pb"] * np.sqrt((1 - m["selection_efficiency"]) / m["events_selected"])
           for m in (meta_v, meta_p)]
    assert abs(xs[0] - xs[1]) < 4 * np.hypot(*err)
    for name in ("l1_eta", "l2_eta", "ph_eta", "m_llg", "ph_pt"):
        assert stats.ks_2samp(vetoed[name], plain[name]).pvalue > 1e-3, name


@pytest.mark.slow
def test_btag_efficiency_on_ttbar_b_jets():
    """Jets matched to a b quark from a top decay are tagged at 65-85 % (77 % working point)."""
    import awkward as ak
    import pythia8mc

    from lit_vae.mc.detector import DETECTOR
    from lit_vae.mc.processes import BEAM_SETTINGS, FAST_SETTINGS, ttbar
    from lit_vae.mc.reconstruction import delta_r, pt_eta_phi, reconstruct

    pythia = pythia8mc.Pythia("", False)
    for line in [*BEAM_SETTINGS, *ttbar().settings, *FAST_SETTINGS, "Random:setSeed = on", "Random:seed = 5"]:
        assert pythia.readString(line)
    assert pythia.init()
    rng = np.random.default_rng(5)
    tagged = total = 0
    for _ in range(4):
        prt = pythia.nextBatch(250).prt
        objects = reconstruct(prt, rng, DETECTOR)
        b_quarks = prt[(abs(prt.id) == 5) & (abs(prt.status) == 23)]  # outgoing b of the top decays
        pt, eta, phi = pt_eta_phi(b_quarks.p.px, b_quarks.p.py, b_quarks.p.pz)
        quarks = ak.zip({"eta": eta, "phi": phi})
        jets = objects.jets[(objects.jets.pt > 30) & (abs(objects.jets.eta) < 2.5)]
        pairs = ak.cartesian({"j": jets, "q": quarks}, nested=True)
        matched = ak.any(delta_r(pairs.j.eta, pairs.j.phi, pairs.q.eta, pairs.q.phi) < 0.3, axis=2)
        prob = ak.to_numpy(ak.flatten(jets.tag_prob[matched]))
        tagged += int((rng.random(len(prob)) < prob).sum())
        total += len(prob)
    assert total > 500
    assert 0.65 <= tagged / total <= 0.85


def test_cli_rejects_a_bad_pythia_setting(tmp_path):
    result = _run_cli("hzg", "--events", "5", "--out", str(tmp_path / "x.root"), "--set", "HiggsSM:gg2Hx = on")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "lit_vae.mc: error: Pythia rejected the setting 'HiggsSM:gg2Hx = on'; check its spelling in the Pythia manual"
    ]
    assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())

"""`lit-vae evaluate` on the shipped sample: a generator that copies MC matches the MC-vs-MC reference,
broken generators score clearly worse on the metrics that should catch them, the anomaly numbers agree
with direct computations, and every page holds every figure."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from lit_vae.cli import main
from lit_vae.data.io import EventWriter, read_region
from lit_vae.data.manifest import load_manifest
from lit_vae.data.split import background_train_mask
from lit_vae.errors import DataError
from lit_vae.evaluation.baselines import BASELINES, baseline_scores, training_background
from tests.paths import REPO

ZGAMMA = REPO / "data_manifests" / "zgamma.yaml"
WH1LBB = REPO / "data_manifests" / "wh1lbb.yaml"


def write(path, columns: dict, metadata: dict):
    with EventWriter(path, metadata) as writer:
        writer.append(columns)
    return path


def figures_embedded(out) -> None:
    """report.html embeds one image per PNG, and every PNG has its PDF."""
    pngs = sorted((out / "figures").glob("*.png"))
    assert pngs and all(p.with_suffix(".pdf").is_file() for p in pngs)
    page = (out / "report.html").read_text()
    assert len(re.findall(r"<img ", page)) == len(pngs)
    assert all(f'alt="{p.stem}"' in page for p in pngs)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Three 'generators' made of Zgamma training-part MC: a copy, one with every column shuffled
    independently (right marginals, no correlations) and one with m_llg replaced by noise."""
    folder = tmp_path_factory.mktemp("generated")
    manifest = load_manifest(ZGAMMA)
    features = list(manifest.features)
    table = read_region(manifest, "window", features)
    train = background_train_mask(table, 42, 0.6)
    copy = {f: table[f].to_numpy()[train & ~table["is_signal"].to_numpy(bool)][:6000] for f in features}
    rng = np.random.default_rng(3)
    shuffled = {f: rng.permutation(v) for f, v in copy.items()}
    noise = dict(copy, m_llg=rng.uniform(132, 168, len(copy["m_llg"])).astype(np.float32))
    metadata = {"data_split": {"manifest": str(ZGAMMA), "region": "window", "seed": 42, "train_fraction": 0.6}}
    return [write(folder / f"gen_{name}.parquet", cols, metadata)
            for name, cols in (("copy", copy), ("shuffled", shuffled), ("noise", noise))]


@pytest.fixture(scope="module")
def generation_report(generated, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    code = main(["evaluate", "generation", "--generated", *map(str, generated), "--out", str(out),
                 "--max-events", "3000"])
    assert code == 0
    return out, json.loads((out / "metrics.json").read_text())


def test_a_copy_of_mc_matches_the_mc_reference_and_broken_generators_do_not(generation_report):
    _, metrics = generation_report
    c = {k: v["summary"] for k, v in metrics["comparisons"].items()}
    assert metrics["n_reference"] == 3000 and set(c) == {"mc_vs_mc", "copy", "shuffled", "noise"}
    for name in ("mc_vs_mc", "copy"):
        assert c[name]["classifier_auc"] < 0.56
        assert c[name]["m_llg_frac_beyond_5pct"] == 0 and c[name]["impossible_frac"] == 0
        assert c[name]["max_abs_delta_rho"] < 0.1
    # shuffled columns: perfect marginals, so only the multivariate and physics checks can see it
    assert c["shuffled"]["ks_max"] < 0.05
    assert c["shuffled"]["classifier_auc"] > 0.8
    assert c["shuffled"]["classifier_auc_lo"] > c["mc_vs_mc"]["classifier_auc_hi"]
    assert c["shuffled"]["max_abs_delta_rho"] > 0.3
    assert c["shuffled"]["m_llg_frac_beyond_5pct"] > 0.5 > c["copy"]["m_llg_frac_beyond_5pct"]
    assert c["shuffled"]["fpd"] > 10 * max(c["mc_vs_mc"]["fpd"], c["mc_vs_mc"]["fpd_err"])
    # one feature replaced by noise: the per-feature numbers and the classifier point at it
    per_feature = metrics["comparisons"]["noise"]["per_feature"]
    assert max(per_feature, key=lambda f: per_feature[f]["ks"]) == "m_llg"
    assert max(per_feature, key=lambda f: per_feature[f]["auc_1d"]) == "m_llg"
    assert max(per_feature, key=lambda f: per_feature[f]["permutation_importance"]) == "m_llg"
    reference = metrics["comparisons"]["mc_vs_mc"]["per_feature"]["m_llg"]
    assert per_feature["m_llg"]["w1"] > 5 * reference["w1"]
    assert per_feature["m_llg"]["chi2_ndf"] > 5 * reference["chi2_ndf"]


def test_generation_report_page_and_stable_keys(generation_report):
    out, metrics = generation_report
    figures_embedded(out)
    assert len(list((out / "figures").glob("feature_*.png"))) == 21
    summary = metrics["comparisons"]["copy"]["summary"]
    for key in ("classifier_auc", "classifier_auc_lo", "classifier_auc_hi", "fpd", "fpd_err", "kpd", "kpd_err",
                "w1_mean", "ks_max", "chi2_ndf_mean", "separation_mean", "max_abs_delta_rho", "mean_abs_delta_rho",
                "m_llg_frac_beyond_5pct", "pt_ll_over_m_llg_frac_beyond_5pct", "impossible_frac"):
        assert np.isfinite(summary[key]), key
    assert set(metrics["comparisons"]["copy"]["per_feature"]["met"]) == {
        "w1", "ks", "chi2_ndf", "separation", "auc_1d", "permutation_importance"}


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    """Score files of two Wh1Lbb regions as `lit-vae predict` writes them, with score = mt (a physics
    variable, so the numbers can be checked directly)."""
    folder = tmp_path_factory.mktemp("scores")
    manifest = load_manifest(WH1LBB)
    files = {}
    for region in ("preselection", "mid"):
        table = read_region(manifest, region, list(manifest.features))
        signal = table["is_signal"].to_numpy(bool)
        train = background_train_mask(table, 42, 0.6)
        rows = signal | ~train
        columns = {"event_number": table["event_id"].to_numpy(np.uint64)[rows],
                   "configuration": table["configuration"].to_numpy(np.int32)[rows],  # truth-tagged W+jets rows
                   "sample": table["sample"].to_numpy(dtype=str)[rows], "label": signal[rows].astype(np.int32),
                   "weight": table["weight"].to_numpy(np.float64)[rows],
                   "score": table["mt"].to_numpy(np.float32)[rows], "kl": table["met"].to_numpy(np.float32)[rows],
                   "iwae": table["mbb"].to_numpy(np.float32)[rows]}
        metadata = {"manifest": str(WH1LBB), "region": region, "model": "test", "anomaly_score": "total",
                    "data_split": {"split_seed": 42, "train_fraction": 0.6, "features": ["met", "mt", "mbb"]}}
        files[region] = write(folder / f"scores_{region}.parquet", columns, metadata)
    return files


def test_anomaly_metrics_and_region_efficiencies_agree_with_direct_computations(scores, tmp_path):
    out = tmp_path / "wh1lbb_anomaly"  # the demo's folder name: benchmarks/anomaly_table.py reads it below
    assert main(["evaluate", "anomaly", "--scores", str(scores["preselection"]), str(scores["mid"]),
                 "--out", str(out), "--bootstrap", "30", "--baseline-seeds", "3"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    figures_embedded(out)
    import pandas as pd

    table = pd.read_parquet(scores["preselection"])
    signal = "c1n2_wh_500_100"
    rows = (table["label"] == 0) | (table["sample"] == signal)
    block = metrics["scores"]["preselection"]["signals"][signal]
    expected = roc_auc_score(table["label"][rows], table["score"][rows], sample_weight=table["weight"][rows])
    default = block["default score (total)"]
    assert default["auc"] == pytest.approx(expected) and default["auc_lo"] < expected < default["auc_hi"]
    expected_kl = roc_auc_score(table["label"][rows], table["kl"][rows], sample_weight=table["weight"][rows])
    assert block["score: kl"]["auc"] == pytest.approx(expected_kl)
    background = table["label"] == 0  # the held-out background's -log p(x): the iwae column's weighted mean
    assert metrics["scores"]["preselection"]["background_nll"] == pytest.approx(
        (table["iwae"][background] * table["weight"][background]).sum() / table["weight"][background].sum(), rel=1e-6)
    assert "Held-out background density" in (out / "report.html").read_text()
    tails = metrics["scores"]["preselection"]["tail_composition"]  # the 1 % of background weight at highest mt
    bg = table[background].sort_values("score", ascending=False, kind="stable")
    top = bg[bg["weight"].cumsum() < 0.01 * bg["weight"].sum() * (1 - 1e-12)]
    top = bg.iloc[: len(top) + 1]
    for name, share in tails["default score (total)"].items():
        assert share == pytest.approx(top["weight"][top["sample"] == name].sum() / top["weight"].sum())
    assert tails["all background"]["wjets"] == pytest.approx(
        bg["weight"][bg["sample"] == "wjets"].sum() / bg["weight"].sum())
    assert set(tails) >= {"all background", "score: kl", *BASELINES}
    for baseline in BASELINES:  # fitted on the training background of met, mt, mbb: they see the signal
        assert 0.6 < block[baseline]["auc"] < 1, baseline
        spread = [block[baseline][f"auc_seeds_{name}"] for name in ("min", "median", "max")]
        assert spread[0] <= block[baseline]["auc"] <= spread[2] and spread[0] <= spread[1] <= spread[2], baseline
        assert spread[0] < spread[2], baseline  # three seeds, three resamples: three different fits
    assert metrics["scores"]["preselection"]["baselines"]["seeds"] == [0, 1, 2]
    assert "Baselines over seeds" in (out / "report.html").read_text()
    assert "Does the default score beat the baselines?" in (out / "report.html").read_text()
    assert block["best cut: mt"]["auc"] == pytest.approx(expected)  # mt is the best single variable here
    assert block["supervised (ceiling)"]["auc"] > expected
    mid = pd.read_parquet(scores["mid"])
    efficiency = {(r["region"], r["signal"]): r for r in metrics["region_efficiency"]}
    row = efficiency[("mid", signal)]
    assert row["eff_signal"] == pytest.approx(mid["weight"][mid["sample"] == signal].sum()
                                              / table["weight"][table["sample"] == signal].sum())
    assert row["eff_background"] == pytest.approx(mid["weight"][mid["label"] == 0].sum()
                                                  / table["weight"][table["label"] == 0].sum())
    assert efficiency[("preselection", signal)]["eff_signal"] == pytest.approx(1.0)
    assert row["region_sic"] == pytest.approx(row["eff_signal"] / np.sqrt(row["eff_background"]))
    # max SIC inside mid, from cumulative sums over the cuts (ties, e.g. a truth-tagged event's rows, cut
    # together), keeping >= 10 effective background events, then relative to preselection
    ranked = mid[(mid["label"] == 0) | (mid["sample"] == signal)].assign(
        b=lambda t: t["weight"].where(t["label"] == 0, 0.0), s=lambda t: t["weight"].where(t["label"] == 1, 0.0))
    cuts = ranked.groupby("score")[["b", "s"]].sum().sort_index(ascending=False).cumsum()
    eff_b, eff_s = cuts["b"] / cuts["b"].iloc[-1], cuts["s"] / cuts["s"].iloc[-1]
    background_w = mid["weight"][mid["label"] == 0]
    usable = eff_b >= 10 * (background_w**2).sum() / background_w.sum() ** 2
    max_sic = (eff_s[usable] / np.sqrt(eff_b[usable])).max()
    assert row["max_sic_in_region"] == pytest.approx(max_sic, rel=1e-6)
    assert row["max_sic_vs_base: default score (total)"] == pytest.approx(max_sic * row["region_sic"], rel=1e-6)
    readme_tables(tmp_path, block)


def readme_tables(demo, block: dict) -> None:
    """The README's tables (benchmarks/anomaly_table.py) say what metrics.json holds: baselines as their median
    over the seeds, the verdict against those medians, and --full every method, the cut marked signal-informed."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("anomaly_table", REPO / "benchmarks" / "anomaly_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    line = next(row for row in table.compact(demo).splitlines() if row.startswith("| preselection | C1N2 500/100 |"))
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    default = block["default score (total)"]
    assert cells[2] == f"{default['auc']:.3f} / {default['eff_s_at_eff_b_0.01']:.3f} (total)"
    median = {b: (block[b]["auc_seeds_median"], block[b]["eff_s_at_eff_b_0.01_seeds_median"]) for b in BASELINES}
    for cell, baseline in zip(cells[4:7], BASELINES, strict=True):
        assert cell.startswith(f"{median[baseline][0]:.3f} / {median[baseline][1]:.3f} ("), (cell, baseline)
    beaten = all(default["auc"] > auc and default["eff_s_at_eff_b_0.01"] > eff for auc, eff in median.values())
    cut = block["best cut: mt"]["auc"]
    verdict = json.loads((demo / "wh1lbb_anomaly" / "metrics.json").read_text())["scores"]["preselection"]["verdict"]
    assert verdict["c1n2_wh_500_100"] == {**{b: default["auc"] > median[b][0] and default["eff_s_at_eff_b_0.01"]
                                             > median[b][1] for b in BASELINES},
                                          "every baseline": beaten, "best cut in AUC": default["auc"] > cut}
    assert cells[-1] == f"{'yes' if beaten else 'no'}; beats the cut in AUC: {'yes' if default['auc'] > cut else 'no'}"
    rows = [row for row in table.full(demo).splitlines() if row.startswith("| preselection | C1N2 500/100 |")]
    assert [row.split("|")[3].strip() for row in rows][:1] == ["default score (total)"] and len(rows) == len(block)
    assert any("best cut: mt (signal-informed)" in row for row in rows)


def test_baselines_are_fitted_on_the_training_background_only():
    """The rows the baselines are fitted on are the split's training background: no signal, no event of the
    scored (validation) part; a score file whose split would put scored events in training is refused."""
    manifest = load_manifest(WH1LBB)
    table = read_region(manifest, "preselection", list(manifest.features))
    train = training_background(table, {"split_seed": 42, "train_fraction": 0.6}, "scores.parquet")
    signal = table["is_signal"].to_numpy(bool)
    assert not (train & signal).any() and train.sum() == pytest.approx(0.6 * (~signal).sum(), rel=0.05)
    validation = ~signal & ~train
    assert not (train & validation).any() and (train | validation | signal).all()
    other = training_background(table, {"split_seed": 7, "train_fraction": 0.6}, "scores.parquet")
    assert (other & validation).any()  # another seed would train on scored events: what the evaluation refuses
    with pytest.raises(DataError, match="no data split"):
        training_background(table, {}, "scores.parquet")
    # a run on a max_events subset: the baselines see the rows its DataModule trained on, no more
    from lit_vae.data import Wh1LbbDataModule

    dm = Wh1LbbDataModule(region="preselection", max_events=3000, split_seed=42, train_fraction=0.6, min_events=0,
                          use_weights=False, cache_dir=None)
    dm.setup()
    subset = training_background(table, dm.split(), "scores.parquet")
    assert dm.split()["max_events"] == 3000 and subset.sum() == len(dm.part("train")["x"]) < 0.6 * 3000 * 1.1
    assert not (subset & ~train).any()
    encoded = dm.transform(torch.as_tensor(table[dm.features].to_numpy(np.float64)[subset], dtype=torch.float32))
    np.testing.assert_allclose(np.sort(encoded.numpy(), axis=0), np.sort(dm.part("train")["x"].numpy(), axis=0),
                               atol=1e-5)


def test_evaluate_hands_the_baselines_only_training_background_rows(scores, tmp_path, monkeypatch):
    """The rows `evaluate anomaly` fits the baselines on are exactly the recorded split's training background
    (as feature vectors: no signal event, no scored event among them), and the scored rows are the file's."""
    import pandas as pd

    from lit_vae.evaluation import report

    seen = []

    def recording(train_x, train_w, x, kinds, seed=0):
        seen.append((train_x.copy(), x.copy()))
        return baseline_scores(train_x, train_w, x, kinds, seed)

    monkeypatch.setattr(report, "baseline_scores", recording)
    assert main(["evaluate", "anomaly", "--scores", str(scores["mid"]), "--out", str(tmp_path / "out"),
                 "--bootstrap", "5", "--baseline-seeds", "1"]) == 0
    manifest = load_manifest(WH1LBB)
    table = read_region(manifest, "mid", list(manifest.features))
    features = ["met", "mt", "mbb"]  # the score file's recorded model features
    train = background_train_mask(table, 42, 0.6) & ~table["is_signal"].to_numpy(bool)
    assert len(seen) == 1
    for train_x, x in seen:
        order = np.lexsort(train_x.T)
        expected = table[features].to_numpy(np.float64)[train]
        np.testing.assert_array_equal(train_x[order], expected[np.lexsort(expected.T)])
        fitted = set(map(tuple, train_x))
        scored = set(map(tuple, table[features].to_numpy(np.float64)[~train]))  # signal and validation rows
        assert not fitted & scored
        assert len(x) == len(pd.read_parquet(scores["mid"]))
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())  # one seed: no spread to report
    assert "auc_seeds_median" not in metrics["scores"]["mid"]["signals"]["c1n2_wh_500_100"][BASELINES[1]]
    assert "Baselines over seeds" not in (tmp_path / "out" / "report.html").read_text()


def test_a_score_file_whose_split_contradicts_its_rows_is_refused(scores, tmp_path, capsys):
    import pandas as pd

    columns = {k: v.to_numpy() for k, v in pd.read_parquet(scores["mid"]).items() if k != "region"}
    metadata = {"manifest": str(WH1LBB), "region": "mid", "model": "test",
                "data_split": {"split_seed": 7, "train_fraction": 0.6}}
    path = write(tmp_path / "scores_mid.parquet", columns, metadata)
    assert main(["evaluate", "anomaly", "--scores", str(path), "--out", str(tmp_path / "out"),
                 "--bootstrap", "5"]) == 2
    assert "scored events are training events of its recorded split" in capsys.readouterr().err


def test_summary_page_joins_reports_and_links_them(generation_report, scores, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for variable in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "WANDB_MODE"):
        monkeypatch.delenv(variable, raising=False)
    anomaly = tmp_path / "anomaly"
    assert main(["evaluate", "anomaly", "--scores", str(scores["mid"]), "--out", str(anomaly), "--no-references",
                 "--bootstrap", "10", "--wandb"]) == 0
    runs = list((tmp_path / "runs").rglob("offline-run-*/run-*.wandb"))  # metrics, table, images
    assert len(runs) == 1 and runs[0].stat().st_size > 10_000
    out = tmp_path / "summary"
    assert main(["evaluate", "summary", "--reports", str(generation_report[0]), str(anomaly), "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "MC vs MC (reference)" in page and "shuffled" in page and "c1n2_wh_300_75" in page
    assert page.count("full report") == 2
    assert set(json.loads((out / "metrics.json").read_text())) == {generation_report[0].name, "anomaly"}


def test_bad_inputs_are_one_line_errors_and_write_nothing(scores, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["evaluate", "generation", "--generated", str(tmp_path / "missing.parquet"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing.parquet: no such file" in err
    import pandas as pd

    background = pd.read_parquet(scores["mid"]).query("label == 0")
    only = write(tmp_path / "scores_bkg.parquet", {c: background[c].to_numpy() for c in background},
                 {"manifest": str(WH1LBB), "region": "mid"})
    assert main(["evaluate", "anomaly", "--scores", str(only), "--out", str(out)]) == 2
    assert "needs both background and signal" in capsys.readouterr().err
    assert main(["evaluate", "anomaly", "--scores", str(scores["mid"]), "--out", str(out),
                 "--baseline-seeds", "0"]) == 2
    assert "--baseline-seeds must be at least 1" in capsys.readouterr().err
    for command in (["anomaly", "--scores", str(scores["mid"])], ["generation", "--generated", str(scores["mid"])]):
        assert main(["evaluate", *command, "--out", str(tmp_path / "fresh"), "--training-log",
                     str(tmp_path / "metrics.csv")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "metrics.csv: no such training log" in err
    assert not (tmp_path / "fresh").exists()  # refused before any work: not even the folder
    assert not (out / "metrics.json").exists() and not (out / "report.html").exists()


def test_any_ntuple_serves_as_the_mc_with_kinds_from_the_generator(tmp_path):
    """--mc FILE.root: a plain ROOT ntuple (no lit-vae metadata, other branches too) is accepted; the kinds
    and units come from the generated file's checkpoint metadata (here a count: binned per integer)."""
    import uproot

    from lit_vae.data.io import read_root

    test = read_root(REPO / "data" / "zgamma_test.root", ["m_llg", "met", "n_jets", "l1_pt"])
    with uproot.recreate(tmp_path / "theirs.root") as f:
        f["nominal_like"] = {"x": np.zeros(3)}
        f["events"] = {k: v[:4000] for k, v in test.items()}
    generated = {k: v[4000:8000] for k, v in test.items() if k != "l1_pt"}
    physics = {"kinds": {"m_llg": "positive", "met": "positive", "n_jets": "count"},
               "units": {"m_llg": "GeV", "met": "GeV", "n_jets": ""}}
    gen = write(tmp_path / "gen_mine.parquet", generated, {"physics": physics})
    out = tmp_path / "eval"
    assert main(["evaluate", "generation", "--generated", str(gen), "--mc", str(tmp_path / "theirs.root"),
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["features"] == ["m_llg", "met", "n_jets"] and metrics["n_reference"] == 2000
    assert metrics["comparisons"]["mine"]["summary"]["classifier_auc"] < 0.58  # MC against MC
    assert metrics["comparisons"]["mine"]["per_feature"]["n_jets"]["chi2_ndf"] >= 0
